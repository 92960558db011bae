"""The learned remainders: the atomwise one is E = sum_i [e_Z(i) + MLP(s_i)], per geometry,
invariant to atom order; the message-passing one standardizes its features per element."""

import pytest
import torch

from ase_phisnet.electronic.remainder import (
    REMAINDERS,
    AtomwiseRemainder,
    MessagePassingRemainder,
    build_remainder,
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
