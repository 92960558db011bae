"""Exact SAP potential V_SAP(R) from PySCF's integrals: values (against the matrix PySCF's own SAP
guess builds), first and second position derivatives (finite differences, autograd), and its
symmetries. Water and NH3 in def2-SVP (both with a d shell on the heavy atom)."""

import exact_matrix_checks as checks
import numpy as np
import pytest
from pyscf import scf
from pyscf.scf import hf

from ase_phisnet.core.molecule import build_molecule
from ase_phisnet.core.sap import SAPIntegrals, exact_sap

BASIS = "def2-svp"
# Central differences with step h = 1e-4 Bohr err by h²/6 |f'''| ~ 2e-9 |f'''| plus roundoff
# 1e-16 |V| / h ~ 1e-11 (|V| ~ 15 Eh). Measured max errors: 2e-8 (gradient), 5e-8 (Hessian).
STEP_BOHR = 1e-4
FD_ATOL = 2e-7

V_SAP = checks.ExactMatrix(value="sap_potential", exact=exact_sap, basis=BASIS,
                           step_bohr=STEP_BOHR, fd_atol=FD_ATOL)


@pytest.fixture(scope="module", params=["H2O", "NH3"])
def system(request):
    numbers, positions = checks.perturbed(request.param, seed=0)
    return SAPIntegrals(numbers, BASIS), positions


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
        checks.torch_value(V_SAP, integrals, geometry, reference)


def test_gradient_matches_finite_differences_and_the_charge_derivative(system):
    integrals, positions = system
    checks.first_derivatives(V_SAP, integrals, positions)
    # Translation invariance term by term: (μν|∇g_C) = -(∇μ ν|g_C) - (μ ∇ν|g_C).
    ip1 = integrals._intor("int3c2e_ip1", positions)
    ip2 = integrals._intor("int3c2e_ip2", positions)
    np.testing.assert_allclose(ip2, -(ip1 + ip1.transpose(0, 2, 1, 3)), rtol=0, atol=1e-10)


def test_hessian_matches_finite_differences_of_the_gradient(system):
    hessian = checks.second_derivatives(V_SAP, *system)
    np.testing.assert_allclose(hessian, hessian.transpose(0, 1, 2, 3, 5, 4), rtol=0, atol=1e-12)


@pytest.mark.parametrize("check", ["autograd", "hessian_by_rows", "symmetries",
                                   "permutation"])
def test_shared_exact_matrix_checks(system, check):
    """Autograd (gradcheck/gradgradcheck of ``Σ W ∘ V_SAP(R)``, one geometry and two; a Hessian
    by rows), translation invariance, rotation and reflection covariance and atom permutations: see
    ``exact_matrix_checks``."""
    getattr(checks, check)(V_SAP, *system)


def test_wrong_positions_shape_is_refused():
    integrals = SAPIntegrals([8, 1, 1], BASIS)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        integrals.sap_potential(np.zeros((2, 3)))
