"""PEFT adapter folders: every malformed config value or factor pair is one line naming the source."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest
import torch
from clitools import refused
from safetensors.torch import save_file

from unisub_hub.errors import SourceError
from unisub_hub.io.peft_adapter import LoraSource

MODULES = ("layers.0.q", "layers.1.q")


def write_adapter(folder, *, ranks=(2, 2), config=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True)
    tensors = {}
    for module in MODULES:
        tensors[f"base_model.model.{module}.lora_A.weight"] = torch.randn(ranks[0], 8, generator=gen)
        tensors[f"base_model.model.{module}.lora_B.weight"] = torch.randn(6, ranks[1], generator=gen)
    save_file(tensors, folder / "adapter_model.safetensors")
    settings = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"], **(config or {})}
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"r": "abc"}, "r must be a positive integer, got 'abc'"),
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"lora_alpha": "x"}, "lora_alpha must be a finite non-zero number, got 'x'"),
        ({"lora_alpha": 1e999}, "lora_alpha must be a finite non-zero number, got inf"),
        ({"rank_pattern": ["q"]}, "rank_pattern must map module-name patterns to values, got list"),
        ({"rank_pattern": {"q": "two"}}, "rank_pattern['q'] must be a positive integer, got 'two'"),
        ({"alpha_pattern": {"(q": 4}}, "alpha_pattern key '(q' is not a valid regular expression"),
        ({"use_rslora": "yes"}, "use_rslora must be true or false, got 'yes'"),
    ],
)
def test_malformed_config_values_are_one_line(tmp_path, config, message):
    folder = write_adapter(tmp_path / "a", config=config)
    with pytest.raises(
        SourceError,
        match=f"{folder}: adapter_config.json: {message}".replace("[", r"\[").replace("]", r"\]").replace("(", r"\("),
    ):
        LoraSource(folder).modules  # noqa: B018


def test_factors_of_mismatched_rank_are_refused(tmp_path):
    folder = write_adapter(tmp_path / "a", ranks=(2, 3))
    with pytest.raises(
        SourceError,
        match=r"module layers.0.q: the down factor has rank 2 but the up factor has shape \[6, 3\] \(down \[2, 8\]\)",
    ):
        LoraSource(folder).modules  # noqa: B018


def test_a_pattern_sets_one_modules_rank_and_scale(tmp_path):
    folder = write_adapter(
        tmp_path / "a",
        ranks=(2, 2),
        config={"r": 4, "lora_alpha": 8, "rank_pattern": {"q": 2}, "alpha_pattern": {"layers.1.q": 1}},
    )
    scales = LoraSource(folder).scales
    assert scales["layers.0.q.weight"] == 8 / 2 and scales["layers.1.q.weight"] == 1 / 2


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def _torch_zip_with(payload: bytes, tmp_path) -> bytes:
    """A torch.save archive whose data.pkl is replaced by ``payload``."""
    buffer = io.BytesIO()
    torch.save({"x": torch.ones(2)}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = payload if item.filename.endswith("data.pkl") else source.read(item)
            target.writestr(item, data)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["malicious", "garbage"])
def test_a_pickle_the_safe_loader_refuses_is_one_line_and_runs_nothing(tmp_path, kind, capfd):
    folder = write_adapter(tmp_path / "a")
    (folder / "adapter_model.safetensors").unlink()
    data = (
        _torch_zip_with(pickle.dumps(_Payload()), tmp_path) if kind == "malicious" else b"\x80\x04not a pickle at all"
    )
    (folder / "adapter_model.bin").write_bytes(data)
    refused(
        ["build", folder, write_adapter(tmp_path / "b", seed=1), "--allow-pickle", "--out", tmp_path / "out"],
        f"{folder}: adapter_model.bin: not a plain tensor file the safe loader accepts",
        tmp_path / "out",
    )
    assert "pwned" not in capfd.readouterr().out


@pytest.mark.parametrize("made", ["missing", "empty folder"])
def test_a_folder_that_holds_no_adapter_is_one_line(tmp_path, made):
    folder = tmp_path / "adapter"
    if made == "empty folder":
        folder.mkdir()
    with pytest.raises(SourceError, match="no adapter_config.json: not a PEFT adapter folder"):
        LoraSource(folder)
