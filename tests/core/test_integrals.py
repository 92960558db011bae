"""Exact overlap from PySCF's integrals: values, first and second position derivatives (a model
that takes S from them: tests/electronic/test_model.py)."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr

from ase_phisnet.core.integrals import OverlapIntegrals, exact_overlap
from ase_phisnet.core.molecule import build_molecule


@pytest.fixture(scope="module")
def water():
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    return atoms.numbers, torch.tensor(atoms.positions / Bohr, dtype=torch.float64)


def test_values_are_pyscfs_overlap(water):
    numbers, positions = water
    overlap = exact_overlap(OverlapIntegrals(numbers, "def2-svp"), positions)
    reference = build_molecule(numbers, positions.numpy(), "def2-svp").intor("int1e_ovlp")
    np.testing.assert_allclose(overlap.numpy(), reference, atol=1e-14)


def test_first_and_second_derivatives_match_finite_differences(water):
    """gradcheck/gradgradcheck compare every analytic derivative with central differences,
    for one geometry and a batch of two."""
    numbers, positions = water
    integrals = OverlapIntegrals(numbers, "def2-svp")
    single = positions.clone().requires_grad_(True)
    batch = torch.stack([positions, positions + 0.02]).requires_grad_(True)
    for inputs in (single, batch):
        assert torch.autograd.gradcheck(lambda p: exact_overlap(integrals, p), (inputs,))
        assert torch.autograd.gradgradcheck(lambda p: exact_overlap(integrals, p), (inputs,))


def test_overlap_is_invariant_to_translation(water):
    numbers, positions = water
    integrals = OverlapIntegrals(numbers, "def2-svp")
    shifted = positions + torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    torch.testing.assert_close(exact_overlap(integrals, shifted),
                               exact_overlap(integrals, positions), rtol=0, atol=1e-13)
    # ... so its derivative sums to zero over the atoms, for any weighting of S.
    moved = positions.clone().requires_grad_(True)
    weights = torch.randn(24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (gradient,) = torch.autograd.grad((exact_overlap(integrals, moved) * weights).sum(), moved)
    torch.testing.assert_close(gradient.sum(0), torch.zeros(3, dtype=torch.float64), rtol=0,
                               atol=1e-12)


def test_force_training_gradients_need_no_second_position_derivatives(water):
    """``twice_differentiable=False`` skips d²S/dR²: the parameter gradient of a force loss
    (what training takes) is unchanged, because d²S/dR² only reaches the positions' gradient."""
    numbers, positions = water
    integrals = OverlapIntegrals(numbers, "def2-svp")
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(24, 24, dtype=torch.float64, generator=generator).requires_grad_(True)
    target = torch.randn(3, 3, dtype=torch.float64, generator=generator)

    def parameter_gradient(twice):
        moved = positions.clone().requires_grad_(True)
        overlap = exact_overlap(integrals, moved, twice_differentiable=twice)
        energy = (weights * overlap).sum() + (weights.sin() * overlap ** 2).sum()
        (gradient,) = torch.autograd.grad(energy, moved, create_graph=True)
        loss = ((-gradient - target) ** 2).sum()
        return torch.autograd.grad(loss, (weights, moved))

    first_order, second_order = parameter_gradient(False), parameter_gradient(True)
    torch.testing.assert_close(first_order[0], second_order[0], rtol=1e-12, atol=1e-14)
    # What was skipped: the d²S/dR² part of the positions' gradient.
    assert not torch.allclose(first_order[1], second_order[1], atol=1e-6)


def test_repeated_pullbacks_of_one_graph_compute_the_first_derivatives_once(water):
    """A Jacobian row by row pulls the same graph back once per row: dS/dR is computed on the
    first pullback and reused (same values as a fresh graph per row)."""
    numbers, positions = water
    integrals = OverlapIntegrals(numbers, "def2-svp")
    calls = []
    first = integrals.first
    integrals.first = lambda p: calls.append(1) or first(p)
    inputs = positions.clone().requires_grad_(True)
    overlap = exact_overlap(integrals, inputs)
    weights = torch.randn((3,) + overlap.shape, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
    rows = [torch.autograd.grad(overlap, inputs, w, retain_graph=True)[0] for w in weights]
    assert len(calls) == 1
    for w, row in zip(weights, rows):
        fresh = positions.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(exact_overlap(integrals, fresh), fresh, w)
        torch.testing.assert_close(row, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_overlap_and_its_pullback_transform_under_rotations_and_reflections(water, element):
    """S(g x) = D S(x) Dᵀ, and the position gradient of Σ W∘S (any weights W) at g x is
    g times that of Σ (DᵀWD)∘S at x: the derivative integrals transform as vectors."""
    from symmetry import ao_D, group_elements

    from ase_phisnet.core.basis import BasisLayout

    numbers, positions = water
    integrals = OverlapIntegrals(numbers, "def2-svp")
    g = group_elements(3)[element]
    d = ao_D(BasisLayout("def2-svp", numbers.tolist()), numbers.tolist(), g)
    moved = (positions @ g.T).requires_grad_(True)
    torch.testing.assert_close(exact_overlap(integrals, moved).detach(),
                               d @ exact_overlap(integrals, positions) @ d.T, rtol=0, atol=1e-12)
    weights = torch.randn(24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (at_moved,) = torch.autograd.grad((exact_overlap(integrals, moved) * weights).sum(), moved)
    here = positions.clone().requires_grad_(True)
    (at_here,) = torch.autograd.grad((exact_overlap(integrals, here) * (d.T @ weights @ d)).sum(),
                                     here)
    torch.testing.assert_close(at_moved, at_here @ g.T, rtol=0, atol=1e-12)
