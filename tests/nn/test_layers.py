"""The network's building blocks: each equals its defining equation (or e3nn's module with the same
weights) and is equivariant under rotations and reflections, in float32 and float64."""

import math

import pytest
import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from symmetry import DTYPES, assert_equivariant, group_elements, irreps_D

from ase_phisnet.nn.layers import (
    BesselRadialBasis,
    DepthwiseTensorProduct,
    GatePlan,
    Interaction,
    equivariant_linear,
    gated_irreps,
    mmajor_permutation,
    scatter_sum,
    smooth_cutoff,
)

HIDDEN = o3.Irreps("4x0e + 3x1o + 2x2e + 2x3o")  # the network's (l, (-1)^l) features
SH = o3.Irreps.spherical_harmonics(3)


def _edges(n_atoms: int):
    index = torch.arange(n_atoms)
    src, dst = torch.meshgrid(index, index, indexing="ij")
    keep = src != dst
    return src[keep], dst[keep]


def _edge_inputs(positions, src, dst, radial_basis):
    vectors = positions.index_select(-2, dst) - positions.index_select(-2, src)
    sh = o3.spherical_harmonics(SH, vectors, normalize=True, normalization="component")
    return sh, radial_basis(vectors.norm(dim=-1))


def test_mmajor_linear_is_e3nn_linear_with_the_same_weights():
    """The network evaluates e3nn's o3.Linear from its own weights on m-major features."""
    irreps_in = o3.Irreps("5x0e + 3x1o + 2x2e + 4x1e")
    irreps_out = o3.Irreps("2x0e + 4x1o + 3x2e + 1x3o")
    torch.manual_seed(0)
    linear = o3.Linear(irreps_in, irreps_out).to(torch.float64)
    x = torch.randn(2, 7, irreps_in.dim, dtype=torch.float64)
    expected = linear(x)[..., mmajor_permutation(irreps_out)]
    got = equivariant_linear(linear, x[..., mmajor_permutation(irreps_in)])
    # two evaluations of one linear map (other summation order): float64 rounding only
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    # several linears side by side: per type (2l+1, linear, channel)
    other = o3.Linear(irreps_in, irreps_out).to(torch.float64)
    both = equivariant_linear([linear, other], x[..., mmajor_permutation(irreps_in)])
    start = 0
    for mul, ir in irreps_out:
        chunk = both[..., start : start + 2 * mul * ir.dim].reshape(2, 7, ir.dim, 2, mul)
        for k, lin in enumerate((linear, other)):
            ref = lin(x)[..., irreps_out.slices()[list(irreps_out).index((mul, ir))]]
            torch.testing.assert_close(chunk[..., k, :], ref.reshape(2, 7, mul, ir.dim)
                                       .transpose(-1, -2), rtol=0, atol=1e-13)
        start += 2 * mul * ir.dim


def test_depthwise_tensor_product_is_its_defining_sum():
    """z_{e,(l1 l2 L), u, M} = w sqrt(2L+1) sum C^{l1 l2 L}_{m1 m2 M} x_{e u m1} Y_{e m2}."""
    irreps_in, irreps_sh = o3.Irreps("3x0e + 2x1o + 2x2e"), o3.Irreps.spherical_harmonics(2)
    product = DepthwiseTensorProduct(irreps_in, irreps_sh, allowed_ls=(0, 1, 2))
    rng = torch.Generator().manual_seed(0)
    n_edges = 4
    x = torch.randn(n_edges, irreps_in.dim, generator=rng, dtype=torch.float64)  # e3nn layout
    sh = torch.randn(n_edges, irreps_sh.dim, generator=rng, dtype=torch.float64)
    w = torch.randn(n_edges, product.weight_numel, generator=rng, dtype=torch.float64)
    outputs = {}  # type -> list of (E, 2L+1) channels in (block, path, u) order
    w_offset = 0
    for (mul, ir_in), x_slice in zip(irreps_in, irreps_in.slices()):
        block = x[:, x_slice].reshape(n_edges, mul, ir_in.dim)
        paths = [(ir_sh, sh_slice, ir_out) for (_, ir_sh), sh_slice in
                 zip(irreps_sh, irreps_sh.slices()) for ir_out in ir_in * ir_sh
                 if ir_out.l <= 2]
        for p, (ir_sh, sh_slice, ir_out) in enumerate(paths):
            cg = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
            z = torch.einsum("ijk,eui,ej->euk", cg, block, sh[:, sh_slice]) * ir_out.dim ** 0.5
            z = z * w[:, w_offset + p * mul : w_offset + (p + 1) * mul, None]
            outputs.setdefault(ir_out, []).extend(z.unbind(1))
        w_offset += len(paths) * mul
    expected = torch.cat([torch.stack(outputs[ir], dim=-1).reshape(n_edges, -1)
                          for _, ir in product.irreps_out], dim=-1)  # m-major
    weights = w.index_select(-1, product._constants.get("w_index", w))
    got = product(x[:, mmajor_permutation(irreps_in)], product.couple(sh), weights)
    # the same sum in another order: float64 rounding only
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)


def test_product_of_used_irreps_is_the_full_products_restriction():
    """``used_irreps`` leaves the other outputs uncomputed: the result is the full product's
    blocks of the used irreps (same order), the radial weights keep their number, and a block
    whose every path is dropped is skipped."""
    irreps_in = o3.Irreps("3x0e + 2x1o + 2x2e")
    used = [o3.Irrep("0e"), o3.Irrep("1o"), o3.Irrep("2e")]
    full = DepthwiseTensorProduct(irreps_in, SH, allowed_ls=(0, 1, 2))
    kept = DepthwiseTensorProduct(irreps_in, SH, allowed_ls=(0, 1, 2), used_irreps=used)
    assert kept.weight_numel == full.weight_numel
    assert [ir for _, ir in kept.irreps_out] == used
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(5, irreps_in.dim, generator=rng, dtype=torch.float64)
    sh = torch.randn(5, SH.dim, generator=rng, dtype=torch.float64)
    w = torch.randn(5, full.weight_numel, generator=rng, dtype=torch.float64)
    full_out = full(x, full.couple(sh), w.index_select(-1, full._constants.get("w_index", w)))
    kept_out = kept(x, kept.couple(sh), w.index_select(-1, kept._constants.get("w_index", w)))
    slices = dict(zip([ir for _, ir in full.irreps_out], full.irreps_out.slices()))
    expected = torch.cat([full_out[:, slices[ir]] for ir in used], dim=-1)
    torch.testing.assert_close(kept_out, expected, rtol=0, atol=1e-14)
    # the 1o block times a scalar harmonic gives 1o only: skipped, its weights still counted
    scalars_only = DepthwiseTensorProduct(o3.Irreps("2x0e + 1x1o"), o3.Irreps("1x0e"),
                                          allowed_ls=(0, 1), used_irreps=["0e"])
    assert scalars_only.irreps_out == o3.Irreps("2x0e") and scalars_only.weight_numel == 3
    x = torch.randn(4, 5, generator=rng, dtype=torch.float64)
    out = scalars_only(x, scalars_only.couple(torch.ones(4, 1, dtype=torch.float64)),
                       torch.ones(4, 2, dtype=torch.float64))
    torch.testing.assert_close(out, x[:, :2], rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="no path"):
        DepthwiseTensorProduct(o3.Irreps("2x0e"), o3.Irreps("1x0e"), allowed_ls=(0,),
                               used_irreps=["0o"])


def test_gate_plan_is_e3nns_gate():
    scalars, gates, gated = gated_irreps(HIDDEN)
    gate = e3nn_nn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid] * len(gates),
                        gated)
    x = torch.randn(5, gate.irreps_in.dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    expected = gate(x)[..., mmajor_permutation(gate.irreps_out)]
    got = GatePlan(gate)(x[..., mmajor_permutation(gate.irreps_in)])
    # e3nn's normalization constants are float32 numbers in both: float64 rounding only
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_smooth_cutoff_and_bessel_basis_vanish_smoothly_at_the_cutoff():
    cutoff = 4.0
    r = torch.tensor([0.0, 1e-8, cutoff, 1.5 * cutoff], dtype=torch.float64, requires_grad=True)
    module = BesselRadialBasis(6, cutoff).to(torch.float64)
    basis = module(r)  # (4, 6)
    (gradient,) = torch.autograd.grad(basis.sum(), r)
    assert bool(torch.isfinite(basis).all() and torch.isfinite(gradient).all())
    # r -> 0: sqrt(2/r_c) sin(w_n r) / r -> sqrt(2/r_c) w_n, w_n initialized at n pi / r_c
    # (in torch's default dtype: float32-rounded, hence rtol 1e-7 on the initial value)
    frequencies = module.frequencies.detach()
    torch.testing.assert_close(frequencies, torch.arange(1, 7, dtype=torch.float64) * math.pi
                               / cutoff, rtol=1e-7, atol=0)
    torch.testing.assert_close(basis[0].detach(), math.sqrt(2 / cutoff) * frequencies,
                               rtol=1e-12, atol=0)
    # at and beyond the cutoff f(r) = 0 by construction (clamp): exactly zero, flat
    assert float(basis.detach()[2:].abs().max()) == 0.0 and float(gradient[2:].abs().max()) == 0.0
    assert float(smooth_cutoff(torch.tensor(0.0), 5.0)) == 1.0


def test_scatter_sum_is_index_add():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, 7, 3, dtype=torch.float64, generator=generator)
    index = torch.tensor([0, 2, 2, 1, 0, 3, 2])
    expected = torch.zeros(2, 5, 3, dtype=torch.float64).index_add_(1, index, values)
    # a one-hot matmul against index_add: float64 rounding only
    torch.testing.assert_close(scatter_sum(values, index, 5), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_equivariant_linear_is_equivariant(dtype, element):
    """Both parities of every degree (a linear only connects equal irreps)."""
    irreps_in = o3.Irreps("4x0e + 2x0o + 3x1o + 2x1e + 2x2e + 1x2o")
    irreps_out = o3.Irreps("2x0e + 1x0o + 2x1o + 3x1e + 1x2e + 2x2o")
    torch.manual_seed(1)
    linears = [o3.Linear(irreps_in, irreps_out).to(dtype) for _ in range(2)]
    g = group_elements(2, dtype)[element]
    x = torch.randn(6, irreps_in.dim, dtype=dtype)
    d_in, d_out = irreps_D(irreps_in, g), irreps_D(irreps_out, g)
    out = equivariant_linear(linears[0], x)
    assert_equivariant(equivariant_linear(linears[0], x @ d_in.T), out @ d_out.T, dtype)
    # side by side, each linear's block of a type is (2l+1, h, mul): h x irreps_out per type
    stacked = o3.Irreps([(2 * mul, ir) for mul, ir in irreps_out])
    both = equivariant_linear(linears, x)
    assert_equivariant(equivariant_linear(linears, x @ d_in.T),
                       both @ irreps_D(stacked, g).T, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_depthwise_tensor_product_is_equivariant(dtype, element):
    """x ⊗ Y(r) with invariant weights W(|r|): rotating x and r rotates the output."""
    torch.manual_seed(3)
    product = DepthwiseTensorProduct(HIDDEN, SH, allowed_ls=HIDDEN.ls)
    radial_mlp = e3nn_nn.FullyConnectedNet([6, 8, product.weight_numel],
                                           torch.nn.functional.silu).to(dtype)
    radial_basis = BesselRadialBasis(6, 6.0).to(dtype)
    generator = torch.Generator().manual_seed(4)
    n_edges = 5
    x = torch.randn(n_edges, HIDDEN.dim, dtype=dtype, generator=generator)
    vectors = 2 * torch.randn(n_edges, 3, dtype=dtype, generator=generator)
    g = group_elements(5, dtype)[element]

    def apply(x, vectors):
        sh = o3.spherical_harmonics(SH, vectors, normalize=True, normalization="component")
        weights = product.output_weights(radial_mlp, radial_basis(vectors.norm(dim=-1)))
        return product(x, product.couple(sh), weights)

    expected = apply(x, vectors) @ irreps_D(product.irreps_out, g).T
    assert_equivariant(apply(x @ irreps_D(HIDDEN, g).T, vectors @ g.T), expected, dtype)
    assert {ir.p for _, ir in product.irreps_out if ir.l == 1} == {1, -1}  # both parities made


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_gate_is_equivariant(dtype, element):
    scalars, gates, gated = gated_irreps(HIDDEN)
    gate = e3nn_nn.Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid] * len(gates),
                        gated)
    plan = GatePlan(gate)
    g = group_elements(6, dtype)[element]
    x = torch.randn(4, gate.irreps_in.dim, dtype=dtype,
                    generator=torch.Generator().manual_seed(7))
    expected = plan(x) @ irreps_D(gate.irreps_out, g).T
    assert_equivariant(plan(x @ irreps_D(gate.irreps_in, g).T), expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_interaction_is_equivariant_and_translation_invariant(dtype, element):
    """One message-passing layer on a batch of two 5-atom geometries."""
    torch.manual_seed(8)
    interaction = Interaction(HIDDEN, SH, num_radial=6, radial_hidden=8,
                              avg_neighbors=4.0).to(dtype)
    radial_basis = BesselRadialBasis(6, 8.0).to(dtype)
    generator = torch.Generator().manual_seed(9)
    n_atoms = 5
    src, dst = _edges(n_atoms)
    x = torch.randn(2, n_atoms, HIDDEN.dim, dtype=dtype, generator=generator)
    positions = 2 * torch.randn(2, n_atoms, 3, dtype=dtype, generator=generator)
    g = group_elements(10, dtype)[element]

    def apply(x, positions):
        sh, radial = _edge_inputs(positions, src, dst, radial_basis)
        return interaction(x, src, dst, interaction.tensor_product.couple(sh), radial)

    reference = apply(x, positions)
    d = irreps_D(HIDDEN, g)
    shift = torch.tensor([1.5, -0.7, 3.0], dtype=dtype)
    assert_equivariant(apply(x @ d.T, positions @ g.T + shift), reference @ d.T, dtype)
