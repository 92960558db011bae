"""Exact SAP potential V_SAP(R) from PySCF's integrals: values (against the matrix PySCF's own SAP
guess builds), first and second position derivatives (finite differences, autograd), and its
symmetries. Water and NH3 in def2-SVP (both with a d shell on the heavy atom)."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.units import Bohr
from e3nn import o3
from pyscf import scf
from pyscf.scf import hf

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.core.molecule import build_molecule
from ase_phisnet.core.sap import SAPIntegrals, exact_sap

BASIS = "def2-svp"
# Central differences with step h = 1e-4 Bohr err by h²/6 |f'''| ~ 2e-9 |f'''| plus roundoff
# 1e-16 |V| / h ~ 1e-11 (|V| ~ 15 Eh). Measured max errors: 2e-8 (gradient), 5e-8 (Hessian).
STEP_BOHR = 1e-4
FD_ATOL = 2e-7


def _perturbed(name, seed):
    atoms = molecule(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    return atoms.numbers, atoms.positions / Bohr


@pytest.fixture(scope="module", params=["H2O", "NH3"])
def system(request):
    numbers, positions = _perturbed(request.param, seed=0)
    return SAPIntegrals(numbers, BASIS), positions


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


def _pyscf_sap_matrix(numbers, positions, monkeypatch):
    """The V_SAP that ``scf.RHF(mol).init_guess_by_sap()`` builds (its own ``mf.sap_basis``,
    loaded its own way), caught on its way through ``pyscf.scf.hf.make_sap``."""
    caught = []
    make_sap = hf.make_sap

    def catch(mol, sap_basis):
        caught.append(make_sap(mol, sap_basis))
        return caught[-1]

    monkeypatch.setattr(hf, "make_sap", catch)
    mol = build_molecule(numbers, positions, BASIS, charge=int(numbers.sum() % 2))
    mean_field = scf.RHF(mol)
    assert mean_field.sap_basis == "sapgrasplarge"
    mean_field.init_guess_by_sap()
    assert len(caught) == 1
    return caught[0]


def test_values_are_pyscfs_sap_potential(system, monkeypatch):
    """At the first geometry and after moving every atom (the charge shells move with them)."""
    integrals, positions = system
    moved = positions + np.random.default_rng(2).normal(scale=0.2, size=positions.shape)
    for geometry in (positions, moved):
        reference = _pyscf_sap_matrix(integrals.atomic_numbers, geometry, monkeypatch)
        np.testing.assert_allclose(integrals.sap_potential(geometry), reference, rtol=0,
                                   atol=1e-10)
        value = exact_sap(integrals, torch.tensor(geometry))
        assert value.dtype == torch.float64 and value.shape == (integrals.nao, integrals.nao)
        np.testing.assert_allclose(value.numpy(), reference, rtol=0, atol=1e-10)


def test_gradient_matches_finite_differences_and_the_charge_derivative(system):
    integrals, positions = system
    gradient = integrals.gradient(positions)
    assert gradient.shape == (len(positions), 3, integrals.nao, integrals.nao)
    difference = _central_difference(integrals.sap_potential, positions)
    np.testing.assert_allclose(gradient, difference, rtol=0, atol=FD_ATOL)
    # Translation invariance term by term: (μν|∇g_C) = -(∇μ ν|g_C) - (μ ∇ν|g_C).
    ip1 = integrals._intor("int3c2e_ip1", positions)
    ip2 = integrals._intor("int3c2e_ip2", positions)
    np.testing.assert_allclose(ip2, -(ip1 + ip1.transpose(0, 2, 1, 3)), rtol=0, atol=1e-10)


def test_hessian_matches_finite_differences_of_the_gradient(system):
    integrals, positions = system
    hessian = integrals.hessian(positions)
    n, nao = len(positions), integrals.nao
    assert hessian.shape == (n, 3, n, 3, nao, nao)
    np.testing.assert_allclose(hessian, _central_difference(integrals.gradient, positions), rtol=0,
                               atol=FD_ATOL)
    np.testing.assert_allclose(hessian, hessian.transpose(2, 3, 0, 1, 4, 5), rtol=0, atol=1e-12)
    np.testing.assert_allclose(hessian, hessian.transpose(0, 1, 2, 3, 5, 4), rtol=0, atol=1e-12)
    weights = np.random.default_rng(1).normal(size=(nao, nao))
    np.testing.assert_allclose(integrals.weighted_hessian(positions, weights),
                               np.einsum("axbymn,mn->axby", hessian, weights), rtol=0, atol=1e-11)


def _weighted_sum(integrals, twice_differentiable=True):
    weights = torch.randn(integrals.nao, integrals.nao, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(3))
    return lambda p: (weights * exact_sap(integrals, p, twice_differentiable)).sum()


def test_autograd_first_and_second_derivatives(system):
    """gradcheck/gradgradcheck compare the analytic derivatives of ``Σ W ∘ V_SAP(R)`` with
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
    energy = (weights * exact_sap(integrals, moved)).sum()
    (gradient,) = torch.autograd.grad(energy, moved, create_graph=True)
    rows = [torch.autograd.grad(g, moved, retain_graph=True)[0] for g in gradient.flatten()]
    hessian = torch.stack(rows).reshape(*positions.shape, *positions.shape)
    reference = integrals.weighted_hessian(positions, weights.numpy())
    np.testing.assert_allclose(hessian.numpy(), reference, rtol=0, atol=1e-11)


def test_translation_invariance_and_rotation_covariance(system):
    """V(x + t) = V(x), so Σ_A ∂V/∂R_A = 0; V(R x) = D(R) V(x) D(R)ᵀ and the gradient rotates
    as a vector: ∂V/∂R_A at R x = Σ_j R_ij D ∂V/∂R_Aj Dᵀ."""
    integrals, positions = system
    value, gradient = integrals.sap_potential(positions), integrals.gradient(positions)
    shifted = integrals.sap_potential(positions + np.array([0.3, -1.2, 2.0]))
    np.testing.assert_allclose(shifted, value, rtol=0, atol=1e-10)
    np.testing.assert_allclose(gradient.sum(0), 0.0, rtol=0, atol=1e-10)

    torch.manual_seed(5)
    rotation = o3.rand_matrix(dtype=torch.float64)
    numbers = integrals.atomic_numbers.tolist()
    d = BasisLayout(BASIS, numbers).wigner_D(numbers, rotation).numpy()
    rotation = rotation.numpy()
    rotated = positions @ rotation.T
    np.testing.assert_allclose(integrals.sap_potential(rotated), d @ value @ d.T, rtol=0,
                               atol=1e-10)
    expected = np.einsum("ij,mp,ajpq,nq->aimn", rotation, d, gradient, d)
    np.testing.assert_allclose(integrals.gradient(rotated), expected, rtol=0, atol=1e-10)


def test_wrong_positions_shape_is_refused():
    integrals = SAPIntegrals([8, 1, 1], BASIS)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        integrals.sap_potential(np.zeros((2, 3)))
