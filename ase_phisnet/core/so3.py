"""Wigner D matrices in e3nn's real basis, exact in float64.

e3nn's ``Irrep.D_from_matrix`` builds its Lie-algebra generators in torch's *default* dtype
(float32 unless a program changed it), so its D matrices carry ~1e-7 errors even for float64
rotations — far above the 1e-10 to which our equivariance tests hold. This module builds the same
generators in complex128/float64 and composes ``D = exp(alpha J_y) exp(beta J_x) exp(gamma J_y)``
with e3nn's own Euler angles, each exponential from the generator's eigendecomposition
(``J = i V diag(m) V^H``, so ``exp(theta J) = V diag(e^{i m theta}) V^H``;
``torch.matrix_exp`` is off by up to ~1e-11 at small angles), so ``Y(R x) = D(R) Y(x)`` holds
for e3nn's spherical harmonics to machine precision. It never touches torch's global default dtype.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3
from e3nn.o3._wigner import change_basis_real_to_complex


@functools.lru_cache(maxsize=None)
def _so3_generators_float64(l: int) -> torch.Tensor:
    """Real generators ``(J_x, J_y, J_z-like)`` of irrep ``l``, shape (3, 2l+1, 2l+1), float64."""
    m = torch.arange(-l, l, dtype=torch.float64)
    raising = torch.diag(-torch.sqrt(l * (l + 1) - m * (m + 1)), diagonal=-1)
    m = torch.arange(-l + 1, l + 1, dtype=torch.float64)
    lowering = torch.diag(torch.sqrt(l * (l + 1) - m * (m - 1)), diagonal=1)
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    su2 = torch.stack(
        [
            (0.5 * (raising + lowering)).to(torch.complex128),
            torch.diag(1j * m.to(torch.complex128)),
            (-0.5j * (raising - lowering)).to(torch.complex128),
        ]
    )
    q = change_basis_real_to_complex(l, dtype=torch.float64)
    generators = torch.conj(q.T) @ su2 @ q
    assert torch.abs(generators.imag).max() < 1e-12
    return generators.real.contiguous()


@functools.lru_cache(maxsize=None)
def _generator_eigenbasis(l: int, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, V)`` with ``J_axis = V diag(i m) V^H``: ``m`` real (2l+1,), ``V`` unitary,
    complex128."""
    hermitian = -1j * _so3_generators_float64(l)[axis].to(torch.complex128)
    m, vectors = torch.linalg.eigh(hermitian)
    return m, vectors


def _exp_generator(l: int, axis: int, angle: torch.Tensor) -> torch.Tensor:
    """``exp(angle J_axis)`` for angles ``(...)``, shape ``(..., 2l+1, 2l+1)``, real."""
    m, vectors = _generator_eigenbasis(l, axis)
    m, vectors = m.to(angle.device), vectors.to(angle.device)
    phases = torch.exp(1j * angle.to(torch.float64)[..., None] * m)  # (..., 2l+1)
    return ((vectors * phases[..., None, :]) @ vectors.conj().T).real


def wigner_D(l: int, rotation: torch.Tensor) -> torch.Tensor:
    """Wigner D of degree ``l`` for rotation matrices ``(..., 3, 3)``, shape ``(..., 2l+1, 2l+1)``.

    Same convention as ``e3nn.o3.Irrep(l, p).D_from_matrix`` for proper rotations:
    ``o3.spherical_harmonics(l, x @ R.T) == o3.spherical_harmonics(l, x) @ D.T``.
    Float64 rotations give D exact to ~1e-14.
    """
    alpha, beta, gamma = o3.matrix_to_angles(rotation)
    product = (_exp_generator(l, 1, alpha) @ _exp_generator(l, 0, beta)
               @ _exp_generator(l, 1, gamma))
    return product.to(rotation.dtype)
