"""The source-kind strategy: defaults, keys and the materialize formats of each kind and layout."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine.basis import LayerBasis
from unisub_hub.errors import FormatError
from unisub_hub.format.kinds import CHECKPOINT, LORA, PEFT_KEY_PREFIX, source_kind


def test_kinds_are_found_by_manifest_or_name():
    assert source_kind({"source_kind": "lora"}) is LORA and source_kind("checkpoint") is CHECKPOINT
    with pytest.raises(FormatError, match="unknown source kind 'vae'"):
        source_kind("vae")


def test_defaults_differ_where_the_kinds_do():
    assert CHECKPOINT.centered_by_default and not LORA.centered_by_default
    assert (CHECKPOINT.precision, LORA.precision) == ("float64", "float32")
    assert LORA.adds_to_base and not CHECKPOINT.adds_to_base
    assert CHECKPOINT.keeps_whole_model and not LORA.keeps_whole_model
    assert LORA.head_key("classifier.weight") == PEFT_KEY_PREFIX + "classifier.weight"
    assert CHECKPOINT.head_key("classifier.weight") == "classifier.weight"


@pytest.mark.parametrize(
    ("kind", "layout", "asked", "written"),
    [
        (CHECKPOINT, "peft", "auto", "hf"),
        (CHECKPOINT, "peft", "hf", "hf"),
        (CHECKPOINT, "peft", "merged", "merged"),
        (LORA, "peft", "auto", "peft"),
        (LORA, "peft", "lora", "peft"),
        (LORA, "peft", "hf", "merged"),
        (LORA, "kohya", "auto", "lora"),
        (LORA, "diffusers", "lora", "lora"),
        (LORA, "diffusers", "merged", "merged"),
    ],
)
def test_each_kind_and_layout_materializes_as(kind, layout, asked, written):
    assert kind.output_format(asked, layout) == written


@pytest.mark.parametrize(
    ("kind", "layout", "asked", "message"),
    [
        (CHECKPOINT, "peft", "peft", "needs a coefficient set made from LoRA adapters"),
        (CHECKPOINT, "peft", "lora", "needs a coefficient set made from LoRA adapters"),
        (LORA, "kohya", "peft", "came from a kohya LoRA file"),
        (LORA, "kohya", "hf", "kohya's underscored names"),
        (LORA, "kohya", "merged", "kohya's underscored names"),
    ],
)
def test_formats_a_kind_cannot_be_written_as(kind, layout, asked, message):
    with pytest.raises(FormatError, match=message):
        kind.output_format(asked, layout)


def test_computed_fields_give_lora_ranks_from_the_updates_and_keep_the_block():
    gen = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(8, 3, generator=gen, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(6, 3, generator=gen, dtype=torch.float64))[0]
    basis = LayerBasis("w", (8, 6), (2, 3), left=left, right=right)
    rank_two = torch.diag(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    fields, block = LORA.computed_fields(
        {"w": basis}, {"w": rank_two}, block={"layout": "peft", "task_type": "CAUSAL_LM"}
    )
    assert fields == {"w": {"lora_rank": 2, "lora_kind": "linear"}}
    assert block["r"] == 2 and block["layout"] == "peft" and block["task_type"] == "CAUSAL_LM"
    assert CHECKPOINT.computed_fields({"w": basis}, {"w": rank_two}) == ({"w": {}}, None)
