"""Reference electronic structure from PySCF: one geometry, one theory, one record.

Units: everything here is in atomic units, as PySCF uses them — positions in Bohr, energies and
matrix elements in Hartree (Eh), forces in Eh/Bohr, dipoles in e·Bohr. Conversion to eV/Å happens
only at the ASE boundary.

The record of one geometry (:class:`ReferenceRecord`) holds the converged Kohn–Sham/Fock matrix
``H = mf.get_fock()``, the overlap ``S = mf.get_ovlp()``, the core Hamiltonian, orbital energies
and occupations of ``H C = S C eps``, the total energy and PySCF's analytic forces. A SCF that does
not converge raises :class:`SCFNotConvergedError` and produces no record.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ase_phisnet.core._dataclasses import from_dict_checked
from ase_phisnet.core.errors import SCFNotConvergedError
from ase_phisnet.core.molecule import build_molecule


@dataclass(frozen=True)
class Theory:
    """A closed-shell reference level of theory.

    Attributes:
        xc: Exchange–correlation functional as PySCF names it (``"pbe"``, ``"b3lyp"``, ...), or
            ``"hf"`` for restricted Hartree–Fock.
        basis: PySCF basis name (``"def2-svp"``); spherical AOs are always used.
        charge: Total molecular charge in e.
        grid_level: PySCF DFT grid level (0–9, PySCF's default is 3); ignored for HF.
        conv_tol: SCF energy convergence threshold in Eh.
        conv_tol_grad: SCF orbital-gradient threshold; ``None`` uses PySCF's ``sqrt(conv_tol)``.
        max_cycle: Maximum number of SCF iterations before the SCF counts as failed.
        grid_response: DFT forces with the quadrature grid's response to moving atoms, so
            that they are exactly -dE/dR (PySCF's ``grid_response``; the gradient costs more).
            Without it (PySCF's default, and the shipped data's) PBE/def2-SVP water forces
            differ from central differences of the energy by ~0.1 meV/Å (at most 0.2).
            Ignored for HF.
    """

    xc: str = "pbe"
    basis: str = "def2-svp"
    charge: int = 0
    grid_level: int = 3
    conv_tol: float = 1e-10
    conv_tol_grad: float | None = None
    max_cycle: int = 100
    grid_response: bool = False

    def __post_init__(self):
        object.__setattr__(self, "xc", self.xc.lower())
        object.__setattr__(self, "basis", self.basis.lower())
        if self.method == "rks":
            from pyscf.dft import libxc

            try:
                libxc.parse_xc(self.xc)
            except Exception as error:
                raise ValueError(
                    f"unknown exchange-correlation functional {self.xc!r} ({error}); "
                    "use a PySCF/libxc name such as 'pbe' or 'b3lyp', or 'hf'"
                ) from None
        if not 0 <= self.grid_level <= 9:
            raise ValueError(f"grid_level must be in 0..9, got {self.grid_level}")
        if not self.conv_tol > 0:
            raise ValueError(f"conv_tol must be positive, got {self.conv_tol}")
        if self.max_cycle < 1:
            raise ValueError(f"max_cycle must be >= 1, got {self.max_cycle}")

    @property
    def method(self) -> str:
        """``"rhf"`` for Hartree–Fock, ``"rks"`` for Kohn–Sham DFT."""
        return "rhf" if self.xc == "hf" else "rks"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Theory:
        return from_dict_checked(cls, values)


@dataclass
class ReferenceRecord:
    """PySCF reference of one geometry (atomic units throughout).

    Shapes: ``N`` atoms, ``nao`` spherical AOs in PySCF's AO order.
    """

    atomic_numbers: np.ndarray  # (N,) int
    positions_bohr: np.ndarray  # (N, 3)
    energy_eh: float  # total energy, Eh
    forces_eh_per_bohr: np.ndarray  # (N, 3), -dE/dR
    hamiltonian_eh: np.ndarray  # (nao, nao) converged Fock / Kohn–Sham matrix
    overlap: np.ndarray  # (nao, nao) dimensionless
    core_hamiltonian_eh: np.ndarray  # (nao, nao) kinetic + nuclear attraction
    orbital_energies_eh: np.ndarray  # (nao,) ascending eigenvalues of H C = S C eps
    occupations: np.ndarray  # (nao,) 2 or 0
    dipole_e_bohr: np.ndarray  # (3,) electronic + nuclear, origin at 0
    scf_cycles: int
    wall_time_s: float

    ARRAY_FIELDS = (
        "atomic_numbers",
        "positions_bohr",
        "forces_eh_per_bohr",
        "hamiltonian_eh",
        "overlap",
        "core_hamiltonian_eh",
        "orbital_energies_eh",
        "occupations",
        "dipole_e_bohr",
    )
    SCALAR_FIELDS = ("energy_eh", "scf_cycles", "wall_time_s")


def make_mean_field(mol, theory: Theory):
    """An unconverged restricted PySCF mean-field object for ``theory``."""
    from pyscf import dft, scf

    if theory.method == "rhf":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = theory.xc
        mf.grids.level = theory.grid_level
    mf.conv_tol = theory.conv_tol
    if theory.conv_tol_grad is not None:
        mf.conv_tol_grad = theory.conv_tol_grad
    mf.max_cycle = theory.max_cycle
    mf.verbose = 0
    return mf


def compute_reference(atomic_numbers, positions_bohr, theory: Theory) -> ReferenceRecord:
    """Run PySCF at ``theory`` on one geometry and return its :class:`ReferenceRecord`.

    Args:
        atomic_numbers: (N,) nuclear charges.
        positions_bohr: (N, 3) Cartesian positions in Bohr.
        theory: Level of theory, basis and SCF settings.

    Raises:
        OpenShellError: Odd electron count for ``theory.charge``.
        UnsupportedElementError: ``theory.basis`` does not cover an element.
        SCFNotConvergedError: The SCF did not converge within ``theory.max_cycle``.
    """
    start = time.perf_counter()
    mol = build_molecule(atomic_numbers, positions_bohr, theory.basis, theory.charge)
    mf = make_mean_field(mol, theory)
    cycles = [0]
    mf.callback = lambda envs: cycles.__setitem__(0, envs["cycle"] + 1)
    energy = mf.kernel()
    if not mf.converged:
        raise SCFNotConvergedError(
            f"{theory.method.upper()} {theory.xc}/{theory.basis} did not converge in "
            f"{theory.max_cycle} cycles (last energy {energy:.10f} Eh)"
        )
    gradient_method = mf.nuc_grad_method()
    if theory.method == "rks":
        gradient_method.grid_response = theory.grid_response
    gradient = gradient_method.kernel()
    # Orbital energies and occupations of exactly the stored H and S (mf.mo_energy belongs to
    # the last DIIS-extrapolated Fock matrix, which differs from get_fock() by ~conv_tol_grad).
    fock, overlap = mf.get_fock(), mf.get_ovlp()
    orbital_energies, orbitals = mf.eig(fock, overlap)
    record = ReferenceRecord(
        atomic_numbers=np.asarray(atomic_numbers, dtype=np.int64),
        positions_bohr=np.asarray(positions_bohr, dtype=np.float64),
        energy_eh=float(energy),
        forces_eh_per_bohr=-np.asarray(gradient),
        hamiltonian_eh=np.asarray(fock),
        overlap=np.asarray(overlap),
        core_hamiltonian_eh=np.asarray(mf.get_hcore()),
        orbital_energies_eh=np.asarray(orbital_energies),
        occupations=np.asarray(mf.get_occ(orbital_energies, orbitals)),
        dipole_e_bohr=np.asarray(mf.dip_moment(unit="AU", verbose=0)),
        scf_cycles=int(cycles[0]),
        wall_time_s=time.perf_counter() - start,
    )
    return record
