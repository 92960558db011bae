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
"""

from __future__ import annotations

import numpy as np
import torch

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

    def first(self, positions_bohr) -> np.ndarray:
        """``ip[x, μ, ν] = <∂_x μ | ν>`` (3, nao, nao)."""
        return self._at(positions_bohr).intor("int1e_ipovlp")

    def second(self, positions_bohr) -> np.ndarray:
        """``[ipip, ipip2]`` (2, 3, 3, nao, nao): ``<∂_x∂_y μ|ν>`` and ``<∂_x μ|∂_y ν>``."""
        mol = self._at(positions_bohr)
        nao = mol.nao
        return np.stack([mol.intor("int1e_ipipovlp").reshape(3, 3, nao, nao),
                         mol.intor("int1e_ipovlpip").reshape(3, 3, nao, nao)])

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


def exact_overlap(integrals: OverlapIntegrals, positions_bohr: torch.Tensor,
                  twice_differentiable: bool = True) -> torch.Tensor:
    """S at ``positions_bohr`` ((A, 3) or (B, A, 3), Bohr), as a differentiable tensor.

    With ``twice_differentiable=False`` the first derivative dS/dR is exact and differentiable
    in whatever multiplies it (so a loss on forces trains the parameters correctly), but it is
    treated as constant in R: a second derivative in R through it silently misses the d²S/dR²
    terms (so does the positions' ``.grad`` after a force loss's backward). Use it only where
    no second derivative in R is taken (force training).
    """
    return _Overlap.apply(positions_bohr, integrals, twice_differentiable)


def _batched(positions: torch.Tensor, compute) -> torch.Tensor:
    flat = positions.detach().reshape(-1, *positions.shape[-2:]).cpu().numpy()
    values = np.stack([compute(p) for p in flat])
    return torch.as_tensor(values, dtype=positions.dtype, device=positions.device).reshape(
        *positions.shape[:-2], *values.shape[1:])


class _Overlap(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, integrals, twice_differentiable):
        ctx.integrals = integrals
        ctx.twice_differentiable = twice_differentiable
        ctx.save_for_backward(positions)
        return _batched(positions, integrals.overlap)

    @staticmethod
    def backward(ctx, grad_overlap):
        (positions,) = ctx.saved_tensors
        if not ctx.twice_differentiable:
            positions = positions.detach()  # the pullback is then constant in R
        return _OverlapPullback.apply(grad_overlap, positions, ctx.integrals), None, None


class _OverlapPullback(torch.autograd.Function):
    """``g[A, x] = Σ_μν G_μν ∂S_μν/∂R_Ax`` for an upstream gradient G of S."""

    @staticmethod
    def forward(ctx, grad_overlap, positions, integrals):
        ip = _batched(positions, integrals.first)  # (..., 3, nao, nao)
        ctx.integrals = integrals
        ctx.save_for_backward(grad_overlap, positions, ip)
        symmetric = grad_overlap + grad_overlap.transpose(-1, -2)
        per_ao = -torch.einsum("...mn,...xmn->...mx", symmetric, ip)
        return integrals.atoms_sum(per_ao)

    @staticmethod
    def backward(ctx, upstream):  # upstream (..., A, 3)
        grad_overlap, positions, ip = ctx.saved_tensors
        integrals = ctx.integrals
        spread = integrals.per_ao(upstream)  # (..., nao, 3)
        grad_grad = grad_positions = None
        if ctx.needs_input_grad[0]:
            half = -torch.einsum("...mx,...xmn->...mn", spread, ip)
            grad_grad = half + half.transpose(-1, -2)
        if ctx.needs_input_grad[1]:
            second = _batched(positions, integrals.second)  # (..., 2, 3, 3, nao, nao)
            ipip, ipip2 = second.select(-5, 0), second.select(-5, 1)
            symmetric = (grad_overlap + grad_overlap.transpose(-1, -2)).detach()
            spread = spread.detach()
            same_function = torch.einsum("...mn,...mx,...xymn->...my", symmetric, spread, ipip)
            two_functions = torch.einsum("...mn,...mx,...xymn->...ny", symmetric, spread, ipip2)
            grad_positions = integrals.atoms_sum(same_function + two_functions)
        return grad_grad, grad_positions, None


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
