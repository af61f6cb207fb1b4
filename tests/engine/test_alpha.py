"""The alpha metric: power-law fits on known samples, and the layer score."""

from __future__ import annotations

import math

import pytest
import torch

from unisub_hub.engine.alpha import QualityThresholds, fit_power_law, layer_quality


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.0, 4.5])
def test_fit_recovers_the_exponent_of_pareto_samples(alpha):
    gen = torch.Generator().manual_seed(int(alpha * 10))
    uniform = torch.rand(4000, generator=gen, dtype=torch.float64)
    samples = 0.3 * (1 - uniform).pow(-1 / (alpha - 1))  # Pareto with density ~ x^-alpha above 0.3
    fit = fit_power_law(samples)
    assert fit.alpha == pytest.approx(alpha, rel=0.05)  # MLE error ~ (alpha - 1) / sqrt(n), plus the xmin choice
    assert 0.3 <= fit.xmin < 0.45 and fit.tail > 1000
    assert fit.ks_distance < 0.05


def test_fit_picks_the_tail_of_a_mixture():
    gen = torch.Generator().manual_seed(5)
    bulk = torch.rand(3000, generator=gen, dtype=torch.float64)  # uniform bulk below 1
    tail = (1 - torch.rand(1000, generator=gen, dtype=torch.float64)).pow(-1 / 2.0) * 1.0  # alpha = 3 above 1
    fit = fit_power_law(torch.cat([bulk, tail]))
    assert fit.alpha == pytest.approx(3.0, abs=0.3)
    assert fit.xmin > 0.7 and fit.tail < 2000  # the uniform bulk below is left out


def test_too_few_values_give_nan():
    assert math.isnan(fit_power_law(torch.tensor([1.0, 2.0])).alpha)


def test_layer_quality_formula_and_retention():
    n = 10
    perfect = layer_quality([2.0] * n)
    assert perfect.q == pytest.approx(1 - math.exp(-n / 20))
    assert perfect.retained
    spread = layer_quality([2.0, 4.0] * 5)
    phi = (1 + math.exp(-1.0)) / 2
    assert spread.q == pytest.approx((1 - math.exp(-0.5)) * phi * math.exp(-1.0))
    assert spread.std_alpha == pytest.approx(1.0)
    outside = layer_quality([7.0] * n)
    assert outside.q == 0 and not outside.retained
    strict = layer_quality([2.0] * n, QualityThresholds(min_q=0.5))
    assert not strict.retained
