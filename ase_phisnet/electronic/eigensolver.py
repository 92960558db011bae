r"""Closed-shell electronic structure from predicted H and S, differentiable to second order.

Atomic units throughout (Hartree, Bohr, e). Shapes: ``(..., nao, nao)`` with any batch prefix.

Generalized eigenproblem ``H C = S C eps``. With the Cholesky factor ``S = L L^T`` it becomes the
ordinary problem of ``H' = L^{-1} H L^{-T}`` (``C = L^{-T} C'``). Everything the energy needs
depends on the occupied orbitals only through the **occupied projector**

.. math::

    P' = C'_{occ} C'^T_{occ} = \tfrac12 \big(I - \mathrm{sign}(H' - \mu I)\big),

with ``mu`` in the HOMO–LUMO gap. The matrix sign is computed by the scaled Newton iteration
``X <- (c X + (c X)^{-1}) / 2`` — rational functions of ``H'``, so autograd gives exact first and
second derivatives that need only the occupied–virtual gap: degenerate occupied orbitals
(methane, ammonia, benzene) are no problem, unlike the eigenvector derivative of ``eigh``, whose
``1 / (eps_i - eps_j)`` factors are NaN there. The AO density matrix and energy-weighted density
matrix of a closed shell are

    P = 2 L^{-T} P' L^{-1},    W = 2 L^{-T} P' H' P' L^{-1}    (so E-derivatives have
                                                               PySCF's Tr[P dH] - Tr[W dS] form).

When only first derivatives are needed (forces, not Hessians or force training), the projector
comes from the eigendecomposition ``H' = C' diag(eps) C'^T`` that is computed anyway,
``P' = C'_occ C'^T_occ``, with the exact first-order derivative of a spectral projector
(:class:`OccupiedProjector`)

.. math::

    \bar H' = \sum_{i \in occ, a \in virt} \frac{(C'^T \bar P' C')_{ia}}{\epsilon_i - \epsilon_a}
               \big(c'_i c'^T_a + c'_a c'^T_i\big),

which again involves only occupied–virtual differences (finite at degenerate occupied
orbitals). Four matrix products instead of the Newton iteration's ~10 solves and their backward.

The energies built from this solution are in :mod:`ase_phisnet.electronic.energy`, the
observables (charges, dipole) in :mod:`ase_phisnet.electronic.observables`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ase_phisnet.core.errors import ElectronCountError, PhiSNetError


class IllConditionedOverlapError(PhiSNetError, ValueError):
    """The (predicted) overlap matrix is not safely positive definite."""


class NoGapError(PhiSNetError, ValueError):
    """The HOMO and LUMO are degenerate: the closed-shell ground state is not defined."""


def cholesky_of_overlap(overlap: torch.Tensor, min_eigenvalue: float = 1e-6) -> torch.Tensor:
    """Lower Cholesky factor of ``S``; raises if ``S`` has an eigenvalue below
    ``min_eigenvalue``."""
    smallest = torch.linalg.eigvalsh(overlap.detach()).min()
    if not bool(smallest > min_eigenvalue):
        raise IllConditionedOverlapError(
            f"overlap matrix has smallest eigenvalue {float(smallest):.3e} (<= "
            f"{min_eigenvalue:.0e}): near-linearly dependent basis or a geometry far outside the "
            "model's training data")
    return torch.linalg.cholesky(overlap)


def orthogonalized(hamiltonian: torch.Tensor, cholesky: torch.Tensor) -> torch.Tensor:
    """``H' = L^{-1} H L^{-T}`` (symmetrized) for ``S = L L^T``.

    ``H'`` has the eigenvalues of ``H C = S C eps``; its eigenvectors are ``C' = L^T C``.
    """
    half = torch.linalg.solve_triangular(cholesky, hamiltonian, upper=False)
    orthogonal = torch.linalg.solve_triangular(cholesky, half.transpose(-1, -2), upper=False)
    return 0.5 * (orthogonal + orthogonal.transpose(-1, -2))


def _newton_sign(shifted: torch.Tensor, spectrum: torch.Tensor, max_iterations: int = 60):
    """``sign(A)`` of symmetric ``A`` with detached eigenvalues ``spectrum`` (scaled Newton)."""
    x, values = shifted, spectrum.abs()
    eye = torch.eye(shifted.shape[-1], dtype=shifted.dtype, device=shifted.device)
    for _ in range(max_iterations):
        # Scaling from the current extreme |eigenvalues| (tracked as scalars), as in Higham's
        # "Functions of Matrices" ch. 5; it only speeds convergence, the limit is sign(A).
        scale = (values.amin(-1) * values.amax(-1)).rsqrt()  # (...,)
        x = 0.5 * (scale[..., None, None] * x + torch.linalg.solve(
            scale[..., None, None] * x, eye.expand_as(x)))
        values = 0.5 * (scale[..., None] * values + 1.0 / (scale[..., None] * values))
        if float((values - 1.0).abs().max()) < 1e-15:
            break
    x = 0.5 * (x + torch.linalg.solve(x, eye.expand_as(x)))  # one more: derivatives converge too
    return 0.5 * (x + x.transpose(-1, -2))


class OccupiedProjector(torch.autograd.Function):
    """``P' = C_occ C_occ^T`` from a given eigendecomposition of symmetric ``H'``; first
    derivative only: a backward pass that builds a graph (``create_graph=True``, the start of
    any higher derivative) is an error, never a silently incomplete number — Hessians and force
    training take the Newton path (``derivative_order=2``)."""

    @staticmethod
    def forward(ctx, orthogonal, eigenvalues, eigenvectors, n_occupied: int):
        occupied = eigenvectors[..., :n_occupied]
        ctx.save_for_backward(eigenvalues, eigenvectors)
        ctx.n_occupied = n_occupied
        return occupied @ occupied.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad_projector):
        if torch.is_grad_enabled():  # only under create_graph=True
            raise RuntimeError("the first-order occupied projector cannot be differentiated "
                               "twice: use derivative_order=2 for higher derivatives")
        eigenvalues, eigenvectors = ctx.saved_tensors
        n = ctx.n_occupied
        occupied, virtual = eigenvectors[..., :n], eigenvectors[..., n:]
        symmetric = 0.5 * (grad_projector + grad_projector.transpose(-1, -2))
        coupling = occupied.transpose(-1, -2) @ symmetric @ virtual  # (..., occ, virt)
        gaps = eigenvalues[..., :n, None] - eigenvalues[..., None, n:]
        half = occupied @ (coupling / gaps) @ virtual.transpose(-1, -2)
        return half + half.transpose(-1, -2), None, None, None


@dataclass
class ClosedShellSolution:
    """Solution of ``H C = S C eps`` for a closed shell (tensors keep their autograd graph)."""

    orbital_energies_eh: torch.Tensor  # (..., nao) ascending (detached)
    orbitals: torch.Tensor  # (..., nao, nao) columns C, S-orthonormal (detached)
    density_matrix: torch.Tensor  # (..., nao, nao) P = 2 C_occ C_occ^T
    energy_weighted_density_matrix: torch.Tensor  # (..., nao, nao) W = 2 C_occ eps C_occ^T, Eh
    n_occupied: int

    @property
    def homo_lumo_eh(self) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.orbital_energies_eh
        return eps[..., self.n_occupied - 1], eps[..., self.n_occupied]


def solve_closed_shell(hamiltonian: torch.Tensor, overlap: torch.Tensor, n_occupied: int,
                       min_overlap_eigenvalue: float = 1e-6,
                       min_gap_eh: float = 1e-6,
                       derivative_order: int = 2) -> ClosedShellSolution:
    """Orbitals, P and W of a closed shell with ``n_occupied`` doubly occupied orbitals.

    ``P`` and ``W`` are differentiable with respect to ``H`` and ``S`` and need only a
    HOMO–LUMO gap (``> min_gap_eh``); orbitals and energies are returned detached. With
    ``derivative_order=2`` (default) to second order (Newton sign iteration); with ``1`` to
    first order only (eigendecomposition, :class:`OccupiedProjector`; faster), and a second
    derivative raises.
    """
    if derivative_order not in (1, 2):
        raise ValueError(f"derivative_order must be 1 or 2, got {derivative_order}")
    nao = hamiltonian.shape[-1]
    if not 0 < n_occupied < nao:
        raise ElectronCountError(f"a closed shell needs 0 < occupied orbitals < basis "
                                 f"functions; got {n_occupied} occupied of {nao}")
    cholesky = cholesky_of_overlap(overlap, min_overlap_eigenvalue)
    orthogonal = orthogonalized(hamiltonian, cholesky)
    with torch.no_grad():
        eps, vectors = torch.linalg.eigh(orthogonal)
        gap = eps[..., n_occupied] - eps[..., n_occupied - 1]
        if not bool((gap > min_gap_eh).all()):
            raise NoGapError(f"HOMO-LUMO gap {float(gap.min()):.2e} Eh: degenerate frontier "
                             "orbitals, no closed-shell ground state")
        mu = 0.5 * (eps[..., n_occupied] + eps[..., n_occupied - 1])
        orbitals = torch.linalg.solve_triangular(cholesky.transpose(-1, -2), vectors, upper=True)
    eye = torch.eye(nao, dtype=hamiltonian.dtype, device=hamiltonian.device)
    if derivative_order == 1:
        projector = OccupiedProjector.apply(orthogonal, eps, vectors, n_occupied)  # P'
    else:
        shifted = orthogonal - mu[..., None, None] * eye
        projector = 0.5 * (eye - _newton_sign(shifted, eps - mu[..., None]))  # P'
    weighted = projector @ orthogonal @ projector  # P' H' P'

    def to_ao(matrix):  # L^-T M L^-1
        left = torch.linalg.solve_triangular(cholesky.transpose(-1, -2), matrix, upper=True)
        return torch.linalg.solve_triangular(cholesky.transpose(-1, -2),
                                             left.transpose(-1, -2), upper=True)

    return ClosedShellSolution(
        orbital_energies_eh=eps,
        orbitals=orbitals,
        density_matrix=2.0 * to_ao(projector),
        energy_weighted_density_matrix=2.0 * to_ao(weighted),
        n_occupied=n_occupied,
    )
