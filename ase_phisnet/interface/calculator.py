"""``PhiSNetCalculator``: the ASE face of the learned electronic structure.

Units at this boundary (ASE's): energies and orbital energies in eV, forces in eV/Å, Hessian in
eV/Å², dipole in e·Å, charges in e; ``hamiltonian`` in eV and ``overlap`` dimensionless in
PySCF's AO order. The density matrix and the orbital coefficients stay in atomic units and
PySCF's AO order so that they can be handed to PySCF (``dm0``). Inside, everything is
Hartree/Bohr; the conversions are the table :data:`ASE_PER_ATOMIC_UNIT` and happen only here.

One calculation fills every result at once (energy, forces, dipole, charges, orbitals,
density matrix, matrices); ASE's ``GetOutputsMixin`` reads the electronic ones
(``get_eigenvalues``, ``get_occupation_numbers``, ``get_fermi_level``, k points) from
``results`` in ASE's shapes, so ``ase.dft.bandgap.bandgap(calc)`` works as for any other
calculator.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from typing import ClassVar

import numpy as np
import torch
from ase.calculators.abc import GetOutputsMixin
from ase.calculators.calculator import (
    CalculationFailed,
    Calculator,
    CalculatorSetupError,
    all_changes,
)
from ase.outputs import Properties, all_outputs
from ase.units import Bohr, Hartree

from ase_phisnet.core.domain import TrainingDomain
from ase_phisnet.core.errors import (
    ModelFileError,
    OpenShellError,
    PhiSNetError,
    UnsupportedElementError,
)
from ase_phisnet.core.integrals import OverlapIntegrals
from ase_phisnet.electronic.energy import n_occupied_orbitals
from ase_phisnet.electronic.features import FEATURE_NAMES
from ase_phisnet.electronic.model import PhiSNetModel, energy_and_forces, hessian
from ase_phisnet.electronic.model_file import load_model_file, training_domain
from ase_phisnet.electronic.observables import (
    charge_center_bohr,
    dipole_moment_e_bohr,
    mulliken_charges,
)

#: ASE's unit per atomic unit, for every quantity this module converts (and no other does):
#: energy eV/Eh (energies, orbital energies, H), length Å/Bohr (positions; dipole e·Å per
#: e·Bohr), force (eV/Å)/(Eh/Bohr), hessian (eV/Å²)/(Eh/Bohr²).
ASE_PER_ATOMIC_UNIT = {
    "energy": Hartree,
    "length": Bohr,
    "force": Hartree / Bohr,
    "hessian": Hartree / Bohr**2,
}

DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: The results ``GetOutputsMixin`` reads (ASE's names and shapes, ``ase.outputs``).
_OUTPUT_NAMES = ("eigenvalues", "occupations", "fermi_level", "ibz_kpoints", "kpoint_weights")


class PhiSNetSetupError(CalculatorSetupError, PhiSNetError):
    """The calculator cannot handle this model, these atoms or these settings."""


class OutsideTrainingDomainError(PhiSNetSetupError):
    """With ``strict=True``: the geometry lies outside the model's training domain."""


class OutsideTrainingDomainWarning(RuntimeWarning):
    """The geometry lies outside the model's training domain: the model extrapolates."""


def resolve_model_path(model: str | os.PathLike) -> str:
    """A model file path from a path or the name of a shipped potential."""
    path = os.fspath(model)
    if os.path.exists(path):
        return path
    from ase_phisnet.interface.potentials import potential_path

    return potential_path(path)


def integer_charge(charge) -> int:
    """``charge`` (e) as an int; a :class:`PhiSNetSetupError` unless it is a whole number."""
    try:
        value = float(charge)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(charge, bool) or not np.isfinite(value) or value != round(value):
        raise PhiSNetSetupError(f"charge must be a whole number of e, got {charge!r}")
    return round(value)


def _problem_kind(problem: str) -> str:
    """A domain problem without its numbers, distances and atom indices alike (``"H-O
    distance # Å is below ..."``, ``"atom # (H): distance # Å to its nearest atom (#, O)
    ..."``): what stays the same while an MD trajectory stays outside in the same way."""
    return re.sub(r"\d+(\.\d+)?", "#", problem)


class PhiSNetCalculator(Calculator, GetOutputsMixin):
    """ASE calculator whose energy comes from PhiSNet's predicted matrices (its energy model).

    Args:
        model: Name of a shipped potential (``ase_phisnet.list_potentials()``), a model file
            path, or a :class:`~ase_phisnet.electronic.model.PhiSNetModel` instance (which
            carries no training domain, so no domain check).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        dtype: ``"float64"`` (default; exact derivatives for MD and vibrations) or ``"float32"``.
        network_dtype: dtype of the network alone (default: ``dtype``); ``"float32"`` with
            ``dtype="float64"`` runs the network in float32 and the eigensolver in float64.
        charge: Total charge, a whole number of e (closed shells only). A model answers for
            the charge of its training data; another charge counts as outside its domain.
        basis: Optional basis the caller expects; a mismatch with the model is an error.
        strict: A geometry outside the model's training domain (another composition or
            charge, an element pair's distance or an atom's k-th nearest-neighbour distance
            outside its training range by more than ``domain_tolerance_ang``, or an electronic
            feature beyond the range the energy network takes unchanged) is an
            :class:`OutsideTrainingDomainError` instead of an
            :class:`OutsideTrainingDomainWarning` (warned once per kind of problem).
        domain_tolerance_ang: How far (Å) a distance may leave its training range.
    """

    implemented_properties = ("energy", "free_energy", "forces", "dipole", "charges")
    default_parameters: ClassVar[dict] = {"charge": 0}

    def __init__(self, model="water-pbe-def2svp", device="cpu", dtype="float64", charge=0,
                 basis: str | None = None, network_dtype: str | None = None,
                 strict: bool = False, domain_tolerance_ang: float = 0.1, **kwargs):
        super().__init__(charge=charge, **kwargs)
        network_dtype = dtype if network_dtype is None else network_dtype
        for name, value in (("dtype", dtype), ("network_dtype", network_dtype)):
            if value not in DTYPES:
                raise PhiSNetSetupError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")
        if not domain_tolerance_ang >= 0:
            raise PhiSNetSetupError(f"domain_tolerance_ang must be >= 0 Å, got "
                                    f"{domain_tolerance_ang!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device, self.dtype = torch.device(device), DTYPES[dtype]
        self.model, metadata = self._load(model)
        self.model.to(device=self.device, dtype=DTYPES[network_dtype]).eval()
        if basis is not None and basis.lower() != self.model.config.basis:
            raise PhiSNetSetupError(f"basis mismatch: the model predicts {self.model.config.basis}"
                                    f" matrices, {basis!r} was asked for")
        if not self.model.config.predicts_energy:
            raise PhiSNetSetupError(
                f"the model predicts {sorted(self.model.config.output_matrices)} but its energy "
                f"model {self.model.config.energy_model!r} needs "
                f"{sorted(self.model.config.energy_matrices)}: it is a matrix-only model "
                "(evaluate it with ase-phisnet evaluate; the calculator needs energies)")
        self.metadata = metadata  # the model file's JSON: config, training record, metrics
        theory = metadata.get("training", {}).get("theory", {})
        self.training_charge: int | None = (int(theory["charge"]) if "charge" in theory
                                            else None)
        self.training_domain: TrainingDomain | None = training_domain(metadata)
        self.strict, self.domain_tolerance_ang = bool(strict), float(domain_tolerance_ang)
        self._warned_domain_problems: set[str] = set()
        self._integrals = None  # OverlapIntegrals of the current molecule (dipoles)

    @staticmethod
    def _load(model) -> tuple[PhiSNetModel, dict]:
        if isinstance(model, PhiSNetModel):  # a copy: device and dtype changes stay ours
            return copy.deepcopy(model), {}
        try:
            return load_model_file(resolve_model_path(model))
        except (ModelFileError, OSError, ValueError) as error:
            raise PhiSNetSetupError(f"cannot load model {model!r}: {error}") from error

    def set(self, **kwargs):
        """ASE's ``set`` for the calculation parameters (``charge``, a whole number of e).

        A changed parameter discards the results (ASE's base class keeps them by default, which
        would serve the energy of the old charge). Anything else is an error: the model, device,
        dtypes and domain settings are fixed at construction, and a misspelled name must not
        pass silently.
        """
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise PhiSNetSetupError(
                f"unknown calculator parameter(s) {unknown}: the parameters are "
                f"{sorted(self.default_parameters)}; model, device, dtype, network_dtype, basis, "
                "strict and domain_tolerance_ang are constructor arguments")
        if "charge" in kwargs:
            kwargs["charge"] = integer_charge(kwargs["charge"])
        changed = super().set(**kwargs)
        if changed:
            self.reset()
        return changed

    # ---- validation ------------------------------------------------------------------------
    def _check_atoms(self, atoms) -> int:
        """Raise for atoms the model cannot take, warn (or raise, strict) outside its training
        domain; returns the number of doubly occupied orbitals."""
        if len(atoms) == 0:
            raise PhiSNetSetupError("empty Atoms: nothing to compute")
        if atoms.pbc.any():
            raise PhiSNetSetupError("periodic boundary conditions are not supported: "
                                    "PhiSNetCalculator treats isolated molecules (set pbc=False)")
        bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
        if bad.size:
            listing = ", ".join(f"{i} ({atoms.symbols[i]}: {atoms.positions[i].tolist()})"
                                for i in bad)
            raise PhiSNetSetupError(f"non-finite positions (NaN or inf) of atom(s) {listing}")
        try:
            self.model.species(torch.as_tensor(atoms.numbers))
            n_occupied = n_occupied_orbitals(atoms.numbers, self.parameters.charge)
        except (UnsupportedElementError, OpenShellError) as error:
            raise PhiSNetSetupError(str(error)) from error
        nao = self.model.layout.ao_slices(atoms.numbers.tolist())[-1].stop
        if n_occupied >= nao:
            raise PhiSNetSetupError(
                f"charge {self.parameters.charge} puts {2 * n_occupied} electrons into {nao} "
                f"{self.model.config.basis} orbitals: a closed shell needs an empty orbital")
        self._check_domain(atoms)
        return n_occupied

    def _check_domain(self, atoms) -> None:
        """Warn once per kind of problem, or raise with ``strict``, outside the domain: the
        geometry (:meth:`TrainingDomain.violations`) and the charge, which the training data
        fix (the matrices and the energy are those of the training charge's electrons)."""
        problems = []
        charge = self.parameters.charge
        if self.training_charge is not None and charge != self.training_charge:
            problems.append(f"charge {charge} differs from the training data's charge "
                            f"{self.training_charge}")
        if self.training_domain is not None:
            problems += self.training_domain.violations(atoms.numbers, atoms.positions,
                                                        self.domain_tolerance_ang)
        self._report_domain_problems(problems)

    def _check_features(self, atoms, features: torch.Tensor | None) -> None:
        """Warn (or raise, strict) where an electronic feature leaves the range the energy
        network takes unchanged (:mod:`ase_phisnet.electronic.remainder`: it saturates there)."""
        if features is None:
            return
        species = self.model.species(torch.as_tensor(atoms.numbers, device=features.device))
        excursions = self.model.remainder.feature_excursions(species, features.detach())
        outside = torch.nonzero(excursions > 0).tolist()
        if not outside:
            return
        atom, feature = max(outside, key=lambda index: float(excursions[tuple(index)]))
        self._report_domain_problems([
            f"electronic feature {FEATURE_NAMES[feature]} of atom {atom} ({atoms.symbols[atom]})"
            f" is {float(excursions[atom, feature]):.2f} training standard deviations beyond the "
            f"range the energy network takes unchanged ({len(outside)} feature(s) of the "
            "molecule are; the network sees them saturated)"])

    def _report_domain_problems(self, problems: list[str]) -> None:
        if not problems:
            return
        message = ("geometry outside the model's training domain (the model extrapolates): "
                   + "; ".join(problems))
        if self.strict:
            raise OutsideTrainingDomainError(message)
        kinds = {_problem_kind(p) for p in problems}
        if not kinds <= self._warned_domain_problems:
            self._warned_domain_problems |= kinds
            warnings.warn(message, OutsideTrainingDomainWarning, stacklevel=2)

    # ---- the calculation -------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Every result in one pass, whatever ``properties`` asks for."""
        super().calculate(atoms, properties, system_changes)
        n_occupied = self._check_atoms(self.atoms)
        z = torch.as_tensor(self.atoms.numbers, device=self.device)
        positions_bohr = torch.as_tensor(self.atoms.positions / ASE_PER_ATOMIC_UNIT["length"],
                                         dtype=self.dtype, device=self.device)
        try:
            prediction, forces = energy_and_forces(self.model, z, positions_bohr,
                                                   self.parameters.charge)
        except PhiSNetError as error:
            raise CalculationFailed(str(error)) from error
        self._check_features(self.atoms, prediction.features)

        def numpy(tensor):
            return tensor.detach().double().cpu().numpy()

        solution = prediction.solution
        density = solution.density_matrix.detach()
        overlap = prediction.matrices["overlap"].detach()
        slices = self.model.layout.ao_slices(self.atoms.numbers.tolist())
        energy_ev = float(prediction.energy_eh.detach()) * ASE_PER_ATOMIC_UNIT["energy"]
        eigenvalues_ev = numpy(solution.orbital_energies_eh) * ASE_PER_ATOMIC_UNIT["energy"]
        occupations = np.zeros_like(eigenvalues_ev)
        occupations[:n_occupied] = 2.0
        density_au = numpy(density)
        self.results = {
            "energy": energy_ev,
            "free_energy": energy_ev,
            "forces": numpy(forces) * ASE_PER_ATOMIC_UNIT["force"],
            "dipole": self._dipole_e_ang(density_au, numpy(positions_bohr)),
            "charges": numpy(mulliken_charges(density, overlap, z, slices)),
            # Electronic structure in ASE's shapes: (spins, k points, bands) = (1, 1, nao).
            "eigenvalues": eigenvalues_ev[None, None],
            "occupations": occupations[None, None],
            "fermi_level": float(eigenvalues_ev[n_occupied - 1:n_occupied + 1].mean()),
            "ibz_kpoints": np.zeros((1, 3)),
            "kpoint_weights": np.ones(1),
            # PhiSNet's own: matrices (H eV, S dimensionless), C and P in a.u., PySCF AO order.
            "hamiltonian": (numpy(prediction.matrices["hamiltonian"])
                            * ASE_PER_ATOMIC_UNIT["energy"]),
            "overlap": numpy(overlap),
            "orbital_coefficients": numpy(solution.orbitals),
            "density_matrix": density_au,
        }

    def _dipole_e_ang(self, density_au: np.ndarray, positions_bohr: np.ndarray) -> np.ndarray:
        """``sum_A Z_A (R_A - R_c) - Tr[P (r - R_c)]`` in e·Å, ``R_c`` the centre of nuclear charge.

        PySCF's AO integrals on the predicted density. Measuring from ``R_c`` keeps the dipole
        translation invariant even though ``Tr[P S_exact]`` differs slightly from the electron
        count (``P`` is normalized against the predicted S); for charged molecules the dipole is
        origin dependent and this is its value about ``R_c``.
        """
        numbers = tuple(int(z) for z in self.atoms.numbers)
        if self._integrals is None or tuple(self._integrals.atomic_numbers) != numbers:
            self._integrals = OverlapIntegrals(numbers, self.model.config.basis)
        positions = torch.as_tensor(positions_bohr)
        z = torch.as_tensor(self.atoms.numbers)
        dipole = dipole_moment_e_bohr(
            torch.as_tensor(density_au),
            torch.as_tensor(self._integrals.position_about_charge_center(positions_bohr)),
            z, positions, origin_bohr=charge_center_bohr(z, positions))
        return dipole.numpy() * ASE_PER_ATOMIC_UNIT["length"]

    # ---- electronic structure --------------------------------------------------------------
    def _outputmixin_get_results(self):
        """The results ``GetOutputsMixin`` reads, copied so that callers cannot alter them."""
        return {name: np.copy(self.results[name]) if name != "fermi_level"
                else self.results[name] for name in _OUTPUT_NAMES if name in self.results}

    def export_properties(self) -> Properties:
        """ASE's :class:`~ase.outputs.Properties` of the results ASE defines (the matrices,
        orbital coefficients and density matrix are PhiSNet's own)."""
        return Properties({name: value for name, value in self.results.items()
                           if name in all_outputs})

    def _results_for(self, atoms=None) -> dict:
        """``results`` of ``atoms`` (default: the atoms of the last calculation), calculated
        if they are missing or the atoms changed."""
        if atoms is None and self.atoms is None:
            raise PhiSNetSetupError("no atoms: attach the calculator to an Atoms and compute, "
                                    "or pass the atoms")
        self.get_property("energy", atoms)
        return self.results

    def get_homo_lumo(self, atoms=None) -> tuple[float, float]:
        """``(HOMO, LUMO)`` orbital energies in eV."""
        results = self._results_for(atoms)
        eps, occupations = results["eigenvalues"][0, 0], results["occupations"][0, 0]
        n_occupied = int(np.count_nonzero(occupations))
        return float(eps[n_occupied - 1]), float(eps[n_occupied])

    def get_orbital_coefficients(self, atoms=None) -> np.ndarray:
        """MO coefficients ``C`` (nao, nao), columns ordered like the eigenvalues, PySCF AO
        order, normalized against the predicted overlap (``C^T S C = 1``)."""
        return self._results_for(atoms)["orbital_coefficients"].copy()

    def get_hamiltonian(self, atoms=None) -> np.ndarray:
        """Predicted Kohn–Sham matrix ``H`` (nao, nao), eV, PySCF AO order."""
        return self._results_for(atoms)["hamiltonian"].copy()

    def get_overlap(self, atoms=None) -> np.ndarray:
        """Overlap ``S`` (nao, nao), predicted or exact as the model says, PySCF AO order."""
        return self._results_for(atoms)["overlap"].copy()

    def get_density_matrix(self, atoms=None) -> np.ndarray:
        """AO density matrix ``P`` (nao, nao), a.u., PySCF AO order: usable as PySCF's
        ``dm0``."""
        return self._results_for(atoms)["density_matrix"].copy()

    def get_hessian(self, atoms=None) -> np.ndarray:
        """Analytic Hessian ``d^2E/dR^2`` by double backward, shape (3N, 3N), eV/Å²."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise PhiSNetSetupError("no atoms: pass the atoms")
        self._check_atoms(atoms)
        z = torch.as_tensor(atoms.numbers, device=self.device)
        positions = torch.as_tensor(atoms.positions / ASE_PER_ATOMIC_UNIT["length"],
                                    dtype=self.dtype, device=self.device)
        try:
            matrix = hessian(self.model, z, positions, self.parameters.charge)
        except PhiSNetError as error:
            raise CalculationFailed(str(error)) from error
        return matrix.detach().double().cpu().numpy() * ASE_PER_ATOMIC_UNIT["hessian"]
