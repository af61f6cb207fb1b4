"""Generation tasks learned as coefficients on causal LMs (GPT-2 Conv1D and LLaMA q/v projections)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from causal_models import WORDS, make_zoo, prompt_completion_rows
from clitools import run

from unisub_hub.format import load_basis, load_coefficients
from unisub_hub.pipeline.train import TrainOptions, train

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("causal"))


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def logits(model, seed=0):
    ids = torch.randint(2, len(WORDS) + 2, (3, 9), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def close(a, b, rel=1e-5):
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_trained_causal_task_materializes_with_the_logits_of_the_attached_model(zoo, tmp_path, family):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from unisub_hub.adapt import attach
    from unisub_hub.pipeline.materialize import materialize

    data = write_rows(tmp_path / "train.jsonl", prompt_completion_rows(48, 1))
    basis = load_basis(zoo[f"{family}_basis"])
    outcome = train(basis, zoo[family], data, tmp_path / "task", options=TrainOptions(lr=0.3, epochs=2), device="cpu")
    task = load_coefficients(tmp_path / "task")
    assert task.manifest["training"]["objective"] == "prompt-completion"
    assert task.manifest["lora"]["task_type"] == "CAUSAL_LM" and outcome.steps == 6
    attached = AutoModelForCausalLM.from_pretrained(zoo[family]).eval()
    attach(attached, basis).load_task(task)
    expected = logits(attached)
    assert not close(expected, logits(AutoModelForCausalLM.from_pretrained(zoo[family]).eval()), rel=1e-3)
    for fmt in ("peft", "merged", "hf"):
        out = tmp_path / fmt
        materialize(task, basis, out, base=zoo[family], fmt=fmt, device="cpu")
        if fmt == "peft":
            model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(zoo[family]), out).eval()
        else:
            model = AutoModelForCausalLM.from_pretrained(out).eval()
        assert close(logits(model), expected), fmt


def test_a_teacher_inside_the_basis_is_learned_from_its_sampled_completions(zoo, tmp_path):
    """Completions sampled from base + U C* V^T teach C*: the student's held-out loss on the teacher's
    completions comes close to the teacher's own, far below the base model's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unisub_hub.adapt import attach
    from unisub_hub.pipeline.data import tokenize_causal
    from unisub_hub.pipeline.objectives import Data, load_base, scores

    basis = load_basis(zoo["gpt2_basis"])
    tokenizer = AutoTokenizer.from_pretrained(zoo["gpt2"])
    teacher = AutoModelForCausalLM.from_pretrained(zoo["gpt2"]).eval()
    adapter = attach(teacher, basis)
    adapter.add_task("teacher")
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in adapter.layers.values():
            core = module.coefficients[adapter.state.key("teacher")]
            core.copy_(6.0 * torch.randn(core.shape, generator=generator))

    def sampled(count, seed):
        torch.manual_seed(seed)
        rows = []
        for row in prompt_completion_rows(count, seed):
            ids = tokenizer(row["prompt"], return_tensors="pt").input_ids
            with torch.no_grad():
                out = teacher.generate(ids, max_new_tokens=6, do_sample=True, top_k=None, pad_token_id=0)
            rows.append({"prompt": row["prompt"], "completion": tokenizer.decode(out[0, ids.shape[1] :])})
        return rows

    train_file = write_rows(tmp_path / "train.jsonl", sampled(256, 1))
    held_out = sampled(64, 2)
    train(
        basis,
        zoo["gpt2"],
        train_file,
        tmp_path / "student",
        options=TrainOptions(lr=0.5, epochs=6),
        device="cpu",
    )
    base = load_base(zoo["gpt2"])
    data = Data("prompt-completion", tokenize_causal(held_out, tokenizer, max_length=64, path="held-out")[1], "h")
    cpu = torch.device("cpu")
    student = AutoModelForCausalLM.from_pretrained(zoo["gpt2"]).eval()
    attach(student, basis).load_task(tmp_path / "student")
    losses = {
        name: scores(model, base, data, batch_size=16, device=cpu)["loss"]
        for name, model in (
            ("teacher", teacher),
            ("student", student),
            ("base", AutoModelForCausalLM.from_pretrained(zoo["gpt2"]).eval()),
        )
    }
    assert losses["student"] - losses["teacher"] < 0.25, losses
    assert losses["base"] - losses["student"] > 0.7, losses


def test_chat_data_trains_on_assistant_turns_with_the_template(zoo, tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
        for r in prompt_completion_rows(32, 3)
    ]
    data = write_rows(tmp_path / "chat.jsonl", rows)
    result = json.loads(
        run(
            "train",
            zoo["gpt2_basis"],
            "--base",
            zoo["gpt2"],
            "--data",
            data,
            "--eval",
            data,
            "--out",
            tmp_path / "chat-task",
            "--lr",
            "0.3",
            "--device",
            "cpu",
            "--no-register",
            "--json",
        ).stdout
    )
    assert result["objective"] == "messages" and set(result["eval"][0]) == {"loss", "perplexity", "tokens", "examples"}
    assert load_coefficients(tmp_path / "chat-task").manifest["training"]["objective"] == "messages"


def _error_line(result) -> str:
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_chat_data_on_a_tokenizer_without_a_template_is_one_line(zoo, tmp_path):
    base = tmp_path / "no-template"
    shutil.copytree(zoo["gpt2"], base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    data = write_rows(
        tmp_path / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}],
    )
    line = _error_line(
        run(
            "train",
            zoo["gpt2_basis"],
            "--base",
            base,
            "--data",
            data,
            "--out",
            tmp_path / "t",
            "--device",
            "cpu",
            ok=False,
        )
    )
    assert "has no chat template" in line and not (tmp_path / "t").exists()


def test_a_base_without_tokenizer_files_is_refused(zoo, tmp_path):
    base = tmp_path / "bare"
    base.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(zoo["gpt2"] / name, base / name)
    data = write_rows(tmp_path / "d.jsonl", [{"text": "the cat"}])
    line = _error_line(
        run(
            "train",
            zoo["gpt2_basis"],
            "--base",
            base,
            "--data",
            data,
            "--out",
            tmp_path / "t",
            "--device",
            "cpu",
            ok=False,
        )
    )
    assert "has no tokenizer files" in line


def test_a_tokenizer_that_does_not_fit_the_model_is_refused(zoo, tmp_path):
    from unisub_hub.examples.causal import word_tokenizer

    base = tmp_path / "wide"
    shutil.copytree(zoo["gpt2"], base)
    word_tokenizer([f"w{i}" for i in range(200)], base)
    data = write_rows(tmp_path / "d.jsonl", [{"text": "w1 w2"}])
    line = _error_line(
        run(
            "train",
            zoo["gpt2_basis"],
            "--base",
            base,
            "--data",
            data,
            "--out",
            tmp_path / "t",
            "--device",
            "cpu",
            ok=False,
        )
    )
    assert "tokenizer has 202 tokens but the model embeds only" in line


def test_a_max_length_past_the_model_is_clamped_and_said(zoo, tmp_path):
    data = write_rows(tmp_path / "d.jsonl", prompt_completion_rows(8, 4))
    result = run(
        "train",
        zoo["gpt2_basis"],
        "--base",
        zoo["gpt2"],
        "--data",
        data,
        "--out",
        tmp_path / "t",
        "--max-length",
        "5000",
        "--device",
        "cpu",
        "--no-register",
    )
    assert "Note: --max-length 5000 is past the model's 128 positions: using 128" in result.output
    assert load_coefficients(tmp_path / "t").manifest["training"]["hyperparameters"]["max_length"] == 128


def test_a_diverging_loss_writes_nothing(zoo, tmp_path):
    data = write_rows(tmp_path / "d.jsonl", prompt_completion_rows(64, 5))
    line = _error_line(
        run(
            "train",
            zoo["gpt2_basis"],
            "--base",
            zoo["gpt2"],
            "--data",
            data,
            "--out",
            tmp_path / "t",
            "--lr",
            "1e6",
            "--epochs",
            "3",
            "--device",
            "cpu",
            ok=False,
        )
    )
    assert ("diverged" in line or "the loss became" in line) and "lower --lr" in line
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_out_of_range_is_a_usage_error(zoo, tmp_path, seed):
    data = write_rows(tmp_path / "d.jsonl", [{"text": "the cat"}])
    result = run(
        "train",
        zoo["gpt2_basis"],
        "--base",
        zoo["gpt2"],
        "--data",
        data,
        "--out",
        tmp_path / "t",
        "--seed",
        seed,
        ok=False,
    )
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
