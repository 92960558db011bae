"""The closed-shell eigensolver: H C = S C eps against PySCF, derivatives against finite
differences, finite at degenerate occupied levels, clear errors."""

import numpy as np
import pytest
import torch

from ase_phisnet.electronic.eigensolver import (
    IllConditionedOverlapError,
    NoGapError,
    solve_closed_shell,
)
from ase_phisnet.electronic.energy import band_energy_eh


def central_difference(function, step):
    """Fourth-order central difference of ``function(t)`` at ``t = 0``."""
    return (8 * (function(step) - function(-step)) - (function(2 * step) - function(-2 * step))) / (
        12 * step)


def tensors(mf):
    return (torch.tensor(mf.get_fock()), torch.tensor(mf.get_ovlp()),
            torch.tensor(mf.get_hcore()))


def test_solution_matches_pyscf(methane_rhf):
    """P, eps and the energy-weighted density W = P H P / 2 of PySCF's converged RHF (values
    from two eigensolvers of the same matrices: 1e-7, PySCF's own convergence)."""
    _, _, mf = methane_rhf
    fock, overlap, _ = tensors(mf)
    solution = solve_closed_shell(fock, overlap, n_occupied=5)
    np.testing.assert_allclose(solution.density_matrix.numpy(), mf.make_rdm1(), atol=1e-7)
    np.testing.assert_allclose(solution.orbital_energies_eh.numpy(), mf.mo_energy, atol=1e-7)
    assert np.ptp(mf.mo_energy[2:5]) < 1e-6  # the t2 level is degenerate
    w_ref = mf.make_rdm1() @ mf.get_fock() @ mf.make_rdm1() / 2
    np.testing.assert_allclose(solution.energy_weighted_density_matrix.numpy(), w_ref, atol=1e-7)


@pytest.mark.parametrize("derivative_order", [1, 2])
def test_gradient_is_finite_and_exact_at_degenerate_occupied_orbitals(methane_rhf,
                                                                      derivative_order):
    _, _, mf = methane_rhf
    fock, overlap, hcore = tensors(mf)
    rng = np.random.default_rng(0)
    direction = torch.tensor(rng.normal(size=fock.shape))
    direction = direction + direction.T
    direction = direction / direction.norm()  # unit size: the energy's curvature is large

    def energy(h):
        return band_energy_eh(solve_closed_shell(h, overlap, 5, derivative_order=derivative_order),
                              h, hcore)

    h = fock.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(energy(h), h)
    assert torch.isfinite(gradient).all()
    numerical = central_difference(lambda t: energy(fock + t * direction), 1e-3)
    assert float((gradient * direction).sum()) == pytest.approx(float(numerical), rel=1e-8)


@pytest.mark.parametrize("derivative_order", [1, 2])
def test_overlap_gradient_matches_finite_differences(methane_rhf, derivative_order):
    """dE/dS (through the Cholesky orthogonalization and the occupied projector, what S's
    position derivative multiplies in the forces) against a fourth-order central difference
    along a seeded symmetric direction, scaled so that S stays positive definite."""
    _, _, mf = methane_rhf
    fock, overlap, hcore = tensors(mf)
    direction = torch.tensor(np.random.default_rng(1).normal(size=overlap.shape))
    direction = 1e-2 * (direction + direction.T) / (direction + direction.T).norm()

    def energy(s):
        return band_energy_eh(solve_closed_shell(fock, s, 5, derivative_order=derivative_order),
                              fock, hcore)

    s = overlap.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(energy(s), s)
    numerical = central_difference(lambda t: energy(overlap + t * direction), 1e-2)
    assert float((gradient * direction).sum()) == pytest.approx(float(numerical), rel=1e-7)


def test_torch_eigh_backward_fails_where_ours_does_not():
    """The motivation, on an exactly (bitwise) degenerate occupied level: torch's eigenvector
    derivative divides by eps_i - eps_j = 0; the projector derivative needs only the gap."""
    h = torch.diag(torch.tensor([-2.0, -1.0, -1.0, -1.0, 0.5, 1.0], dtype=torch.float64))
    h.requires_grad_()
    _, vectors = torch.linalg.eigh(h)
    (vectors[:, :4] @ vectors[:, :4].T * torch.arange(36.0).reshape(6, 6)).sum().backward()
    assert not torch.isfinite(h.grad).all()
    for order in (1, 2):
        h2 = h.detach().clone().requires_grad_()
        solution = solve_closed_shell(h2, torch.eye(6, dtype=torch.float64), 4,
                                      derivative_order=order)
        (solution.density_matrix * torch.arange(36.0).reshape(6, 6)).sum().backward()
        assert torch.isfinite(h2.grad).all()


def test_first_order_path_equals_the_newton_path_and_refuses_second_derivatives(methane_rhf):
    """P' from the eigendecomposition (forces only) and from the Newton sign iteration agree in
    value and gradient (H and S) at methane's degenerate t2 level; a Hessian must take the
    Newton path, so differentiating the first-order path twice is an error."""
    _, _, mf = methane_rhf
    fock, overlap, hcore = tensors(mf)
    rng = np.random.default_rng(3)
    v = torch.tensor(rng.normal(size=overlap.shape))
    overlap = overlap + 1e-3 * (v + v.T)  # S != its exact value: both derivative terms matter
    results = []
    for order in (1, 2):
        h, s = fock.clone().requires_grad_(), overlap.clone().requires_grad_()
        solution = solve_closed_shell(h, s, 5, derivative_order=order)
        e = band_energy_eh(solution, h, hcore)
        results.append((e.detach(), solution.energy_weighted_density_matrix.detach(),
                        *torch.autograd.grad(e, (h, s))))
    for first, second in zip(*results):
        torch.testing.assert_close(first, second, rtol=0, atol=1e-10)
    h = fock.clone().requires_grad_()
    e = band_energy_eh(solve_closed_shell(h, overlap, 5, derivative_order=1), h, hcore)
    with pytest.raises(RuntimeError, match="derivative_order=2"):
        torch.autograd.grad(e, h, create_graph=True)


def test_second_derivative_matches_finite_differences_of_the_gradient(methane_rhf):
    _, _, mf = methane_rhf
    fock, overlap, hcore = tensors(mf)
    rng = np.random.default_rng(1)
    u = torch.tensor(rng.normal(size=fock.shape))
    u = (u + u.T) / (u + u.T).norm()
    v = torch.tensor(rng.normal(size=overlap.shape))
    v = 0.1 * (v + v.T) / (v + v.T).norm()

    def gradient(h, s):
        h = h.clone().requires_grad_()
        s = s.clone().requires_grad_()
        e = band_energy_eh(solve_closed_shell(h, s, 5), h, hcore)
        return torch.autograd.grad(e, (h, s), create_graph=True)

    h = fock.clone().requires_grad_()
    s = overlap.clone().requires_grad_()
    e = band_energy_eh(solve_closed_shell(h, s, 5), h, hcore)
    first = torch.autograd.grad(e, (h, s), create_graph=True)
    directional = (first[0] * u).sum() + (first[1] * v).sum()
    second = torch.autograd.grad(directional, (h, s))
    for index, analytic in enumerate(second):
        numerical = central_difference(
            lambda t, index=index: gradient(fock + t * u, overlap + t * v)[index].detach(), 1e-3)
        assert float((analytic - numerical).abs().max()) < 1e-7 * float(numerical.abs().max())


def test_bad_overlap_and_missing_gap_are_clear_errors(methane_rhf):
    _, _, mf = methane_rhf
    fock, overlap, _ = tensors(mf)
    singular = overlap.clone()
    singular[0, 1] = singular[1, 0] = 1.0  # two AOs made identical in overlap
    with pytest.raises(IllConditionedOverlapError, match="smallest eigenvalue"):
        solve_closed_shell(fock, singular, 5)
    with pytest.raises(NoGapError, match="HOMO-LUMO gap"):
        solve_closed_shell(fock, overlap, 3)  # HOMO inside the degenerate t2 level
