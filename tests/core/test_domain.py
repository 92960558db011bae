"""The training domain: compositions and element-pair distance ranges (Å) of training geometries,
and the sentences that name what of a geometry lies outside them."""

import numpy as np
import pytest
from ase.build import molecule

from ase_phisnet.core.domain import (
    TrainingDomain,
    element_pair,
    element_pair_distances_ang,
    hill_formula,
)

WATER = molecule("H2O")  # O-H 0.969 Å, H-H 1.527 Å


def water_geometries(scales):
    """Water scaled about the origin: every distance times the scale."""
    return np.stack([scale * WATER.positions for scale in scales])


def test_names_of_compositions_and_element_pairs():
    assert hill_formula([8, 1, 1]) == "H2O"
    assert hill_formula(molecule("CH3CH2OH").numbers) == "C2H6O"
    assert element_pair(8, 1) == element_pair(1, 8) == "H-O"
    distances = element_pair_distances_ang(WATER.numbers, water_geometries([1.0, 2.0]))
    assert sorted(distances) == ["H-H", "H-O"] and distances["H-O"].shape == (2, 2)
    np.testing.assert_allclose(distances["H-O"][1], 2 * distances["H-O"][0], rtol=1e-12)


def test_from_geometries_records_the_ranges():
    domain = TrainingDomain.from_geometries(WATER.numbers, water_geometries([0.95, 1.0, 1.1]))
    oh = np.linalg.norm(WATER.positions[1] - WATER.positions[0])
    hh = np.linalg.norm(WATER.positions[1] - WATER.positions[2])
    assert domain.compositions == ("H2O",)
    assert domain.pair_ranges_ang["H-O"] == pytest.approx((0.95 * oh, 1.1 * oh), rel=1e-12)
    assert domain.pair_ranges_ang["H-H"] == pytest.approx((0.95 * hh, 1.1 * hh), rel=1e-12)
    assert domain.violations(WATER.numbers, WATER.positions) == []


def test_union_holds_every_domain():
    water = TrainingDomain.from_geometries(WATER.numbers, water_geometries([1.0, 1.1]))
    ethanol = molecule("CH3CH2OH")
    alcohol = TrainingDomain.from_geometries(ethanol.numbers, ethanol.positions[None])
    union = TrainingDomain.union([water, alcohol])
    assert union.compositions == ("C2H6O", "H2O")
    low = min(water.pair_ranges_ang["H-O"][0], alcohol.pair_ranges_ang["H-O"][0])
    high = max(water.pair_ranges_ang["H-O"][1], alcohol.pair_ranges_ang["H-O"][1])
    assert union.pair_ranges_ang["H-O"] == (low, high)
    assert union.pair_ranges_ang["C-C"] == alcohol.pair_ranges_ang["C-C"]
    for geometry in (WATER, ethanol):
        assert union.violations(geometry.numbers, geometry.positions) == []


def test_violations_name_the_composition_and_the_element_pairs():
    domain = TrainingDomain.from_geometries(WATER.numbers, water_geometries([0.98, 1.02]))
    far = 1.5 * WATER.positions
    problems = domain.violations(WATER.numbers, far)
    assert len(problems) == 2 + 4  # the element pairs, then each element's two neighbours
    assert problems[0].startswith("H-H distance") and "above the training range" in problems[0]
    assert problems[1].startswith("H-O distance") and "above the training range" in problems[1]
    assert all(p.startswith("atom") and "above the training range" in p for p in problems[2:])
    close = domain.violations(WATER.numbers, 0.7 * WATER.positions)
    assert all("below the training range" in p for p in close) and len(close) == 2 + 4
    methanol = molecule("CH3OH")
    problems = domain.violations(methanol.numbers, methanol.positions)
    assert problems[0] == "composition CH4O is not among the training data's (H2O)"
    assert "element pair C-H does not occur in the training data" in problems
    assert "element pair C-O does not occur in the training data" in problems


def test_tolerance_widens_the_ranges():
    domain = TrainingDomain(("H2O",), {"H-H": (1.5, 1.7), "H-O": (0.90, 1.00)})
    # O-H 1.066 Å and 0.977 Å, H-H 1.653 Å: one O-H bond 0.066 Å beyond its range
    stretched = np.array([[0.0, 0.0, 0.0], [1.066, 0.0, 0.0], [-0.3, 0.93, 0.0]])
    assert domain.violations(WATER.numbers, stretched, tolerance_ang=0.1) == []
    problems = domain.violations(WATER.numbers, stretched, tolerance_ang=0.05)
    assert problems == ["H-O distance 1.066 Å is above the training range 0.900-1.000 Å"]
    excursion, pair = domain.excursion_ang(WATER.numbers, stretched)
    assert excursion == pytest.approx(0.066, abs=1e-12) and pair == "H-O"
    assert domain.excursion_ang(WATER.numbers, 0.93 * stretched) == (0.0, "")  # all inside


def test_dict_round_trip_and_invalid_dicts():
    domain = TrainingDomain(("H2O", "C2H6O"), {"H-O": (0.9, 1.1), "C-H": [1.0, 1.2]})
    assert domain.compositions == ("C2H6O", "H2O")  # sorted
    assert TrainingDomain.from_dict(domain.to_dict()) == domain
    values = domain.to_dict()
    for broken in ({"compositions": ["H2O"]},  # no ranges
                   {**values, "pair_ranges_ang": {"H-O": [1.1, 0.9]}},  # low > high
                   {**values, "pair_ranges_ang": {"H-O": [-1.0, 0.9]}},  # negative
                   {**values, "pair_ranges_ang": {"H-O": 1.0}},  # not a pair
                   {**values, "pair_ranges_ang": {"H-O": ["a", "b"]}}):
        with pytest.raises(ValueError, match="invalid training domain"):
            TrainingDomain.from_dict(broken)
    with pytest.raises(ValueError, match="0 <= low <= high"):
        TrainingDomain(("H2O",), {"H-O": (1.1, 0.9)})


def ethanol_domain():
    """Ethanol's equilibrium geometry with every distance scaled by 0.97-1.03."""
    ethanol = molecule("CH3CH2OH")
    scales = np.linspace(0.97, 1.03, 5)
    return ethanol, TrainingDomain.from_geometries(
        ethanol.numbers, np.stack([s * ethanol.positions for s in scales]))


def test_neighbour_ranges_are_each_elements_kth_nearest_distances():
    domain = TrainingDomain.from_geometries(WATER.numbers, water_geometries([0.95, 1.0, 1.1]))
    oh = np.linalg.norm(WATER.positions[1] - WATER.positions[0])
    hh = np.linalg.norm(WATER.positions[1] - WATER.positions[2])
    # three atoms: two neighbours each; O's are its two bonds, an H's its bond and the other H
    assert sorted(domain.neighbour_ranges_ang) == ["H:1", "H:2", "O:1", "O:2"]
    assert domain.neighbour_ranges_ang["O:2"] == pytest.approx((0.95 * oh, 1.1 * oh), rel=1e-12)
    assert domain.neighbour_ranges_ang["H:2"] == pytest.approx((0.95 * hh, 1.1 * hh), rel=1e-12)
    ethanol, alcohol = ethanol_domain()
    assert sorted(alcohol.neighbour_ranges_ang) == [f"{e}:{k}" for e in "CHO" for k in (1, 2, 3, 4)]


def test_a_stretched_bond_inside_its_element_pairs_range_is_outside_its_neighbours():
    """Ethanol's C-H pairs span 1.1-3.4 Å (bonded and not): a C-H bond stretched to 2.0 Å lies
    inside that range, but its H's nearest atom is then 2.0 Å away where the data hold
    ~1.1 Å: the neighbour check names that atom and the element-pair check is silent."""
    ethanol, domain = ethanol_domain()
    hydrogen = 4  # an H of the CH2 group (ASE's CH3CH2OH)
    carbon = int(np.argmin(np.linalg.norm(ethanol.positions[:3] - ethanol.positions[hydrogen],
                                          axis=1)))
    bond = ethanol.positions[hydrogen] - ethanol.positions[carbon]
    stretched = ethanol.positions.copy()
    stretched[hydrogen] = ethanol.positions[carbon] + 2.0 * bond / np.linalg.norm(bond)
    problems = domain.violations(ethanol.numbers, stretched)
    assert not any(p.startswith("C-H") for p in problems)
    assert any(p.startswith(f"atom {hydrogen} (H): distance") and "nearest atom" in p
               and "above the training range" in p for p in problems)
    excursion, name = domain.excursion_ang(ethanol.numbers, stretched)
    assert name.startswith("H:") and excursion > 0.5


def test_neighbour_checks_do_not_depend_on_the_atom_order():
    ethanol, domain = ethanol_domain()
    rng = np.random.default_rng(3)
    rattled = ethanol.positions + rng.normal(scale=0.15, size=ethanol.positions.shape)
    order = rng.permutation(len(ethanol))
    permuted = TrainingDomain.from_geometries(ethanol.numbers[order],
                                              domain_geometries := np.stack(
                                                  [s * ethanol.positions[order]
                                                   for s in np.linspace(0.97, 1.03, 5)]))
    assert domain_geometries.shape == (5, 9, 3)
    assert permuted == domain
    assert (domain.excursion_ang(ethanol.numbers, rattled)
            == permuted.excursion_ang(ethanol.numbers[order], rattled[order]))
    assert (len(domain.violations(ethanol.numbers, rattled))
            == len(permuted.violations(ethanol.numbers[order], rattled[order])))


def test_a_domain_recorded_without_neighbour_ranges_checks_pairs_only():
    ethanol, domain = ethanol_domain()
    old = TrainingDomain.from_dict({k: v for k, v in domain.to_dict().items()
                                    if k != "neighbour_ranges_ang"})
    assert old.neighbour_ranges_ang is None
    assert TrainingDomain.from_dict(domain.to_dict()) == domain
    assert TrainingDomain.union([old, domain]).neighbour_ranges_ang is None
    assert TrainingDomain.union([domain, domain]) == domain
    contact = ethanol.positions.copy()
    contact[4] = contact[5] + 0.45 * (contact[4] - contact[5])  # two CH2 hydrogens 0.8 Å apart
    assert any("below the training range" in p and p.startswith("atom")
               for p in domain.violations(ethanol.numbers, contact))
    assert not any(p.startswith("atom") for p in old.violations(ethanol.numbers, contact))
