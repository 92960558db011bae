"""Rotations, reflections and their representations, for the equivariance tests.

A feature of irreps ``sum_t mul_t x (l_t, p_t)`` transforms under an element ``g`` of O(3) as
``x -> D(g) x`` with ``D(g) = blockdiag_t (p_t^[g improper] D^{l_t}(g'))``, where ``g'`` is the
proper rotation of ``g`` (``g = g'`` or ``g = -g'``: a reflection is a rotation times the
inversion). AOs of degree ``l`` are parity ``(-1)^l`` functions, so an AO matrix transforms as
``M -> D_ao(g) M D_ao(g)^T`` with ``D_ao(-g') = diag((-1)^l) D_ao(g')``.

The Wigner matrices are :func:`ase_phisnet.core.so3.wigner_D`, exact in float64; e3nn's
``Irreps.D_from_matrix`` builds its generators in torch's default dtype (float32) and would
limit every float64 test to ~1e-7. Float32 tests get float64 matrices cast to float32.
"""

from __future__ import annotations

import torch
from e3nn import o3

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.so3 import wigner_D

#: Relative tolerance (``max |a - b| / max |b|``) of an equivariance check per dtype: float32
#: rounds every operation at ~6e-8 relative and a few layers of sums grow that to ~1e-6, far
#: below 1e-4; float64 equivariance holds to ~1e-14, and an equivariance bug (a wrong sign,
#: a float32-rounded table, a non-equivariant term) shows at >= 1e-8.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
DTYPES = (torch.float32, torch.float64)


def random_rotation(seed: int, dtype=torch.float64) -> torch.Tensor:
    """A uniformly random proper rotation (3, 3), drawn in float64 with torch's RNG seeded by
    ``seed`` and restored afterwards, then cast to ``dtype``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rotation = o3.rand_matrix(dtype=torch.float64)
    return rotation.to(dtype)


def random_reflection(seed: int, dtype=torch.float64) -> torch.Tensor:
    """A random improper rotation: :func:`random_rotation` times the inversion (det -1)."""
    return -random_rotation(seed, dtype)


def group_elements(seed: int, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """A random rotation and a random reflection, by name (for parametrized checks)."""
    return {"rotation": random_rotation(seed, dtype),
            "reflection": random_reflection(seed + 1000, dtype)}


def _proper_part(matrix: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(g', improper)`` in float64; a float32 ``matrix`` (orthogonal to ~1e-7 only) is taken
    as the nearest orthogonal matrix, ``U V^T`` of its SVD."""
    matrix = matrix.double()
    if float((matrix @ matrix.T - torch.eye(3, dtype=torch.float64)).abs().max()) > 1e-12:
        u, _, vh = torch.linalg.svd(matrix)
        matrix = u @ vh
    improper = bool(torch.det(matrix) < 0)
    return (-matrix if improper else matrix), improper


def irreps_D(irreps, matrix: torch.Tensor, mmajor: bool = True) -> torch.Tensor:
    """``D(g)`` of shape ``(irreps.dim, irreps.dim)`` in ``matrix``'s dtype, for features laid
    out m-major (:mod:`ase_phisnet.nn.layers`; per irrep type ``(2l+1, mul)``) or in e3nn's
    channel-major order (``mmajor=False``)."""
    proper, improper = _proper_part(matrix)
    blocks = []
    for mul, ir in o3.Irreps(irreps):
        d = wigner_D(ir.l, proper) * (ir.p if improper else 1)
        eye = torch.eye(mul, dtype=torch.float64)
        blocks.append(torch.kron(d, eye) if mmajor else torch.kron(eye, d))
    return torch.block_diag(*blocks).to(matrix.dtype)


def ao_D(layout: BasisLayout, atomic_numbers, matrix: torch.Tensor) -> torch.Tensor:
    """``D_ao(g)`` (nao, nao) in PySCF's AO order and ``matrix``'s dtype, for a proper or
    improper ``matrix``: ``M(g x) = D_ao M(x) D_ao^T`` for every AO matrix."""
    proper, improper = _proper_part(matrix)
    d = layout.wigner_D(atomic_numbers, proper)
    if improper:
        parity = torch.cat([torch.full((2 * l + 1,), (-1.0) ** l, dtype=torch.float64)
                            for l in layout.shell_ls(atomic_numbers)])
        d = parity[:, None] * d
    return d.to(matrix.dtype)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|``, in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max())


def assert_equivariant(actual: torch.Tensor, expected: torch.Tensor, dtype, what: str = ""):
    """``actual`` equals ``expected`` within :data:`TOLERANCE` of ``dtype``, relative to the
    output scale; ``expected`` must not vanish (a zero output proves nothing)."""
    assert float(expected.detach().abs().max()) > 0, f"{what}: expected output is all zero"
    error = relative_error(actual, expected)
    assert error < TOLERANCE[dtype], f"{what}: relative error {error:.2e} ({dtype})"
