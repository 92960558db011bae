"""Exact core Hamiltonian H_core = T + V_nuc from PySCF's integrals: values, first and second
position derivatives (against finite differences and PySCF's own generators), autograd, and
its symmetries. Water and NH3 in def2-SVP (both with a d shell on the heavy atom)."""

import exact_matrix_checks as checks
import numpy as np
import pytest
from pyscf import scf

from ase_phisnet.core.core_hamiltonian import CoreHamiltonianIntegrals, exact_core_hamiltonian
from ase_phisnet.core.molecule import build_molecule

BASIS = "def2-svp"
# Central differences with step h = 1e-4 Bohr err by h²/6 |f'''| ~ 2e-9 |f'''|; third derivatives
# of H_core reach ~10 Eh/Bohr³ (core functions near the nuclei), so ~1e-8, plus roundoff
# 1e-16 |H| / h ~ 3e-11 (|H| ~ 30 Eh). Measured max errors: 2e-8 (gradient), 5e-8 (H2O) and
# 7e-8 (NH3) (Hessian).
STEP_BOHR = 1e-4
FD_ATOL = 2e-7

H_CORE = checks.ExactMatrix(value="core_hamiltonian", exact=exact_core_hamiltonian,
                             basis=BASIS, step_bohr=STEP_BOHR, fd_atol=FD_ATOL)


@pytest.fixture(scope="module", params=["H2O", "NH3"])
def system(request):
    numbers, positions = checks.perturbed(request.param, seed=0)
    return CoreHamiltonianIntegrals(numbers, BASIS), positions


def test_values_are_pyscfs_core_hamiltonian(system):
    integrals, positions = system
    mol = build_molecule(integrals.atomic_numbers, positions, BASIS,
                         charge=int(integrals.atomic_numbers.sum() % 2))
    reference = scf.RHF(mol).get_hcore()
    np.testing.assert_allclose(integrals.core_hamiltonian(positions), reference, rtol=0, atol=1e-10)
    np.testing.assert_allclose(reference, mol.intor("int1e_kin") + mol.intor("int1e_nuc"), rtol=0,
                               atol=1e-10)
    checks.torch_value(H_CORE, integrals, positions, reference)


def test_gradient_matches_finite_differences_and_pyscfs_generator(system):
    integrals, positions = system
    gradient = checks.first_derivatives(H_CORE, integrals, positions)
    # The one-call int1e_grids_ip path equals PySCF's per-atom generator (the ECP fallback).
    generator = integrals._gradients.hcore_generator(integrals._at(positions))
    reference = np.stack([generator(atom) for atom in range(len(positions))])
    np.testing.assert_allclose(gradient, reference, rtol=0, atol=1e-12)


def test_hessian_matches_finite_differences_of_the_gradient(system):
    checks.second_derivatives(H_CORE, *system)


@pytest.mark.parametrize("check", ["pullbacks", "autograd", "hessian_by_rows", "symmetries",
                                   "permutation"])
def test_shared_exact_matrix_checks(system, check):
    """The pullbacks, autograd (gradcheck/gradgradcheck of ``Σ W ∘ H_core(R)``, one geometry and two; a Hessian
    by rows), translation invariance, rotation and reflection covariance and atom permutations: see
    ``exact_matrix_checks``."""
    getattr(checks, check)(H_CORE, *system)
