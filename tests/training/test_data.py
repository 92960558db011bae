"""Training data in memory: the references of the orbital-energy and dipole terms."""

import numpy as np
import torch

from ase_phisnet.core.integrals import position_integrals
from ase_phisnet.data.dataset import HamiltonianDataset
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.observables import charge_center_bohr, dipole_moment_e_bohr
from ase_phisnet.training.data import load_matrix_data
from ase_phisnet.training.evaluate import _dipole_error_e_bohr
from ase_phisnet.training.loss import lowest_orbital_energies


def test_orbital_energy_term_with_virtual_orbitals_matches_the_reference_spectrum(water_file):
    """With ``n_virtual`` the reference of the orbital-energy term is the lowest
    ``n_occ + n_virtual`` eigenvalues of the reference H C = S C eps, in the order the loss
    computes them."""
    data = load_matrix_data(HamiltonianDataset(water_file), range(3),
                            ["hamiltonian", "overlap"], n_virtual=2)
    assert data.virtual_energies_eh.shape == (3, 2)
    reference = torch.cat([data.occupied_energies_eh, data.virtual_energies_eh], dim=-1)
    eps = lowest_orbital_energies(data.matrices["hamiltonian"], data.matrices["overlap"],
                                    reference.shape[-1])
    torch.testing.assert_close(eps, reference, rtol=0, atol=1e-7)
    assert bool((data.virtual_energies_eh[:, 0] > data.occupied_energies_eh[:, -1]).all())
    assert data.subset(torch.tensor([2])).virtual_energies_eh.shape == (1, 2)


def test_dipole_of_the_reference_density_is_the_stored_dipole(water_file):
    """The dipole loss and metric measure about the centre of nuclear charge R_c: with the
    reference H and S they give PySCF's dipole of the record (neutral: the same about any
    origin), and a density with slightly too many electrons gives the same dipole wherever the
    molecule sits (about the origin 0 it would not)."""
    dataset = HamiltonianDataset(water_file)
    data = load_matrix_data(dataset, range(3), ["hamiltonian", "overlap"],
                            with_position_integrals=True)
    solution = solve_closed_shell(data.matrices["hamiltonian"], data.matrices["overlap"],
                                  data.occupied_energies_eh.shape[-1])
    z, positions = data.atomic_numbers, data.positions_bohr
    center = charge_center_bohr(z, positions)
    dipole = dipole_moment_e_bohr(solution.density_matrix, data.position_integrals, z,
                                  positions, origin_bohr=center)
    torch.testing.assert_close(dipole, data.dipole_e_bohr, rtol=0, atol=1e-6)
    assert float(data.dipole_e_bohr.norm(dim=-1).min()) > 0.1  # water is polar
    record = dataset[0]
    n_occ = int(np.sum(record.occupations > 0))
    orbitals = solution.orbitals[0, :, :n_occ].numpy()
    error = _dipole_error_e_bohr(orbitals, data.position_integrals[0].numpy(), record, n_occ)
    np.testing.assert_allclose(error, 0, atol=1e-6)

    far = positions[0] + torch.tensor([10.0, -7.0, 4.0], dtype=torch.float64)
    too_many = 1.001 * solution.density_matrix[0]
    moved = torch.as_tensor(position_integrals(z.numpy(), [far.numpy()], "sto-3g")[0])
    dipole_far = dipole_moment_e_bohr(too_many, moved, z, far,
                                      origin_bohr=charge_center_bohr(z, far))
    dipole_here = dipole_moment_e_bohr(too_many, data.position_integrals[0], z, positions[0],
                                       origin_bohr=center[0])
    torch.testing.assert_close(dipole_far, dipole_here, rtol=0, atol=1e-8)
