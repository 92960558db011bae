"""PhiSNet, the matrix network: H and S covariant under rotations, reflections, translations and
atom permutations (float32 and float64), the fixed on-site overlap, batches, TraceGrad inference,
and clear errors."""

import copy
import functools

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from e3nn import o3
from symmetry import (
    DTYPES,
    TOLERANCE,
    ao_D,
    assert_equivariant,
    group_elements,
    irreps_D,
    relative_error,
)

from ase_phisnet.core.errors import UnsupportedElementError
from ase_phisnet.nn.layers import BesselRadialBasis
from ase_phisnet.nn.network import NetworkConfig, PairFeatures, PhiSNet

SMALL = {"channels": (8, 4, 4, 2, 2), "num_layers": 2, "num_radial": 8, "radial_hidden": 16}
# Acetamide: C, N, O, H in def2-SVP (d shells, features up to l = 4).
CNOH = "CH3CONH2"


@functools.cache
def _network64(elements, tracegrad):
    torch.manual_seed(0)
    network = PhiSNet(NetworkConfig(basis="def2-svp", elements=elements, tracegrad=tracegrad,
                                    **SMALL))
    if tracegrad:  # zero-initialized (training lets them in): make the gradient features count
        with torch.no_grad():
            network.tracegrad.atom_back.weight.normal_(std=0.3)
            network.tracegrad.pair_back.weight.normal_(std=0.3)
    return network.double()


def make_network(elements, tracegrad=False, dtype=torch.float64):
    """A small network, seeded; built once per (elements, tracegrad) (e3nn's modules take
    seconds to build), copied for each test."""
    return copy.deepcopy(_network64(tuple(elements), tracegrad)).to(dtype)


def predict(network, atoms, positions_ang=None, dtype=torch.float64):
    positions = atoms.positions if positions_ang is None else positions_ang
    return network(torch.tensor(atoms.numbers), torch.tensor(positions / Bohr, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "name,elements,tracegrad",
    [("H2O", ("H", "O"), False), (CNOH, ("H", "C", "N", "O"), False),
     ("H2O", ("H", "O"), True), (CNOH, ("H", "C", "N", "O"), True)],
)
def test_matrices_are_covariant_and_features_invariant(name, elements, tracegrad, dtype):
    """M(g x + t) = D_ao(g) M(x) D_ao(g)^T for a rotation and a reflection g and a shift t;
    permuted atoms permute the AO blocks; the scalar atom features and distances are invariant
    (permuted with the atoms)."""
    network = make_network(elements, tracegrad, dtype)
    atoms = molecule(name)
    reference = predict(network, atoms, dtype=dtype)
    shift = np.array([0.7, -1.3, 2.1])
    for element, g in group_elements(1).items():
        moved = predict(network, atoms, atoms.positions @ g.numpy().T + shift, dtype)
        d = ao_D(network.layout, atoms.numbers, g.to(dtype))
        for key in network.config.matrices:
            assert_equivariant(moved[key], d @ reference[key] @ d.T, dtype, f"{key}, {element}")
        for key in ("atom_scalars", "pair_distances_bohr"):
            assert_equivariant(moved[key], reference[key], dtype, f"{key}, {element}")

    permutation = np.random.default_rng(2).permutation(len(atoms))
    permuted = predict(network, atoms[permutation], dtype=dtype)
    slices = network.layout.ao_slices(atoms.numbers)
    ao_permutation = np.concatenate([np.arange(slices[i].start, slices[i].stop)
                                     for i in permutation])
    for key in network.config.matrices:
        assert_equivariant(permuted[key], reference[key][ao_permutation][:, ao_permutation],
                           dtype, f"{key}, permutation")
        # M + M^T: symmetric by construction (a + b == b + a in IEEE arithmetic)
        assert torch.equal(reference[key], reference[key].T)
    assert_equivariant(permuted["atom_scalars"], reference["atom_scalars"][permutation], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_pair_features_are_equivariant(dtype, element):
    torch.manual_seed(3)
    hidden = o3.Irreps("4x0e + 3x1o + 2x2e")
    sh_irreps = o3.Irreps.spherical_harmonics(2)
    pair = PairFeatures(hidden, sh_irreps, num_radial=6, radial_hidden=8).to(dtype)
    radial_basis = BesselRadialBasis(6, 8.0).to(dtype)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, hidden.dim, dtype=dtype, generator=generator)
    positions = 2 * torch.randn(2, 4, 3, dtype=dtype, generator=generator)
    index = torch.arange(4)
    src, dst = (i[index[:, None] != index[None, :]] for i in
                torch.meshgrid(index, index, indexing="ij"))
    g = group_elements(5, dtype)[element]

    def apply(x, positions):
        vectors = positions.index_select(-2, dst) - positions.index_select(-2, src)
        sh = o3.spherical_harmonics(sh_irreps, vectors, normalize=True,
                                    normalization="component")
        return pair(x, src, dst, pair.tensor_product.couple(sh), radial_basis(vectors.norm(dim=-1)))

    expected = apply(x, positions) @ irreps_D(pair.irreps_out, g).T
    assert_equivariant(apply(x @ irreps_D(hidden, g).T, positions @ g.T), expected, dtype)


def test_overlap_diagonal_blocks_are_the_exact_onsite_overlap():
    network = make_network(("H", "O"))
    overlap = predict(network, molecule("H2O"))["overlap"]
    # a fixed table copied into the matrix (no arithmetic on it but 0.5 * (B + B^T))
    torch.testing.assert_close(torch.diagonal(overlap), torch.ones(24, dtype=torch.float64),
                               rtol=0, atol=1e-14)
    from pyscf import gto

    mol = gto.M(atom=[["O", (0, 0, 0)]], basis="def2-svp", spin=0, verbose=0)
    np.testing.assert_allclose(overlap[:14, :14].detach().numpy(), mol.intor("int1e_ovlp"),
                               atol=1e-14)


def test_nao_follows_the_basis_layout():
    network = make_network(("H", "C", "O"))
    assert predict(network, molecule("CH3CH2OH"))["hamiltonian"].shape == (72, 72)  # mol.nao


def test_unknown_element_is_a_clear_error():
    network = make_network(("H", "O"))
    with pytest.raises(UnsupportedElementError, match=r"knows elements \['H', 'O'\]; got \['C'\]"):
        predict(network, molecule("CH4"))


def test_a_batch_of_geometries_equals_one_by_one():
    network = make_network(("H", "O"), tracegrad=True)
    atoms = molecule("H2O")
    rng = np.random.default_rng(0)
    positions = atoms.positions[None] + 0.05 * rng.normal(size=(3, 3, 3))
    z = torch.tensor(atoms.numbers)
    batch = network(z, torch.tensor(positions / Bohr), return_invariants=True)
    assert set(batch) >= {"trace_atom", "trace_pair"}
    for b in range(3):
        single = network(z, torch.tensor(positions[b] / Bohr), return_invariants=True)
        for key, value in single.items():
            # the same sums over another batch shape: float64 rounding only
            torch.testing.assert_close(batch[key][b], value, rtol=1e-12, atol=1e-12)


def test_tracegrad_inference_without_autograd_equals_training_mode():
    """TraceGrad needs gradients inside the forward pass; under no_grad it must agree."""
    network = make_network(("H", "O"), tracegrad=True)
    atoms = molecule("H2O")
    with_graph = predict(network, atoms)
    with torch.no_grad():
        without = predict(network, atoms)
    for key, value in with_graph.items():
        assert not without[key].requires_grad
        # one computation with and without a recorded graph: float64 rounding at most
        torch.testing.assert_close(without[key], value.detach(), rtol=0, atol=1e-13)


def test_float32_network_is_the_float64_network_to_float32_precision():
    network = make_network(("H", "O"), tracegrad=True)
    atoms = molecule("H2O")
    double = predict(network, atoms)
    single = predict(network.to(torch.float32), atoms, dtype=torch.float32)
    for key in network.config.matrices:
        assert single[key].dtype == torch.float32
        assert relative_error(single[key], double[key]) < TOLERANCE[torch.float32], key


@pytest.mark.parametrize(
    "changes,message",
    [({"elements": ("H", "Xx")}, "unknown element"),
     ({"matrices": ("overlap",)}, "matrices must include 'hamiltonian'"),
     ({"matrices": ("hamiltonian", "fock")}, "matrices must include"),
     ({"num_layers": 0}, "must be positive"),
     ({"channels": (8, 0, 4)}, ">= 1 channel")],
)
def test_network_config_validates(changes, message):
    with pytest.raises(ValueError, match=message):
        NetworkConfig(**changes)


def test_too_few_channels_for_the_degree_is_a_clear_error():
    with pytest.raises(ValueError, match="channels needs 5 entries"):
        PhiSNet(NetworkConfig(channels=(8, 4)))
