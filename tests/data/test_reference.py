"""PySCF reference records: content, units, and clear errors."""

import dataclasses

import numpy as np
import pytest
from ase.build import molecule
from ase.units import Bohr, Hartree
from exact_matrix_checks import central_difference

from ase_phisnet.core.errors import OpenShellError, SCFNotConvergedError, UnsupportedElementError
from ase_phisnet.data.reference import Theory, compute_reference

WATER = molecule("H2O")
STO3G_HF = Theory(xc="hf", basis="sto-3g")


def test_record_holds_a_consistent_closed_shell_solution():
    record = compute_reference(WATER.numbers, WATER.positions / Bohr, STO3G_HF)
    nao = 7
    assert record.hamiltonian_eh.shape == record.overlap.shape == (nao, nao)
    np.testing.assert_allclose(record.hamiltonian_eh, record.hamiltonian_eh.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(record.overlap), 1.0, atol=1e-12)
    # The stored orbital energies solve H C = S C eps with the stored H and S.
    import scipy.linalg

    eps = scipy.linalg.eigh(record.hamiltonian_eh, record.overlap, eigvals_only=True)
    np.testing.assert_allclose(eps, record.orbital_energies_eh, atol=1e-10)
    np.testing.assert_array_equal(record.occupations, [2, 2, 2, 2, 2, 0, 0])  # set, not computed
    # Known RHF/STO-3G energy of water near equilibrium (about -74.96 Eh).
    assert -75.0 < record.energy_eh < -74.9
    assert record.scf_cycles > 0


def test_forces_are_minus_the_energy_gradient_in_eh_per_bohr():
    positions = WATER.positions / Bohr
    record = compute_reference(WATER.numbers, positions, STO3G_HF)
    step_bohr = 1e-4
    for atom, axis in [(0, 2), (1, 1)]:
        energies = []
        for sign in (1, -1):
            displaced = positions.copy()
            displaced[atom, axis] += sign * step_bohr
            energies.append(compute_reference(WATER.numbers, displaced, STO3G_HF).energy_eh)
        numerical_force = -(energies[0] - energies[1]) / (2 * step_bohr)
        assert record.forces_eh_per_bohr[atom, axis] == pytest.approx(numerical_force, abs=1e-6)


def test_pbe_forces_are_the_energy_gradient_to_the_grids_accuracy():
    """PBE/def2-SVP forces against central differences of the energy, on all atoms and axes
    of a distorted water. Without the grid's response to moving atoms (PySCF's default, as the
    shipped data are made) they agree to the quadrature grid's error, measured 0.09 meV/Å mean
    and 0.19 meV/Å at most: a floor under every force error against those data (a sign, unit
    or missing-term error is orders above it). With ``grid_response`` they are exact."""
    rng = np.random.default_rng(0)
    positions = (WATER.positions + rng.normal(scale=0.05, size=WATER.positions.shape)) / Bohr
    theory = Theory(xc="pbe", basis="def2-svp", conv_tol=1e-12)
    record = compute_reference(WATER.numbers, positions, theory)
    numerical = -central_difference(
        lambda x: compute_reference(WATER.numbers, x, theory).energy_eh, positions, 2e-4)
    error_mev_per_ang = 1000 * Hartree / Bohr * np.abs(record.forces_eh_per_bohr - numerical)
    assert error_mev_per_ang.max() < 0.5 and error_mev_per_ang.mean() < 0.2
    # With the grid response (the same energies, so the same differences) they are exact to
    # the differences' own error (measured 1e-4 meV/Å)
    exact = compute_reference(WATER.numbers, positions,
                              dataclasses.replace(theory, grid_response=True))
    assert exact.energy_eh == pytest.approx(record.energy_eh, abs=1e-10)
    exact_error = 1000 * Hartree / Bohr * np.abs(exact.forces_eh_per_bohr - numerical)
    assert exact_error.max() < 0.01


def test_odd_electron_count_is_refused():
    with pytest.raises(OpenShellError, match="11 electrons"):
        compute_reference(WATER.numbers, WATER.positions / Bohr, Theory(xc="hf", basis="sto-3g",
                                                                         charge=-1))
    with pytest.raises(OpenShellError, match="odd"):
        compute_reference([8, 1], [[0, 0, 0], [0, 0, 1.8]], STO3G_HF)


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_element_outside_basis_is_refused():
    with pytest.raises(UnsupportedElementError, match="Rn"):
        compute_reference([86, 86], [[0, 0, 0], [0, 0, 6.0]], STO3G_HF)


def test_unconverged_scf_raises_and_gives_no_record():
    with pytest.raises(SCFNotConvergedError, match="did not converge in 2 cycles"):
        compute_reference(WATER.numbers, WATER.positions / Bohr,
                          Theory(xc="pbe", basis="def2-svp", max_cycle=2, grid_level=1))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"xc": "not-a-functional"}, "unknown exchange-correlation"),
        ({"grid_level": 12}, "grid_level"),
        ({"conv_tol": 0.0}, "conv_tol"),
        ({"max_cycle": 0}, "max_cycle"),
    ],
)
def test_theory_validates_its_fields(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Theory(**kwargs)


def test_theory_round_trips_through_a_dict():
    theory = Theory(xc="B3LYP", basis="Def2-TZVP", charge=1)
    assert theory.xc == "b3lyp" and theory.method == "rks"
    assert Theory.from_dict(theory.to_dict()) == theory
    with pytest.raises(ValueError, match="unknown keys in 'Theory'"):
        Theory.from_dict({"xc": "pbe", "functional": "pbe"})
