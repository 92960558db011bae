"""Geometry samplers: reproducible, physical spread, clear errors."""

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

from ase_phisnet.core.errors import UnknownMoleculeError
from ase_phisnet.data.sampling import (
    SamplerConfig,
    harmonic_modes,
    make_cheap_calculator,
    resolve_molecule,
    sample_geometries,
    sample_temperatures,
    tblite_available,
)

FAST_LANGEVIN = {"equilibration_steps": 20, "stride": 5}


def _oh_distances(positions):
    return np.linalg.norm(positions[:, 1:] - positions[:, :1], axis=-1)


@pytest.mark.parametrize("calculator", ["gfn2", "pyscf"])
def test_langevin_is_reproducible_and_thermal(calculator):
    if calculator == "gfn2" and not tblite_available():
        pytest.skip("tblite not installed")
    water = molecule("H2O")
    config = SamplerConfig(kind="langevin", temperatures_k=(500.0,), seed=3, calculator=calculator,
                           **FAST_LANGEVIN)
    first = sample_geometries(water, 4, config, progress=False)
    again = sample_geometries(water, 4, config, progress=False)
    other = sample_geometries(water, 4, SamplerConfig(**{**config.__dict__, "seed": 4}),
                              progress=False)
    assert first.shape == (4, 3, 3)
    np.testing.assert_allclose(first, again, rtol=0, atol=1e-12)  # threads reorder sums
    assert not np.allclose(first, other)
    assert len({tuple(p.ravel()) for p in first}) == 4  # distinct snapshots
    distances = _oh_distances(first)
    assert np.all((distances > 0.85) & (distances < 1.15))  # bonds vibrate, molecule intact


def test_normal_mode_sampling_spread_grows_with_temperature():
    water = molecule("H2O")
    calculator = "gfn2" if tblite_available() else "pyscf"
    spreads = {}
    for temperature in (100.0, 900.0):
        config = SamplerConfig(kind="normal-modes", temperatures_k=(temperature,), seed=0,
                               calculator=calculator)
        geometries = sample_geometries(water, 200, config, progress=False)
        spreads[temperature] = _oh_distances(geometries).std()
    # Classical harmonic amplitudes scale as sqrt(T): a ratio of 3 for 100 K -> 900 K.
    assert spreads[900.0] / spreads[100.0] == pytest.approx(3.0, rel=0.2)


def test_quantum_normal_modes_keep_zero_point_spread_at_low_temperature():
    water = molecule("H2O")
    calculator = make_cheap_calculator("auto")
    _, eigenvalues, modes = harmonic_modes(water, calculator)
    assert modes.shape == (9, 3) and np.all(eigenvalues > 0)
    quantum = SamplerConfig(kind="normal-modes", temperatures_k=(10.0,), quantum=True)
    classical = SamplerConfig(kind="normal-modes", temperatures_k=(10.0,))
    spread_q = _oh_distances(sample_geometries(water, 100, quantum, progress=False)).std()
    spread_c = _oh_distances(sample_geometries(water, 100, classical, progress=False)).std()
    assert spread_q > 5 * spread_c


def test_geometries_split_over_temperatures():
    config = SamplerConfig(temperatures_k=(300, 500))
    np.testing.assert_array_equal(sample_temperatures(5, config), [300, 300, 300, 500, 500])


def test_resolve_molecule_from_name_and_file(tmp_path):
    assert resolve_molecule("CH3CH2OH").get_chemical_formula() == "C2H6O"
    path = tmp_path / "water.xyz"
    write(path, molecule("H2O"))
    assert resolve_molecule(str(path)).get_chemical_formula() == "H2O"


def test_unknown_molecule_is_a_clear_error(tmp_path):
    with pytest.raises(UnknownMoleculeError, match="did you mean 'H2O'"):
        resolve_molecule("h2o")
    with pytest.raises(UnknownMoleculeError, match="neither a file nor a molecule"):
        resolve_molecule("unobtainium")
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not xyz\n")
    with pytest.raises(UnknownMoleculeError, match="cannot read"):
        resolve_molecule(str(bad))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kind": "metadynamics"}, "unknown sampler"),
        ({"calculator": "gfn1"}, "unknown sampling calculator"),
        ({"temperatures_k": (-5.0,)}, "temperatures"),
        ({"stride": 0}, "stride"),
    ],
)
def test_sampler_config_validates(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**kwargs)


def test_stretch_one_bond_changes_that_bond_alone():
    """Ethanol: the drawn bond gets its factor; every other covalent bond keeps its length
    (the far fragment moves rigidly). Benzene (a ring bond): both ends move, symmetric."""
    from ase.build import molecule

    from ase_phisnet.data.sampling import covalent_bonds, stretch_one_bond

    for name in ("CH3CH2OH", "C6H6"):
        atoms = molecule(name)
        bonds = covalent_bonds(atoms)
        assert len(bonds) == {"CH3CH2OH": 8, "C6H6": 12}[name]
        before = atoms.get_all_distances()
        rng = np.random.default_rng(0)
        changed = set()
        for _ in range(20):
            moved = stretch_one_bond(atoms, atoms.positions, (0.8, 1.5), rng)
            after = np.linalg.norm(moved[:, None] - moved[None], axis=-1)
            ratios = np.array([after[i, j] / before[i, j] for i, j in bonds])
            stretched = np.flatnonzero(np.abs(ratios - 1) > 1e-9)
            if name == "CH3CH2OH":
                assert len(stretched) == 1  # rigid fragment: no other bond moves
                changed.add(bonds[stretched[0]])
                assert 0.8 <= ratios[stretched[0]] <= 1.5
            else:  # a ring C-C bond moves both ends about its midpoint; a C-H bond the H
                moved_atoms = np.flatnonzero(np.abs(moved - atoms.positions).sum(1) > 0)
                i, j = moved_atoms if len(moved_atoms) == 2 else (None, None)
                if i is not None and atoms.numbers[i] == atoms.numbers[j] == 6:
                    np.testing.assert_allclose(moved[[i, j]].mean(0),
                                               atoms.positions[[i, j]].mean(0), atol=1e-12)
                assert 1 <= len(moved_atoms) <= 2
        if name == "CH3CH2OH":
            assert len(changed) >= 6  # the bond is drawn at random


def test_rattle_and_bond_stretch_add_to_the_thermal_geometries():
    """At 1 mK normal-mode geometries sit at the minimum: what is left is the rattle, of the
    asked standard deviation, and one scaled bond per geometry; both reproducible by seed."""
    water = molecule("H2O")
    calculator = "gfn2" if tblite_available() else "pyscf"
    base = SamplerConfig(kind="normal-modes", temperatures_k=(1e-3,), seed=0,
                         calculator=calculator)
    cold = sample_geometries(water, 300, base, progress=False)
    rattled = sample_geometries(water, 300, SamplerConfig(**{**base.__dict__,
                                                              "rattle_ang": 0.1}),
                                progress=False)
    assert (rattled - cold).std() == pytest.approx(0.1, rel=0.05)
    stretched = sample_geometries(water, 20, SamplerConfig(**{**base.__dict__,
                                                               "bond_stretch": (1.3, 1.4)}),
                                  progress=False)
    ratios = _oh_distances(stretched) / _oh_distances(cold[:20])
    longest, shortest = ratios.max(axis=1), ratios.min(axis=1)
    assert np.all((longest > 1.29) & (longest < 1.41)) and np.allclose(shortest, 1, atol=1e-3)


def test_scale_one_angle_changes_that_angle_and_no_bond_length():
    """Ethanol: the drawn angle gets its factor, every covalent bond keeps its length (the far
    fragment rotates rigidly about the central atom), and the draws cover many angles; ring
    angles of benzene are never drawn."""
    from ase.build import molecule

    from ase_phisnet.data.sampling import bond_angles, covalent_bonds, scale_one_angle

    atoms = molecule("CH3CH2OH")
    angles, bonds = bond_angles(atoms), covalent_bonds(atoms)
    assert len(angles) == 13  # 6 at each carbon minus none in a ring, 1 at O
    before = atoms.get_all_distances()
    rng = np.random.default_rng(0)
    changed = set()
    for _ in range(40):
        moved = atoms.copy()
        moved.positions = scale_one_angle(atoms, atoms.positions, (0.6, 1.2), rng)
        after = moved.get_all_distances()
        np.testing.assert_allclose([after[i, j] for i, j in bonds],
                                   [before[i, j] for i, j in bonds], rtol=0, atol=1e-10)
        ratios = np.array([moved.get_angle(*a) / atoms.get_angle(*a) for a in angles])
        scaled = np.flatnonzero(np.abs(ratios - 1) > 1e-6)
        assert len(scaled) >= 1 and np.any((ratios >= 0.6 - 1e-9) & (ratios <= 1.2 + 1e-9)
                                           & (np.abs(ratios - 1) > 1e-6))
        changed.update(angles[s] for s in scaled)
    assert len(changed) >= 8  # the angle is drawn at random
    benzene = molecule("C6H6")
    assert all(benzene.numbers[k] == 1 for _, _, k in bond_angles(benzene))  # C-C-H only


def test_angle_scale_closes_the_water_angle_by_its_factor():
    """At 1 mK the normal-mode geometries sit at the minimum: with angle_scale the H-O-H angle
    of every geometry is its factor times the minimum's, the O-H bonds unchanged."""
    water = molecule("H2O")
    calculator = "gfn2" if tblite_available() else "pyscf"
    config = SamplerConfig(kind="normal-modes", temperatures_k=(1e-3,), seed=0,
                           calculator=calculator, angle_scale=(0.5, 0.7))
    cold = sample_geometries(water, 10, SamplerConfig(**{**config.__dict__,
                                                          "angle_scale": None}),
                             progress=False)
    closed = sample_geometries(water, 10, config, progress=False)

    def angle(g):
        a, b = g[1] - g[0], g[2] - g[0]
        return np.degrees(np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b)))

    ratios = np.array([angle(c) / angle(g) for c, g in zip(closed, cold)])
    assert np.all((ratios > 0.49) & (ratios < 0.71)) and ratios.std() > 0.01
    np.testing.assert_allclose(_oh_distances(closed), _oh_distances(cold), atol=1e-9)


def test_bond_stretch_and_rattle_are_validated():
    with pytest.raises(ValueError, match="bond_stretch"):
        SamplerConfig(bond_stretch=(1.2, 0.9))
    with pytest.raises(ValueError, match="angle_scale"):
        SamplerConfig(angle_scale=(0.0, 0.9))
    with pytest.raises(ValueError, match="rattle_ang"):
        SamplerConfig(rattle_ang=-0.1)


def test_file_sampler_takes_evenly_spaced_frames_in_order(tmp_path):
    """The 'file' sampler reads every frame of a structure file and takes n evenly spaced
    ones, first and last included; frames of another molecule or order are refused."""
    from ase.io import write

    water = molecule("H2O")
    frames = []
    for k in range(5):
        frame = water.copy()
        frame.positions[1] += [0.01 * k, 0, 0]
        frames.append(frame)
    path = tmp_path / "frames.xyz"
    write(path, frames)
    config = SamplerConfig(kind="file", geometries_path=str(path))
    taken = sample_geometries(water, 3, config, progress=False)
    np.testing.assert_allclose(taken, np.stack([frames[k].positions for k in (0, 2, 4)]),
                               atol=1e-8)
    with pytest.raises(ValueError, match="holds 5 frames"):
        sample_geometries(water, 6, config, progress=False)
    with pytest.raises(ValueError, match="different atom order"):
        sample_geometries(molecule("H2O")[[1, 0, 2]], 2, config, progress=False)


def test_file_sampler_needs_its_path_and_only_it():
    with pytest.raises(ValueError, match="geometries_path"):
        SamplerConfig(kind="file")
    with pytest.raises(ValueError, match="geometries_path"):
        SamplerConfig(kind="langevin", geometries_path="frames.xyz")
