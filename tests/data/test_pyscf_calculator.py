"""The PySCF ASE calculator: the reference record's energy and forces, in eV and eV/Å."""

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Bohr, Hartree

from ase_phisnet.data.pyscf_calculator import PySCFCalculator
from ase_phisnet.data.reference import Theory, compute_reference

WATER = molecule("H2O")


def test_dft_record_and_ase_calculator_units():
    theory = Theory(xc="pbe", basis="sto-3g", grid_level=1)
    record = compute_reference(WATER.numbers, WATER.positions / Bohr, theory)
    atoms = WATER.copy()
    atoms.calc = PySCFCalculator(theory)
    assert atoms.get_potential_energy() == pytest.approx(record.energy_eh * Hartree, abs=1e-7)
    np.testing.assert_allclose(atoms.get_forces(), record.forces_eh_per_bohr * Hartree / Bohr,
                               atol=1e-6)


def test_free_energy_dipole_and_a_failed_scf():
    from ase.calculators.calculator import CalculationFailed

    theory = Theory(xc="hf", basis="sto-3g")
    record = compute_reference(WATER.numbers, WATER.positions / Bohr, theory)
    atoms = WATER.copy()
    atoms.calc = PySCFCalculator(theory)
    # one number stored under both keys (a copy, exact)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_dipole_moment(), record.dipole_e_bohr * Bohr, atol=1e-8)
    atoms.calc = PySCFCalculator(Theory(xc="pbe", basis="def2-svp", max_cycle=2, grid_level=1))
    with pytest.raises(CalculationFailed, match="did not converge"):
        atoms.get_potential_energy()
