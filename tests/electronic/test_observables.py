"""Mulliken charges and the dipole moment of a closed-shell density, against PySCF."""

import numpy as np
import pytest
import torch
from ase.units import Bohr

from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.observables import (
    charge_center_bohr,
    dipole_moment_e_bohr,
    mulliken_charges,
)


@pytest.fixture(scope="module")
def methane(methane_rhf):
    atoms, mol, mf = methane_rhf
    solution = solve_closed_shell(torch.tensor(mf.get_fock()), torch.tensor(mf.get_ovlp()), 5)
    slices = [slice(int(a), int(b)) for *_, a, b in mol.aoslice_by_atom()]
    return (atoms, mol, mf, solution.density_matrix, torch.tensor(atoms.numbers),
            torch.tensor(atoms.positions / Bohr), slices)


def test_mulliken_charges_are_pyscfs(methane):
    _, _, mf, density, z, _, slices = methane
    charges = mulliken_charges(density, torch.tensor(mf.get_ovlp()), z, slices)
    # P from our eigensolver vs PySCF's: 1e-7 (PySCF's convergence)
    np.testing.assert_allclose(charges.numpy(), mf.mulliken_pop(verbose=0)[1], atol=1e-7)
    assert float(charges.sum()) == pytest.approx(0.0, abs=1e-10)  # Tr[P S] = N electrons
    h_charges = charges[1:]
    torch.testing.assert_close(h_charges, h_charges[:1].expand(4), rtol=0, atol=1e-7)  # Td


def test_dipole_is_pyscfs_and_independent_of_the_origin_when_neutral(methane):
    _, mol, mf, density, z, positions, _ = methane
    integrals = torch.tensor(mol.intor("int1e_r"))
    dipole = dipole_moment_e_bohr(density, integrals, z, positions)
    np.testing.assert_allclose(dipole.numpy(), mf.dip_moment(unit="AU", verbose=0), atol=1e-7)
    origin = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    with mol.with_common_origin(origin.numpy()):
        shifted = torch.tensor(mol.intor("int1e_r"))  # <mu| r - O |nu>
    about_origin = dipole_moment_e_bohr(density, shifted, z, positions, origin_bohr=origin)
    # neutral: mu(O) = mu(0) - (sum Z - N) O = mu(0); two integral sets, float64 rounding
    torch.testing.assert_close(about_origin, dipole, rtol=0, atol=1e-10)


def test_charged_density_dipole_shifts_with_the_origin_and_batches(methane):
    """A density with 1 % too many electrons has charge q = -0.1 e: mu(O) = mu(0) - q O."""
    _, mol, _, density, z, positions, _ = methane
    integrals = torch.tensor(mol.intor("int1e_r"))
    extra = 1.01 * density
    origin = charge_center_bohr(z, positions)
    with mol.with_common_origin(origin.numpy()):
        shifted = torch.tensor(mol.intor("int1e_r"))
    q = -0.01 * 10
    expected = dipole_moment_e_bohr(extra, integrals, z, positions) - q * origin
    got = dipole_moment_e_bohr(extra, shifted, z, positions, origin_bohr=origin)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    batch = dipole_moment_e_bohr(torch.stack([extra, density]), integrals, z,
                                 torch.stack([positions, positions]))
    assert batch.shape == (2, 3)
    torch.testing.assert_close(batch[0], dipole_moment_e_bohr(extra, integrals, z, positions),
                               rtol=0, atol=1e-12)


def test_charge_center_is_the_nuclear_charge_weighted_mean():
    z = torch.tensor([8, 1, 1])
    positions = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                             dtype=torch.float64)
    torch.testing.assert_close(charge_center_bohr(z, positions),
                               torch.tensor([0.0, 0.1, 0.1], dtype=torch.float64))
