"""``unisub-hub train``: a task learned on a frozen basis, deterministic, registered, and every bad input refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from models import save_adapters, save_base

from unisub_hub.cli import cli
from unisub_hub.format import load_coefficients

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "good",
    "bad",
    "great",
    "awful",
    "fine",
    "nice",
    "poor",
    "happy",
    "sad",
    "movie",
    "film",
    "plot",
    "actor",
    "the",
    "a",
    "is",
    "was",
    "very",
    "not",
]
POSITIVE, NEGATIVE, NEUTRAL = (
    ["good", "great", "fine", "nice", "happy"],
    ["bad", "awful", "poor", "sad"],
    ["movie", "film", "plot", "actor", "the", "a", "is", "was", "very"],
)


def run(*args, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _write_examples(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        label = rng.randrange(2)
        words = [rng.choice(NEUTRAL) for _ in range(4)] + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        lines.append(json.dumps({"text": " ".join(words), "label": label}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertTokenizer

    root = tmp_path_factory.mktemp("train")
    base = save_base(root / "base")
    BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(base)
    adapters = save_adapters(base, root, 4, ranks=(4,))
    run(
        "--home",
        root / "home",
        "build",
        *adapters,
        "--out",
        root / "basis",
        "--k",
        "4",
        "--device",
        "cpu",
        "--no-register",
    )
    return {
        "base": base,
        "basis": root / "basis",
        "train": _write_examples(root / "train.jsonl", 96, 1),
        "eval": _write_examples(root / "eval.jsonl", 48, 2),
    }


def test_train_writes_a_registered_deterministic_task_that_learns(setup, tmp_path):
    args = (
        "train",
        setup["basis"],
        "--base",
        setup["base"],
        "--data",
        setup["train"],
        "--eval",
        setup["eval"],
        "--epochs",
        "3",
        "--lr",
        "0.02",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--json",
    )
    first = json.loads(run(*args, "--out", tmp_path / "one").stdout)
    second = json.loads(run(*args, "--out", tmp_path / "two", "--no-register").stdout)
    assert first["content_id"] == second["content_id"]  # same seed, same coefficient bytes
    assert first["registered"]["kind"] == "task" and second["registered"] is None
    assert first["steps"] == 3 * 6 and len(first["eval_accuracy"]) == 3
    saved = load_coefficients(tmp_path / "one", verify=True)
    assert all(float(saved.coefficient(layer).abs().sum()) > 0 for layer in saved.layer_names)  # trained away from zero
    manifest = saved.manifest
    assert manifest["lineage"] == "trained"
    assert manifest["training"]["steps"] == 18 and manifest["training"]["hyperparameters"]["lr"] == 0.02
    assert (
        len(manifest["training"]["data_sha256"]) == 64
        and manifest["metrics"]["eval_accuracy"] == first["eval_accuracy"][-1]
    )
    assert manifest["lora"]["modules_to_save"] == ["classifier"]
    # Four 4x4 cores (query/value of two layers) plus the 3-label head on a 32-wide model.
    assert first["trainable_parameters"] == 4 * 16 + 3 * 32 + 3


def _error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "holds no examples"),
        ('{"sentence": "good", "label": 1}\n', "example 1 has no column 'text'"),
        ('{"text": "good", "label": 7}\n', "label 7 does not fit the head's 3 labels"),
        ('{"text": "good", "label": "positive"}\n', "label 'positive' is neither a class number nor a label name"),
        ("text,label\n", "holds no examples"),
        ("not json\n", "line 1 is not JSON"),
    ],
)
def test_bad_data_gets_one_line_and_writes_nothing(setup, tmp_path, content, expected):
    data = tmp_path / ("data.csv" if content.startswith("text,") else "data.jsonl")
    data.write_text(content)
    result = run(
        "train",
        setup["basis"],
        "--base",
        setup["base"],
        "--data",
        data,
        "--out",
        tmp_path / "task",
        "--device",
        "cpu",
        ok=False,
    )
    assert expected in _error(result)
    assert not (tmp_path / "task").exists() and not list(tmp_path.glob(".task.tmp-*"))


def test_a_base_that_does_not_match_the_basis_is_refused(setup, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    other = BertForSequenceClassification(
        BertConfig(
            vocab_size=64,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=24,
            num_labels=3,
        )
    )
    other.save_pretrained(tmp_path / "other")
    result = run(
        "train",
        setup["basis"],
        "--base",
        tmp_path / "other",
        "--data",
        setup["train"],
        "--out",
        tmp_path / "task",
        ok=False,
    )
    assert "basis layer" in _error(result) or "has no tensor" in _error(result)
    assert not (tmp_path / "task").exists()


def test_trained_task_materializes_as_a_peft_adapter_with_the_same_predictions(setup, tmp_path):
    from unisub_hub.adapt import attach

    run(
        "train",
        setup["basis"],
        "--base",
        setup["base"],
        "--data",
        setup["train"],
        "--max-steps",
        "4",
        "--lr",
        "0.05",
        "--out",
        tmp_path / "task",
        "--device",
        "cpu",
        "--no-register",
    )
    run("materialize", tmp_path / "task", "--basis", setup["basis"], "--out", tmp_path / "adapter", "--format", "peft")
    ids = torch.randint(0, len(WORDS), (3, 7), generator=torch.Generator().manual_seed(0))
    model = transformers.BertForSequenceClassification.from_pretrained(setup["base"]).eval()
    adapter = attach(model, setup["basis"], heads=["classifier"])
    adapter.load_task(tmp_path / "task")
    with torch.no_grad():
        attached = model(input_ids=ids).logits
        fresh = transformers.BertForSequenceClassification.from_pretrained(setup["base"])
        loaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()(input_ids=ids).logits
    assert float((loaded - attached).norm() / attached.norm()) < 1e-5


def test_a_config_without_labels_over_a_classifier_of_three_is_refused_with_both_counts(setup, tmp_path):
    import shutil

    base = shutil.copytree(setup["base"], tmp_path / "base")
    config = json.loads((base / "config.json").read_text())
    for key in ("id2label", "label2id", "num_labels"):
        config.pop(key, None)
    (base / "config.json").write_text(json.dumps(config))
    result = run(
        "train", setup["basis"], "--base", base, "--data", setup["train"], "--out", tmp_path / "task", ok=False
    )
    line = _error(result)
    assert "2 labels" in line and "3" in line and "classifier" in line, line
    assert not (tmp_path / "task").exists()


@pytest.mark.parametrize("command", ["train", "eval"])
@pytest.mark.parametrize("file", ["config.json", "model.safetensors"])
def test_a_file_of_the_base_instead_of_its_folder_is_named_as_such(setup, tmp_path, command, file):
    first = ["train", setup["basis"]] if command == "train" else ["eval", "base"]
    out = ["--out", tmp_path / "task"] if command == "train" else []
    result = run(*first, "--base", setup["base"] / file, "--data", setup["train"], *out, ok=False)
    assert "is a file: give the base model's folder" in _error(result)
    assert not (tmp_path / "task").exists()
