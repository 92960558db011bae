"""Exact core Hamiltonian H_core = T + V_nuc from PySCF's integrals: values, first and second
position derivatives (against finite differences and PySCF's own generators), autograd, and
its symmetries. Water and NH3 in def2-SVP (both with a d shell on the heavy atom)."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from e3nn import o3
from pyscf import scf

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.core_hamiltonian import CoreHamiltonianIntegrals, exact_core_hamiltonian
from ase_phisnet.core.molecule import build_molecule

BASIS = "def2-svp"
# Central differences with step h = 1e-4 Bohr err by h²/6 |f'''| ~ 2e-9 |f'''|; third derivatives
# of H_core reach ~10 Eh/Bohr³ (core functions near the nuclei), so ~1e-8, plus roundoff
# 1e-16 |H| / h ~ 3e-11 (|H| ~ 30 Eh). Measured max errors: 2e-8 (gradient), 5e-8 (H2O) and
# 7e-8 (NH3) (Hessian).
STEP_BOHR = 1e-4
FD_ATOL = 2e-7


def _perturbed(name, seed):
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    return atoms.numbers, atoms.positions / Bohr


@pytest.fixture(scope="module", params=["H2O", "NH3"])
def system(request):
    numbers, positions = _perturbed(request.param, seed=0)
    return CoreHamiltonianIntegrals(numbers, BASIS), positions


def _central_difference(function, positions):
    """``(f(R + h e_Ax) - f(R - h e_Ax)) / 2h`` for every atom A and direction x: (A, 3, ...)."""
    rows = []
    for atom in range(len(positions)):
        for x in range(3):
            step = np.zeros_like(positions)
            step[atom, x] = STEP_BOHR
            rows.append((function(positions + step) - function(positions - step)) / (2 * STEP_BOHR))
    out = np.stack(rows)
    return out.reshape(len(positions), 3, *out.shape[1:])


def test_values_are_pyscfs_core_hamiltonian(system):
    integrals, positions = system
    mol = build_molecule(integrals.atomic_numbers, positions, BASIS,
                         charge=int(integrals.atomic_numbers.sum() % 2))
    reference = scf.RHF(mol).get_hcore()
    np.testing.assert_allclose(integrals.core_hamiltonian(positions), reference, rtol=0, atol=1e-10)
    np.testing.assert_allclose(reference, mol.intor("int1e_kin") + mol.intor("int1e_nuc"), rtol=0,
                               atol=1e-10)
    value = exact_core_hamiltonian(integrals, torch.tensor(positions))
    assert value.dtype == torch.float64 and value.shape == (integrals.nao, integrals.nao)
    np.testing.assert_allclose(value.numpy(), reference, rtol=0, atol=1e-10)


def test_gradient_matches_finite_differences_and_pyscfs_generator(system):
    integrals, positions = system
    gradient = integrals.gradient(positions)
    assert gradient.shape == (len(positions), 3, integrals.nao, integrals.nao)
    difference = _central_difference(integrals.core_hamiltonian, positions)
    np.testing.assert_allclose(gradient, difference, rtol=0, atol=FD_ATOL)
    # The one-call int1e_grids_ip path equals PySCF's per-atom generator (the ECP fallback).
    generator = integrals._gradients.hcore_generator(integrals._at(positions))
    reference = np.stack([generator(atom) for atom in range(len(positions))])
    np.testing.assert_allclose(gradient, reference, rtol=0, atol=1e-12)


def test_hessian_matches_finite_differences_of_the_gradient(system):
    integrals, positions = system
    hessian = integrals.hessian(positions)
    n, nao = len(positions), integrals.nao
    assert hessian.shape == (n, 3, n, 3, nao, nao)
    np.testing.assert_allclose(hessian, _central_difference(integrals.gradient, positions), rtol=0,
                               atol=FD_ATOL)
    np.testing.assert_allclose(hessian, hessian.transpose(2, 3, 0, 1, 4, 5), rtol=0, atol=1e-12)
    weights = np.random.default_rng(1).normal(size=(nao, nao))
    np.testing.assert_allclose(integrals.weighted_hessian(positions, weights),
                               np.einsum("axbymn,mn->axby", hessian, weights), rtol=0, atol=1e-11)


def _weighted_sum(integrals, twice_differentiable=True):
    weights = torch.randn(integrals.nao, integrals.nao, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))
    return lambda p: (weights * exact_core_hamiltonian(integrals, p, twice_differentiable)).sum()


def test_autograd_first_and_second_derivatives(system):
    """gradcheck/gradgradcheck compare the analytic derivatives of ``Σ W ∘ H_core(R)`` with
    central differences (torch's default eps 1e-6 and tolerances), one geometry and two."""
    integrals, positions = system
    single = torch.tensor(positions).requires_grad_(True)
    batch = torch.stack([single.detach(), single.detach() + 0.02]).requires_grad_(True)
    function = _weighted_sum(integrals)
    for inputs in (single, batch):
        assert torch.autograd.gradcheck(function, (inputs,))
        assert torch.autograd.gradgradcheck(function, (inputs,))
    once = _weighted_sum(integrals, twice_differentiable=False)
    assert torch.autograd.gradcheck(once, (batch,))
    (exact,) = torch.autograd.grad(function(single), single)
    (first_only,) = torch.autograd.grad(once(single), single)
    torch.testing.assert_close(first_only, exact, rtol=0, atol=1e-13)


def test_hessian_by_rows_through_autograd_is_the_weighted_hessian(system):
    """A Hessian row by row (one backward graph, reused: the curvature is computed once)."""
    integrals, positions = system
    moved = torch.tensor(positions).requires_grad_(True)
    weights = torch.randn(integrals.nao, integrals.nao, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(4))
    energy = (weights * exact_core_hamiltonian(integrals, moved)).sum()
    (gradient,) = torch.autograd.grad(energy, moved, create_graph=True)
    rows = [torch.autograd.grad(g, moved, retain_graph=True)[0] for g in gradient.flatten()]
    hessian = torch.stack(rows).reshape(*positions.shape, *positions.shape)
    reference = integrals.weighted_hessian(positions, weights.numpy())
    np.testing.assert_allclose(hessian.numpy(), reference, rtol=0, atol=1e-11)


def test_translation_invariance_and_rotation_covariance(system):
    """H_core(x + t) = H_core(x), so Σ_A ∂H/∂R_A = 0; H_core(R x) = D(R) H_core(x) D(R)ᵀ and
    the gradient rotates as a vector: ∂H/∂R_A at R x = Σ_j R_ij D ∂H/∂R_Aj D ᵀ."""
    integrals, positions = system
    value, gradient = integrals.core_hamiltonian(positions), integrals.gradient(positions)
    shifted = integrals.core_hamiltonian(positions + np.array([0.3, -1.2, 2.0]))
    np.testing.assert_allclose(shifted, value, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradient.sum(0), 0.0, rtol=0, atol=1e-10)

    torch.manual_seed(5)
    rotation = o3.rand_matrix(dtype=torch.float64)
    numbers = integrals.atomic_numbers.tolist()
    d = BasisLayout(BASIS, numbers).wigner_D(numbers, rotation).numpy()
    rotation = rotation.numpy()
    rotated = positions @ rotation.T
    np.testing.assert_allclose(integrals.core_hamiltonian(rotated), d @ value @ d.T, rtol=0,
                               atol=1e-10)
    expected = np.einsum("ij,mp,ajpq,nq->aimn", rotation, d, gradient, d)
    np.testing.assert_allclose(integrals.gradient(rotated), expected, rtol=0, atol=1e-10)
