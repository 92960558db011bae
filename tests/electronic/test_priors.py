"""The ZBL pair repulsion prior: its limits, smoothness, derivatives and symmetry (its place in the
model's energy: tests/electronic/test_model.py)."""

import math

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.data import covalent_radii
from ase.units import Bohr
from scipy.spatial.transform import Rotation

from ase_phisnet.electronic.priors import (
    DEFAULT_CUTOFF_SCALE,
    pair_switch,
    zbl_pair_energy_eh,
    zbl_repulsion_eh,
    zbl_screening,
)

DTYPE = torch.float64


def _distorted_ethanol(seed=0):
    """Ethanol with random displacements large enough to push bonds inside r_c, Bohr."""
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(seed)
    positions = atoms.positions + 0.25 * rng.normal(size=atoms.positions.shape)
    return torch.tensor(atoms.numbers), torch.tensor(positions / Bohr, dtype=DTYPE)


def test_screening_is_one_at_zero_so_the_repulsion_becomes_bare_coulomb():
    assert float(zbl_screening(torch.tensor(0.0, dtype=DTYPE))) == pytest.approx(1.0, abs=1e-12)
    r = torch.tensor([1e-6, 1e-4], dtype=DTYPE)
    energy = zbl_pair_energy_eh(torch.tensor(6), torch.tensor(8), r)
    torch.testing.assert_close(energy * r, torch.full_like(r, 48.0), rtol=2e-3, atol=0)


def test_value_at_one_bohr_matches_the_published_formula():
    """C-O at 1 Bohr: Z1 Z2 / r phi(r / a) f(r / r_c), with a = 0.8854 / (6^0.23 + 8^0.23) and
    ZBL's coefficients written out here, not taken from the module."""
    a = 0.8854 / (6**0.23 + 8**0.23)
    x = 1.0 / a
    phi = (0.1818 * math.exp(-3.2 * x) + 0.5099 * math.exp(-0.9423 * x)
           + 0.2802 * math.exp(-0.4029 * x) + 0.02817 * math.exp(-0.2016 * x))
    for scale in (0.75, 1.0):
        u = Bohr / (scale * (covalent_radii[6] + covalent_radii[8]))
        switch = 1 - 28 * u**6 + 48 * u**7 - 21 * u**8
        expected = 48.0 * phi * switch
        value = float(zbl_pair_energy_eh(torch.tensor(6), torch.tensor(8),
                                         torch.tensor(1.0, dtype=DTYPE), cutoff_scale=scale))
        assert value == pytest.approx(expected, rel=2e-3)  # the paper's 4-digit constants


def test_switch_falls_from_one_to_zero_with_two_vanishing_derivatives():
    u = torch.linspace(0, 1.2, 241, dtype=DTYPE)
    f = pair_switch(u)
    # f(0) = 1 - 0 and f = 0 beyond u = 1 hold exactly by construction (a polynomial at 0, a
    # where() beyond): exact comparisons of constants, not of two computations
    assert float(f[0]) == 1.0 and bool((f[u >= 1] == 0).all())
    assert bool((f[1:] <= f[:-1]).all())  # monotone
    one = torch.tensor(1.0, dtype=DTYPE, requires_grad=True)
    (first,) = torch.autograd.grad(pair_switch(one), one, create_graph=True)
    (second,) = torch.autograd.grad(first, one)
    assert abs(float(first.detach())) < 1e-12 and abs(float(second)) < 1e-10


@pytest.mark.parametrize("scale", [DEFAULT_CUTOFF_SCALE, 1.0])
def test_zero_beyond_the_cutoff_with_finite_gradients(scale):
    r_c = scale * (covalent_radii[1] + covalent_radii[8]) / Bohr
    r = torch.tensor([r_c, r_c * 1.5, 30.0], dtype=DTYPE, requires_grad=True)
    energy = zbl_pair_energy_eh(torch.tensor(1), torch.tensor(8), r, cutoff_scale=scale)
    (gradient,) = torch.autograd.grad(energy.sum(), r)
    assert bool((energy == 0).all()) and bool((gradient == 0).all())  # a where(): exact zeros
    inside = zbl_pair_energy_eh(torch.tensor(1), torch.tensor(8),
                                torch.tensor(0.8 * r_c, dtype=DTYPE), cutoff_scale=scale)
    assert float(inside) > 0


@pytest.mark.parametrize("name", ["H2O", "CH3CH2OH"])
def test_no_prior_near_equilibrium_bonds_and_a_wall_for_compressed_ones(name):
    """With the default cutoff no pair of a molecule with every bond compressed by 15 % (beyond
    500 K thermal motion) feels the prior, so energies, forces and Hessians near equilibrium are
    the learned ones alone; at 60 % of every distance the wall holds a few eV."""
    atoms = molecule(name)
    z = torch.tensor(atoms.numbers)
    center = atoms.positions.mean(axis=0)
    for factor in (1.0, 0.85):
        positions = torch.tensor((center + factor * (atoms.positions - center)) / Bohr,
                                 dtype=DTYPE, requires_grad=True)
        energy = zbl_repulsion_eh(z, positions)
        (gradient,) = torch.autograd.grad(energy, positions)
        assert float(energy.detach()) == 0.0 and bool((gradient == 0).all())  # exact zeros
    squeezed = float(zbl_repulsion_eh(z, torch.tensor(0.6 * atoms.positions / Bohr,
                                                      dtype=DTYPE)))
    assert squeezed > 0.1  # Eh: a few eV against a bond collapse


def test_forces_match_finite_differences():
    z, positions = _distorted_ethanol()
    assert float(zbl_repulsion_eh(z, positions)) > 1e-3  # some pairs inside r_c
    positions.requires_grad_(True)
    (gradient,) = torch.autograd.grad(zbl_repulsion_eh(z, positions), positions)
    step = 1e-5
    numeric = torch.zeros_like(positions)
    with torch.no_grad():
        for atom in range(len(z)):
            for axis in range(3):
                shifted = positions.detach().clone()
                shifted[atom, axis] += step
                plus = zbl_repulsion_eh(z, shifted)
                shifted[atom, axis] -= 2 * step
                minus = zbl_repulsion_eh(z, shifted)
                numeric[atom, axis] = (plus - minus) / (2 * step)
    torch.testing.assert_close(gradient, numeric, rtol=1e-6, atol=1e-9)


def test_invariant_under_rotation_translation_and_permutation():
    z, positions = _distorted_ethanol(seed=1)
    reference = zbl_repulsion_eh(z, positions)
    rotation = torch.tensor(Rotation.random(random_state=2).as_matrix(), dtype=DTYPE)
    moved = positions @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=DTYPE)
    order = torch.tensor(np.random.default_rng(3).permutation(len(z)))
    torch.testing.assert_close(zbl_repulsion_eh(z[order], moved[order]), reference,
                               rtol=1e-12, atol=1e-14)
    batch = torch.stack([positions, moved])
    torch.testing.assert_close(zbl_repulsion_eh(z, batch), reference.expand(2),
                               rtol=1e-12, atol=1e-14)
