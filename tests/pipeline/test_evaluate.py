"""``eval``: every kind of model scored, equal to an independent transformers computation, recorded
in the registry and on the Hub card; every bad input one line."""

from __future__ import annotations

import json
import random

import pytest
import torch
from causal_models import WORDS, make_zoo, prompt_completion_rows
from click.testing import CliRunner
from clitools import run
from hypothesis import strategies as st

from unisub_hub.format import load_basis

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-causal")
    zoo = make_zoo(root)
    from unisub_hub.pipeline.build import BuildSettings, build
    from unisub_hub.pipeline.train import TrainOptions, train

    adapters = sorted((root / "gpt2-loras").iterdir())
    centred = build([str(a) for a in adapters], root / "centred", BuildSettings(k=3, center=True, device="cpu"))
    zoo["centred"] = centred.basis.path
    train_file = write_rows(root / "train.jsonl", prompt_completion_rows(32, 1))
    zoo["test"] = write_rows(root / "test.jsonl", prompt_completion_rows(24, 9))
    train(
        load_basis(centred.basis.path),
        zoo["gpt2"],
        train_file,
        root / "task",
        options=TrainOptions(lr=0.3),
        device="cpu",
    )
    zoo["task"] = root / "task"
    return zoo


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def completion_loss(model, tokenizer, rows) -> tuple[float, int]:
    """The mean next-token loss over completion tokens (and EOS), example by example, without unisub-hub."""
    total, count = 0.0, 0
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        for position in range(len(prompt), ids.shape[1]):
            total += float(torch.nn.functional.cross_entropy(logits[position - 1], ids[0, position]))
            count += 1
    return total / count, count


def test_causal_scores_equal_an_independent_computation_for_every_kind(causal, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unisub_hub.pipeline.materialize import materialize

    tokenizer = AutoTokenizer.from_pretrained(causal["gpt2"])
    rows = [json.loads(line) for line in causal["test"].read_text().splitlines()]
    basis = load_basis(causal["centred"])
    from unisub_hub.format import load_coefficients

    materialize(
        load_coefficients(causal["task"]), basis, tmp_path / "merged", base=causal["gpt2"], fmt="merged", device="cpu"
    )
    mean_only = AutoModelForCausalLM.from_pretrained(causal["gpt2"]).eval()
    with torch.no_grad():
        for name in basis.layer_names:
            weight = mean_only.get_parameter(name)
            weight.add_(basis.layer(name).mean.reshape(weight.shape).to(weight))
    independent = {
        "task": completion_loss(AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval(), tokenizer, rows),
        "basis": completion_loss(mean_only, tokenizer, rows),
        "peft": completion_loss(
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(causal["gpt2"]), causal["gpt2_adapter"]),
            tokenizer,
            rows,
        ),
        "base": completion_loss(AutoModelForCausalLM.from_pretrained(causal["gpt2"]).eval(), tokenizer, rows),
    }
    models = [causal["task"], causal["centred"], causal["gpt2_adapter"], "base"]
    report = json.loads(
        run(
            "eval",
            *models,
            "--base",
            causal["gpt2"],
            "--data",
            causal["test"],
            "--batch-size",
            "5",
            "--device",
            "cpu",
            "--json",
        ).stdout
    )
    assert report["objective"] == "prompt-completion"
    assert [r["model"] for r in report["results"]] == [str(m) for m in models]
    assert [r["kind"] for r in report["results"]] == ["task", "basis", "peft", "base"]
    for result in report["results"]:
        loss, count = independent[result["kind"]]
        assert result["loss"] == pytest.approx(loss, rel=1e-5) and result["tokens"] == count
        assert result["perplexity"] == pytest.approx(float(torch.tensor(loss).exp()), rel=1e-5)
        assert result["examples"] == 24
    assert len({round(r["loss"], 6) for r in report["results"]}) == 4  # four different models


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from models import save_adapters, save_base
    from transformers import BertTokenizer

    from unisub_hub.pipeline.build import BuildSettings, build
    from unisub_hub.pipeline.train import TrainOptions, train

    root = tmp_path_factory.mktemp("eval-cls")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    base = save_base(root / "base")
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(base)
    adapters = save_adapters(base, root, 4)
    basis = build([str(a) for a in adapters], root / "basis", BuildSettings(k=3, device="cpu")).basis
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(5)), "label": rng.randrange(3)} for _ in range(40)]
    data = write_rows(root / "data.jsonl", rows)
    train(basis, base, data, root / "task", options=TrainOptions(lr=0.05, epochs=2), device="cpu")
    return {
        "base": base,
        "basis": basis.path,
        "task": root / "task",
        "data": data,
        "rows": rows,
        "adapter": adapters[0],
    }


def test_classification_scores_equal_an_independent_computation(classifier, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from unisub_hub.format import load_coefficients
    from unisub_hub.pipeline.materialize import materialize

    materialize(
        load_coefficients(classifier["task"]),
        load_basis(classifier["basis"]),
        tmp_path / "m",
        base=classifier["base"],
        fmt="merged",
        device="cpu",
    )
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier["base"])
    right, loss = 0, 0.0
    for row in classifier["rows"]:
        with torch.no_grad():
            logits = model(**tokenizer(row["text"], truncation=True, max_length=32, return_tensors="pt")).logits[0]
        right += int(logits.argmax()) == row["label"]
        loss += float(torch.nn.functional.cross_entropy(logits, torch.tensor(row["label"])))
    report = json.loads(
        run(
            "eval",
            classifier["task"],
            "base",
            classifier["basis"],
            "--base",
            classifier["base"],
            "--data",
            classifier["data"],
            "--device",
            "cpu",
            "--json",
        ).stdout
    )
    task, base, mean = report["results"]
    assert mean["kind"] == "basis" and mean["examples"] == 40
    assert task["accuracy"] == pytest.approx(right / 40) and task["loss"] == pytest.approx(loss / 40, rel=1e-5)
    assert task["examples"] == 40 and base["kind"] == "base" and set(base) >= {"accuracy", "loss", "examples"}


def test_scores_of_registered_artifacts_are_recorded_and_reach_the_card(classifier, tmp_path, hub):
    from huggingface_hub import ModelCard

    run("registry", "add", classifier["basis"], classifier["task"])
    first = json.loads(
        run("eval", "task", "--base", classifier["base"], "--data", classifier["data"], "--json").stdout
    )["results"][0]
    assert first["recorded"]
    shown = json.loads(run("registry", "show", "task", "--json").stdout)["evaluations"]
    assert {(e["metric"], round(e["value"], 6), e["count"]) for e in shown} == {
        ("accuracy", round(first["accuracy"], 6), 40),
        ("loss", round(first["loss"], 6), 40),
    }
    assert all(len(e["data_sha256"]) == 64 and e["command"].startswith("unisub-hub") for e in shown)
    text = run("registry", "show", "task").output
    assert "Evaluations" in text and "data.jsonl" in text
    run("push", "task", "me/task", "--push-basis", "me/basis")
    card = ModelCard.load("me/task")
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {
        "accuracy": pytest.approx(first["accuracy"], abs=1e-6),
        "loss": pytest.approx(first["loss"], abs=1e-6),
    }
    assert card.data.base_model_relation == "adapter" if card.data.base_model else True
    unregistered = json.loads(
        run("eval", classifier["adapter"], "--base", classifier["base"], "--data", classifier["data"], "--json").stdout
    )["results"][0]
    assert not unregistered["recorded"] and unregistered["kind"] == "peft"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "holds no examples"),
        ('{"sentence": "a", "label": 1}\n', "example 1 has no column 'text'"),
        ('{"text": "a", "label": 9}\n', "label 9 does not fit the head's 3 labels"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_bad_classification_data_is_one_line(classifier, tmp_path, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run(
        "eval", classifier["task"], classifier["basis"], "--base", classifier["base"], "--data", data, ok=False
    )
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_bad_causal_data_and_models_are_one_line(causal, tmp_path):
    data = write_rows(tmp_path / "p.jsonl", [{"prompt": "the cat"}])
    cases = [
        (
            ["eval", causal["task"], causal["centred"], "--base", causal["gpt2"], "--data", data],
            "(a prompt needs its completion)",
        ),
        (["eval", "nowhere", "--base", causal["gpt2"], "--data", causal["test"]], "nowhere: no such folder"),
        (["eval", causal["task"], causal["centred"], "--base", causal["llama"], "--data", causal["test"]], ""),
    ]
    for args, message in cases:
        result = run(*args, ok=False)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]


BAD_ROWS = [  # each makes a classification data file wrong: the whole file is refused in one line
    {"label": 1},
    {"text": "the cat", "label": 3},
    {"text": "the cat", "label": -1},
    {"text": "the cat", "label": "zz"},
    {"text": "the cat", "label": 1.5},
    {"text": 5, "label": 1},
    {"text": None, "label": 1},
    {"text": "the cat", "label": None},
    ["the cat", 1],
]
BAD_LINES = [b"not json", b"\xff\xfe\x00bad", b"[" * 100_000, b'{"text": "a", "label": 1', b"1e999999"]


@st.composite
def _eval_case(draw: st.DrawFn) -> tuple:
    good = st.builds(
        lambda words, label: {"text": " ".join(words), "label": label},
        st.lists(st.sampled_from(WORDS), min_size=0, max_size=40),
        st.integers(0, 2),
    )
    rows = draw(st.lists(good, min_size=0, max_size=30))
    lines = [json.dumps(row).encode() for row in rows]
    broken = draw(st.sampled_from([None, None, "row", "line", "extra-key", "blank-lines"]))
    if broken == "row":
        lines.insert(draw(st.integers(0, len(lines))), json.dumps(draw(st.sampled_from(BAD_ROWS))).encode())
    elif broken == "line":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(BAD_LINES)))
    elif broken == "extra-key" and lines:
        rows[0] = {**rows[0], "note": "kept aside"}
        lines[0] = json.dumps(rows[0]).encode()
    elif broken == "blank-lines":
        lines = [line + b"\n" for line in lines]
    models = draw(st.lists(st.sampled_from(["base", "task", "basis", "adapter", "missing"]), min_size=1, max_size=3))
    limit = draw(st.none() | st.integers(-1, 40))
    batch = draw(st.sampled_from([None, 0, 1, 7, 1000]))
    return rows, b"\n".join(lines) + b"\n", broken, models, limit, batch


def _accuracy(model, tokenizer, rows) -> float:  # noqa: ANN001
    """transformers' own accuracy on ``rows``, truncated to the tiny model's 32 positions."""
    with torch.no_grad():
        right = sum(
            int(model(**tokenizer(row["text"], truncation=True, max_length=32, return_tensors="pt")).logits.argmax())
            == row["label"]
            for row in rows
        )
    return right / len(rows)


def test_generated_eval_inputs_score_right_or_are_one_line(classifier, tmp_path_factory):
    """200 generated data files, model lists and limits: a result equal to transformers' own
    accuracy on the rows read, or one line (exit 1; 2 for a bad option), never a traceback."""
    from collections import Counter

    from hypothesis import HealthCheck, given, settings
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from unisub_hub.cli import cli

    model = AutoModelForSequenceClassification.from_pretrained(classifier["base"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier["base"])
    names = {
        "base": "base",
        "task": str(classifier["task"]),
        "basis": str(classifier["basis"]),
        "adapter": str(classifier["adapter"]),
        "missing": "no-such-model",
    }

    exits: Counter[int] = Counter()

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=_eval_case())
    def battery(case) -> None:  # noqa: ANN001
        rows, content, broken, models, limit, batch = case
        data = tmp_path_factory.mktemp("eval-case") / "data.jsonl"
        data.write_bytes(content)
        args = ["eval", *(names[m] for m in models), "--base", str(classifier["base"]), "--data", str(data)]
        args += ["--device", "cpu", "--json"]
        args += ["--max-examples", str(limit)] if limit is not None else []
        args += ["--batch-size", str(batch)] if batch is not None else []
        result = CliRunner().invoke(cli, args)
        exits[result.exit_code] += 1
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        if (limit is not None and limit < 1) or batch == 0:
            assert result.exit_code == 2, result.output
            return
        unresolvable = "missing" in models or ("task" in models and "basis" not in models)  # its basis unknown
        if broken in ("row", "line") or not rows or unresolvable:
            assert result.exit_code == 1, result.output
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
            return
        assert result.exit_code == 0, result.output
        scored = rows[: limit or len(rows)]
        report = json.loads(result.stdout)
        assert [r["model"] for r in report["results"]] == [names[m] for m in models]
        for entry in report["results"]:
            assert entry["examples"] == len(scored) and 0 <= entry["accuracy"] <= 1
            if entry["kind"] == "base":
                assert entry["accuracy"] == pytest.approx(_accuracy(model, tokenizer, scored))

    battery()
    assert exits[0] >= 20 and exits[1] >= 20, exits  # both outcomes were exercised, not one
