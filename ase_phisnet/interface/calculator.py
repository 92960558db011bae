"""``PhiSNetCalculator``: the ASE face of the learned electronic structure.

Units at this boundary (ASE's): energies and orbital energies in eV, forces in eV/Å, Hessian in
eV/Å², dipole in e·Å, charges in e; ``hamiltonian`` in eV and ``overlap`` dimensionless in
PySCF's AO order. The density matrix stays in atomic units and PySCF's AO order so that it can
be handed to PySCF as ``dm0``. Inside, everything is Hartree/Bohr; the conversions are the table
below and happen only here.
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    CalculatorSetupError,
    all_changes,
)
from ase.units import Bohr, Hartree

from ase_phisnet.core.errors import (
    ModelFileError,
    OpenShellError,
    PhiSNetError,
    UnsupportedElementError,
)
from ase_phisnet.core.integrals import OverlapIntegrals
from ase_phisnet.electronic.energy import n_occupied_orbitals
from ase_phisnet.electronic.model import PhiSNetModel, energy_and_forces, hessian
from ase_phisnet.electronic.model_file import load_model
from ase_phisnet.electronic.observables import (
    charge_center_bohr,
    dipole_moment_e_bohr,
    mulliken_charges,
)

#: Conversions from the model's atomic units to ASE's units.
EV_PER_EH = Hartree
ANG_PER_BOHR = Bohr
EV_PER_ANG_PER_EH_PER_BOHR = Hartree / Bohr
EV_PER_ANG2_PER_EH_PER_BOHR2 = Hartree / Bohr**2

DTYPES = {"float32": torch.float32, "float64": torch.float64}


class PhiSNetSetupError(CalculatorSetupError, PhiSNetError):
    """The calculator cannot handle this model, these atoms or these settings."""


def resolve_model_path(model: str | os.PathLike) -> str:
    """A model file path from a path or the name of a shipped potential."""
    path = os.fspath(model)
    if os.path.exists(path):
        return path
    from ase_phisnet.interface.potentials import potential_path

    return potential_path(path)


class PhiSNetCalculator(Calculator):
    """ASE calculator whose energy comes from PhiSNet's predicted matrices (its energy model).

    Args:
        model: Name of a shipped potential (``ase_phisnet.list_potentials()``), a model file
            path, or a :class:`PhiSNet` instance.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: ``"float64"`` (default; exact derivatives for MD and vibrations) or ``"float32"``.
        network_dtype: dtype of the network alone (default: ``dtype``); ``"float32"`` with
            ``dtype="float64"`` runs the network in float32 and the eigensolver in float64.
        charge: Total charge in e (closed shells only).
        basis: Optional basis the caller expects; a mismatch with the model is an error.
    """

    implemented_properties = ("energy", "free_energy", "forces", "dipole", "charges")
    default_parameters = {"charge": 0}

    def __init__(self, model="water-pbe-def2svp", device="cpu", dtype="float64", charge=0,
                 basis: str | None = None, network_dtype: str | None = None, **kwargs):
        super().__init__(charge=charge, **kwargs)
        network_dtype = dtype if network_dtype is None else network_dtype
        for value in (dtype, network_dtype):
            if value not in DTYPES:
                raise PhiSNetSetupError(f"dtype must be one of {sorted(DTYPES)}, got {value!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device, self.dtype = torch.device(device), DTYPES[dtype]
        self.model, metadata = self._load(model)
        self.model.to(device=self.device, dtype=DTYPES[network_dtype]).eval()
        if basis is not None and basis.lower() != self.model.config.basis:
            raise PhiSNetSetupError(f"basis mismatch: the model predicts {self.model.config.basis}"
                                    f" matrices, {basis!r} was asked for")
        self.metadata = metadata  # the model file's JSON: config, training record, metrics
        self.min_training_distance_bohr = metadata.get("training", {}).get("min_distance_bohr")
        self._density_matrix = None
        self._integrals = None  # OverlapIntegrals of the current molecule (dipoles)

    @staticmethod
    def _load(model):
        if isinstance(model, PhiSNetModel):
            return model, {}
        try:
            path = resolve_model_path(model)
            with open(path + ".json") as handle:
                metadata = json.load(handle)
            return load_model(path), metadata
        except (ModelFileError, OSError, ValueError) as error:
            raise PhiSNetSetupError(f"cannot load model {model!r}: {error}") from error

    # ---- validation ------------------------------------------------------------------------
    def _check_atoms(self, atoms) -> int:
        if len(atoms) == 0:
            raise PhiSNetSetupError("empty Atoms: nothing to compute")
        if atoms.pbc.any():
            raise PhiSNetSetupError("periodic boundary conditions are not supported: "
                                    "PhiSNetCalculator treats isolated molecules (set pbc=False)")
        try:
            self.model.species(torch.as_tensor(atoms.numbers))
            n_occupied = n_occupied_orbitals(atoms.numbers, self.parameters.charge)
        except (UnsupportedElementError, OpenShellError) as error:
            raise PhiSNetSetupError(str(error)) from error
        if len(atoms) > 1 and self.min_training_distance_bohr is not None:
            distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)] / Bohr
            if distances.min() < 0.95 * self.min_training_distance_bohr:
                warnings.warn(
                    f"shortest interatomic distance {distances.min() * Bohr:.3f} Å is below the "
                    f"training data's minimum {self.min_training_distance_bohr * Bohr:.3f} Å: "
                    "the model extrapolates here", RuntimeWarning, stacklevel=3)
        return n_occupied

    # ---- the calculation -------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        charge = self.parameters.charge
        n_occupied = self._check_atoms(self.atoms)
        z = torch.as_tensor(self.atoms.numbers, device=self.device)
        positions_bohr = torch.as_tensor(self.atoms.positions / Bohr, dtype=self.dtype,
                                         device=self.device)
        try:
            prediction, forces = energy_and_forces(self.model, z, positions_bohr, charge)
        except PhiSNetError as error:
            raise CalculationFailed(str(error)) from error
        solution = prediction.solution
        density = solution.density_matrix.detach()
        overlap = prediction.matrices["overlap"].detach()
        slices = self.model.layout.ao_slices(self.atoms.numbers.tolist())
        energy_ev = float(prediction.energy_eh.detach()) * EV_PER_EH
        eigenvalues = solution.orbital_energies_eh.double().cpu().numpy()
        occupations = np.zeros_like(eigenvalues)
        occupations[:n_occupied] = 2.0
        self._density_matrix = density.double().cpu().numpy()
        self.results = {
            "energy": energy_ev,
            "free_energy": energy_ev,
            "forces": forces.detach().double().cpu().numpy() * EV_PER_ANG_PER_EH_PER_BOHR,
            "charges": mulliken_charges(density, overlap, z, slices).double().cpu().numpy(),
            "hamiltonian": prediction.matrices["hamiltonian"].detach().double().cpu().numpy()
            * EV_PER_EH,
            "overlap": overlap.double().cpu().numpy(),
            "eigenvalues": eigenvalues * EV_PER_EH,
            "occupations": occupations,
            "orbital_coefficients": solution.orbitals.double().cpu().numpy(),
        }
        if "dipole" in properties:
            self.results["dipole"] = self._dipole_e_ang(positions_bohr)

    def _dipole_e_ang(self, positions_bohr) -> np.ndarray:
        """``sum_A Z_A (R_A - R_c) - Tr[P (r - R_c)]`` in e·Å, ``R_c`` the centre of nuclear charge.

        PySCF's AO integrals on the predicted density. Measuring from ``R_c`` keeps the dipole
        translation invariant even though ``Tr[P S_exact]`` differs slightly from the electron
        count (``P`` is normalized against the predicted S); for charged molecules the dipole is
        origin dependent and this is its value about ``R_c``.
        """
        numbers = tuple(int(z) for z in self.atoms.numbers)
        if self._integrals is None or tuple(self._integrals.atomic_numbers) != numbers:
            self._integrals = OverlapIntegrals(numbers, self.model.config.basis)
        positions = positions_bohr.double().cpu()
        z = torch.as_tensor(self.atoms.numbers)
        dipole = dipole_moment_e_bohr(
            torch.as_tensor(self._density_matrix),
            torch.as_tensor(self._integrals.position_about_charge_center(positions.numpy())),
            z, positions, origin_bohr=charge_center_bohr(z, positions))
        return dipole.numpy() * ANG_PER_BOHR

    # ---- electronic structure in ASE's vocabulary -------------------------------------------
    def get_eigenvalues(self, kpt=0, spin=0):
        """Orbital energies (eV), ascending, shape (nao,)."""
        return self.get_property("eigenvalues").copy()

    def get_occupation_numbers(self, kpt=0, spin=0):
        """2 for the doubly occupied orbitals, 0 otherwise, shape (nao,)."""
        return self.get_property("occupations").copy()

    def get_number_of_spins(self):
        return 1

    def get_ibz_k_points(self):
        return np.zeros((1, 3))

    def get_k_point_weights(self):
        return np.ones(1)

    def get_homo_lumo(self):
        """``(HOMO, LUMO)`` orbital energies in eV."""
        eps, occ = self.get_eigenvalues(), self.get_occupation_numbers()
        n_occupied = int(np.count_nonzero(occ))
        return float(eps[n_occupied - 1]), float(eps[n_occupied])

    def get_fermi_level(self):
        """Middle of the HOMO–LUMO gap in eV."""
        return float(np.mean(self.get_homo_lumo()))

    def get_orbital_coefficients(self, atoms=None):
        """MO coefficients ``C`` (nao, nao), columns ordered like the eigenvalues, PySCF AO
        order, normalized against the predicted overlap (``C^T S C = 1``)."""
        return self.get_property("orbital_coefficients", atoms).copy()

    def get_density_matrix(self, atoms=None):
        """AO density matrix ``P`` (a.u., PySCF AO order): usable as PySCF's ``dm0``."""
        self.get_property("energy", atoms)
        return self._density_matrix.copy()

    def get_hessian(self, atoms=None):
        """Analytic Hessian ``d^2E/dR^2`` by double backward, shape (3N, 3N), eV/Å²."""
        atoms = self.atoms if atoms is None else atoms
        self._check_atoms(atoms)
        z = torch.as_tensor(atoms.numbers, device=self.device)
        positions = torch.as_tensor(atoms.positions / Bohr, dtype=self.dtype, device=self.device)
        matrix = hessian(self.model, z, positions, self.parameters.charge)
        return matrix.detach().double().cpu().numpy() * EV_PER_ANG2_PER_EH_PER_BOHR2

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name in ("hamiltonian", "overlap", "eigenvalues", "occupations",
                    "orbital_coefficients"):
            if atoms is None:
                atoms = self.atoms
            if atoms is None:
                raise PhiSNetSetupError("no atoms: attach the calculator to an Atoms first")
            if self.calculation_required(atoms, [name]):
                self.calculate(atoms, ["energy"], self.check_state(atoms))
            return self.results[name]
        return super().get_property(name, atoms, allow_calculation)
