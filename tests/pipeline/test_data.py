"""Training and evaluation data: rows, objectives, loss masks, and every bad file refused in one line."""

from __future__ import annotations

import json
import re

import pytest

from unisub_hub.errors import TrainingDataError
from unisub_hub.pipeline.data import (
    IGNORE,
    TokenExample,
    causal_batch,
    read_examples,
    read_rows,
    token_losses,
    tokenize_causal,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from causal_models import sentences

    from unisub_hub.examples.causal import train_tokenizer

    folder = train_tokenizer(sentences(200), tmp_path_factory.mktemp("tok") / "t", vocab_size=120)
    return transformers.AutoTokenizer.from_pretrained(folder)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_text_carries_loss_on_every_token_and_ends_in_eos(tokenizer):
    objective, (example,) = tokenize_causal([{"text": "the cat sat"}], tokenizer, max_length=64, path="x")
    assert objective == "text" and example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels == example.input_ids


def test_a_completion_alone_carries_loss_and_is_tokenized_apart_from_its_prompt(tokenizer):
    objective, (example,) = tokenize_causal(
        [{"prompt": "the cat", "completion": " sat on"}], tokenizer, max_length=64, path="x"
    )
    prompt = tokenizer("the cat")["input_ids"]
    completion = tokenizer(" sat on", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert objective == "prompt-completion"
    assert example.input_ids == prompt + completion
    assert example.labels == [IGNORE] * len(prompt) + completion


def test_a_chat_carries_loss_on_assistant_turns_only(tokenizer):
    chat = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "the cat"},
        {"role": "assistant", "content": "sat"},
        {"role": "user", "content": "a dog"},
        {"role": "assistant", "content": "ran on"},
    ]
    _, (example,) = tokenize_causal([{"messages": chat}], tokenizer, max_length=256, path="x")
    learned = tokenizer.decode(
        [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE]
    )
    assert learned == "sat<|endoftext|>ran on<|endoftext|>"
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_a_chat_needs_a_template(tokenizer, tmp_path):
    bare = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    with pytest.raises(TrainingDataError, match="has no chat template"):
        tokenize_causal(rows, bare, max_length=64, path="chat.jsonl")


def test_truncation_keeps_the_start_and_padding_never_carries_loss(tokenizer):
    _, examples = tokenize_causal(
        [{"text": "the cat sat on the mat"}, {"text": "a"}], tokenizer, max_length=4, path="x"
    )
    assert [len(e.input_ids) for e in examples][0] == 4
    import torch

    batch = causal_batch(examples, pad_id=0, device=torch.device("cpu"))
    assert batch["attention_mask"].tolist()[1] == [1] * len(examples[1].input_ids) + [0] * (
        4 - len(examples[1].input_ids)
    )
    padded = batch["attention_mask"] == 0
    assert (batch["labels"][padded] == IGNORE).all()


def test_token_losses_equal_transformers_causal_loss():
    import torch

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=gen)
    labels = torch.tensor([[3, IGNORE, 4, 5, 1], [IGNORE, IGNORE, 2, IGNORE, IGNORE]])
    total, count = token_losses(logits, labels)
    from transformers.loss.loss_utils import ForCausalLMLoss

    assert count == 4
    assert float(total / count) == pytest.approx(float(ForCausalLMLoss(logits, labels, vocab_size=11)), rel=1e-6)


def test_loss_tokens_do_not_count_the_first_token():
    assert TokenExample([1, 2, 3], [1, 2, 3]).loss_tokens == 2
    assert TokenExample([1, 2, 3], [IGNORE, IGNORE, 3]).loss_tokens == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": 5, "label": 1}, "column 'text' holds 5, not text"),  # was read as the text "5"
        ({"text": "a", "text_pair": ["b"], "label": 1}, "column 'text_pair' holds ['b'], not text"),
    ],
)
def test_classification_text_that_is_not_a_string_is_refused(tmp_path, row, message):
    path = write(tmp_path, "data.jsonl", json.dumps(row) + "\n")
    with pytest.raises(TrainingDataError, match=re.escape(message)):
        read_examples(path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "holds no examples"),
        ("bad.jsonl", b"\xff\xfe{}", "is not UTF-8 text"),
        ("deep.jsonl", '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1 is nested too deeply"),
        ("lists.jsonl", "[1, 2]\n", "line 1 is not a JSON object"),
        ("broken.jsonl", '{"text": "a"}\n{"text": \n', "line 2 is not JSON"),
        ("long.csv", "text,label\nIt cost 1,0,1\n", "line 2 has 3 fields, the header 2"),
        ("short.csv", "text,label\nshort\n", "line 2 has 1 fields, the header 2"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(TrainingDataError) as caught:
        rows = read_rows(path)
        if not rows:
            read_examples(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "a"}], "example 1 has no text in column 'completion' (a prompt needs its completion)"),
        ([{"completion": "a"}], "example 1 has no text in column 'prompt' (a completion needs its prompt)"),
        ([{"sentence": "a"}], "none of the columns of causal-LM data"),
        ([{"text": "a"}, {"body": "b"}], "example 2 has no text in column 'text'"),
        ([{"messages": "hi"}], "'messages' is not a list of turns"),
        ([{"messages": [{"role": "user"}]}], "every turn of 'messages'"),
        ([{"messages": [{"role": "user", "content": "a"}]}], "the chat has no assistant turn"),
        ([{"prompt": 5, "completion": "a"}], "example 1: column 'prompt' holds 5, not text"),
    ],
)
def test_rows_that_do_not_fit_their_objective_are_refused(tokenizer, rows, message):
    with pytest.raises(TrainingDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tokenize_causal(rows, tokenizer, max_length=64, path="data.jsonl")


def test_csv_with_quoted_commas_reads_whole_fields(tmp_path):
    path = write(tmp_path, "ok.csv", 'text,label\n"It cost 1,0",1\n')
    assert [(e.text, e.label) for e in read_examples(path)] == [("It cost 1,0", 1)]


def test_jsonl_rows_read_as_written(tmp_path):
    rows = [{"text": "a", "label": 1}, {"prompt": "p", "completion": "c"}]
    path = write(tmp_path, "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_rows(path) == rows
