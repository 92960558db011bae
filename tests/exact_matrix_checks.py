"""Checks shared by the tests of an exact, differentiable AO matrix M(R) from PySCF's integrals
(:class:`ase_phisnet.core.integrals.PerAtomDerivatives`: ``value``-like method, ``gradient``,
``hessian``, ``weighted_hessian`` and a torch function through ``exact_matrix``), imported as
``exact_matrix_checks``: first and second position derivatives against central differences,
autograd (gradcheck/gradgradcheck, the ``twice_differentiable=False`` path, a Hessian by rows),
translation invariance, rotation and reflection covariance, atom permutations.

Each test module describes its matrix with an :class:`ExactMatrix` (its own central-difference
step and tolerance) and keeps its own value tests against PySCF.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from ase.build import molecule
from ase.units import Bohr

from symmetry import ao_D, group_elements

from ase_phisnet.core.basis import BasisLayout


@dataclass(frozen=True)
class ExactMatrix:
    """One exact matrix under test.

    ``value``: the name of the integrals' numpy method ``R -> M`` (nao, nao);
    ``exact``: the torch function ``(integrals, R, twice_differentiable=True) -> M``;
    ``basis``: the AO basis (for the Wigner matrices of the rotation check);
    ``step_bohr`` and ``fd_atol``: the central-difference step and the absolute tolerance of
    analytic derivatives against central differences (the test module says why they fit).
    """

    value: str
    exact: Callable
    basis: str
    step_bohr: float
    fd_atol: float

    def numpy(self, integrals) -> Callable:
        return getattr(integrals, self.value)


def perturbed(name, seed):
    """ASE's molecule ``name`` with every atom moved by ~0.05 Å: (atomic numbers, Bohr)."""
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    return atoms.numbers, atoms.positions / Bohr


def central_difference(function, positions, step_bohr):
    """``(f(R + h e_Ax) - f(R - h e_Ax)) / 2h`` for every atom A and direction x: (A, 3, ...)."""
    rows = []
    for atom in range(len(positions)):
        for x in range(3):
            step = np.zeros_like(positions)
            step[atom, x] = step_bohr
            rows.append((function(positions + step) - function(positions - step)) / (2 * step_bohr))
    out = np.stack(rows)
    return out.reshape(len(positions), 3, *out.shape[1:])


def torch_value(matrix: ExactMatrix, integrals, positions, reference):
    """The torch function's value at ``positions`` is float64 (nao, nao) and ``reference``."""
    value = matrix.exact(integrals, torch.tensor(positions))
    assert value.dtype == torch.float64 and value.shape == (integrals.nao, integrals.nao)
    np.testing.assert_allclose(value.numpy(), reference, rtol=0, atol=1e-10)


def first_derivatives(matrix: ExactMatrix, integrals, positions) -> np.ndarray:
    """``gradient`` (A, 3, nao, nao) against central differences of the value; returns it."""
    gradient = integrals.gradient(positions)
    assert gradient.shape == (len(positions), 3, integrals.nao, integrals.nao)
    difference = central_difference(matrix.numpy(integrals), positions, matrix.step_bohr)
    np.testing.assert_allclose(gradient, difference, rtol=0, atol=matrix.fd_atol)
    return gradient


def second_derivatives(matrix: ExactMatrix, integrals, positions) -> np.ndarray:
    """``hessian`` (A, 3, A, 3, nao, nao) against central differences of the gradient,
    symmetric in its two positions, and ``weighted_hessian`` its contraction; returns it."""
    hessian = integrals.hessian(positions)
    n, nao = len(positions), integrals.nao
    assert hessian.shape == (n, 3, n, 3, nao, nao)
    np.testing.assert_allclose(hessian,
                               central_difference(integrals.gradient, positions, matrix.step_bohr),
                               rtol=0, atol=matrix.fd_atol)
    np.testing.assert_allclose(hessian, hessian.transpose(2, 3, 0, 1, 4, 5), rtol=0, atol=1e-12)
    weights = np.random.default_rng(1).normal(size=(nao, nao))
    np.testing.assert_allclose(integrals.weighted_hessian(positions, weights),
                               np.einsum("axbymn,mn->axby", hessian, weights), rtol=0, atol=1e-11)
    return hessian


def pullbacks(matrix: ExactMatrix, integrals, positions):
    """``pull`` and ``push`` of the integrals' own first-derivative data (whatever layout
    ``first`` has) are the contractions of ``gradient`` they stand for, for one geometry and a
    batch of two: ``pull(W)[A, x] = Σ_μν W_μν ∂M_μν/∂R_Ax``,
    ``push(u)[μ, ν] = Σ_Ax u_Ax ∂M_μν/∂R_Ax``."""
    rng = np.random.default_rng(5)
    geometries = np.stack([positions, positions + rng.normal(scale=0.05, size=positions.shape)])
    gradients = np.stack([integrals.gradient(p) for p in geometries])
    first = torch.as_tensor(np.stack([integrals.first(p) for p in geometries]))
    weights = torch.as_tensor(rng.normal(size=(2, integrals.nao, integrals.nao)))
    displacement = torch.as_tensor(rng.normal(size=(2, *positions.shape)))
    expected_pull = np.einsum("bmn,baxmn->bax", weights.numpy(), gradients)
    expected_push = np.einsum("bax,baxmn->bmn", displacement.numpy(), gradients)
    np.testing.assert_allclose(integrals.pull(weights, first).numpy(), expected_pull,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(integrals.push(displacement, first).numpy(), expected_push,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(integrals.pull(weights[0], first[0]).numpy(), expected_pull[0],
                               rtol=0, atol=1e-10)


def _weighted_sum(matrix: ExactMatrix, integrals, twice_differentiable=True):
    weights = torch.randn(integrals.nao, integrals.nao, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))
    return lambda p: (weights * matrix.exact(integrals, p, twice_differentiable)).sum()


def autograd(matrix: ExactMatrix, integrals, positions):
    """gradcheck/gradgradcheck compare the analytic derivatives of ``Σ W ∘ M(R)`` with central
    differences (torch's default eps 1e-6 and tolerances), one geometry and two; with
    ``twice_differentiable=False`` the first derivative is the same."""
    single = torch.tensor(positions).requires_grad_(True)
    batch = torch.stack([single.detach(), single.detach() + 0.02]).requires_grad_(True)
    function = _weighted_sum(matrix, integrals)
    for inputs in (single, batch):
        assert torch.autograd.gradcheck(function, (inputs,))
        assert torch.autograd.gradgradcheck(function, (inputs,))
    once = _weighted_sum(matrix, integrals, twice_differentiable=False)
    assert torch.autograd.gradcheck(once, (batch,))
    (exact,) = torch.autograd.grad(function(single), single)
    (first_only,) = torch.autograd.grad(once(single), single)
    torch.testing.assert_close(first_only, exact, rtol=0, atol=1e-13)


def hessian_by_rows(matrix: ExactMatrix, integrals, positions):
    """The Hessian of ``Σ W ∘ M(R)`` row by row through autograd (one backward graph, reused:
    the curvature is computed once) is ``weighted_hessian``."""
    moved = torch.tensor(positions).requires_grad_(True)
    weights = torch.randn(integrals.nao, integrals.nao, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(4))
    energy = (weights * matrix.exact(integrals, moved)).sum()
    (gradient,) = torch.autograd.grad(energy, moved, create_graph=True)
    rows = [torch.autograd.grad(g, moved, retain_graph=True)[0] for g in gradient.flatten()]
    hessian = torch.stack(rows).reshape(*positions.shape, *positions.shape)
    reference = integrals.weighted_hessian(positions, weights.numpy())
    np.testing.assert_allclose(hessian.numpy(), reference, rtol=0, atol=1e-11)


def symmetries(matrix: ExactMatrix, integrals, positions):
    """M(x + t) = M(x), so Σ_A ∂M/∂R_A = 0; for a rotation and a reflection g,
    M(g x) = D(g) M(x) D(g)ᵀ and the gradient transforms as a vector:
    ∂M/∂R_A at g x = Σ_j g_ij D ∂M/∂R_Aj Dᵀ."""
    value_at = matrix.numpy(integrals)
    value, gradient = value_at(positions), integrals.gradient(positions)
    shifted = value_at(positions + np.array([0.3, -1.2, 2.0]))
    np.testing.assert_allclose(shifted, value, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradient.sum(0), 0.0, rtol=0, atol=1e-10)

    numbers = integrals.atomic_numbers.tolist()
    layout = BasisLayout(matrix.basis, numbers)
    for name, element in group_elements(5).items():
        d, g = ao_D(layout, numbers, element).numpy(), element.numpy()
        moved = positions @ g.T
        np.testing.assert_allclose(value_at(moved), d @ value @ d.T, rtol=0, atol=1e-10,
                                   err_msg=name)
        expected = np.einsum("ij,mp,ajpq,nq->aimn", g, d, gradient, d)
        np.testing.assert_allclose(integrals.gradient(moved), expected, rtol=0, atol=1e-10,
                                   err_msg=name)


def permutation(matrix: ExactMatrix, integrals, positions):
    """The same molecule with its atoms in another order (the first atom moved last): a new
    integrals object of the permuted atoms gives M with its AO blocks permuted, and the
    gradient with its atoms and AO blocks permuted (each atom's own integrals, not another
    atom's of the same element)."""
    numbers = np.asarray(integrals.atomic_numbers)
    order = np.roll(np.arange(len(numbers)), -1)
    options = {"sap_basis": integrals.sap_basis} if hasattr(integrals, "sap_basis") else {}
    permuted = type(integrals)(numbers[order], matrix.basis, **options)
    slices = BasisLayout(matrix.basis, numbers.tolist()).ao_slices(numbers.tolist())
    ao_order = np.concatenate([np.arange(slices[a].start, slices[a].stop) for a in order])
    value = matrix.numpy(integrals)(positions)
    np.testing.assert_allclose(matrix.numpy(permuted)(positions[order]),
                               value[np.ix_(ao_order, ao_order)], rtol=0, atol=1e-10)
    gradient = integrals.gradient(positions)
    np.testing.assert_allclose(permuted.gradient(positions[order]),
                               gradient[order][:, :, ao_order][:, :, :, ao_order],
                               rtol=0, atol=1e-10)
