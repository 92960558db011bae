"""The exact AO overlap matrix S(R) from PySCF's integrals, differentiable twice in R.

S is a known function of the geometry, ``S_μν = <φ_μ(r - R_A) | φ_ν(r - R_B)>``, so a model
can take it from the integrals instead of learning it (``ModelConfig.exact_overlap``): no
overlap error, and no predicted S that is indefinite at a geometry the network has seen little
of. Forces need dS/dR and Hessians d²S/dR²; both come from PySCF's derivative integrals, with
∇ acting on the electron coordinate (``φ_μ`` moves with its atom, so ``∂φ_μ/∂R_A = -∇φ_μ``):

    ip[x, μ, ν]      = <∂_x μ | ν>            (int1e_ipovlp)
    ipip[x, y, μ, ν] = <∂_x ∂_y μ | ν>        (int1e_ipipovlp)
    ipip2[x, y, μ, ν] = <∂_x μ | ∂_y ν>       (int1e_ipovlpip)

    ∂S_μν/∂R_Ax = -δ(A, μ) ip[x, μ, ν] - δ(A, ν) ip[x, ν, μ]
    ∂²S_μν/∂R_Ax ∂R_By = δ(A, μ) δ(B, μ) ipip[x, y, μ, ν] + δ(A, ν) δ(B, ν) ipip[x, y, ν, μ]
                        + δ(A, μ) δ(B, ν) ipip2[x, y, μ, ν] + δ(A, ν) δ(B, μ) ipip2[y, x, μ, ν]

where δ(A, μ) is 1 when AO μ sits on atom A. Autograd sees S through :func:`exact_overlap`;
its backward is itself differentiable in the upstream gradient (force training needs that) and,
unless ``twice_differentiable=False``, in R (Hessians need that). Force training asks for the
first only: the second-derivative integrals cost about as much as a fifth of an ethanol
training step and would only feed the gradient of the (unused) positions. Third derivatives
in R are not provided. PySCF AO order, Bohr.

The autograd plumbing is generic (:func:`exact_matrix` over the :class:`ExactIntegrals`
protocol), shared with the exact core Hamiltonian (:mod:`ase_phisnet.core.core_hamiltonian`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from pyscf import lib

from ase_phisnet.core.molecule import build_molecule


def charge_center_bohr(atomic_numbers, positions_bohr) -> torch.Tensor:
    """Centre of nuclear charge ``sum_A Z_A R_A / sum_A Z_A`` in Bohr, shape ``(..., 3)``."""
    charges = atomic_numbers.to(positions_bohr.dtype)
    return (charges[:, None] * positions_bohr).sum(-2) / charges.sum()


class OverlapIntegrals:
    """PySCF overlap integrals of one molecule (atomic numbers and basis fixed) at any geometry.

    Keeps one PySCF ``Mole`` and moves its atoms; a model holds one per molecule it has seen.
    """

    def __init__(self, atomic_numbers, basis: str):
        self.atomic_numbers = np.asarray(atomic_numbers, dtype=int)
        n = len(self.atomic_numbers)
        # Closed-shell check of build_molecule is irrelevant to integrals: give it a charge
        # that makes the electron count even.
        charge = int(self.atomic_numbers.sum() % 2)
        on_a_line = np.outer(np.arange(n), [3.0, 0.0, 0.0])  # placeholder; moved per call
        self.mol = build_molecule(self.atomic_numbers, on_a_line, basis, charge=charge)
        atom_of_ao = np.zeros(self.mol.nao, dtype=int)
        for atom, (first, last) in enumerate(self.mol.aoslice_by_atom()[:, 2:4]):
            atom_of_ao[first:last] = atom
        self.atom_of_ao = torch.as_tensor(atom_of_ao)

    def _at(self, positions_bohr: np.ndarray):
        self.mol.set_geom_(np.asarray(positions_bohr, dtype=float), unit="Bohr", symmetry=False)
        return self.mol

    def overlap(self, positions_bohr) -> np.ndarray:
        """S (nao, nao)."""
        return self._at(positions_bohr).intor("int1e_ovlp")

    def value(self, positions_bohr) -> np.ndarray:
        """S (nao, nao): the matrix of :class:`ExactIntegrals`."""
        return self.overlap(positions_bohr)

    def first(self, positions_bohr) -> np.ndarray:
        """``ip[x, μ, ν] = <∂_x μ | ν>`` (3, nao, nao)."""
        return self._at(positions_bohr).intor("int1e_ipovlp")

    def second(self, positions_bohr) -> np.ndarray:
        """``[ipip, ipip2]`` (2, 3, 3, nao, nao): ``<∂_x∂_y μ|ν>`` and ``<∂_x μ|∂_y ν>``."""
        mol = self._at(positions_bohr)
        nao = mol.nao
        return np.stack([mol.intor("int1e_ipipovlp").reshape(3, 3, nao, nao),
                         mol.intor("int1e_ipovlpip").reshape(3, 3, nao, nao)])

    def pull(self, weights: torch.Tensor, ip: torch.Tensor) -> torch.Tensor:
        """``Σ_μν W_μν ∂S_μν/∂R_Ax`` (..., A, 3) from ``ip`` (..., 3, nao, nao)."""
        symmetric = weights + weights.transpose(-1, -2)
        return self.atoms_sum(-torch.einsum("...mn,...xmn->...mx", symmetric, ip))

    def push(self, displacement: torch.Tensor, ip: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax ∂S/∂R_Ax`` (..., nao, nao) for u (..., A, 3)."""
        half = -torch.einsum("...mx,...xmn->...mn", self.per_ao(displacement), ip)
        return half + half.transpose(-1, -2)

    def curvature(self, weights: torch.Tensor, positions: torch.Tensor):
        """``(W + Wᵀ, ipip, ipip2)`` at each geometry, for :meth:`second_pull`."""
        second = _batched(positions, self.second)  # (..., 2, 3, 3, nao, nao)
        return weights + weights.transpose(-1, -2), second.select(-5, 0), second.select(-5, 1)

    def second_pull(self, curvature, displacement: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax Σ_μν W_μν ∂²S_μν/∂R_Ax ∂R_By`` (..., A, 3)."""
        symmetric, ipip, ipip2 = curvature
        spread = self.per_ao(displacement)  # (..., nao, 3)
        same_function = torch.einsum("...mn,...mx,...xymn->...my", symmetric, spread, ipip)
        two_functions = torch.einsum("...mn,...mx,...xymn->...ny", symmetric, spread, ipip2)
        return self.atoms_sum(same_function + two_functions)

    def position_about_charge_center(self, positions_bohr) -> np.ndarray:
        """``<μ| r - R_c |ν>`` (3, nao, nao), Bohr: PySCF's ``int1e_r`` minus ``R_c S``, ``R_c``
        the centre of nuclear charge (see :func:`position_integrals`)."""
        positions = np.asarray(positions_bohr, dtype=float)
        center = charge_center_bohr(torch.as_tensor(self.atomic_numbers),
                                    torch.as_tensor(positions)).numpy()
        mol = self._at(positions)
        return mol.intor("int1e_r") - center[:, None, None] * mol.intor("int1e_ovlp")

    def atoms_sum(self, per_ao: torch.Tensor) -> torch.Tensor:
        """Sum ``(..., nao, 3)`` over the AOs of each atom -> ``(..., A, 3)``."""
        index = self.atom_of_ao.to(per_ao.device)
        shape = (*per_ao.shape[:-2], len(self.atomic_numbers), 3)
        return per_ao.new_zeros(shape).index_add_(-2, index, per_ao)

    def per_ao(self, per_atom: torch.Tensor) -> torch.Tensor:
        """Spread ``(..., A, 3)`` to ``(..., nao, 3)`` (each AO gets its atom's row)."""
        return per_atom.index_select(-2, self.atom_of_ao.to(per_atom.device))


class ExactIntegrals(Protocol):
    """What :func:`exact_matrix` needs from the integrals of one molecule: a matrix M(R)
    (nao, nao) of the positions R (A, 3), Bohr, and its first and second derivatives.

    ``first`` returns first-derivative data in whatever layout ``pull`` and ``push`` read (the
    overlap keeps it per AO, ``(3, nao, nao)``; the core Hamiltonian keeps it per atom). With
    W an upstream gradient of M (..., nao, nao) and u one of the positions (..., A, 3):

        pull(W)[A, x]          = Σ_μν W_μν ∂M_μν/∂R_Ax                      (..., A, 3)
        push(u)[μ, ν]          = Σ_Ax u_Ax ∂M_μν/∂R_Ax                      (..., nao, nao)
        second_pull(C_W, u)[B, y] = Σ_Ax u_Ax Σ_μν W_μν ∂²M_μν/∂R_Ax ∂R_By  (..., A, 3)

    where ``C_W = curvature(W, R)`` holds what ``second_pull`` needs (computed once per
    backward graph and reused when autograd is called again on it, e.g. a Hessian row by row).
    """

    def value(self, positions_bohr: np.ndarray) -> np.ndarray: ...

    def first(self, positions_bohr: np.ndarray) -> np.ndarray: ...

    def pull(self, weights: torch.Tensor, first: torch.Tensor) -> torch.Tensor: ...

    def push(self, displacement: torch.Tensor, first: torch.Tensor) -> torch.Tensor: ...

    def curvature(self, weights: torch.Tensor, positions: torch.Tensor): ...

    def second_pull(self, curvature, displacement: torch.Tensor) -> torch.Tensor: ...


class PerAtomDerivatives:
    """:class:`ExactIntegrals` for integrals whose derivatives are kept per atom: a subclass
    gives ``value(p)`` (nao, nao), ``gradient(p)`` (A, 3, nao, nao) = ``∂M/∂R_Ax`` and
    ``weighted_hessian(p, W)`` (A, 3, A, 3) = ``Σ_μν W_μν ∂²M_μν/∂R_Ax ∂R_By`` (numpy, Bohr)."""

    def first(self, positions_bohr) -> np.ndarray:
        return self.gradient(positions_bohr)

    def pull(self, weights: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """``Σ_μν W_μν ∂M_μν/∂R_Ax`` (..., A, 3) from the gradient (..., A, 3, nao, nao)."""
        return torch.einsum("...mn,...axmn->...ax", weights, gradient)

    def push(self, displacement: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax ∂M/∂R_Ax`` (..., nao, nao) for u (..., A, 3)."""
        return torch.einsum("...ax,...axmn->...mn", displacement, gradient)

    def curvature(self, weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``weighted_hessian`` at each geometry, (..., A, 3, A, 3)."""
        return _batched(positions, self.weighted_hessian, weights)

    def second_pull(self, curvature: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
        """``Σ_Ax u_Ax Σ_μν W_μν ∂²M_μν/∂R_Ax ∂R_By`` (..., A, 3)."""
        return torch.einsum("...ax,...axby->...by", displacement, curvature)


def exact_overlap(integrals: OverlapIntegrals, positions_bohr: torch.Tensor,
                  twice_differentiable: bool = True) -> torch.Tensor:
    """S at ``positions_bohr`` ((A, 3) or (B, A, 3), Bohr), as a differentiable tensor.

    With ``twice_differentiable=False`` the first derivative dS/dR is exact and differentiable
    in whatever multiplies it (so a loss on forces trains the parameters correctly), but it is
    treated as constant in R: a second derivative in R through it silently misses the d²S/dR²
    terms (so does the positions' ``.grad`` after a force loss's backward). Use it only where
    no second derivative in R is taken (force training).
    """
    return exact_matrix(integrals, positions_bohr, twice_differentiable)


def exact_matrix(integrals: ExactIntegrals, positions_bohr: torch.Tensor,
                 twice_differentiable: bool = True) -> torch.Tensor:
    """``integrals.value`` at ``positions_bohr`` ((..., A, 3), Bohr) -> (..., nao, nao), with
    exact first and (unless ``twice_differentiable=False``, see :func:`exact_overlap`) second
    derivatives in R. The backward's result is differentiable in the upstream gradient; the
    second-derivative term is not differentiated further (no third derivatives)."""
    return _Exact.apply(positions_bohr, integrals, twice_differentiable)


def integral_threads():
    """A context in which PySCF's integral code runs on as many OpenMP threads as torch.

    PySCF's own default (every core, or ``OMP_NUM_THREADS``) oversubscribes a machine whose
    torch is limited to fewer threads, as in training with one thread per job: there a 1 ms
    integral call took ~20 ms. On an idle 2-core machine two threads halve the SAP integrals
    of ethanol (23 -> 13 ms with their gradient).
    """
    return lib.with_omp_threads(torch.get_num_threads())


def _batched(positions: torch.Tensor, compute, *weights: torch.Tensor) -> torch.Tensor:
    """``compute(p, *w)`` (numpy) for each geometry p of ``positions`` (..., A, 3), with the
    matching entries of ``weights`` (..., *) when given, stacked back to (..., *out)."""
    batch = positions.shape[:-2]
    flat = positions.detach().reshape(-1, *positions.shape[-2:]).cpu().numpy()
    flat_weights = [w.detach().reshape(-1, *w.shape[len(batch):]).cpu().numpy() for w in weights]
    with integral_threads():
        values = np.stack([compute(p, *w) for p, *w in zip(flat, *flat_weights)])
    return torch.as_tensor(values, dtype=positions.dtype, device=positions.device).reshape(
        *batch, *values.shape[1:])


class _Exact(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, integrals, twice_differentiable):
        ctx.integrals = integrals
        ctx.twice_differentiable = twice_differentiable
        ctx.save_for_backward(positions)
        return _batched(positions, integrals.value)

    @staticmethod
    def backward(ctx, grad_matrix):
        (positions,) = ctx.saved_tensors
        if not ctx.twice_differentiable:
            positions = positions.detach()  # the pullback is then constant in R
        # dM/dR once per graph: a retained graph is pulled back again for each row of a
        # Jacobian (the electronic features' dx/dR take one pullback per feature)
        if getattr(ctx, "first", None) is None:
            ctx.first = _batched(positions, ctx.integrals.first)
        return _ExactPullback.apply(grad_matrix, positions, ctx.integrals, ctx.first), None, None


class _ExactPullback(torch.autograd.Function):
    """``g[A, x] = Σ_μν W_μν ∂M_μν/∂R_Ax`` for an upstream gradient W of M, from the first
    derivatives ``first`` (``integrals.first`` at ``positions``)."""

    @staticmethod
    def forward(ctx, grad_matrix, positions, integrals, first):
        ctx.integrals = integrals
        ctx.curvature = None
        ctx.save_for_backward(grad_matrix, positions, first)
        return integrals.pull(grad_matrix, first)

    @staticmethod
    def backward(ctx, upstream):  # upstream (..., A, 3)
        grad_matrix, positions, first = ctx.saved_tensors
        integrals = ctx.integrals
        grad_grad = grad_positions = None
        if ctx.needs_input_grad[0]:
            grad_grad = integrals.push(upstream, first)
        if ctx.needs_input_grad[1]:
            if ctx.curvature is None:
                with integral_threads():
                    ctx.curvature = integrals.curvature(grad_matrix.detach(),
                                                        positions.detach())
            grad_positions = integrals.second_pull(ctx.curvature, upstream.detach())
        return grad_grad, grad_positions, None, None


def position_integrals(atomic_numbers, positions_bohr, basis: str) -> np.ndarray:
    """``<μ| r - R_c |ν>`` (PySCF ``int1e_r`` minus ``R_c S``, Bohr) of geometries ``(N, A, 3)``
    of one molecule, ``R_c`` each geometry's centre of nuclear charge: ``(N, 3, nao, nao)``.

    For dipole moments of predicted density matrices about ``R_c``
    (:func:`~ase_phisnet.electronic.observables.dipole_moment_e_bohr` with ``origin_bohr=R_c``): a
    density normalized against a predicted S holds slightly more or fewer than N electrons in the
    exact metric, and about ``R_c`` that error does not grow with the distance from the origin.
    """
    integrals = OverlapIntegrals(atomic_numbers, basis)
    return np.stack([integrals.position_about_charge_center(p) for p in positions_bohr])
