"""The electronic atom features of the energy remainder: PySCF's Mulliken shell populations,
band-energy shares that sum to Tr[P H], invariant under rotations and reflections (both dtypes)
and permuted with the atoms."""

import numpy as np
import pytest
import torch
from symmetry import DTYPES, ao_D, assert_equivariant, group_elements

from ase_phisnet.core.basis import BasisLayout
from ase_phisnet.electronic.eigensolver import solve_closed_shell
from ase_phisnet.electronic.features import (
    FEATURE_MAX_L,
    FEATURE_NAMES,
    ao_atom_shell_index,
    electronic_atom_features,
)


@pytest.fixture(scope="module")
def methane(methane_rhf):
    atoms, mol, mf = methane_rhf
    z = atoms.numbers.tolist()
    layout = BasisLayout("def2-svp", ["H", "C"])
    hamiltonian, overlap = torch.tensor(mf.get_fock()), torch.tensor(mf.get_ovlp())
    return mol, mf, z, layout, hamiltonian, overlap


def _features(layout, z, hamiltonian, overlap):
    solution = solve_closed_shell(hamiltonian, overlap, 5)
    return electronic_atom_features(solution, overlap, ao_atom_shell_index(layout, z), len(z))


def test_shell_populations_are_pyscfs_and_band_shares_sum_to_the_band_energy(methane):
    mol, mf, z, layout, hamiltonian, overlap = methane
    features = _features(layout, z, hamiltonian, overlap)
    assert features.shape == (5, len(FEATURE_NAMES)) == (5, 2 * (FEATURE_MAX_L + 1))
    ao_populations, charges = mf.mulliken_pop(verbose=0)
    expected = np.zeros((5, FEATURE_MAX_L + 1))
    for shell in range(mol.nbas):
        first, last = mol.ao_loc[shell], mol.ao_loc[shell + 1]
        expected[mol.bas_atom(shell), mol.bas_angular(shell)] += ao_populations[first:last].sum()
    # PySCF's converged density (1e-12) against ours from its Fock matrix
    np.testing.assert_allclose(features[:, :3].numpy(), expected, atol=1e-7)
    np.testing.assert_allclose(z - features[:, :3].sum(1).numpy(), charges, atol=1e-7)
    band_energy = 2 * mf.mo_energy[:5].sum()
    assert float(features[:, 3:].sum()) == pytest.approx(band_energy, abs=1e-8)
    assert float(features[1:, 2].abs().max()) == 0  # H has no d shell in def2-SVP


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("element", ["rotation", "reflection"])
def test_invariant_under_rotations_and_reflections(methane, dtype, element):
    _, _, z, layout, hamiltonian, overlap = methane
    d = ao_D(layout, z, group_elements(7, dtype)[element])
    h, s = hamiltonian.to(dtype), overlap.to(dtype)
    reference = _features(layout, z, h, s)
    moved = _features(layout, z, d @ h @ d.T, d @ s @ d.T)
    assert_equivariant(moved, reference, dtype, f"features under a {element}")


def test_permuted_with_the_atoms(methane):
    """The atoms reordered (C moved from first to second, the H shuffled) reorder the
    features. H is perturbed by a seeded symmetric matrix first: at methane's Td geometry
    every H has the same features, and a wrong atom mapping would go unseen."""
    _, _, z, layout, hamiltonian, overlap = methane
    noise = torch.as_tensor(np.random.default_rng(11).normal(size=hamiltonian.shape))
    hamiltonian = hamiltonian + 1e-2 * (noise + noise.T)
    reference = _features(layout, z, hamiltonian, overlap)
    assert float((reference[1:] - reference[1]).abs().max()) > 1e-4  # the H now differ
    order = [2, 0, 4, 1, 3]
    slices = layout.ao_slices(z)
    ao_order = torch.cat([torch.arange(slices[a].start, slices[a].stop) for a in order])
    permuted = _features(layout, [z[a] for a in order], hamiltonian[ao_order][:, ao_order],
                         overlap[ao_order][:, ao_order])
    torch.testing.assert_close(permuted, reference[order], rtol=0, atol=1e-10)
