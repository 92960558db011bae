"""The composed model: configuration, energy invariant and forces covariant under rotations,
reflections, translations and permutations; forces are -dE/dR (finite differences) for a
TraceGrad model and for a float32 network with a float64 eigensolver; reconfiguring keeps
weights; the energy models and the pair prior compose as documented."""

import copy

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from model_settings import PREDICTED_MATRICES
from symmetry import DTYPES, TOLERANCE, ao_D, assert_equivariant, group_elements, relative_error

from ase_phisnet.core.molecule import build_molecule
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.energy import nuclear_repulsion_eh
from ase_phisnet.electronic.model import (
    ModelConfig,
    PhiSNetModel,
    energy_and_forces,
    hessian,
    predict_energy,
    reconfigured,
    with_exact_overlap,
)
from ase_phisnet.electronic.priors import zbl_repulsion_eh

SMALL = {"channels": (8, 4, 4, 2, 2), "num_layers": 2, "num_radial": 8, "radial_hidden": 16}
CASES = {
    # the default: H over the exact H_core + V_SAP, S and H_core exact, PhiSNet's energy
    "default": {},
    # PhiSNet's energy (H, core H predicted, S exact), TraceGrad features switched on
    "phisnet_tracegrad": {"exact_overlap": True, "tracegrad": True, "baseline": "none",
                          "exact_core_hamiltonian": False,
                          "matrices": ("hamiltonian", "core_hamiltonian")},
    # band-structure energy with the ZBL prior (the geometry below is compressed into it)
    # (cutoff at the full covalent radii sum, so the squeezed water test geometry is inside it)
    "band_structure_zbl": {"exact_overlap": True, "matrices": ("hamiltonian",),
                           "energy_model": "band_structure", "pair_repulsion": "zbl",
                           "pair_repulsion_cutoff_scale": 1.0},
    # the network learns H - H_core over the exact core Hamiltonian
    "core_baseline": {"exact_overlap": True, "matrices": ("hamiltonian",),
                      "energy_model": "band_structure", "baseline": "core"},
    # the one-potential kind: band energy plus a message-passing remainder of the geometry and
    # the electronic atom features
    "message_passing": {"remainder": "message_passing", "energy_model": "band_structure",
                        "remainder_channels": 8, "remainder_layers": 2},
}


def make_model(seed=1, **settings):
    """A small random water model in float64; TraceGrad's zero-initialized back-projections
    are randomized so that its gradient features count."""
    torch.manual_seed(seed)
    model = PhiSNetModel(ModelConfig(basis="def2-svp", elements=("H", "O"), **SMALL, **settings))
    if model.tracegrad is not None:
        with torch.no_grad():
            model.tracegrad.atom_back.weight.normal_(std=0.3)
            model.tracegrad.pair_back.weight.normal_(std=0.3)
    return model.double()


def water_bohr(seed=0):
    """Water squeezed to 85 % (O-H inside the ZBL range) and distorted, Bohr (float64)."""
    atoms = molecule("H2O")
    rng = np.random.default_rng(seed)
    positions = 0.85 * atoms.positions + 0.05 * rng.normal(size=(3, 3))
    return torch.tensor(atoms.numbers), torch.tensor(positions / Bohr)


def finite_difference_hessian(model, z, positions, step=1e-3):
    """``(3A, 3A)`` Hessian from fourth-order central differences of the model's analytic
    forces at ``step`` Bohr, symmetrized."""
    rows = []
    for k in range(positions.numel()):
        def forces_at(shift, k=k):
            moved = positions.clone().reshape(-1)
            moved[k] += shift
            return energy_and_forces(model, z, moved.reshape(positions.shape))[1].reshape(-1)
        rows.append(-(-forces_at(2 * step) + 8 * forces_at(step) - 8 * forces_at(-step)
                      + forces_at(-2 * step)) / (12 * step))
    numerical = torch.stack(rows)
    return 0.5 * (numerical + numerical.T)


def central_difference_forces(energy, positions, step):
    """``-dE/dR`` by fourth-order central differences, and the energies it evaluated."""
    forces, evaluated = torch.zeros_like(positions), []
    for atom in range(positions.shape[0]):
        for axis in range(3):
            values = []
            for t in (step, -step, 2 * step, -2 * step):
                moved = positions.clone()
                moved[atom, axis] += t
                values.append(energy(moved))
            evaluated += values
            forces[atom, axis] = -(8 * (values[0] - values[1]) - (values[2] - values[3])) / (
                12 * step)
    return forces, evaluated


def energy_of(model, z):
    def energy(positions):
        with torch.no_grad():
            return float(predict_energy(model, z, positions, derivative_order=1).energy_eh)
    return energy


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_energy_invariant_forces_and_matrices_covariant(case, dtype):
    """E(g x + t) = E(x), F(g x + t) = g F(x), M(g x + t) = D_ao M D_ao^T for a rotation and
    a reflection g; permuted atoms permute forces and AO blocks. The network runs in ``dtype``
    (float32: the fast path), the eigensolver in float64 (the positions' dtype)."""
    model = make_model(**CASES[case]).to(dtype)
    z, positions = water_bohr()
    reference, forces = energy_and_forces(model, z, positions)
    if case == "band_structure_zbl":
        assert float(zbl_repulsion_eh(z, positions, cutoff_scale=1.0)) > 1e-3  # it takes part
    shift = torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)
    for element, g in group_elements(3).items():
        moved, moved_forces = energy_and_forces(model, z, positions @ g.T + shift)
        assert_equivariant(moved.energy_eh, reference.energy_eh, dtype, f"energy, {element}")
        assert_equivariant(moved_forces, forces @ g.T, dtype, f"forces, {element}")
        d = ao_D(model.layout, z.tolist(), g)
        for key, matrix in reference.matrices.items():
            assert_equivariant(moved.matrices[key], d @ matrix @ d.T, dtype, f"{key}, {element}")
        # the occupied orbital energies (H C = S C eps) are invariant
        assert_equivariant(moved.solution.orbital_energies_eh[:5],
                           reference.solution.orbital_energies_eh[:5], dtype, "eps")

    order = torch.tensor([2, 0, 1])
    permuted, permuted_forces = energy_and_forces(model, z[order], positions[order])
    assert_equivariant(permuted.energy_eh, reference.energy_eh, dtype, "energy, permutation")
    assert_equivariant(permuted_forces, forces[order], dtype, "forces, permutation")
    ao = torch.cat([torch.arange(s.start, s.stop)
                    for s in (model.layout.ao_slices(z.tolist())[i] for i in order)])
    for key, matrix in reference.matrices.items():
        assert_equivariant(permuted.matrices[key], matrix[ao][:, ao], dtype, f"{key}, permutation")


def test_tracegrad_forces_are_minus_the_energy_gradient():
    """TraceGrad features are gradients inside the forward pass, so forces differentiate
    through a gradient: checked against fourth-order central differences, float64. Measured
    difference 6e-11 Eh/Bohr at step 1e-3 Bohr (forces up to ~10 Eh/Bohr)."""
    model = make_model(**CASES["phisnet_tracegrad"])
    z, positions = water_bohr(seed=1)
    _, forces = energy_and_forces(model, z, positions)
    numerical, _ = central_difference_forces(energy_of(model, z), positions, 1e-3)
    assert float(forces.abs().max()) > 0.1
    torch.testing.assert_close(forces, numerical, rtol=0, atol=1e-8)


def _pyscf_baseline(baseline, numbers, positions_bohr, sap_basis="sapgrasplarge"):
    """PySCF's own ``get_hcore()`` (plus ``make_sap`` with the Gaussian charges of
    ``sap_basis`` for ``core_sap``) at one geometry, Eh."""
    from pyscf import scf
    from pyscf.scf.hf import make_sap

    from ase_phisnet.core.sap import load_sap_basis

    mean_field = scf.RHF(build_molecule(numbers, positions_bohr, "def2-svp"))
    matrix = mean_field.get_hcore()
    if baseline == "core_sap":
        charges = {s: load_sap_basis(sap_basis, s) for s in ("H", "O")}
        matrix = matrix + make_sap(mean_field.mol, charges)
    return torch.as_tensor(matrix)


@pytest.mark.parametrize("baseline,sap_basis", [("core", "sapgrasplarge"),
                                                ("core_sap", "sapgrasplarge"),
                                                ("core_sap", "sapgraspsmall"),
                                                ("core_sap", "sapcompact")])
def test_baseline_adds_pyscf_matrices_with_exact_forces(baseline, sap_basis):
    """``baseline="core"``: H is the network's head plus PySCF's ``get_hcore()`` at the same
    geometry; ``"core_sap"``: plus PySCF's superposition of atomic potentials (1e-10 Eh,
    integral precision). The forces stay -dE/dR (fourth-order central differences at 1e-3
    Bohr; measured ~1e-10 Eh/Bohr, the tolerance leaves 100x)."""
    model = make_model(**{**CASES["core_baseline"], "baseline": baseline,
                          "sap_basis": sap_basis})
    z, positions = water_bohr(seed=2)
    outputs = model(z, positions)
    network_h = model.network(z, positions)["hamiltonian"]
    torch.testing.assert_close(outputs["hamiltonian"] - network_h,
                               _pyscf_baseline(baseline, z.numpy(), positions.numpy(), sap_basis),
                               rtol=0, atol=1e-10)
    _, forces = energy_and_forces(model, z, positions)
    numerical, _ = central_difference_forces(energy_of(model, z), positions, 1e-3)
    torch.testing.assert_close(forces, numerical, rtol=0, atol=1e-8)


def test_default_model_forces_match_finite_differences_of_its_energy():
    """The default model (PhiSNet's energy ``E_nuc + 1/2 Tr[P (H_core + H)]``, H over the exact
    H_core + V_SAP, S and H_core exact): forces through the network, the eigensolver and the
    first derivatives of all three integrals against fourth-order central differences of the
    energy at 1e-3 Bohr (truncation ~1e-10 Eh/Bohr; a dropped integral derivative costs
    > 1e-3)."""
    model = make_model()
    z, positions = water_bohr(seed=3)
    _, forces = energy_and_forces(model, z, positions)
    numerical, _ = central_difference_forces(energy_of(model, z), positions, 1e-3)
    torch.testing.assert_close(forces, numerical, rtol=0, atol=1e-8)


def test_default_model_hessian_matches_finite_differences_of_its_forces():
    """The default model (H over the exact H_core + V_SAP, S and H_core exact): the analytic
    Hessian (double backward through the network, the eigensolver and the three integrals'
    second derivatives) against fourth-order central differences of the analytic forces at
    1e-3 Bohr (truncation ~1e-10 Eh/Bohr²; a missing second-derivative term of any integral
    costs > 1e-3)."""
    model = make_model()
    z, positions = water_bohr(seed=4)
    torch.testing.assert_close(hessian(model, z, positions),
                               finite_difference_hessian(model, z, positions), rtol=0, atol=1e-6)


@pytest.mark.parametrize("energy_model", ["band_structure", "none"])
def test_message_passing_remainder_forces_and_hessian_match_finite_differences(energy_model):
    """The message-passing remainder on the electronic features: forces through the features'
    dependence on P, W and S (the eigensolver's derivatives) and the remainder's own geometry
    dependence, against fourth-order central differences of the energy (1e-3 Bohr; measured
    ~1e-10 Eh/Bohr), and the double-backward Hessian against differences of the forces (a
    dropped second-derivative path through the features costs > 1e-3)."""
    model = make_model(**{**CASES["message_passing"], "energy_model": energy_model})
    z, positions = water_bohr(seed=5)
    with torch.no_grad():  # feature statistics of nearby geometries: inputs of order one
        batch = positions + 0.05 * torch.randn(8, 3, 3, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(0))
        outputs = model(z, batch)
        solution = solve_closed_shell(outputs["hamiltonian"], outputs["overlap"], 5)
        features = model.electronic_features(z, solution, outputs["overlap"])
        model.remainder.set_statistics(model.species(z), features, 0.01)
    _, forces = energy_and_forces(model, z, positions)
    numerical, _ = central_difference_forces(energy_of(model, z), positions, 1e-3)
    torch.testing.assert_close(forces, numerical, rtol=0, atol=1e-8)
    torch.testing.assert_close(hessian(model, z, positions),
                               finite_difference_hessian(model, z, positions), rtol=0, atol=1e-6)


def test_float32_network_forces_are_minus_the_gradient_of_its_own_energy():
    """``network_dtype="float32"``: a float32 network, matrices cast to float64 for the
    eigensolver. Its forces must be -dE/dR of that same (float32-noisy) energy, not of another.

    Tolerance, from measured quantities (the triangle inequality, each term bounded):
    E32 = E64 + n(R), E64 the energy of the same weights in float64 and n the float32
    rounding (measured ~3e-5 Eh here). A fourth-order central difference of step h is linear,
    so FD(E32) - FD(E64) = FD(n), at most (8 * 2 + 2) / 12 * max|n| / h = 1.5 max|n| / h
    (~4e-3 Eh/Bohr at h = 0.01). FD(E64) differs from the float64 forces by its truncation
    (measured ~7e-6 Eh/Bohr; asserted < 1e-4). The float32 forces differ from the float64 ones
    by float32 rounding of the gradient (measured 1e-6 of the largest force; asserted
    < 1e-4 of it). A missing force term (the S or core-H derivative, a detached cast) costs
    O(0.1-1) Eh/Bohr; the forces here reach ~20 Eh/Bohr."""
    model64 = make_model(**CASES["phisnet_tracegrad"])
    model32 = copy.deepcopy(model64).float()
    model64 = copy.deepcopy(model32).double()  # exactly the float32 weights, in float64
    z, positions = water_bohr(seed=2)
    prediction, forces32 = energy_and_forces(model32, z, positions)
    assert forces32.dtype == torch.float64 and prediction.energy_eh.dtype == torch.float64
    _, forces64 = energy_and_forces(model64, z, positions)
    scale = float(forces64.abs().max())
    assert relative_error(forces32, forces64) < TOLERANCE[torch.float32]

    step = 0.01
    numerical32, energies32 = central_difference_forces(energy_of(model32, z), positions, step)
    numerical64, energies64 = central_difference_forces(energy_of(model64, z), positions, step)
    truncation = float((forces64 - numerical64).abs().max())
    assert truncation < 1e-4  # Eh/Bohr: the float64 twin's forces are its -dE/dR
    noise = float(np.abs(np.array(energies32) - np.array(energies64)).max())
    assert noise < 1e-3  # Eh: float32 rounding, not a different function
    tolerance = 1.5 * noise / step + truncation + TOLERANCE[torch.float32] * scale
    error = float((forces32 - numerical32).abs().max())
    assert error < tolerance, f"max |F - FD| {error:.2e} > {tolerance:.2e} Eh/Bohr"


def test_config_validates():
    with pytest.raises(ValueError, match="unknown element"):
        ModelConfig(elements=("H", "Xx"))
    with pytest.raises(ValueError, match="matrices"):
        ModelConfig(matrices=("overlap",))
    with pytest.raises(ValueError, match="channels needs 5 entries"):
        PhiSNetModel(ModelConfig(channels=(8, 4)))
    with pytest.raises(ValueError, match="energy_model"):
        ModelConfig(energy_model="harris")
    with pytest.raises(ValueError, match="remainder must be one of"):
        ModelConfig(remainder="gnn")
    with pytest.raises(ValueError, match="pair_repulsion must be one of"):
        ModelConfig(pair_repulsion="lj")
    with pytest.raises(ValueError, match="pair_repulsion_cutoff_scale is a fraction"):
        ModelConfig(pair_repulsion="zbl", pair_repulsion_cutoff_scale=0.0)
    with pytest.raises(ValueError, match="pair_repulsion_cutoff_scale is a fraction"):
        ModelConfig(pair_repulsion="zbl", pair_repulsion_cutoff_scale=2.0)
    with pytest.raises(ValueError, match="baseline must be one of"):
        ModelConfig(baseline="sap_only")
    with pytest.raises(ValueError, match="sap_basis must be one of"):
        ModelConfig(sap_basis="sapgraspmedium")
    with pytest.raises(ValueError, match="energy_hidden must be positive"):
        ModelConfig(energy_hidden=0)
    with pytest.raises(ValueError, match="leave 'overlap' out"):
        ModelConfig(matrices=("hamiltonian", "overlap"))
    with pytest.raises(ValueError, match="leave 'core_hamiltonian' out"):
        ModelConfig(matrices=("hamiltonian", "core_hamiltonian"))
    with pytest.raises(ValueError, match="tracegrad with a baseline"):
        ModelConfig(tracegrad=True)
    with pytest.raises(ValueError, match="energy_model 'none' .* needs remainder "
                                         "'message_passing'"):
        ModelConfig(energy_model="none")
    with pytest.raises(ValueError, match="remainder_channels"):
        ModelConfig(remainder="message_passing", remainder_layers=0)
    plain = ModelConfig(remainder="message_passing", energy_model="none",
                        electronic_features=False)
    assert not plain.uses_electronic_structure
    assert ModelConfig(remainder="message_passing", energy_model="none").uses_electronic_structure
    assert ModelConfig().predicts_energy  # S and H_core from the integrals
    predicted_s = {"matrices": ("hamiltonian", "overlap"), "exact_overlap": False,
                   "exact_core_hamiltonian": False}
    assert ModelConfig(**predicted_s, energy_model="band_structure").predicts_energy
    assert not ModelConfig(**predicted_s).predicts_energy
    config = ModelConfig(elements=["H", "O"], channels=[8, 4, 4, 2, 2])
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**config.to_dict(), "chanels": [8]})


def test_reconfigured_keeps_weights_and_refuses_new_ones():
    torch.manual_seed(0)
    model = PhiSNetModel(ModelConfig(channels=(8, 4, 4, 2, 2), num_layers=1,
                                     **PREDICTED_MATRICES)).double()
    with torch.no_grad():
        model.remainder.element_energy_eh.fill_(-1.0)
    band = reconfigured(model, energy_model="band_structure",
                        matrices=("hamiltonian", "overlap"))
    assert "core_hamiltonian" not in band.heads and band.config.energy_model == "band_structure"
    assert not bool(band.remainder.element_energy_eh.any())  # constants of the old energy model
    z = torch.tensor([8, 1, 1])
    xyz = torch.tensor([[0.0, 0.0, 0.2], [0.0, 1.4, -0.9], [0.0, -1.4, -0.9]], dtype=torch.float64)
    before, after = model(z, xyz), band(z, xyz)
    for name in ("hamiltonian", "overlap"):
        # same weights in another module instance: equal up to float64 summation order
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no trained head"):
        reconfigured(band, matrices=("hamiltonian", "overlap", "core_hamiltonian"))
    with pytest.raises(ValueError, match="only"):
        reconfigured(model, num_layers=2)
    same = reconfigured(model, matrices=("hamiltonian", "overlap"))  # same energy model
    # a copied parameter: exact
    torch.testing.assert_close(same.remainder.element_energy_eh, model.remainder.element_energy_eh,
                               rtol=0, atol=0)
    # another prior cutoff is another energy model too: its constants are refitted
    rescaled = reconfigured(model, pair_repulsion_cutoff_scale=1.0)
    assert not bool(rescaled.remainder.element_energy_eh.any())
    exact = reconfigured(model, exact_overlap=True, matrices=("hamiltonian", "core_hamiltonian"))
    with pytest.raises(ValueError, match="no trained head for it; exact_overlap"):
        reconfigured(exact, exact_overlap=False)
    both = reconfigured(exact, exact_core_hamiltonian=True, matrices=("hamiltonian",))
    assert "core_hamiltonian" not in both.heads
    with pytest.raises(ValueError, match="no trained head for it; exact_core_hamiltonian"):
        reconfigured(both, exact_core_hamiltonian=False)


def test_precomputed_exact_matrices_give_the_model_s_outputs():
    """Training passes S, H_core and the baseline computed once per geometry
    (``exact=``); the outputs must be those the model computes itself (the same integrals
    on the same positions: equal to float64 rounding), and positions that require grad are
    refused (the cache has no position derivatives)."""
    model = make_model()
    z, positions = water_bohr(seed=3)
    batch = torch.stack([positions, positions + 0.01])
    exact = model.exact_matrices(z, batch)
    assert set(exact) == {"overlap", "core_hamiltonian", "baseline_hamiltonian"}
    with torch.no_grad():
        direct, cached = model(z, batch), model(z, batch, exact=exact)
    for name in ("hamiltonian", "overlap", "core_hamiltonian"):
        torch.testing.assert_close(cached[name], direct[name], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no position derivatives"):
        model(z, batch.clone().requires_grad_(True), exact=exact)
    with pytest.raises(ValueError, match="exact must hold"):
        model(z, batch, exact={"overlap": exact["overlap"]})


def test_model_with_exact_overlap_keeps_the_other_weights():
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    numbers, positions = atoms.numbers, torch.tensor(atoms.positions / Bohr)
    torch.manual_seed(0)
    config = ModelConfig(basis="def2-svp", elements=("H", "O"), channels=(8, 4, 4, 4, 4),
                         num_layers=1, num_radial=4, radial_hidden=8, **PREDICTED_MATRICES)
    learned = PhiSNetModel(config).double()
    exact = with_exact_overlap(learned)
    assert exact.config.exact_overlap and "overlap" not in exact.config.matrices
    again = with_exact_overlap(exact)  # a copy: changing it leaves `exact` alone
    assert again is not exact and again.config == exact.config
    atomic_numbers = torch.as_tensor(numbers)
    a, b = learned(atomic_numbers, positions), exact(atomic_numbers, positions)
    # same weights in another module instance: equal up to float64 summation order
    torch.testing.assert_close(a["hamiltonian"], b["hamiltonian"], rtol=0, atol=1e-12)
    reference = build_molecule(numbers, positions.numpy(), "def2-svp").intor("int1e_ovlp")
    np.testing.assert_allclose(b["overlap"].detach().numpy(), reference, atol=1e-14)


def test_band_structure_energy_is_tr_ph_plus_the_correction_without_e_nuc():
    """The two energy models share the matrices and the correction; they differ by exactly
    ``E_nuc + 1/2 Tr[P (H_core - H)]``."""
    torch.manual_seed(1)
    model = PhiSNetModel(ModelConfig(channels=(8, 4, 4, 2, 2), num_layers=1,
                                     exact_overlap=True, exact_core_hamiltonian=False,
                                     baseline="none",
                                     matrices=("hamiltonian", "core_hamiltonian"))).double()
    band = reconfigured(model, energy_model="band_structure")
    z = torch.tensor([8, 1, 1])
    xyz = torch.tensor([[0.0, 0.0, 0.2], [0.0, 1.4, -0.9], [0.0, -1.4, -0.9]], dtype=torch.float64)
    with torch.no_grad():
        out = model(z, xyz)
        # A plausible water Fock matrix is not needed: any symmetric H with a gap will do.
        phisnet, banded = predict_energy(model, z, xyz), predict_energy(band, z, xyz)
    density = banded.solution.density_matrix
    expected = (density * out["hamiltonian"]).sum() + out["remainder_energy_eh"]
    torch.testing.assert_close(banded.energy_eh, expected)
    difference = (nuclear_repulsion_eh(z, xyz)
                  + 0.5 * (density * (out["core_hamiltonian"] - out["hamiltonian"])).sum())
    torch.testing.assert_close(phisnet.energy_eh - banded.energy_eh, difference)


def test_the_model_adds_exactly_the_prior_and_refits_element_energies():
    torch.manual_seed(0)
    model = PhiSNetModel(ModelConfig(elements=("H", "C", "O"), channels=(8, 4, 4, 2, 2),
                                     num_layers=1, energy_model="band_structure",
                                     exact_overlap=True, matrices=("hamiltonian",))).double()
    with torch.no_grad():
        model.remainder.element_energy_eh.copy_(torch.tensor([-0.5, -37.8, -75.0]))
    with_prior = reconfigured(model, pair_repulsion="zbl")
    assert not bool(with_prior.remainder.element_energy_eh.any())  # constants of the old model
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    z = torch.tensor(atoms.numbers)
    positions = torch.tensor((atoms.positions + 0.25 * rng.normal(size=atoms.positions.shape))
                             / Bohr)
    with torch.no_grad():
        with_prior.remainder.element_energy_eh.copy_(model.remainder.element_energy_eh)
        plain = model(z, positions)["remainder_energy_eh"]
        prior = with_prior(z, positions)["remainder_energy_eh"]
    assert float(zbl_repulsion_eh(z, positions)) > 1e-3  # some pairs inside the prior's range
    torch.testing.assert_close(prior - plain, zbl_repulsion_eh(z, positions))
