"""Matrix heads: the template expansion is orthogonal and equivariant, and the assembled AO
matrices transform as ``M(g x) = D_ao(g) M(x) D_ao(g)^T`` for rotations and reflections."""

import copy

import pytest
import torch
from e3nn import o3
from symmetry import DTYPES, ao_D, assert_equivariant, group_elements, irreps_D

from ase_phisnet.core.basis import BasisLayout, pyscf_from_e3nn
from ase_phisnet.nn.heads import (
    MatrixHead,
    block_irreps_and_expansion,
    build_assembly,
    build_template,
    predict_matrices,
)
from ase_phisnet.nn.network import onsite_overlap

BASIS = "def2-svp"
ELEMENTS = [1, 8]
ATOM = o3.Irreps("4x0e + 3x1o + 2x2e + 2x3o + 2x4e")
PAIR = o3.Irreps("3x0e + 2x1o + 2x1e + 2x2e + 1x2o + 1x3o + 1x3e + 2x4e")
WATER = [8, 1, 1]


@pytest.fixture(scope="module")
def template():
    return build_template(BasisLayout(BASIS, ELEMENTS))


def _template_D(slot_ls, g):
    """The template block's AO rotation: blockdiag over slots of Q_l D_l(g) Q_l^T."""
    blocks = [pyscf_from_e3nn(l) @ irreps_D(o3.Irreps([(1, (l, (-1) ** l))]), g.double())
              @ pyscf_from_e3nn(l).T for l in slot_ls]
    return torch.block_diag(*blocks)


def test_template_of_def2_svp_over_h_and_o(template):
    assert template.slot_ls == (0, 0, 0, 1, 1, 2) and template.nao == 14
    assert len(template.ao_to_template[1]) == 5 and len(template.ao_to_template[8]) == 14


def test_expansion_is_orthogonal(template):
    _, expansion = block_irreps_and_expansion(template.slot_ls)
    assert expansion.shape == (template.nao**2, template.nao**2)
    identity = torch.eye(template.nao**2, dtype=torch.float64)
    # a product of orthogonal CG tables and Q_l: orthogonal to float64 rounding
    torch.testing.assert_close(expansion @ expansion.T, identity, rtol=0, atol=1e-12)


@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_expansion_is_equivariant(template, element):
    """B(D_block f) = D_T B(f) D_T^T for one template block, in float64."""
    irreps, expansion = block_irreps_and_expansion(template.slot_ls)
    g = group_elements(0)[element]
    f = torch.randn(3, irreps.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = template.nao
    blocks = (f @ expansion).reshape(3, t, t)
    d = _template_D(template.slot_ls, g)
    moved = ((f @ irreps_D(irreps, g, mmajor=False).T) @ expansion).reshape(3, t, t)
    assert_equivariant(moved, d @ blocks @ d.T, torch.float64)


@pytest.fixture(scope="module")
def heads64(template):
    """A predicted-diagonal head (on-site offsets set) and a fixed-diagonal (overlap) one,
    float64; random per-element scales."""
    torch.manual_seed(2)
    fixed = {z: onsite_overlap(BASIS, z) for z in ELEMENTS}
    heads = [MatrixHead(ATOM, PAIR, template, ELEMENTS),
             MatrixHead(ATOM, PAIR, template, ELEMENTS, fixed_diagonal=fixed)]
    generator = torch.Generator().manual_seed(3)
    mean_blocks = {}
    for z in ELEMENTS:
        n = len(template.ao_to_template[z])
        block = torch.randn(n, n, dtype=torch.float64, generator=generator)
        mean_blocks[z] = block + block.T
    with torch.no_grad():  # ones at initialization: make the per-element scales differ
        for head in heads:
            head.pair_scale.normal_()
        heads[0].atom_scale.normal_()
        heads[0].set_onsite_offset(mean_blocks)  # only its invariant part is kept
    return [head.double() for head in heads]


def _assembly(heads, template):
    species = [ELEMENTS.index(z) for z in WATER]
    index = torch.arange(len(WATER))
    src, dst = torch.meshgrid(index, index, indexing="ij")
    keep = src != dst
    return build_assembly(WATER, species, src[keep].numpy(), dst[keep].numpy(), heads, template)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_assembled_matrices_are_equivariant(template, heads64, dtype, element):
    """Random equivariant atom and pair features (m-major), invariant pair weights, on-site
    offsets and a fixed on-site table: every matrix rotates with D_ao of the molecule."""
    heads = [copy.deepcopy(head).to(dtype) for head in heads64]
    assembly = _assembly(heads, template)
    generator = torch.Generator().manual_seed(4)
    atoms = torch.randn(2, 3, ATOM.dim, dtype=dtype, generator=generator)
    pairs = torch.randn(2, 6, PAIR.dim, dtype=dtype, generator=generator)
    weight = torch.rand(2, 6, dtype=dtype, generator=generator)
    g = group_elements(5, dtype)[element]
    reference = predict_matrices(heads, atoms, pairs, assembly, pair_weight=weight)
    moved = predict_matrices(heads, atoms @ irreps_D(ATOM, g).T, pairs @ irreps_D(PAIR, g).T,
                             assembly, pair_weight=weight)
    d = ao_D(BasisLayout(BASIS, ELEMENTS), WATER, g)
    for name, before, after in zip(("predicted diagonal", "fixed diagonal"), reference, moved):
        assert before.shape == (2, 24, 24)
        assert_equivariant(after, d @ before @ d.T, dtype, name)
        # M + M^T: symmetric by construction (a + b == b + a in IEEE arithmetic)
        assert torch.equal(before, before.transpose(-1, -2))


def test_onsite_offset_keeps_an_invariant_block_whole(template):
    """The on-site overlap of O is rotation invariant: its projection is itself."""
    head = MatrixHead(ATOM, PAIR, template, ELEMENTS).double()
    overlap = torch.as_tensor(onsite_overlap(BASIS, 8))
    head.set_onsite_offset({8: overlap})
    t = template.nao
    block = (head.onsite_offset[1].double() @ head.constant("expansion", overlap)).reshape(t, t)
    index = torch.tensor(template.ao_to_template[8])
    # an orthogonal projection and back: float64 rounding only
    torch.testing.assert_close(block[index[:, None], index[None, :]], overlap, rtol=0, atol=1e-12)
    assert not bool(head.onsite_offset[0].any())  # no mean block given for H
