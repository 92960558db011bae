"""Float64-exact Wigner D matrices in e3nn's convention."""

import pytest
import torch
from e3nn import o3

from ase_phisnet.core.so3 import wigner_D


@pytest.mark.parametrize("l", range(6))
def test_wigner_d_rotates_e3nn_spherical_harmonics_exactly(l):
    torch.manual_seed(l)
    rotation = o3.rand_matrix(dtype=torch.float64)
    points = torch.randn(20, 3, dtype=torch.float64)
    d = wigner_D(l, rotation)
    rotated = o3.spherical_harmonics(l, points @ rotation.T, normalize=True)
    expected = o3.spherical_harmonics(l, points, normalize=True) @ d.T
    torch.testing.assert_close(rotated, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(d @ d.T, torch.eye(2 * l + 1, dtype=torch.float64), rtol=0, atol=1e-13)
    # Same convention as e3nn's own (float32-precise) D matrices.
    torch.testing.assert_close(d, o3.Irrep(l, 1).D_from_matrix(rotation), rtol=0, atol=1e-5)


def test_wigner_d_is_batched_and_a_homomorphism():
    torch.manual_seed(0)
    rotations = o3.rand_matrix(4, dtype=torch.float64)
    d = wigner_D(3, rotations)
    assert d.shape == (4, 7, 7)
    torch.testing.assert_close(wigner_D(3, rotations[0] @ rotations[1]), d[0] @ d[1], rtol=0, atol=1e-13)


def test_default_dtype_untouched():
    before = torch.get_default_dtype()
    wigner_D(2, o3.rand_matrix(dtype=torch.float64))
    assert torch.get_default_dtype() == before
