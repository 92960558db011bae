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
    assert len(problems) == 2
    assert problems[0].startswith("H-H distance") and "above the training range" in problems[0]
    assert problems[1].startswith("H-O distance") and "above the training range" in problems[1]
    close = domain.violations(WATER.numbers, 0.7 * WATER.positions)
    assert all("below the training range" in p for p in close) and len(close) == 2
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
