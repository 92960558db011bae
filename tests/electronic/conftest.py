"""Fixtures of the electronic-structure tests."""

import pytest
from ase.build import molecule
from pyscf import gto, scf


@pytest.fixture(scope="session")
def methane_rhf():
    """Converged RHF/def2-SVP of methane: triply degenerate occupied t2 orbitals."""
    atoms = molecule("CH4")
    mol = gto.M(atom=[[s, p] for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
                basis="def2-svp", verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-12
    mf.conv_tol_grad = 1e-9
    mf.kernel()
    return atoms, mol, mf
