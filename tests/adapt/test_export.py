"""Attached models against what ``materialize`` writes, and layer orientations (Conv1D, Conv2d)."""

from __future__ import annotations

import pytest
import torch
from models import logits_of, save_adapters, save_base, save_finetunes
from test_model import _zoo
from torch import nn
from torch.nn import functional as F

from unisub_hub.adapt import attach
from unisub_hub.engine import reconstruct_layer
from unisub_hub.errors import AdaptError
from unisub_hub.pipeline.build import BuildSettings, build
from unisub_hub.pipeline.materialize import materialize

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _perturb(adapter, name: str, seed: int) -> None:
    """Stand-in for training: move every trainable tensor of the task."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters(name):
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=gen))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert float((actual - expected).norm() / expected.norm()) < 1e-5


@pytest.fixture(scope="module")
def lora_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    base = save_base(root / "base")
    adapters = save_adapters(base, root, 6, ranks=(4,))
    return base, adapters, build([str(p) for p in adapters[:5]], root / "basis", BuildSettings(k=3, device="cpu")).basis


@pytest.mark.parametrize("fmt", ["peft", "merged"])
def test_lora_basis_task_materializes_to_the_attached_logits(lora_zoo, tmp_path, fmt):
    base, adapters, basis = lora_zoo
    model = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    adapter = attach(model, basis, heads=["classifier"])
    adapter.add_task("held", init=adapters[5])
    _perturb(adapter, "held", seed=1)
    expected = logits_of(model)
    saved = adapter.save_task(tmp_path / "task", task_type="SEQ_CLS")
    assert saved.manifest["lora"]["modules_to_save"] == ["classifier"]
    out = materialize(
        saved, basis, tmp_path / "out", base=base if fmt == "merged" else None, fmt=fmt, device="cpu"
    ).path
    if fmt == "peft":
        fresh = transformers.BertForSequenceClassification.from_pretrained(base)
        loaded = peft.PeftModel.from_pretrained(fresh, out).eval()
    else:
        loaded = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    _close(logits_of(loaded), expected)


def test_a_task_without_its_own_head_exports_a_peft_adapter_peft_loads(lora_zoo, tmp_path):
    """Trained with --no-train-head (or projected without a head): the base's classifier is the
    task's, so the adapter must not make peft expect classifier weights it does not hold."""
    base, adapters, basis = lora_zoo
    model = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    adapter = attach(model, basis)  # no heads: the base's classifier stays frozen
    adapter.add_task("headless", init=adapters[5])
    _perturb(adapter, "headless", seed=2)
    expected = logits_of(model)
    saved = adapter.save_task(tmp_path / "task", task_type="SEQ_CLS")
    out = materialize(saved, basis, tmp_path / "out", fmt="peft", device="cpu").path
    fresh = transformers.BertForSequenceClassification.from_pretrained(base)
    loaded = peft.PeftModel.from_pretrained(fresh, out).eval()
    _close(logits_of(loaded), expected)


def test_projection_start_is_the_projected_adapter(lora_zoo, tmp_path):
    from unisub_hub.pipeline.project import project

    base, adapters, basis = lora_zoo
    model = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    adapter = attach(model, basis, heads=["classifier"])
    adapter.add_task("from-source", init=adapters[1])
    projected = project(str(adapters[1]), basis, tmp_path / "projected", device="cpu").coefficients
    for layer, module in adapter.layers.items():
        torch.testing.assert_close(module.coefficients["task0"].detach(), projected.coefficient(layer))
    head = projected.passthrough("base_model.model.classifier.weight")
    torch.testing.assert_close(adapter.heads["classifier"].weights["task0"].detach(), head)


@pytest.mark.parametrize("modes", ["2,3", "1"])
def test_checkpoint_basis_task_materializes_to_the_attached_logits(tmp_path, modes):
    base = save_base(tmp_path / "base")
    finetunes = save_finetunes(base, tmp_path, 5, shard_first=False)
    basis = build([str(p) for p in finetunes], tmp_path / "basis", BuildSettings(modes=modes, k=3, device="cpu")).basis
    model = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    adapter = attach(model, basis)
    adapter.add_task("t")
    _perturb(adapter, "t", seed=2)
    expected = logits_of(model)
    saved = adapter.save_task(tmp_path / "task")
    out = materialize(saved, basis, tmp_path / "out", base=base, fmt="hf", device="cpu").path
    _close(logits_of(transformers.BertForSequenceClassification.from_pretrained(out).eval()), expected)
    # A second task, and a batch whose rows belong to either (embeddings and linear layers alike).
    adapter.add_task("u")
    _perturb(adapter, "u", seed=5)
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    names = ["u", "t", "t", "u"]
    with torch.no_grad(), adapter.per_example(names):
        mixed = model(input_ids=ids).logits
    for row, name in enumerate(names):
        adapter.set_task(name)
        with torch.no_grad():
            torch.testing.assert_close(mixed[row], model(input_ids=ids[row : row + 1]).logits[0], rtol=1e-5, atol=1e-5)
    with (
        torch.no_grad(),
        adapter.per_example(["u", "t"]),
        pytest.raises(AdaptError, match="2 task names for a batch of 4"),
    ):
        model(input_ids=ids)  # fewer names than rows: said plainly, not a torch indexing error


def test_gpt2_conv1d_orientation(tmp_path):
    from transformers.pytorch_utils import Conv1D

    def make():
        torch.manual_seed(0)
        return nn.Sequential(Conv1D(16, 8))  # weight stored in x out: 8 x 16

    basis = build(
        _zoo(tmp_path, make(), 5), tmp_path / "basis", BuildSettings(k=3, device="cpu", include=["0.weight"])
    ).basis
    model = make()
    adapter = attach(model, basis)
    adapter.add_task("t")
    _perturb(adapter, "t", seed=3)
    weight = reconstruct_layer(
        basis.layer("0.weight", dtype=torch.float64), adapter.layers["0.weight"].coefficients["task0"].detach().double()
    )
    x = torch.randn(4, 5, 8)
    with torch.no_grad():
        _close(model(x).double(), x.double() @ weight + model[0].base.bias.double())


def test_conv2d_kernels_as_the_basis_flattens_them(tmp_path):
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, stride=2))

    basis = build(
        _zoo(tmp_path, make(), 5), tmp_path / "basis", BuildSettings(k=3, device="cpu", include=["0.weight"])
    ).basis
    model = make()
    adapter = attach(model, basis)
    adapter.add_task("t")
    _perturb(adapter, "t", seed=4)
    layer = basis.layer("0.weight", dtype=torch.float64)
    kernel = reconstruct_layer(layer, adapter.layers["0.weight"].coefficients["task0"].detach().double()).reshape(
        layer.tensor_shape
    )
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        _close(model(x).double(), F.conv2d(x.double(), kernel, model[0].base.bias.double(), stride=2, padding=1))


def test_transformers_trainer_trains_only_the_task(lora_zoo, tmp_path):
    base, _, basis = lora_zoo
    model = transformers.BertForSequenceClassification.from_pretrained(base)
    adapter = attach(model, basis, heads=["classifier"])
    adapter.add_task("t")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n in dict(model.named_parameters()) if ".task0" in n
    }
    before = [p.detach().clone() for p in adapter.parameters()]
    gen = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(0, 64, (8,), generator=gen),
            "labels": int(torch.randint(0, 3, (1,), generator=gen)),
        }
        for _ in range(32)
    ]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    transformers.Trainer(model=model, args=args, train_dataset=rows).train()
    assert all(not torch.equal(a, b) for a, b in zip(before, adapter.parameters(), strict=True))
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


@pytest.mark.parametrize(
    "conv", [nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.Conv2d(3, 4, 3, padding="same")]
)
def test_a_convolution_whose_padding_the_update_cannot_follow_is_refused(tmp_path, conv):
    from unisub_hub.errors import AdaptError

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))

    basis = build(
        _zoo(tmp_path, make(), 4), tmp_path / "basis", BuildSettings(k=2, device="cpu", include=["0.weight"])
    ).basis
    with pytest.raises(AdaptError, match="zero padding of fixed size only"):
        attach(nn.Sequential(conv), basis)
