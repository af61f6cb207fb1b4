"""The built-in example collections and the demo's steps, at small sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unisub_hub.examples.generation import PROMPT_END, generation_rows
from unisub_hub.examples.text_tasks import ALL_TASKS, TASKS, label_words, make_task

pytestmark = pytest.mark.slow  # example training


def test_text_tasks_are_deterministic_and_balanced():
    assert len(TASKS) == 10
    for name in TASKS:
        task = make_task(name, train=200, test=100)
        assert task == make_task(name, train=200, test=100)
        labels = [label for _, label in task.train]
        assert 0.3 < sum(labels) / len(labels) < 0.7
        assert all(isinstance(text, str) and text for text, _ in task.test)
    with pytest.raises(KeyError, match="unknown example task"):
        make_task("nope")


def test_the_wider_collection_has_24_tasks_and_asks_each_as_a_completion():
    assert len(set(ALL_TASKS)) == len(ALL_TASKS) == 24 and ALL_TASKS[: len(TASKS)] == TASKS
    for name in ALL_TASKS:
        first, second = label_words(name)
        assert first != second
        task = make_task(name, train=60, test=20)
        assert {label for _, label in task.train} == {0, 1}
        assert make_task(name, train=60, test=20, seed=1) != task  # another seed, another collection
        rows = generation_rows(name, split="test", count=5)
        for row, (text, label) in zip(rows, make_task(name).test, strict=False):
            assert row == {"prompt": f"{text} {PROMPT_END}", "completion": f" {label_words(name)[label]}"}
    with pytest.raises(KeyError, match="unknown example task"):
        label_words("nope")


def test_digits_zoo_shared_init_gives_a_subspace_random_init_does_not(tmp_path):
    from unisub_hub.examples.demo import _digits_collection

    logs = []
    shared, _ = _digits_collection(tmp_path / "examples", tmp_path / "work", logs.append, shared=True, main_k=4)
    random_init, _ = _digits_collection(tmp_path / "examples", tmp_path / "work", logs.append, shared=False, main_k=4)
    for result in (shared, random_init):
        assert result.accuracy["original"] > 0.95
        assert result.sizes["ratio"] > 20
        assert set(result.sweep["universal"]) >= {1, 2, 4, 8}
    assert shared.accuracy["universal k=4"] > random_init.accuracy["universal k=4"] + 0.1
    assert (
        shared.explained_variance["1"] - shared.null_explained_variance["1"]
        > random_init.explained_variance["1"] - random_init.null_explained_variance["1"]
    )
    for result in (shared, random_init):  # held-out tasks learned on the frozen basis, and the controls
        trained = result.trained
        assert list(trained) == ["original", "trained universal", "trained random", "head only", "projected"]
        assert (
            trained["trained universal"]["parameters"] == trained["trained random"]["parameters"] == 3 * 4
        )  # k=4 numbers per layer
        assert (
            trained["head only"]["parameters"] == 64 * 2 + 2
            and trained["original"]["parameters"] == 2 * (64 * 64 + 64) + 64 * 2 + 2
        )
        # Binary tasks (chance 0.5): every trained row learns the task; the projected row is the
        # reconstruction scored above, not a second number.
        assert all(
            trained[row]["accuracy"] > 0.9 for row in ("original", "trained universal", "trained random", "head only")
        )
        assert trained["projected"]["accuracy"] == pytest.approx(result.accuracy["universal k=4"])
    assert shared.accuracy["universal k=4"] > shared.accuracy["mean only"] + 0.2
    # Trained once, then reused.
    before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "examples").rglob("model.safetensors"))
    _digits_collection(tmp_path / "examples", tmp_path / "work2", logs.append, shared=True, main_k=4)
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "examples").rglob("model.safetensors")) == before


def test_quick_demo_end_to_end(tmp_path):
    from click.testing import CliRunner

    from unisub_hub.cli import cli

    result = CliRunner().invoke(
        cli,
        ["--home", str(tmp_path / "home"), "demo", "--quick", "--report", str(tmp_path / "report"), "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    numbers = json.loads((tmp_path / "report" / "numbers.json").read_text())
    assert [c["name"] for c in numbers["collections"]] == ["minilm-lora", "digits-shared-init", "digits-random-init"]
    lora = numbers["collections"][0]
    assert lora["sizes"]["ratio"] > 20
    assert set(lora["accuracy"]) == {"original", "universal k=8", "secondary k=8", "mean only"}
    hub = out["hub"]
    assert 0 < hub["pulled_bytes_basis_stored"] < hub["pulled_bytes_with_basis"]
    assert set(lora["trained"]) == {"original", "trained universal", "trained random", "head only", "projected"}
    assert (
        lora["trained"]["trained universal"]["parameters"] == 12 * 8 * 8 + 384 * 2 + 2
    )  # 12 cores of 8 x 8 and the head
    report = (tmp_path / "report" / "report.md").read_text()
    assert "held-out tasks learned as coefficients" in report
    for name in (
        "scree-minilm-lora.png",
        "accuracy-minilm-lora.png",
        "accuracy-digits-shared-init.png",
        "trained-minilm-lora.png",
    ):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in report  # the report shows each plot it wrote
    # The report quotes the numbers of numbers.json, not others.
    assert f"{lora['accuracy']['original']:.3f}" in report
    # The pulled, materialized adapter scores what the in-memory reconstruction scored.
    assert abs(hub["materialized_accuracy"] - hub["local_accuracy"]) <= 1 / 240 + 1e-9
    assert "Through the Hub" in (tmp_path / "report" / "report.md").read_text()
    # A real server process answered one request mixing the held-out tasks, as the library computes them.
    served = numbers["served"]
    assert [row["task"] for row in served["request"]["inputs"]] == [r["task"] for r in served["results"]]
    assert len({row["task"] for row in served["request"]["inputs"]}) == 2
    assert served["max_abs_logit_difference"] < 1e-4 and out["served"]["command"].startswith("unisub-hub serve")
    assert "## Served" in report and served["results"][0]["label"] in report
    # The causal-LM journey: eval scored every kind of model on a held-out generation task, and a
    # served completion came back through the openai client as the library computes it.
    generation = numbers["generation"]
    scores = generation["eval"]
    assert list(scores) == ["base", "basis mean only", "projected", "learned as coefficients", "original LoRA"]
    assert len({row["tokens"] for row in scores.values()}) == 1 and scores["base"]["tokens"] > 0
    assert scores["original LoRA"]["loss"] < scores["base"]["loss"]  # the LoRA learned its answers
    assert scores["learned as coefficients"]["loss"] < scores["base"]["loss"]  # so did the coefficients
    assert 0 < generation["trainable_parameters"] < generation["lora_parameters"]
    completions = generation["served"]
    assert completions["models"] == [*generation["heldout"], f"{generation['eval_task']}-learned"]
    assert completions["same_as_library"]
    assert out["generation"]["eval"] == scores
    assert "## Generation tasks (causal LM)" in report and f"{scores['base']['loss']:.3f}" in report
    # Margins come with their interval, the null says what it is, and the report ends where a user goes on.
    universal, random = (lora["trained"][v]["accuracy"] for v in ("trained universal", "trained random"))
    examples = lora["trained"]["trained universal"]["examples"]
    half = 1.96 * ((universal * (1 - universal) + random * (1 - random)) / examples) ** 0.5
    expected = "within noise" if abs(universal - random) <= half else ("ahead" if universal > random else "behind")
    assert f"{(universal - random) * 100:+.1f} points (95 % interval" in report and expected in report
    assert "random rank-8 updates" in report and "break-even" in report
    places = out["places"]
    assert report.rstrip().endswith("```") and f"`{places['basis']}`" in report
    assert (Path(places["basis"]) / "unisub_basis.json").is_file() and (Path(places["base"]) / "config.json").is_file()
