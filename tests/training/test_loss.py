"""Loss terms of training: the robust (Huber) scaled error."""

import pytest
import torch

from ase_phisnet.training.loss import _scaled_error


def test_huber_loss_is_the_square_near_zero_and_linear_far_out():
    """x = 0.5 and x = 10 (scaled errors): 2 huber(x, delta=1) + |x| is x^2 + |x| inside
    delta and 2 delta |x| - delta^2 + |x| beyond; delta = 0 keeps the plain square."""
    sigma = torch.tensor(2.0, dtype=torch.float64)
    for x, robust in ((0.5, 0.25 + 0.5), (10.0, 19.0 + 10.0)):
        prediction = torch.tensor([2.0 * x], dtype=torch.float64)
        zero = torch.zeros(1, dtype=torch.float64)
        assert float(_scaled_error(prediction, zero, sigma, huber_delta=1.0)) == \
            pytest.approx(robust)
        assert float(_scaled_error(prediction, zero, sigma)) == pytest.approx(x**2 + x)
