"""The model families of the paper, as tiny stand-ins built from ``transformers`` configs.

Each family: members of one initialisation whose every matrix moved inside a shared rank-2
subspace; five build a basis, a sixth is projected, materialized as ``hf`` (no ``--base``:
the set carries its member's config), loaded with ``from_pretrained`` and run. Its logits
must be the original member's.
"""

from __future__ import annotations

import json

import pytest
import torch
from clitools import run

MEMBERS = 6


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2)), {
        "input_ids": torch.tensor([[1, 5, 9, 3]])
    }


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=40, d_model=16, d_kv=8, d_ff=24, num_layers=1, num_heads=2, decoder_start_token_id=0)
    return T5ForConditionalGeneration(config), {
        "input_ids": torch.tensor([[1, 5, 9, 3]]),
        "decoder_input_ids": torch.tensor([[0, 4, 2]]),
    }


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    return LlamaForCausalLM(config), {"input_ids": torch.tensor([[1, 5, 9, 3]])}


def _roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        max_position_embeddings=20,
        num_labels=3,
    )
    return RobertaForSequenceClassification(config), {"input_ids": torch.tensor([[0, 5, 9, 2]])}


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=24,
        num_labels=4,
    )
    return ViTForImageClassification(config), {
        "pixel_values": torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    }


def _resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic", num_labels=3
    )
    return ResNetForImageClassification(config), {
        "pixel_values": torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    }


FAMILIES = {"gpt2": _gpt2, "t5": _t5, "llama-sharded": _llama, "roberta": _roberta, "vit": _vit, "resnet": _resnet}


def _members(factory, folder, gen):
    """Fine-tunes of one random initialisation.

    Every matrix (conv kernels as out x rest) moves in a shared rank-2 subspace.
    """
    torch.manual_seed(0)
    model, inputs = factory()
    model.eval()
    base = {name: value.clone() for name, value in model.state_dict().items()}
    planted = {
        name: (torch.randn(value.shape[0], 2, generator=gen), torch.randn(2, value[0].numel(), generator=gen))
        for name, value in base.items()
        if value.is_floating_point() and value.ndim >= 2 and min(value.shape[0], value[0].numel()) > 2
    }
    paths = []
    for m in range(MEMBERS):
        state = dict(base)
        for name, (left, right) in planted.items():
            state[name] = base[name] + 0.05 * (left @ torch.randn(2, 2, generator=gen) @ right).reshape(
                base[name].shape
            )
        model.load_state_dict(state, strict=False)
        path = folder / f"member-{m}"
        model.save_pretrained(path, max_shard_size="8KB" if factory is _llama else "10GB")
        paths.append(path)
    with torch.no_grad():
        expected = model(**inputs).logits  # the last member: the held-out one
    return paths, inputs, expected, type(model)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_family_round_trips_through_from_pretrained(tmp_path, family):
    paths, inputs, expected, model_class = _members(FAMILIES[family], tmp_path, torch.Generator().manual_seed(1))
    if family == "llama-sharded":
        assert (paths[0] / "model.safetensors.index.json").is_file()
    run("build", *paths[:-1], "--out", tmp_path / "basis", "--k", "2", "--no-register")
    projected = json.loads(
        run(
            "project", paths[-1], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register", "--json"
        ).stdout
    )
    assert max(e["rel_error_centered"] for e in projected["errors"].values()) < 1e-4
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    loaded = model_class.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        logits = loaded(**inputs).logits
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4), (logits - expected).abs().max()


def _lora_members(folder, *, family):
    """PEFT LoRAs of one tiny base: mixed ranks, rank_pattern and rsLoRA, factors in a shared rank-2 subspace."""
    from peft import LoraConfig, get_peft_model
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        MistralConfig,
        MistralForCausalLM,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    gen = torch.Generator().manual_seed(3)
    if family == "gpt2":  # Conv1D (fan_in_fan_out) and an embedding adapter
        config = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2)
        make, targets, task, inputs = (
            (lambda: GPT2LMHeadModel(config)),
            ["c_attn", "wte"],
            "CAUSAL_LM",
            {"input_ids": torch.tensor([[1, 5, 9, 3]])},
        )
    elif family == "resnet":  # conv adapters: A is r x in x kh x kw, B is out x r x 1 x 1
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(
            num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic", num_labels=3
        )
        make, targets, task = (
            (lambda: ResNetForImageClassification(config)),
            ["convolution", "shortcut.convolution"],
            None,
        )
        inputs = {"pixel_values": torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))}
    elif family == "mistral":
        config = MistralConfig(
            vocab_size=40,
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=16,
        )
        make, targets, task, inputs = (
            (lambda: MistralForCausalLM(config)),
            ["q_proj", "v_proj"],
            "CAUSAL_LM",
            {"input_ids": torch.tensor([[1, 5, 9, 3]])},
        )
    else:
        config = RobertaConfig(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=24,
            max_position_embeddings=20,
            num_labels=3,
        )
        make, targets, task, inputs = (
            (lambda: RobertaForSequenceClassification(config)),
            ["query", "value"],
            "SEQ_CLS",
            {"input_ids": torch.tensor([[0, 5, 9, 2]])},
        )
    torch.manual_seed(0)
    make().save_pretrained(folder / "base")
    shared: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    paths = []
    for m in range(MEMBERS):
        rank = (2, 4)[m % 2]
        lora = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=targets,
            task_type=task,
            use_rslora=m % 3 == 0,
            rank_pattern={targets[1]: 2},
            init_lora_weights=False,
            fan_in_fan_out=family == "gpt2",
        )
        torch.manual_seed(0)
        model = get_peft_model(make(), lora)
        with torch.no_grad():
            for name, param in model.named_parameters():
                down = "lora_A" in name or "lora_embedding_A" in name
                if (
                    down or "lora_B" in name or "lora_embedding_B" in name
                ):  # A: r x rest, B: out x r: both in a shared rank-2 space
                    key = name.split(".lora_")[0] + ("A" if down else "B")
                    flat = param.reshape(param.shape[0], -1)
                    size = flat.shape[1] if down else flat.shape[0]
                    if key not in shared:
                        shared[key] = torch.linalg.qr(torch.randn(size, 2, generator=gen))[0]
                    mix = torch.randn(2, flat.shape[0] if down else flat.shape[1], generator=gen)
                    param.copy_(((shared[key] @ mix).T if down else shared[key] @ mix).reshape(param.shape))
                elif "classifier" in name and param.requires_grad:
                    param.copy_(torch.randn(param.shape, generator=gen))
        model.save_pretrained(folder / f"lora-{m}")
        paths.append(folder / f"lora-{m}")
    with torch.no_grad():
        expected = model.eval()(**inputs).logits
    return folder / "base", paths, inputs, expected, type(make())


@pytest.mark.parametrize("family", ["mistral", "roberta", "gpt2", "resnet"])
def test_a_lora_family_round_trips_through_peft(tmp_path, family):
    from peft import PeftModel

    base, paths, inputs, expected, model_class = _lora_members(tmp_path, family=family)
    run("build", *paths[:-1], "--out", tmp_path / "basis", "--k", "2", "--no-register")
    projected = json.loads(
        run(
            "project", paths[-1], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register", "--json"
        ).stdout
    )
    assert max(e["rel_error"] for e in projected["errors"].values()) < 1e-4
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "adapter")
    model = PeftModel.from_pretrained(model_class.from_pretrained(base), tmp_path / "adapter").eval()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4), (logits - expected).abs().max()


def test_analyze_keeps_small_layers_with_shared_structure_by_their_spectrum(tmp_path):
    """16 x 48 matrices have too few eigenvalues for an alpha fit; their spectra against the null decide."""
    paths, *_ = _members(_gpt2, tmp_path, torch.Generator().manual_seed(1))
    report = json.loads(run("analyze", *paths, "--json", "--select", tmp_path / "keep.txt").stdout)
    attention = next(layer for layer in report["layers"] if layer["name"] == "transformer.h.0.attn.c_attn.weight")
    assert (
        attention["retained"]
        and "fewer than 50 eigenvalues" in attention["reason"]
        and "kept by its spectrum" in attention["reason"]
    )
    assert len(report["retained"]) >= len(report["layers"]) - 2
    assert (tmp_path / "keep.txt").read_text().split() == report["retained"]
    built = json.loads(
        run(
            "build",
            *paths,
            "--out",
            tmp_path / "basis",
            "--k",
            "2",
            "--include-from",
            tmp_path / "keep.txt",
            "--no-register",
            "--json",
        ).stdout
    )
    assert sorted(built["layers"]) == sorted(
        report["retained"]
    )  # the selection hands over to the build, layer for layer
