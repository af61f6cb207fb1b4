"""``analyze``: numbers against a direct computation, plots and the --select file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clitools import run, write_checkpoints

from unisub_hub.engine.alpha import layer_quality  # noqa: E402
from unisub_hub.engine.rank import k_for_variance  # noqa: E402
from unisub_hub.io.checkpoint import CheckpointSource  # noqa: E402
from unisub_hub.pipeline.analyze import analyze  # noqa: E402

SHAPES = {"layers.0.w": (24, 20), "layers.1.w": (20, 24), "norm": (24,)}


def test_analyze_matches_direct_svd(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 6, SHAPES)
    report = analyze([str(p) for p in paths], modes="2,3", device="cpu")
    stacked = torch.stack([CheckpointSource(p).tensor("layers.0.w").double() for p in paths])
    centred = stacked - stacked.mean(0)
    left = torch.linalg.svdvals(centred.permute(1, 0, 2).reshape(24, -1)).square()
    right = torch.linalg.svdvals(centred.permute(2, 0, 1).reshape(20, -1)).square()
    layer = next(entry for entry in report.layers if entry["name"] == "layers.0.w")
    for target in ("0.5", "0.8", "0.9", "0.95"):
        assert layer["modes"]["2"]["k_for"][target] == k_for_variance(left, float(target))
        assert layer["modes"]["3"]["k_for"][target] == k_for_variance(right, float(target))
    curve = (left.cumsum(0) / left.sum())[:5]
    torch.testing.assert_close(
        torch.tensor(layer["modes"]["2"]["explained_variance_curve"][:5], dtype=torch.float64), curve, atol=1e-6, rtol=0
    )
    for mode in ("2", "3"):  # the null's k table reads off the null's own curve
        data = layer["modes"][mode]
        null_curve = data["null_explained_variance_curve"]
        for target, k in data["null_k_for"].items():
            if k <= len(null_curve):
                assert null_curve[k - 1] >= float(target) - 1e-6
                assert k == 1 or null_curve[k - 2] < float(target) + 1e-6
    assert len(layer["alphas"]) == 6
    for entry in report.layers:  # q from the layer's own alphas; q_all their mean
        assert entry["q"] == pytest.approx(layer_quality(entry["alphas"]).q)
    assert report.q_all == pytest.approx(sum(entry["q"] for entry in report.layers) / len(report.layers))


def test_analyze_cli_plots_and_select(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    result = json.loads(
        run("analyze", *paths, "--plot", tmp_path / "plots", "--select", tmp_path / "keep.txt", "--json").stdout
    )
    png = Path(result["plots"][0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    kept = (tmp_path / "keep.txt").read_text().split()
    assert kept == result["retained"]
    # Unrelated random members share nothing, so nothing is kept, and an empty selection must not build
    # everything (the handoff of a non-empty one: tests/pipeline/test_families.py).
    assert kept == []
    refused = run(
        "build", *paths, "--out", tmp_path / "b", "--k", "1", "--include-from", tmp_path / "keep.txt", ok=False
    )
    assert refused.exit_code == 2 and "names no layer" in refused.output and not (tmp_path / "b").exists()
    human = run("analyze", *paths).output
    assert "q_all" in human and "layers.0.w" in human


def _lora_folders(root, count: int, *, shared: bool, rank: int = 4, seed: int = 0):
    """PEFT adapter folders of rank 4 (too few eigenvalues for an alpha fit).

    ``shared`` plants a common column space.
    """
    import json

    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(48, 2, generator=gen)
    folders = []
    for m in range(count):
        folder = root / f"lora-{m}"
        folder.mkdir(parents=True)
        lora_b = (common @ torch.randn(2, rank, generator=gen)) if shared else torch.randn(48, rank, generator=gen)
        tensors = {
            "base_model.model.layer.q.lora_A.weight": torch.randn(rank, 40, generator=gen),
            "base_model.model.layer.q.lora_B.weight": lora_b.contiguous(),
        }
        save_file(tensors, folder / "adapter_model.safetensors")
        (folder / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["q"]})
        )
        folders.append(str(folder))
    return folders


@pytest.mark.parametrize("shared", [True, False])
def test_where_the_alpha_fit_cannot_speak_the_spectrum_against_its_null_decides(tmp_path, shared):
    report = analyze(_lora_folders(tmp_path, 8, shared=shared), device="cpu")
    (layer,) = report.layers
    assert layer["reason"].startswith("no alpha could be fitted")
    assert layer["retained"] is shared  # a planted common subspace is kept, random updates are not
    assert ("kept by its spectrum" if shared else "not kept by its spectrum") in layer["reason"]


def _checkpoints_around(root, base: torch.Tensor, count: int, seed: int = 1) -> list[str]:
    """Full checkpoints ``base + U C_m V^T``: a planted rank-2 subspace shared by every member."""
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    left, right = torch.randn(base.shape[0], 2, generator=gen), torch.randn(base.shape[1], 2, generator=gen)
    root.mkdir()
    paths = []
    for m in range(count):
        weight = base + 0.01 * left @ torch.randn(2, 2, generator=gen) @ right.T
        save_file({"layers.0.w": weight.contiguous()}, root / f"m{m}.safetensors")
        paths.append(str(root / f"m{m}.safetensors"))
    return paths


def test_a_spectrum_far_from_its_null_keeps_a_layer_the_alpha_rules_reject(tmp_path):
    # An orthogonal base (flat spectrum) fits alphas far outside [2, 6], yet every member differs
    # only inside a shared rank-2 subspace: the spectrum's evidence wins, and the reason says both.
    orthogonal, _ = torch.linalg.qr(torch.randn(128, 96, generator=torch.Generator().manual_seed(0)))
    report = analyze(_checkpoints_around(tmp_path / "zoo", 3 * orthogonal, 10), device="cpu")
    (layer,) = report.layers
    assert layer["q"] < 0.2 and "outside [2, 6]" in layer["reason"]  # the alpha rules reject it ...
    assert layer["retained"] and "kept by its spectrum" in layer["reason"]  # ... the spectrum keeps it
    assert layer["modes"]["2"]["k_for"]["0.9"] == 2 and layer["modes"]["2"]["null_k_for"]["0.9"] > 50
    assert report.retained == ["layers.0.w"]
