"""A closed-shell PySCF molecule from atomic numbers and positions in Bohr, with clear errors.

The one place that turns ``(atomic_numbers, positions_bohr, basis, charge)`` into a PySCF
``Mole`` (spherical AOs, Bohr): the reference data, the exact integrals and the wavefunction
tools all build their molecules here.
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.errors import OpenShellError, UnsupportedElementError


def check_closed_shell(atomic_numbers, charge: int) -> int:
    """Number of electrons of a restricted closed-shell molecule; raise if it is odd or < 0."""
    n_electrons = int(np.sum(atomic_numbers)) - int(charge)
    if n_electrons <= 0:
        raise OpenShellError(f"charge {charge} leaves {n_electrons} electrons")
    if n_electrons % 2:
        formula = "".join(chemical_symbols[int(z)] for z in atomic_numbers)
        raise OpenShellError(
            f"{formula} with charge {charge} has {n_electrons} electrons (odd): only restricted "
            "closed-shell molecules are supported; change the charge by one"
        )
    return n_electrons


def build_molecule(atomic_numbers, positions_bohr, basis: str, charge: int = 0):
    """A PySCF ``Mole`` (spherical AOs, Bohr) for a closed-shell molecule, with clear errors."""
    from pyscf import gto

    atomic_numbers = np.asarray(atomic_numbers, dtype=int)
    positions_bohr = np.asarray(positions_bohr, dtype=float)
    if atomic_numbers.ndim != 1 or positions_bohr.shape != (len(atomic_numbers), 3):
        raise ValueError(
            f"need atomic_numbers (N,) and positions (N, 3); got {atomic_numbers.shape} "
            f"and {positions_bohr.shape}"
        )
    check_closed_shell(atomic_numbers, charge)
    BasisLayout(basis, list(set(atomic_numbers.tolist())))  # raises UnsupportedElementError
    atoms = [[chemical_symbols[z], tuple(p)] for z, p in zip(atomic_numbers, positions_bohr)]
    try:
        return gto.M(atom=atoms, basis=basis, charge=charge, spin=0, unit="Bohr", cart=False,
                     verbose=0)
    except Exception as error:
        raise UnsupportedElementError(f"PySCF cannot build this molecule: {error}") from error
