"""The null baseline: sampled spectra agree with the Marchenko-Pastur law used for big layers."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine import null
from unisub_hub.engine.rank import explained_variance


def test_marchenko_pastur_matches_sampled_gaussian_spectra(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    norms = torch.full((6,), 3.0, dtype=torch.float64)
    sampled, method = null.side_null_eigenvalues((200, 50), 2, norms, generator=gen)
    assert method == "sampled"
    monkeypatch.setattr(null, "SAMPLE_LIMIT", 0)
    law, method = null.side_null_eigenvalues((200, 50), 2, norms, generator=gen)
    assert method == "marchenko-pastur"
    assert float(law.sum()) == pytest.approx(float(sampled.sum()), rel=1e-6)
    for k in (1, 10, 50, 100):
        assert float(explained_variance(law)[k - 1]) == pytest.approx(float(explained_variance(sampled)[k - 1]), abs=0.02)


def test_flat_null_has_the_given_norms():
    gen = torch.Generator().manual_seed(1)
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    values = null.flat_null_eigenvalues(norms, 10_000, center=False, generator=gen)
    assert float(values.sum()) == pytest.approx(float(norms.square().sum()), rel=1e-9)
    # In high dimension Gaussian vectors are nearly orthogonal: eigenvalues ~ squared norms.
    torch.testing.assert_close(values, norms.square().flip(0), rtol=0.05, atol=0.05)
