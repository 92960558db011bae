"""The predicted wavefunction at work: PySCF warm starts and cube files.

A PhiSNet potential predicts the whole one-electron picture (H, S, orbitals, density matrix), not
just an energy. Two uses from the PhiSNet paper:

* **SCF warm start.** The predicted AO density matrix (PySCF's AO order) is the initial guess of
  a real PySCF calculation at the model's level of theory, ``mf.kernel(dm0=P_pred)``. The
  converged answer is PySCF's own; only the number of iterations changes.
* **Densities and orbitals on a grid.** Gaussian cube files of the predicted electron density
  ``rho(r) = sum_{mu nu} P_{mu nu} phi_mu(r) phi_nu(r)`` and of chosen orbitals
  ``psi_i(r) = sum_mu C_{mu i} phi_mu(r)``, evaluated by PySCF's ``cubegen`` on the model's AO
  basis (Bohr grids; cube files are in Bohr by definition).

Orbitals are named ``"homo"``, ``"lumo"``, ``"homo-1"``, ``"lumo+2"`` or by 0-based index.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.units import Bohr

from ase_phisnet.core.molecule import build_molecule
from ase_phisnet.data.reference import Theory, make_mean_field

GUESSES = ("minao", "atom", "huckel", "1e")


def model_theory(calc) -> Theory:
    """The level of theory a calculator's model was trained on (from its model file)."""
    recorded = getattr(calc, "metadata", {}).get("training", {}).get("theory")
    if recorded:
        return Theory.from_dict(recorded)
    return Theory(basis=calc.model.config.basis)


def mean_field_from_atoms(atoms: Atoms, theory: Theory, charge: int = 0):
    """``(mol, mf)``: a PySCF molecule (Bohr, spherical AOs) and an unconverged restricted
    mean-field object for ``atoms`` at ``theory``."""
    if atoms.pbc.any():
        raise ValueError("periodic Atoms: PySCF molecules are isolated (set pbc=False)")
    mol = build_molecule(atoms.numbers, atoms.positions / Bohr, theory.basis, charge)
    return mol, make_mean_field(mol, theory)


@dataclass
class SCFRun:
    """One converged (or not) PySCF SCF: which guess, how many iterations, what energy."""

    guess: str
    cycles: int
    energy_eh: float
    wall_time_s: float
    converged: bool


def run_scf(mf, guess: str = "minao", dm0: np.ndarray | None = None) -> SCFRun:
    """Run ``mf`` from PySCF's ``guess`` or, when given, the density matrix ``dm0``.

    ``cycles`` counts SCF iterations (Fock builds after the initial guess), as PySCF logs them.
    """
    if dm0 is None and guess not in GUESSES:
        raise ValueError(f"guess must be one of {GUESSES} or a density matrix")
    count = [0]
    mf.callback = lambda envs: count.__setitem__(0, envs["cycle"] + 1)
    if dm0 is None:
        mf.init_guess = guess
    start = time.perf_counter()
    energy = mf.kernel(dm0=dm0)
    return SCFRun(guess="phisnet" if dm0 is not None else guess, cycles=count[0],
                  energy_eh=float(energy), wall_time_s=time.perf_counter() - start,
                  converged=bool(mf.converged))


def warm_start_scf(atoms: Atoms, calc, theory: Theory | None = None) -> tuple[SCFRun, object]:
    """PySCF SCF of ``atoms`` started from ``calc``'s predicted density matrix.

    ``theory`` defaults to the model's own (:func:`model_theory`). Returns the run and the
    converged mean-field object. The predicted-guess time (one model call) is included.
    """
    theory = model_theory(calc) if theory is None else theory
    start = time.perf_counter()
    dm0 = calc.get_density_matrix(atoms)
    guess_time = time.perf_counter() - start
    _, mf = mean_field_from_atoms(atoms, theory, calc.parameters.charge)
    run = run_scf(mf, dm0=dm0)
    run.wall_time_s += guess_time
    return run, mf


def orbital_index(name: str | int, n_occupied: int, n_orbitals: int) -> int:
    """0-based orbital index from ``"homo"``, ``"lumo"``, ``"homo-k"``, ``"lumo+k"`` or an int."""
    if isinstance(name, (int, np.integer)) or str(name).lstrip("-").isdigit():
        index = int(name)
    else:
        match = re.fullmatch(r"(homo|lumo)([+-]\d+)?", str(name).lower())
        if match is None:
            raise ValueError(f"orbital {name!r}: use homo, lumo, homo-K, lumo+K or an index")
        base = n_occupied - 1 if match.group(1) == "homo" else n_occupied
        index = base + int(match.group(2) or 0)
    if not 0 <= index < n_orbitals:
        raise ValueError(f"orbital {name!r} is index {index}, outside 0..{n_orbitals - 1}")
    return index


def write_density_cube(atoms: Atoms, calc, path, points_per_axis: int = 80,
                       margin_bohr: float = 3.0) -> np.ndarray:
    """Cube file of the predicted electron density (e/Bohr^3); returns the grid values."""
    from pyscf.tools import cubegen

    mol = build_molecule(atoms.numbers, atoms.positions / Bohr, calc.model.config.basis,
                         calc.parameters.charge)
    density = calc.get_density_matrix(atoms)
    return cubegen.density(mol, str(path), density, nx=points_per_axis, ny=points_per_axis,
                           nz=points_per_axis, margin=margin_bohr)


def write_orbital_cube(atoms: Atoms, calc, path, orbital: str | int = "homo",
                       points_per_axis: int = 80, margin_bohr: float = 3.0) -> np.ndarray:
    """Cube file of one predicted orbital (Bohr^-3/2); returns the grid values."""
    from pyscf.tools import cubegen

    mol = build_molecule(atoms.numbers, atoms.positions / Bohr, calc.model.config.basis,
                         calc.parameters.charge)
    coefficients = calc.get_orbital_coefficients(atoms)
    n_occupied = int(np.count_nonzero(calc.get_occupation_numbers()))
    index = orbital_index(orbital, n_occupied, coefficients.shape[1])
    return cubegen.orbital(mol, str(path), coefficients[:, index], nx=points_per_axis,
                           ny=points_per_axis, nz=points_per_axis, margin=margin_bohr)
