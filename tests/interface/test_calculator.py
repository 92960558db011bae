"""PhiSNetCalculator: exact derivatives, symmetry, energy conservation, ASE's contract, one
network pass per geometry, bad input, and the model's training domain."""

import warnings
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import (
    CalculationFailed,
    CalculatorSetupError,
    PropertyNotImplementedError,
)
from ase.calculators.fd import calculate_numerical_forces
from ase.collections import s22
from ase.dft.bandgap import bandgap
from ase.units import Bohr, fs

from ase_phisnet.interface.calculator import (
    OutsideTrainingDomainError,
    OutsideTrainingDomainWarning,
    PhiSNetCalculator,
)


@pytest.fixture(scope="module")
def water_calc(small_potential):
    path, _ = small_potential("H2O")
    return PhiSNetCalculator(model=path)


@pytest.fixture(scope="module")
def methane_calc(small_potential):
    path, _ = small_potential("CH4")
    return PhiSNetCalculator(model=path)


@pytest.fixture(scope="module")
def water_exact_overlap_calc(small_potential, tmp_path_factory):
    """The water potential with S from the integrals (``exact_overlap``) instead of its head."""
    from ase_phisnet.electronic.model import with_exact_overlap
    from ase_phisnet.electronic.model_file import load_model, save_model

    path, _ = small_potential("H2O")
    exact = tmp_path_factory.mktemp("exact") / "exact_overlap.pt"
    save_model(with_exact_overlap(load_model(path)), exact)
    return PhiSNetCalculator(model=str(exact))


@pytest.fixture(scope="module")
def water_band_structure_calc(small_potential, tmp_path_factory):
    """The water potential with the band-structure energy model (no core H) and exact S."""
    from ase_phisnet.electronic.model import reconfigured, with_exact_overlap
    from ase_phisnet.electronic.model_file import load_model, save_model

    path, _ = small_potential("H2O")
    band = reconfigured(with_exact_overlap(load_model(path)), energy_model="band_structure",
                        matrices=("hamiltonian",))
    file = tmp_path_factory.mktemp("band") / "band_structure.pt"
    save_model(band, file)
    return PhiSNetCalculator(model=str(file))


def displaced(name, seed, scale=0.03):
    atoms = molecule(name)
    atoms.positions += scale * np.random.default_rng(seed).normal(size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("name,calc_fixture", [("H2O", "water_calc"), ("CH4", "methane_calc"),
                                               ("H2O", "water_exact_overlap_calc"),
                                               ("H2O", "water_band_structure_calc")])
def test_forces_are_minus_the_energy_gradient(name, calc_fixture, request):
    calc = request.getfixturevalue(calc_fixture)
    for atoms in (molecule(name), displaced(name, 0)):  # CH4 at Td: degenerate t2 orbitals
        atoms.calc = calc
        forces = atoms.get_forces()
        assert np.isfinite(forces).all()
        numerical = calculate_numerical_forces(atoms, eps=1e-4)
        np.testing.assert_allclose(forces, numerical, atol=2e-6 + 1e-5 * np.abs(forces).max())


def test_methane_at_td_has_degenerate_occupied_orbitals_and_finite_forces(methane_calc):
    atoms = molecule("CH4")
    atoms.calc = methane_calc
    forces = atoms.get_forces()
    eps = atoms.calc.get_eigenvalues()
    assert np.ptp(eps[2:5]) < 1e-8  # t2: exactly degenerate by equivariance
    # torch's eigh backward is NaN here (tests/test_electronic.py); ours is finite, and by
    # symmetry the net force on the carbon vanishes.
    assert np.isfinite(forces).all()
    assert np.abs(forces[0]).max() < 1e-8


@pytest.mark.parametrize("name,calc_fixture", [("H2O", "water_calc"), ("CH4", "methane_calc"),
                                               ("H2O", "water_exact_overlap_calc"),
                                               ("H2O", "water_band_structure_calc")])
def test_hessian_is_symmetric_and_matches_finite_differences(name, calc_fixture, request):
    calc = request.getfixturevalue(calc_fixture)
    atoms = displaced(name, 1)
    atoms.calc = calc
    hessian = calc.get_hessian(atoms)
    n = 3 * len(atoms)
    assert hessian.shape == (n, n)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-10)
    step = 1e-4
    numerical = np.zeros((n, n))
    for k in range(n):
        columns = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions.reshape(-1)[k] += sign * step
            moved.calc = calc
            columns.append(-moved.get_forces().reshape(-1))
        numerical[:, k] = (columns[0] - columns[1]) / (2 * step)
    np.testing.assert_allclose(hessian, numerical, atol=1e-4 * np.abs(hessian).max())


@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_energy_is_invariant_and_forces_dipole_and_hessian_transform(water_calc, element):
    """Under ``R -> g R + t`` (a proper or improper rotation and a shift): E and the charges
    unchanged, forces and dipole rotated by ``g``, the Hessian by ``G H G^T`` with
    ``G = I_A ⊗ g`` (float64 throughout; tolerances ~1e3x the float64 rounding)."""
    from symmetry import group_elements

    atoms = displaced("H2O", 2)
    atoms.calc = water_calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    dipole, charges = atoms.get_dipole_moment(), atoms.get_charges()
    hessian = water_calc.get_hessian(atoms)
    g = group_elements(0)[element].numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions @ g.T + np.array([1.0, -2.0, 0.5])
    moved.calc = water_calc
    assert moved.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(moved.get_forces(), forces @ g.T, atol=1e-9)
    np.testing.assert_allclose(moved.get_charges(), charges, atol=1e-9)
    np.testing.assert_allclose(moved.get_dipole_moment(), dipole @ g.T, atol=1e-8)
    big_g = np.kron(np.eye(len(atoms)), g)
    np.testing.assert_allclose(water_calc.get_hessian(moved), big_g @ hessian @ big_g.T,
                               atol=1e-7 * np.abs(hessian).max())


def test_results_follow_a_permutation_of_the_atoms(methane_calc):
    """Reordering the atoms (the carbon last, the hydrogens shuffled) reorders forces, charges
    and Hessian blocks and leaves E, the dipole and the orbital energies unchanged."""
    atoms = displaced("CH4", 4)
    atoms.calc = methane_calc
    energy, forces, charges = (atoms.get_potential_energy(), atoms.get_forces(),
                               atoms.get_charges())
    dipole, eigenvalues = atoms.get_dipole_moment(), methane_calc.get_eigenvalues()
    hessian = methane_calc.get_hessian(atoms).reshape(5, 3, 5, 3)
    order = [2, 4, 1, 3, 0]
    permuted = atoms[order]
    permuted.calc = methane_calc
    assert permuted.get_potential_energy() == pytest.approx(energy, abs=1e-9)
    np.testing.assert_allclose(permuted.get_forces(), forces[order], atol=1e-9)
    np.testing.assert_allclose(permuted.get_charges(), charges[order], atol=1e-9)
    np.testing.assert_allclose(permuted.get_dipole_moment(), dipole, atol=1e-8)
    np.testing.assert_allclose(methane_calc.get_eigenvalues(), eigenvalues, atol=1e-8)
    np.testing.assert_allclose(methane_calc.get_hessian(permuted).reshape(5, 3, 5, 3),
                               hessian[order][:, :, order], atol=1e-7 * np.abs(hessian).max())


# The small model's untrained forces stretch the bonds beyond its 12 training geometries.
@pytest.mark.filterwarnings("ignore::ase_phisnet.interface.calculator.OutsideTrainingDomainWarning")
def test_short_nve_run_conserves_energy(water_calc):
    """Velocity Verlet conserves E_kin + E_pot to O(dt^2) only if forces are exactly -dE/dR.

    The small test model's surface is not physical (its forces, ~100 eV/Å at equilibrium,
    were not trained), so this is a consistency check over 1 fs from rest, not a production MD.
    """
    from ase.md.verlet import VelocityVerlet

    atoms = displaced("H2O", 3, scale=0.01)
    atoms.calc = water_calc
    energies = []
    dynamics = VelocityVerlet(atoms, timestep=0.005 * fs)
    dynamics.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dynamics.run(200)
    energies = np.array(energies)
    kinetic = atoms.get_kinetic_energy()
    drift = energies[-1] - energies[0]
    print(f"NVE consistency: kinetic energy reached {kinetic:.3f} eV, total energy drift "
          f"{drift:.2e} eV, fluctuation {energies.std():.2e} eV over 1 fs")
    assert kinetic > 0.01  # the atoms really moved
    assert abs(drift) < 1e-4 * kinetic and energies.std() < 1e-4 * kinetic


def test_results_and_electronic_accessors(water_calc):
    atoms = molecule("H2O")
    atoms.calc = water_calc
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.calc.results["free_energy"] == energy
    eps = atoms.calc.get_eigenvalues()
    occupations = atoms.calc.get_occupation_numbers()
    assert eps.shape == (7,) and np.all(np.diff(eps) >= 0)
    assert occupations.sum() == 10 and atoms.calc.get_number_of_spins() == 1
    homo, lumo = atoms.calc.get_homo_lumo()
    assert homo < atoms.calc.get_fermi_level() < lumo
    gap, *_ = bandgap(atoms.calc, output=None)
    assert gap == pytest.approx(lumo - homo)
    assert atoms.get_charges().sum() == pytest.approx(0.0, abs=1e-10)
    hamiltonian = atoms.calc.results["hamiltonian"]
    np.testing.assert_allclose(hamiltonian, hamiltonian.T, atol=1e-12)
    density = atoms.calc.get_density_matrix()
    overlap = atoms.calc.results["overlap"]
    assert np.trace(density @ overlap) == pytest.approx(10.0)


def test_density_matrix_is_a_pyscf_initial_guess(water_calc):
    from pyscf import scf

    from ase_phisnet.core.molecule import build_molecule

    atoms = molecule("H2O")
    atoms.calc = water_calc
    mol = build_molecule(atoms.numbers, atoms.positions / Bohr, "sto-3g")
    mf = scf.RHF(mol)
    mf.verbose = 0
    guess = atoms.calc.get_density_matrix(atoms)
    # a guess near the solution (the small model is trained on RHF/STO-3G): its energy lies
    # far below that of the core-Hamiltonian guess, and the SCF from it converges to PySCF's
    assert mf.energy_tot(dm=guess) < mf.energy_tot(dm=mf.get_init_guess(key="1e")) - 1.0
    energy = mf.kernel(dm0=guess)
    assert mf.converged and energy == pytest.approx(scf.RHF(mol).kernel(), abs=1e-8)
    assert mf.energy_tot(dm=guess) - energy < 1e-2  # within 10 mEh of the converged energy


def test_calculator_caches_and_follows_check_state(water_calc):
    atoms = displaced("H2O", 11)  # a geometry no other test has computed
    atoms.calc = water_calc
    calls = []
    original = water_calc.calculate

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    water_calc.calculate = counting
    try:
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_charges()
        water_calc.get_eigenvalues()
        assert len(calls) == 1
        atoms.positions[0, 0] += 0.01
        atoms.get_potential_energy()
        assert len(calls) == 2
        assert water_calc.check_state(atoms) == []
    finally:
        del water_calc.calculate
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


@pytest.mark.parametrize(
    "atoms,kwargs,message",
    [
        (molecule("CH4"), {}, r"knows elements \['H', 'O'\]; got \['C'\]"),
        (molecule("H2O"), {"charge": 1}, "odd"),
        (Atoms(), {}, "empty Atoms"),
        (Atoms("H2O", positions=molecule("H2O").positions, cell=[5, 5, 5], pbc=True), {},
         "periodic"),
    ],
)
def test_bad_atoms_are_setup_errors(small_potential, atoms, kwargs, message):
    path, _ = small_potential("H2O")
    atoms.calc = PhiSNetCalculator(model=path, **kwargs)
    with pytest.raises(CalculatorSetupError, match=message):
        atoms.get_potential_energy()


def test_bad_settings_and_files_are_setup_errors(small_potential, tmp_path):
    path, _ = small_potential("H2O")
    with pytest.raises(CalculatorSetupError, match="basis mismatch"):
        PhiSNetCalculator(model=path, basis="def2-svp")
    with pytest.raises(CalculatorSetupError, match="dtype"):
        PhiSNetCalculator(model=path, dtype="float16")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"junk")
    (tmp_path / "broken.pt.json").write_text(Path(path + ".json").read_text())
    with pytest.raises(CalculatorSetupError, match="corrupt"):
        PhiSNetCalculator(model=str(broken))
    with pytest.raises(CalculatorSetupError, match="no model file or shipped potential"):
        PhiSNetCalculator(model="no-such-potential")


def test_electronic_results_have_ase_shapes_and_getters_return_copies(water_calc):
    atoms = displaced("H2O", 12)
    atoms.calc = water_calc
    atoms.get_potential_energy()
    results = water_calc.results
    nao = results["hamiltonian"].shape[0]
    assert results["eigenvalues"].shape == results["occupations"].shape == (1, 1, nao)
    assert water_calc.get_number_of_bands() == nao and not water_calc.get_spin_polarized()
    np.testing.assert_array_equal(water_calc.get_ibz_k_points(), np.zeros((1, 3)))
    np.testing.assert_array_equal(water_calc.get_k_point_weights(), [1.0])
    properties = water_calc.export_properties()  # ASE's outputs only; shapes checked by ASE
    assert (properties["nspins"], properties["nkpts"], properties["nbands"]) == (1, 1, nao)
    eps = water_calc.get_eigenvalues(kpt=0, spin=0)
    eps[:] = 0.0  # a caller's array: the calculator's results must not change with it
    assert np.ptp(water_calc.get_eigenvalues()) > 1.0  # eV: core to virtual orbitals


def test_bandgap_is_the_homo_lumo_gap(water_calc):
    """ASE's bandgap() reads the calculator like any other; 1e-10 eV is float64 rounding of
    energies of order 10-500 eV shifted by the Fermi level."""
    atoms = displaced("H2O", 13)
    atoms.calc = water_calc
    atoms.get_potential_energy()
    homo, lumo = water_calc.get_homo_lumo()
    gap, valence, conduction = bandgap(water_calc, output=None)
    assert lumo - homo > 1.0  # eV: a closed-shell molecule has a real gap
    assert gap == pytest.approx(lumo - homo, abs=1e-10)
    assert valence == (0, 0, 4) and conduction == (0, 0, 5)  # 5 doubly occupied orbitals
    assert water_calc.get_fermi_level() == pytest.approx((homo + lumo) / 2, abs=1e-10)


def test_one_network_pass_fills_every_result(small_potential, monkeypatch):
    path, _ = small_potential("H2O")
    calc = PhiSNetCalculator(model=path)
    calls = []
    original = calc.model.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(calc.model, "forward", counting)
    atoms = displaced("H2O", 14)
    atoms.calc = calc
    atoms.get_potential_energy()
    dipole = atoms.get_dipole_moment()
    charges = atoms.get_charges()
    density = calc.get_density_matrix()
    eps = calc.get_eigenvalues()
    forces = atoms.get_forces()
    coefficients = calc.get_orbital_coefficients(atoms)
    calc.get_homo_lumo()
    calc.get_occupation_numbers()
    assert len(calls) == 1
    # The results belong together: P = 2 C_occ C_occ^T, 10 electrons in Tr[P S], net charge 0,
    # no net force (translation invariance), a finite dipole of a neutral molecule.
    occupied = coefficients[:, :5]
    np.testing.assert_allclose(density, 2 * occupied @ occupied.T, atol=1e-10)
    assert np.trace(density @ calc.results["overlap"]) == pytest.approx(10.0, abs=1e-8)
    assert charges.sum() == pytest.approx(0.0, abs=1e-8)
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-8)
    assert np.isfinite(dipole).all() and eps.shape == (density.shape[0],)
    atoms.positions[0, 0] += 0.01  # Å: a new geometry is one new pass
    atoms.get_forces()
    assert len(calls) == 2


def energy_or_failure(atoms):
    """The potential energy (eV), or the ``CalculationFailed`` the calculator raised."""
    try:
        return atoms.get_potential_energy()
    except CalculationFailed as error:
        return error


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_positions_are_named(small_potential, bad):
    path, _ = small_potential("H2O")
    atoms = molecule("H2O")
    atoms.positions[2, 1] = bad
    atoms.calc = PhiSNetCalculator(model=path)
    with pytest.raises(CalculatorSetupError, match=r"non-finite positions .* atom\(s\) 2 \(H"):
        atoms.get_potential_energy()
    with pytest.raises(CalculatorSetupError, match="non-finite positions"):
        atoms.calc.get_hessian(atoms)


def test_charge_must_be_a_whole_number(small_potential):
    path, _ = small_potential("H2O")
    for charge in (0.5, float("nan"), "one"):
        with pytest.raises(CalculatorSetupError, match="whole number"):
            PhiSNetCalculator(model=path, charge=charge)
    calc = PhiSNetCalculator(model=path, charge=2.0)
    assert calc.parameters.charge == 2 and isinstance(calc.parameters.charge, int)
    with pytest.raises(CalculatorSetupError, match="whole number"):
        calc.set(charge=-0.5)
    assert calc.parameters.charge == 2


def test_changing_the_charge_discards_the_results(small_potential):
    """ASE's base ``set`` keeps results by default: the cation must not get the neutral's."""
    path, _ = small_potential("H2O")
    atoms = molecule("H2O")
    atoms.calc = PhiSNetCalculator(model=path)
    neutral = atoms.get_potential_energy()
    with pytest.warns(OutsideTrainingDomainWarning, match="charge 2 differs from the training "
                                                          "data's charge 0"):
        assert atoms.calc.set(charge=2) == {"charge": 2}
        assert atoms.calc.results == {}
        dication = energy_or_failure(atoms)
    assert not isinstance(dication, float) or abs(dication - neutral) > 1e-3
    assert atoms.calc.set(charge=2) == {}  # unchanged: nothing to discard


def test_unknown_parameters_are_refused(small_potential):
    path, _ = small_potential("H2O")
    with pytest.raises(CalculatorSetupError,
                       match=r"unknown calculator parameter\(s\) \['chrage'\]"):
        PhiSNetCalculator(model=path, chrage=2)
    calc = PhiSNetCalculator(model=path)
    with pytest.raises(CalculatorSetupError, match="constructor arguments"):
        calc.set(strict=True)


def test_another_charge_is_outside_the_domain_when_strict(small_potential):
    path, _ = small_potential("H2O")
    atoms = molecule("H2O")
    atoms.calc = PhiSNetCalculator(model=path, charge=2, strict=True)
    with pytest.raises(OutsideTrainingDomainError, match="charge 2 differs"):
        atoms.get_potential_energy()
    atoms.calc = PhiSNetCalculator(model=path)
    atoms.calc.set(charge=-4)  # 14 electrons in water's 7 STO-3G orbitals
    with pytest.raises(CalculatorSetupError, match="needs an empty orbital"):
        atoms.get_potential_energy()


def test_a_matrix_only_model_is_refused_at_construction(small_potential):
    from ase_phisnet.electronic.model import PhiSNetModel

    path, _ = small_potential("H2O")
    calc = PhiSNetCalculator(model=path)
    matrix_only = PhiSNetModel(dataclasses_replace(calc.model.config, matrices=("hamiltonian",),
                                                   exact_overlap=False))
    with pytest.raises(CalculatorSetupError, match="matrix-only model"):
        PhiSNetCalculator(model=matrix_only)


def test_geometry_outside_training_data_warns_once_per_kind(small_potential):
    """MD calls the calculator every step: one warning per kind of problem, not per step."""
    path, _ = small_potential("H2O")
    calc = PhiSNetCalculator(model=path)

    def outside(oh_factor):
        """Water with one O-H bond scaled by ``oh_factor`` (ASE's bond 0.97 Å)."""
        atoms = molecule("H2O")
        atoms.positions[1] = atoms.positions[0] + oh_factor * (atoms.positions[1]
                                                               - atoms.positions[0])
        atoms.calc = calc
        energy_or_failure(atoms)  # the small test model may fail there; the check came first

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for factor in (0.6, 0.59, 0.58):  # 0.58-0.56 Å, far below any training O-H bond
            outside(factor)
        outside(1.8)  # 1.75 Å: another kind of problem, warned once more
    messages = [str(w.message) for w in caught if w.category is OutsideTrainingDomainWarning]
    assert len(messages) == 2
    assert "H-O distance 0.58" in messages[0] and "below the training range" in messages[0]
    assert "above the training range" in messages[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = molecule("H2O")
        fresh.calc = calc
        fresh.get_potential_energy()


def test_electronic_features_beyond_their_bounds_are_outside_the_domain():
    """A feature the energy network sees saturated is outside the training data: a warning
    naming the feature, atom and distance; an error with strict. The shipped water file's
    bounds hold its equilibrium geometry, so narrow ones are set here."""
    from ase_phisnet.electronic.model_file import load_model
    from ase_phisnet.interface.calculator import resolve_model_path

    model = load_model(resolve_model_path("water-pbe-def2svp"))
    assert bool(torch.isfinite(model.remainder.feature_upper).all())
    with torch.no_grad():
        model.remainder.feature_lower.fill_(-0.01)
        model.remainder.feature_upper.fill_(0.01)
    atoms = molecule("H2O")
    atoms.calc = PhiSNetCalculator(model=model)
    with pytest.warns(OutsideTrainingDomainWarning,
                      match=r"electronic feature (population|band_energy_eh)_[spd] of atom \d "
                            r"\((H|O)\) is \d+\.\d+ training standard deviations beyond"):
        assert np.isfinite(atoms.get_potential_energy())
    atoms.calc = PhiSNetCalculator(model=model, strict=True)
    with pytest.raises(OutsideTrainingDomainError, match="electronic feature"):
        atoms.get_potential_energy()


def test_model_without_a_domain_is_not_checked(small_potential):
    from ase_phisnet.electronic.model_file import load_model

    path, _ = small_potential("H2O")
    calc = PhiSNetCalculator(model=load_model(path), strict=True)
    assert calc.training_domain is None
    atoms = molecule("H2O")
    atoms.positions[1] *= 1.5  # far outside the data, but nothing records that
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(atoms.get_potential_energy())


@pytest.mark.parametrize("model,atoms,formula", [
    ("water-pbe-def2svp", s22["Water_dimer"], "H4O2"),
    ("ethanol-pbe-def2svp", molecule("CH3OH"), "CH4O"),
])
@pytest.mark.filterwarnings(  # a dimer's features also leave their range; expected, not asserted
    "ignore:geometry outside the model's training domain.*electronic feature")
def test_other_molecules_of_known_elements_are_outside_the_domain(model, atoms, formula):
    """A water dimer is not water, methanol is not ethanol: the shipped potentials say so."""
    atoms = atoms.copy()
    atoms.calc = PhiSNetCalculator(model=model)
    with pytest.warns(OutsideTrainingDomainWarning, match=f"composition {formula} is not"):
        outcome = energy_or_failure(atoms)
    # A warning, not a refusal: the model runs, and gives an energy or fails on its own (the
    # water model's predicted S is indefinite for the dimer).
    if isinstance(outcome, CalculationFailed):
        assert "training data" in str(outcome)
    else:
        assert np.isfinite(outcome)
    strict = PhiSNetCalculator(model=model, strict=True)
    calls = []
    strict.model.forward = lambda *args, **kwargs: calls.append(1)
    atoms.calc = strict
    with pytest.raises(OutsideTrainingDomainError, match=f"composition {formula} is not"):
        atoms.get_potential_energy()
    assert calls == []  # refused before the network ran
    assert issubclass(OutsideTrainingDomainError, CalculatorSetupError)


def test_thermal_water_on_the_shipped_model_is_inside_the_domain():
    """20 fs (two O-H periods) of 300 K velocity Verlet from ASE's water geometry: no step
    leaves the domain."""
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    atoms = molecule("H2O")
    atoms.calc = PhiSNetCalculator(model="water-pbe-def2svp", strict=True)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(5))
    bonds = []
    dynamics = VelocityVerlet(atoms, timestep=0.5 * fs)
    dynamics.attach(lambda: bonds.append(atoms.get_distance(0, 1)), interval=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutsideTrainingDomainWarning)
        dynamics.run(40)  # strict: any step outside would raise
    assert np.ptp(bonds) > 0.01  # Å: the bond really vibrated


def test_a_model_instance_is_copied_and_matrices_have_getters(water_calc):
    """A PhiSNetModel handed in is copied: the calculator's dtype and device changes leave
    the caller's model as it was. H and S have getters that compute when needed."""
    model = water_calc.model
    assert next(model.parameters()).dtype == torch.float64
    other = PhiSNetCalculator(model=model, dtype="float32")
    assert next(other.model.parameters()).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float64
    atoms = molecule("H2O")
    atoms.calc = water_calc
    hamiltonian, overlap = water_calc.get_hamiltonian(atoms), water_calc.get_overlap(atoms)
    nao = hamiltonian.shape[0]
    assert hamiltonian.shape == overlap.shape == (nao, nao)
    np.testing.assert_allclose(hamiltonian, hamiltonian.T, rtol=0, atol=1e-10)  # symmetric
    np.testing.assert_allclose(np.diag(overlap), 1.0, rtol=0, atol=1e-6)  # normalized AOs
