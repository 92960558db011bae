"""The learned remainders: the atomwise one is E = sum_i [e_Z(i) + MLP(s_i)], per geometry,
invariant to atom order; the message-passing one standardizes its features per element and
bounds them smoothly beyond their training range."""

import pytest
import torch

from ase_phisnet.electronic.remainder import (
    FEATURE_MARGIN_STD,
    FEATURE_SATURATION_WIDTH_STD,
    REMAINDERS,
    AtomwiseRemainder,
    MessagePassingRemainder,
    build_remainder,
    soft_clip,
)


def _remainder():
    torch.manual_seed(0)
    remainder = AtomwiseRemainder(num_elements=2, num_features=6, hidden=8).double()
    with torch.no_grad():
        remainder.element_energy_eh.copy_(torch.tensor([-0.5, -75.0]))
    return remainder


def test_atomwise_remainder_is_its_defining_sum():
    remainder = _remainder()
    species = torch.tensor([1, 0, 0])
    features = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = sum(float(remainder.element_energy_eh[s]) + float(remainder.mlp(features[i]))
                       for i, s in enumerate(species))
        assert float(remainder(species, features)) == pytest.approx(expected, rel=1e-14)


def test_batched_and_invariant_to_atom_order():
    remainder = _remainder()
    species = torch.tensor([1, 0, 0, 1])
    features = torch.randn(3, 4, 6, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(2))
    energies = remainder(species, features)
    assert energies.shape == (3,)
    order = torch.tensor([2, 0, 3, 1])
    # the same four terms summed in another order: float64 rounding only
    torch.testing.assert_close(remainder(species[order], features[:, order]), energies,
                               rtol=1e-14, atol=0)
    torch.testing.assert_close(remainder(species, features[1]), energies[1], rtol=1e-14, atol=0)


def test_gradient_reaches_the_features_and_the_element_constants():
    remainder = _remainder()
    features = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3),
                           requires_grad=True)
    remainder(torch.tensor([1, 0, 0]), features).backward()
    assert features.grad is not None and bool(features.grad.abs().sum() > 0)
    # dE/de_Z counts the atoms of each element: exact small integers
    assert remainder.element_energy_eh.grad.tolist() == [2.0, 1.0]


SIZES = {"atom_features": 6, "hidden": 8, "electronic_features": 3, "channels": 8,
         "num_layers": 1, "num_radial": 4, "cutoff_bohr": 6.0}


def test_remainders_are_chosen_by_name():
    assert REMAINDERS == ("atomwise", "message_passing")
    assert isinstance(build_remainder("atomwise", 2, **SIZES), AtomwiseRemainder)
    assert isinstance(build_remainder("message_passing", 2, **SIZES), MessagePassingRemainder)
    with pytest.raises(ValueError, match=r"remainder must be one of \('atomwise', "
                                         r"'message_passing'\), got 'gnn'"):
        build_remainder("gnn", 2, **SIZES)


def test_message_passing_remainder_standardizes_features_per_element():
    """After ``set_statistics`` each element's features enter with zero mean and unit spread;
    a feature constant for an element (a shell it lacks) keeps unit spread instead of 1/0."""
    torch.manual_seed(0)
    remainder = build_remainder("message_passing", 2, **SIZES).double()
    species = torch.tensor([1, 0, 0])
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(20, 3, 3, dtype=torch.float64, generator=generator) * 5 + 40
    features[:, 1:, 2] = 0.0  # element 0 lacks the third feature
    remainder.set_statistics(species, features, energy_scale_eh=0.02)
    standardized = (features - remainder.feature_mean[species]) / remainder.feature_std[species]
    torch.testing.assert_close(standardized[:, 0].mean(0), torch.zeros(3, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(standardized[:, 0].std(0), torch.ones(3, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    assert float(remainder.feature_std[0, 2]) == 1.0
    assert float(remainder.energy_scale_eh) == 0.02
    positions = torch.randn(20, 3, 3, dtype=torch.float64, generator=generator)
    energies = remainder(species, positions, features)
    assert energies.shape == (20,) and bool(torch.isfinite(energies).all())
    with pytest.raises(ValueError, match="electronic features"):
        remainder(species, positions)


LOWER, UPPER, WIDTH = -1.0, 2.0, 0.5


def _clip(values):
    return soft_clip(values, torch.tensor(LOWER, dtype=values.dtype),
                     torch.tensor(UPPER, dtype=values.dtype), WIDTH)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_soft_clip_is_the_identity_inside_and_bounded_outside(dtype):
    inside = torch.linspace(LOWER, UPPER, 31, dtype=dtype)
    torch.testing.assert_close(_clip(inside), inside, rtol=0, atol=0)
    far = torch.tensor([-1e8, -50.0, -3.0, 4.0, 60.0, 1e8], dtype=dtype)
    clipped = _clip(far)
    # never beyond the saturation level (tanh reaches 1 in floating point far out)
    assert bool(((clipped >= LOWER - WIDTH) & (clipped <= UPPER + WIDTH)).all())
    assert bool((clipped[far > UPPER] > UPPER).all() and (clipped[far < LOWER] < LOWER).all())
    # infinite bounds: no bound at all
    unbounded = soft_clip(far, torch.tensor(-float("inf"), dtype=dtype),
                          torch.tensor(float("inf"), dtype=dtype), WIDTH)
    torch.testing.assert_close(unbounded, far, rtol=0, atol=0)


def test_soft_clip_is_twice_continuously_differentiable_at_its_bounds():
    """Slope 1 and curvature 0 on both sides of each bound (forces and Hessians through the
    features stay continuous), and torch's first and second derivatives match finite
    differences across the bounds."""
    for bound in (LOWER, UPPER):
        points = torch.tensor([bound - 1e-9, bound + 1e-9], dtype=torch.float64,
                              requires_grad=True)
        (slope,) = torch.autograd.grad(_clip(points).sum(), points, create_graph=True)
        (curvature,) = torch.autograd.grad(slope.sum(), points)
        torch.testing.assert_close(slope.detach(), torch.ones(2, dtype=torch.float64),
                                   rtol=0, atol=1e-8)
        torch.testing.assert_close(curvature, torch.zeros(2, dtype=torch.float64),
                                   rtol=0, atol=1e-8)
    values = torch.tensor([LOWER - 0.7, LOWER - 1e-3, LOWER + 0.3, UPPER - 1e-3, UPPER + 1e-3,
                           UPPER + 0.9], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_clip, (values,))
    assert torch.autograd.gradgradcheck(_clip, (values,))


def _trained_remainder():
    torch.manual_seed(0)
    remainder = build_remainder("message_passing", 2, **SIZES).double()
    species = torch.tensor([1, 0, 0])
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(20, 3, 3, dtype=torch.float64, generator=generator) * 5 + 40
    remainder.set_statistics(species, features, energy_scale_eh=0.02)
    positions = torch.randn(20, 3, 3, dtype=torch.float64, generator=generator)
    return remainder, species, features, positions


def test_features_are_bounded_a_margin_beyond_their_training_range():
    """The bounds sit FEATURE_MARGIN_STD spreads beyond each element's training extremes, so
    the training features enter unchanged: the energies are those without bounds."""
    remainder, species, features, positions = _trained_remainder()
    standardized = remainder.standardized_features(species, features)
    for element in (0, 1):
        values = standardized[:, species == element].reshape(-1, 3)
        torch.testing.assert_close(remainder.feature_lower[element],
                                   values.min(0).values - FEATURE_MARGIN_STD, rtol=0, atol=0)
        torch.testing.assert_close(remainder.feature_upper[element],
                                   values.max(0).values + FEATURE_MARGIN_STD, rtol=0, atol=0)
    assert float(remainder.feature_excursions(species, features).abs().max()) == 0.0
    bounded = remainder(species, positions, features)
    remainder.feature_lower.fill_(-float("inf"))
    remainder.feature_upper.fill_(float("inf"))
    # the same network on the same inputs: equal to float64 rounding
    torch.testing.assert_close(remainder(species, positions, features), bounded,
                               rtol=1e-12, atol=0)


def test_a_feature_far_outside_its_range_saturates_instead_of_extrapolating():
    """A band-energy share shifted by 1e3 or 1e6 spreads gives the same finite energy, with a
    vanishing derivative, and feature_excursions reports how far outside it lies."""
    remainder, species, features, positions = _trained_remainder()
    energies, slopes = [], []
    for shift in (1e3, 1e6):
        moved = features[:1].clone()
        moved[0, 0, 2] += shift * float(remainder.feature_std[1, 2])
        moved.requires_grad_(True)
        energy = remainder(species, positions[:1], moved)
        (slope,) = torch.autograd.grad(energy.sum(), moved)
        energies.append(energy.detach())
        slopes.append(float(slope[0, 0, 2].abs()))
        excursion = remainder.feature_excursions(species, moved)[0]
        assert float(excursion[0, 2]) == pytest.approx(
            shift - float(remainder.feature_upper[1, 2])
            + float(remainder.standardized_features(species, features[:1])[0, 0, 2]), rel=1e-9)
        assert float(excursion.sum() - excursion[0, 2]) == 0.0
    assert bool(torch.isfinite(energies[0]).all())
    torch.testing.assert_close(energies[0], energies[1], rtol=1e-12, atol=0)
    assert max(slopes) < 1e-12
    assert FEATURE_SATURATION_WIDTH_STD > 0


def test_element_offsets_close_the_mean_residual_in_proportion_to_the_counts():
    """One composition: the offsets are fixed up to their count-weighted sum, which must equal
    the mean residual; the minimum-norm solution is proportional to the counts."""
    import numpy as np

    from ase_phisnet.electronic.remainder import element_energy_offsets_eh

    species = np.array([2, 0, 0, 1, 0, 0, 0, 0, 0])  # ethanol-like: 1 of 2, 6 of 0, 1 of 1
    residual = np.random.default_rng(0).normal(-3.0, 0.01, size=50)
    offsets = element_energy_offsets_eh(species, 4, residual)
    counts = np.bincount(species, minlength=4)
    assert abs(counts @ offsets - residual.mean()) < 1e-12
    assert offsets[3] == 0.0  # an element absent from the molecule gets nothing
    np.testing.assert_allclose(offsets[:3] / counts[:3], offsets[0] / counts[0], rtol=1e-12)
