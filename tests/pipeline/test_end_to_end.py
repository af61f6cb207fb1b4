"""The core journey on real model files: build, project, materialize, load with transformers/peft."""

from __future__ import annotations

import json

import pytest
import torch
from models import logits_of, save_adapters, save_base, save_finetunes

from unisub_hub.engine import reconstruct_layer
from unisub_hub.pipeline.build import BuildSettings, build
from unisub_hub.pipeline.materialize import materialize
from unisub_hub.pipeline.project import project
from unisub_hub.pipeline.validate import validate

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def checkpoint_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    base = save_base(root / "base")
    return base, save_finetunes(base, root, 6)


@pytest.fixture(scope="module")
def lora_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    base = save_base(root / "base")
    return base, save_adapters(base, root, 6, ranks=(4, 2, 3), rslora_every=3)


def test_checkpoint_collection_round_trip_through_transformers(checkpoint_zoo, tmp_path):
    base, finetunes = checkpoint_zoo
    assert (finetunes[0] / "model.safetensors.index.json").is_file()  # sharded input is read
    outcome = build(
        [str(p) for p in finetunes], tmp_path / "basis", BuildSettings(modes="1", k=4, holdout=1, device="cpu")
    )
    basis = outcome.basis
    assert not any(name.endswith(".bias") for name in basis.layer_names)
    assert "1-D tensor" in outcome.selection.passthrough["bert.embeddings.LayerNorm.weight"]
    # A training source is spanned exactly by N - 1 = 4 centred flat components.
    task = project(str(finetunes[1]), basis, tmp_path / "task", device="cpu")
    assert max(e["rel_error"] for e in task.errors.values()) < 1e-5
    model_dir = materialize(task.coefficients, basis, tmp_path / "model", base=base, fmt="hf", device="cpu").path
    assert (model_dir / "config.json").is_file()
    original = transformers.BertForSequenceClassification.from_pretrained(finetunes[1]).eval()
    rebuilt = transformers.BertForSequenceClassification.from_pretrained(model_dir).eval()
    torch.testing.assert_close(logits_of(rebuilt), logits_of(original), rtol=1e-4, atol=1e-4)
    # The held-out source is not spanned: its error is what the report says it is.
    held = project(str(finetunes[-1]), basis, tmp_path / "held", device="cpu")
    held_dir = materialize(held.coefficients, basis, tmp_path / "held-model", base=base, device="cpu").path
    weights = transformers.BertForSequenceClassification.from_pretrained(held_dir).state_dict()
    truth = transformers.BertForSequenceClassification.from_pretrained(finetunes[-1]).state_dict()
    for layer, error in held.errors.items():
        measured = float((weights[layer].double() - truth[layer].double()).norm() / truth[layer].double().norm())
        assert measured == pytest.approx(error["rel_error"], rel=1e-3, abs=1e-6)
    report = {entry.name: entry for entry in outcome.report.layers}
    layer = basis.layer_names[0]
    assert report[layer].fits[str(finetunes[-1])].rel_error == pytest.approx(held.errors[layer]["rel_error"], rel=1e-6)


def test_sharded_materialize_writes_hf_index(checkpoint_zoo, tmp_path):
    base, finetunes = checkpoint_zoo
    basis = build([str(p) for p in finetunes[:4]], tmp_path / "basis", BuildSettings(k=2, device="cpu")).basis
    task = project(str(finetunes[0]), basis, tmp_path / "task", device="cpu")
    out = materialize(task.coefficients, basis, tmp_path / "model", base=base, shard_size=50_000, device="cpu").path
    assert (out / "model.safetensors.index.json").is_file()
    model = transformers.BertForSequenceClassification.from_pretrained(out)
    layer = basis.layer_names[0]
    layer_basis = basis.layer(layer, dtype=torch.float64)
    expected = reconstruct_layer(layer_basis, task.coefficients.coefficient(layer).double())
    torch.testing.assert_close(model.state_dict()[layer], expected.float())


def test_lora_collection_round_trip_through_peft(lora_zoo, tmp_path):
    base, adapters = lora_zoo
    # Mixed ranks (4, 2, 3) and one rsLoRA adapter; k large enough to span every update.
    outcome = build([str(p) for p in adapters[:5]], tmp_path / "basis", BuildSettings(k=32, holdout=1, device="cpu"))
    basis = outcome.basis
    assert basis.manifest["source_kind"] == "lora" and not basis.manifest["centered"]
    assert len(basis.layer_names) == 4  # query and value of 2 layers
    task = project(str(adapters[0]), basis, tmp_path / "task", device="cpu")
    assert max(e["rel_error"] for e in task.errors.values()) < 1e-6
    assert "base_model.model.classifier.weight" in task.coefficients.passthrough_names
    adapter_dir = materialize(task.coefficients, basis, tmp_path / "adapter", device="cpu").path
    model = transformers.BertForSequenceClassification.from_pretrained(base)
    rebuilt = peft.PeftModel.from_pretrained(model, adapter_dir).eval()
    original = peft.PeftModel.from_pretrained(
        transformers.BertForSequenceClassification.from_pretrained(base), adapters[0]
    ).eval()
    torch.testing.assert_close(logits_of(rebuilt), logits_of(original), rtol=1e-4, atol=1e-4)
    # Ranks of the rebuilt adapter are the source's own.
    config = peft.LoraConfig.from_pretrained(adapter_dir)
    assert config.r == 4 and config.lora_alpha == 4
    # merged: the base checkpoint plus the updates, loadable by transformers alone.
    merged = materialize(task.coefficients, basis, tmp_path / "merged", base=base, fmt="merged", device="cpu").path
    merged_model = transformers.BertForSequenceClassification.from_pretrained(merged).eval()
    torch.testing.assert_close(logits_of(merged_model), logits_of(original), rtol=1e-4, atol=1e-4)


def test_rslora_rank2_adapter_reconstructs(lora_zoo, tmp_path):
    base, adapters = lora_zoo
    basis = build([str(p) for p in adapters], tmp_path / "basis", BuildSettings(k=32, device="cpu")).basis
    task = project(str(adapters[3]), basis, tmp_path / "task", device="cpu")  # rsLoRA, r=4
    out = materialize(task.coefficients, basis, tmp_path / "adapter", device="cpu").path
    rebuilt = peft.PeftModel.from_pretrained(
        transformers.BertForSequenceClassification.from_pretrained(base), out
    ).eval()
    original = peft.PeftModel.from_pretrained(
        transformers.BertForSequenceClassification.from_pretrained(base), adapters[3]
    ).eval()
    torch.testing.assert_close(logits_of(rebuilt), logits_of(original), rtol=1e-4, atol=1e-4)


def test_diffusers_style_components_are_read_and_written_back(tmp_path):
    """Components in subfolders (unet/, text_encoder/) become prefixed layers and go back to their subfolders."""
    import json

    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    base_unet = {"down.0.weight": torch.randn(8, 4, 3, 3, generator=gen), "norm.bias": torch.randn(8, generator=gen)}
    base_text = {"proj.weight": torch.randn(6, 10, generator=gen)}
    models = []
    for m in range(4):
        folder = tmp_path / f"pipe-{m}"
        (folder / "unet").mkdir(parents=True)
        (folder / "text_encoder").mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": "ToyPipeline"}))
        (folder / "unet" / "config.json").write_text("{}")
        save_file(
            {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base_unet.items()},
            folder / "unet" / "diffusion_pytorch_model.safetensors",
        )
        save_file(
            {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in base_text.items()},
            folder / "text_encoder" / "model.safetensors",
        )
        models.append(folder)
    outcome = build([str(p) for p in models[:3]], tmp_path / "basis", BuildSettings(modes="1", k=2, device="cpu"))
    assert outcome.basis.layer_names == ["text_encoder.proj.weight", "unet.down.0.weight"]
    task = project(str(models[1]), outcome.basis, tmp_path / "task", device="cpu")
    assert max(e["rel_error"] for e in task.errors.values()) < 1e-5
    out = materialize(task.coefficients, outcome.basis, tmp_path / "out", base=models[0], device="cpu")
    assert set(out.files) >= {
        "unet/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "model_index.json",
        "unet/config.json",
    }
    unet = load_file(out.path / "unet" / "diffusion_pytorch_model.safetensors")
    truth = load_file(models[1] / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(unet) == set(truth)
    torch.testing.assert_close(unet["down.0.weight"], truth["down.0.weight"], rtol=1e-5, atol=1e-5)
    assert torch.equal(unet["norm.bias"], truth["norm.bias"])


def test_a_member_with_its_own_head_size_materializes_with_its_own_config(tmp_path):
    """Heads of different sizes are passed through; the member's config (num_labels, id2label) comes with them."""
    from models import tiny_config

    base = save_base(tmp_path / "base")  # 3 labels
    base_state = transformers.BertForSequenceClassification.from_pretrained(base).state_dict()
    gen = torch.Generator().manual_seed(2)
    members = []
    for number, labels in enumerate((3, 4, 5, 3, 5)):
        config = tiny_config()
        config.num_labels = labels
        config.id2label = {i: f"class-{i}" for i in range(labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        model = transformers.BertForSequenceClassification(config).eval()
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if not name.startswith("classifier."):
                    value.copy_(base_state[name] + 0.01 * torch.randn(value.shape, generator=gen))
        model.save_pretrained(tmp_path / f"member-{number}")
        members.append(tmp_path / f"member-{number}")
    outcome = build([str(p) for p in members[:4]], tmp_path / "basis", BuildSettings(k=3, device="cpu"))
    assert outcome.selection.passthrough["classifier.weight"].startswith("shape differs across sources")
    task = project(str(members[4]), outcome.basis, tmp_path / "task", device="cpu")
    assert len(task.coefficients.manifest["config"]["id2label"]) == 5  # the member's own config travels with its task
    out = materialize(task.coefficients, outcome.basis, tmp_path / "model", base=base, fmt="hf", device="cpu").path
    rebuilt = transformers.BertForSequenceClassification.from_pretrained(out).eval()  # 5 labels, no size mismatch
    assert rebuilt.config.id2label[4] == "class-4"
    original = transformers.BertForSequenceClassification.from_pretrained(members[4]).eval()
    assert logits_of(rebuilt).shape == (4, 5)
    torch.testing.assert_close(rebuilt.classifier.weight, original.classifier.weight)
    report = validate(task.coefficients.path, against=str(outcome.basis.path))
    assert report.ok, [c for c in report.checks if not c.ok]
    assert (
        "tensors have the shapes BertForSequenceClassification"
        in [c for c in report.checks if c.name == "carried config fits the tensors"][0].detail
    )
    manifest_path = task.coefficients.path / "unisub_coefficients.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["id2label"] = {"0": "a", "1": "b", "2": "c"}  # a config that no longer fits the 5-way head
    manifest["config"]["label2id"] = {"a": 0, "b": 1, "c": 2}
    manifest_path.write_text(json.dumps(manifest))
    failed = [c for c in validate(task.coefficients.path, against=str(outcome.basis.path)).checks if not c.ok]
    assert [c.name for c in failed] == ["carried config fits the tensors"]
    assert "tensor classifier.bias is 5 but the carried config builds 3 (num_labels" in failed[0].detail
