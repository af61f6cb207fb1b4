"""``merge --tune-on``: weights chosen on a few labelled examples reach a lower loss than equal
weights, are recorded with the search, and the written set scores what the search reported."""

from __future__ import annotations

import json
import random

import pytest
from causal_models import WORDS
from clitools import run

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("scipy")

pytestmark = pytest.mark.slow


def _rows(rule, count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(5)) for _ in range(count)]
    return [{"text": text, "label": rule(text)} for text in texts]


def _first_word(text: str) -> int:
    return WORDS.index(text.split()[0]) % 3


def _last_word(text: str) -> int:
    return WORDS.index(text.split()[-1]) % 3


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """Two tasks trained on one basis to different rules (the first word's class, the last
    word's), and a few examples of the first rule to tune on."""
    from models import save_adapters, save_base_with_tokenizer

    root = tmp_path_factory.mktemp("tune")
    home = root / "home"
    base = save_base_with_tokenizer(root / "base", WORDS)
    adapters = save_adapters(base, root, 4)
    run("--home", home, "build", *adapters, "--out", root / "basis", "--k", "4", "--name", "b", "--device", "cpu")
    for name, rule, seed in (("a", _first_word, 1), ("b", _last_word, 2)):
        data = _write(root / f"{name}.jsonl", _rows(rule, 96, seed))
        run(
            "--home",
            home,
            "train",
            "b",
            "--base",
            base,
            "--data",
            data,
            "--out",
            root / name,
            "--lr",
            "0.1",
            "--epochs",
            "6",
            "--seed",
            "0",
            "--device",
            "cpu",
        )
    _write(root / "few.jsonl", _rows(_first_word, 24, 3))
    return root, home, base


def test_tuned_weights_beat_equal_weights_and_the_written_set_scores_what_was_found(teacher):
    root, home, base = teacher
    result = json.loads(
        run(
            "--home",
            home,
            "merge",
            "a",
            "b",
            "--heads",
            "first",
            "--tune-on",
            root / "few.jsonl",
            "--base",
            base,
            "--tune-budget",
            "30",
            "--device",
            "cpu",
            "--out",
            root / "tuned",
            "--json",
        ).stdout
    )
    tuned = result["tuned"]
    assert tuned["metrics"]["loss"] < tuned["equal_weights"]["loss"]
    assert tuned["metrics"]["accuracy"] >= tuned["equal_weights"]["accuracy"]
    manifest = json.loads((root / "tuned" / "unisub_coefficients.json").read_text())
    record = manifest["merge"]
    assert record["weights"] == tuned["weights"] and record["tuned"]["examples"] == 24
    assert record["tuned"]["loss"] == pytest.approx(tuned["metrics"]["loss"])
    # The written set scores on the examples what the search said it would (with task a's head).
    scored = json.loads(
        run("--home", home, "eval", root / "tuned", "--base", base, "--data", root / "few.jsonl", "--json").stdout
    )["results"][0]
    assert scored["loss"] == pytest.approx(tuned["metrics"]["loss"], rel=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tune-on", "few.jsonl"], "--tune-on needs --base"),
        (["--tune-on", "few.jsonl", "--base", "BASE", "--weights", "0.5,0.5"], "give it or --weights, not both"),
    ],
)
def test_tune_on_refusals_write_nothing(teacher, extra, message):
    root, home, base = teacher
    args = [str(root / e) if e == "few.jsonl" else str(base) if e == "BASE" else e for e in extra]
    result = run("--home", home, "merge", "a", "b", "--out", root / "refused", *args, ok=False)
    assert result.exit_code == 2 and message in result.output and not (root / "refused").exists()
