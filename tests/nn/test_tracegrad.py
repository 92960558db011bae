"""TraceGrad: invariants of equivariant features, and gradient features that are equivariant."""

import pytest
import torch
from e3nn import o3
from symmetry import DTYPES, TOLERANCE, assert_equivariant, group_elements, irreps_D

from ase_phisnet.nn.layers import mmajor_permutation
from ase_phisnet.nn.tracegrad import TraceGrad, invariants

ATOM = o3.Irreps("4x0e + 3x1o + 2x2e")
# Pair features hold both parities (a depthwise product of (l, (-1)^l) features with the
# harmonics makes 1e, 2o, ...), but no 0o: L = 0 needs l1 = l2, parity +1.
PAIR = o3.Irreps("3x0e + 2x1o + 2x1e + 2x2e + 1x2o + 1x3o")


def test_invariants_are_the_scalars_and_the_squared_norms():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, ATOM.dim, dtype=torch.float64, generator=generator)  # e3nn layout
    mmajor = features[..., mmajor_permutation(ATOM)]
    expected = torch.cat([features[..., :4]]
                         + [features[..., s].reshape(2, mul, ir.dim).pow(2).sum(-1)
                            for (mul, ir), s in list(zip(ATOM, ATOM.slices()))[1:]], dim=-1)
    # sums of squares in another order: float64 rounding only
    torch.testing.assert_close(invariants(ATOM, mmajor), expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_tracegrad_outputs_are_equivariant_and_its_predictions_invariant(dtype, element):
    torch.manual_seed(1)
    branch = TraceGrad(ATOM, PAIR, hidden=16).to(dtype)
    with torch.no_grad():  # zero-initialized (training lets them in): make them count here
        branch.atom_back.weight.normal_()
        branch.pair_back.weight.normal_()
    generator = torch.Generator().manual_seed(2)
    atom = torch.randn(5, ATOM.dim, dtype=dtype, generator=generator)
    pair = torch.randn(20, PAIR.dim, dtype=dtype, generator=generator)
    g = group_elements(3, dtype)[element]
    d_atom, d_pair = irreps_D(ATOM, g), irreps_D(PAIR, g)
    atom_out, pair_out, y_atom, y_pair = branch(atom, pair)
    moved = branch(atom @ d_atom.T, pair @ d_pair.T)
    assert_equivariant(moved[0], atom_out @ d_atom.T, dtype, "atom features")
    assert_equivariant(moved[1], pair_out @ d_pair.T, dtype, "pair features")
    assert_equivariant(moved[2], y_atom, dtype, "atom trace prediction")
    assert_equivariant(moved[3], y_pair, dtype, "pair trace prediction")
    # the gradient features are really there: the outputs are not the inputs
    assert float((atom_out - atom).detach().abs().max()) > 100 * TOLERANCE[dtype]
