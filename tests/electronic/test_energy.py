"""The energy models: PhiSNet's energy is the RHF energy at self-consistency, the band-structure
energy is twice the occupied eigenvalues and stationary in the density; clear errors."""

import numpy as np
import pytest
import torch
from ase.units import Bohr

from ase_phisnet.core.errors import OpenShellError
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.energy import (
    band_energy_eh,
    band_structure_energy_eh,
    check_energy_model,
    energy_from_outputs,
    n_occupied_orbitals,
    nuclear_repulsion_eh,
)


def tensors(mf):
    return (torch.tensor(mf.get_fock()), torch.tensor(mf.get_ovlp()),
            torch.tensor(mf.get_hcore()))


def test_phisnet_energy_of_the_converged_fock_matrix_is_the_rhf_energy(methane_rhf):
    """E_nuc + 1/2 Tr[P (H_core + F)] = E_RHF, and energy_from_outputs adds the remainder."""
    atoms, _, mf = methane_rhf
    fock, overlap, hcore = tensors(mf)
    z, positions = torch.tensor(atoms.numbers), torch.tensor(atoms.positions / Bohr)
    solution = solve_closed_shell(fock, overlap, n_occupied=5)
    energy = nuclear_repulsion_eh(z, positions) + band_energy_eh(solution, fock, hcore)
    # PySCF converged to 1e-12 Eh; E is stationary in P, so the 1e-7 of P enters squared
    assert float(energy) == pytest.approx(mf.e_tot, abs=1e-8)
    outputs = {"hamiltonian": fock, "overlap": overlap, "core_hamiltonian": hcore,
               "remainder_energy_eh": torch.tensor(-0.25, dtype=torch.float64)}
    prediction = energy_from_outputs(outputs, z, positions, 5, energy_model="phisnet")
    assert float(prediction.energy_eh) == pytest.approx(mf.e_tot - 0.25, abs=1e-8)
    assert set(prediction.matrices) == {"hamiltonian", "overlap", "core_hamiltonian"}


@pytest.mark.parametrize("derivative_order", [1, 2])
def test_band_structure_energy_is_twice_the_occupied_eigenvalues_and_stationary(
        methane_rhf, derivative_order):
    """``Tr[P H] = 2 sum_occ eps_i``, and its derivative in H is P (Hellmann-Feynman: the
    density's own response drops out), also at methane's degenerate t2 level."""
    _, _, mf = methane_rhf
    fock, overlap, _ = tensors(mf)
    h = fock.clone().requires_grad_(True)
    solution = solve_closed_shell(h, overlap, 5, derivative_order=derivative_order)
    energy = band_structure_energy_eh(solution, h)
    assert float(energy.detach()) == pytest.approx(2 * mf.mo_energy[:5].sum(), abs=1e-9)
    (gradient,) = torch.autograd.grad(energy, h)
    np.testing.assert_allclose(gradient.numpy(), mf.make_rdm1(), atol=1e-8)


def test_nuclear_repulsion_is_batched_and_invariant():
    z = torch.tensor([8, 1, 1])
    positions = torch.tensor([[0.0, 0.0, 0.2], [0.0, 1.4, -0.9], [0.0, -1.4, -0.9]],
                             dtype=torch.float64)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(float(z[i] * z[j]) / float((positions[i] - positions[j]).norm())
                   for i, j in pairs)
    batch = torch.stack([positions, positions[[0, 2, 1]] + 3.0])
    # the same three terms in another order: float64 rounding only
    torch.testing.assert_close(nuclear_repulsion_eh(z, batch),
                               torch.full((2,), expected, dtype=torch.float64), rtol=1e-14, atol=0)


def test_occupied_orbitals_and_energy_model_names():
    assert n_occupied_orbitals(torch.tensor([8, 1, 1]), 0) == 5
    assert n_occupied_orbitals([8, 1, 1], 2) == 4
    with pytest.raises(OpenShellError, match="odd"):
        n_occupied_orbitals([8, 1], 0)
    assert check_energy_model("band_structure") == "band_structure"
    with pytest.raises(ValueError, match=r"energy_model must be one of \('phisnet', "
                                         r"'band_structure', 'none'\), got 'harris'"):
        check_energy_model("harris")


def test_an_energy_model_without_its_matrices_is_a_clear_error():
    outputs = {"hamiltonian": torch.diag(torch.tensor([-1.0, 1.0], dtype=torch.float64)),
               "overlap": torch.eye(2, dtype=torch.float64),
               "remainder_energy_eh": torch.tensor(0.0, dtype=torch.float64)}
    z, positions = torch.tensor([1, 1]), torch.tensor([[0.0, 0, 0], [0, 0, 1.4]],
                                                      dtype=torch.float64)
    with pytest.raises(ValueError, match=r"needs the model to predict \['core_hamiltonian'\]"):
        energy_from_outputs(outputs, z, positions, 1, energy_model="phisnet")
    prediction = energy_from_outputs(outputs, z, positions, 1, energy_model="band_structure")
    assert float(prediction.energy_eh) == pytest.approx(-2.0, abs=1e-12)  # Tr[P H] = 2 eps_1
