"""Exact SAP potential V_SAP(R) from PySCF's integrals: values (against the matrix PySCF's own SAP
guess builds), first and second position derivatives (finite differences, autograd), and its
symmetries, for PySCF's fit and the compact one. Water and NH3 in def2-SVP (both with a d shell
on the heavy atom)."""

import exact_matrix_checks as checks
import numpy as np
import pytest
from pyscf import scf
from pyscf.scf import hf

from ase_phisnet.core.molecule import build_molecule
from ase_phisnet.core.sap import (
    SAPIntegrals,
    compact_sap_fit,
    exact_sap,
    gaussian_charge_potential,
    load_sap_basis,
)

BASIS = "def2-svp"
# Central differences with step h = 1e-4 Bohr err by h²/6 |f'''| ~ 2e-9 |f'''| plus roundoff
# 1e-16 |V| / h ~ 1e-11 (|V| ~ 15 Eh). Measured max errors: 2e-8 (gradient), 5e-8 (Hessian).
STEP_BOHR = 1e-4
FD_ATOL = 2e-7

V_SAP = checks.ExactMatrix(value="sap_potential", exact=exact_sap, basis=BASIS,
                           step_bohr=STEP_BOHR, fd_atol=FD_ATOL)


@pytest.fixture(scope="module", params=[("H2O", "sapgrasplarge"), ("NH3", "sapgrasplarge"),
                                        ("H2O", "sapcompact")], ids="-".join)
def system(request):
    name, sap_basis = request.param
    numbers, positions = checks.perturbed(name, seed=0)
    return SAPIntegrals(numbers, BASIS, sap_basis), positions


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
    """At the first geometry and after moving every atom (the charge shells move with them):
    the matrix of PySCF's SAP guess for ``sapgrasplarge``, PySCF's ``make_sap`` handed the
    fit's charges otherwise."""
    integrals, positions = system
    moved = positions + np.random.default_rng(2).normal(scale=0.2, size=positions.shape)
    for geometry in (positions, moved):
        if integrals.sap_basis == "sapgrasplarge":
            reference = _pyscf_sap_matrix(integrals.atomic_numbers, geometry, monkeypatch)
        else:
            mol = build_molecule(integrals.atomic_numbers, geometry, BASIS, charge=0)
            charges = {mol.atom_symbol(a): load_sap_basis(integrals.sap_basis, mol.atom_symbol(a))
                       for a in range(mol.natm)}
            reference = hf.make_sap(mol, charges)
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


@pytest.mark.parametrize("check", ["pullbacks", "autograd", "hessian_by_rows", "symmetries",
                                   "permutation"])
def test_shared_exact_matrix_checks(system, check):
    """The pullbacks, autograd (gradcheck/gradgradcheck of ``Σ W ∘ V_SAP(R)``, one geometry and two; a Hessian
    by rows), translation invariance, rotation and reflection covariance and atom permutations: see
    ``exact_matrix_checks``."""
    getattr(checks, check)(V_SAP, *system)


def test_values_are_erf_attenuated_nuclear_attractions(system):
    """Independent of the three-centre route: a normalized Gaussian charge of exponent α at R_C
    has the potential ``erf(√α |r - R_C|) / |r - R_C|``, so ``(μν|g_C)`` is a sum of PySCF's
    one-electron ``int1e_rinv`` at the origin R_C with a Gaussian charge of exponent α there
    (``with_rinv_zeta``)."""
    integrals, positions = system
    mol = build_molecule(integrals.atomic_numbers, positions, BASIS, charge=0)
    expected = np.zeros((mol.nao, mol.nao))
    for atom in range(mol.natm):
        for exponent, coefficient in load_sap_basis(integrals.sap_basis, mol.atom_symbol(atom)):
            with mol.with_rinv_origin(mol.atom_coord(atom)), \
                    mol.with_rinv_zeta(exponent):
                expected -= coefficient * mol.intor("int1e_rinv")
    np.testing.assert_allclose(integrals.sap_potential(positions), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("symbol", ["H", "C", "N", "O"])
def test_compact_fit_keeps_the_charge_and_follows_the_large_fit(symbol):
    """``sapcompact`` keeps 2 (H) or 3 of sapgrasplarge's exponents, its charge sums to -Z (the
    potential's Z/r tail is exact), and its potential stays within 0.07 Eh of the large fit's
    beyond 0.3 Bohr (measured: H 0.010, C 0.042, N 0.063, O 0.048 Eh; the potential itself is
    several Eh there), and the same numbers come out every time."""
    large = load_sap_basis("sapgrasplarge", symbol)
    compact = load_sap_basis("sapcompact", symbol)
    z = {"H": 1, "C": 6, "N": 7, "O": 8}[symbol]
    assert len(compact) == (2 if symbol == "H" else 3)
    assert set(compact[:, 0]) <= set(large[:, 0])
    assert compact[:, 1].sum() == pytest.approx(-z, abs=1e-12)
    radii = np.geomspace(0.3, 30.0, 400)
    error = np.abs(gaussian_charge_potential(compact, radii)
                   - gaussian_charge_potential(large, radii))
    assert error.max() < 0.07
    assert error[radii > 25].max() < 1e-8  # both tend to Z/r: no charge is lost
    np.testing.assert_array_equal(compact_sap_fit(symbol), compact)


def test_compact_fit_refuses_an_impossible_size():
    with pytest.raises(ValueError, match="n_gaussians"):
        compact_sap_fit("H", n_gaussians=6)


def test_wrong_positions_shape_is_refused():
    integrals = SAPIntegrals([8, 1, 1], BASIS)
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        integrals.sap_potential(np.zeros((2, 3)))
