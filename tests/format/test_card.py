"""Model cards: Hub metadata that parses back as written, puts repos in the Hub's model tree, and
carries nothing of the user's file system."""

from __future__ import annotations

from huggingface_hub import ModelCard

from unisub_hub.format.card import basis_card, coefficients_card, hub_model_id, public_command


def _manifest(base_model: str | None, **extra) -> dict:
    return {
        "name": "tiny: #1 - [beta]",
        "content_id": "sha256:" + "0" * 64,
        "source_kind": "lora",
        "modes": [2, 3],
        "centered": False,
        "dtype": "float32",
        "architecture": {"name": "tiny-arch", "base_model": {"id": base_model} if base_model else None},
        "layers": [{"name": "w", "shape": [4, 3], "ranks": {"2": 2, "3": 2}}],
        "sources": [{"id": "a"}, {"id": "b", "role": "holdout"}],
        "basis": {"content_id": "sha256:" + "1" * 64, "repo_id": "me/basis: v2"},
        "metrics": {"mean_rel_error": 0.25},
        "sizes": {"coefficients_bytes": 1234},
        **extra,
    }


EVALUATIONS = [
    {
        "data_name": "test.jsonl",
        "data_sha256": "ab" * 32,
        "objective": "prompt-completion",
        "metric": "loss",
        "value": 1.25,
        "count": 300,
        "created": "2026-12-02T10:00:00+00:00",
    },
    {
        "data_name": "test.jsonl",
        "data_sha256": "ab" * 32,
        "objective": "prompt-completion",
        "metric": "perplexity",
        "value": 3.49,
        "count": 300,
        "created": "2026-12-02T10:00:00+00:00",
    },
]


def test_card_metadata_parses_back_even_with_yaml_characters_in_names():
    manifest = _manifest("org/model")
    for kind, card in (("basis", basis_card(manifest)), ("task", coefficients_card(manifest))):
        data = ModelCard(card).data.to_dict()
        assert data["library_name"] == "unisub-hub" and data["tags"] == [
            "unisub-hub",
            "universal-subspace",
            f"unisub-{kind}",
            "unisub-lora",
        ]
        assert data["base_model"] == "org/model" and data["base_model_relation"] == "adapter"
        assert data["unisub_content_id"] == manifest["content_id"]
    assert ModelCard(coefficients_card(_manifest("org/model"))).data.to_dict()["basis_repo"] == "me/basis: v2"


def test_card_without_a_base_model_has_no_such_key():
    data = ModelCard(basis_card(_manifest(None))).data.to_dict()
    assert "base_model" not in data and "base_model_relation" not in data
    assert "# tiny: #1 - [beta]: a unisub-hub basis" in basis_card(_manifest(None))


def test_recorded_scores_become_the_model_index_and_read_back():
    card = ModelCard(coefficients_card(_manifest("org/model"), EVALUATIONS))
    results = card.data.eval_results
    assert [(r.metric_type, r.metric_value, r.dataset_name, r.dataset_revision) for r in results] == [
        ("loss", 1.25, "test.jsonl", "ab" * 32),
        ("perplexity", 3.49, "test.jsonl", "ab" * 32),
    ]
    assert results[0].task_type == "text-generation" and card.data.model_name == "tiny: #1 - [beta]"
    assert "| test.jsonl (`abababababab`) | prompt-completion | loss | 1.2500 | 300 | 2026-12-02 |" in str(card)


def test_local_paths_never_reach_a_card(tmp_path):
    local = str(tmp_path / "models" / "base")
    command = f"unisub-hub train {tmp_path}/basis --base {local} --data /home/me/secret/train.jsonl --out ./t --lr 0.1"
    card = coefficients_card(_manifest(local, command=command))
    assert str(tmp_path) not in card and "/home/me" not in card and "base_model" not in ModelCard(card).data.to_dict()
    assert "unisub-hub train basis --base base --data train.jsonl --out t --lr 0.1" in card


def test_hub_ids_are_told_from_paths(tmp_path):
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert hub_model_id("mistralai/Mistral-7B-v0.1") == "mistralai/Mistral-7B-v0.1"
    for local in ("/abs/path", "./rel/x", "~/x/y", "a/b/c", "org/model: 1", str(tmp_path / "org" / "model")):
        assert hub_model_id(local) is None, local
    assert public_command("unisub-hub pull me/task@v1 --out /tmp/x") == "unisub-hub pull me/task@v1 --out x"


def test_a_trained_task_card_shows_its_training_record():
    training = {
        "objective": "messages",
        "steps": 40,
        "init": "zero",
        "data_sha256": "cd" * 32,
        "hyperparameters": {"epochs": 2, "lr": 0.05, "batch_size": 8, "seed": 3, "max_length": 128},
    }
    card = coefficients_card(
        _manifest("org/model", training=training, lineage="trained", metrics={"train_loss": 1.5, "eval_loss": 1.7})
    )
    assert "- objective: messages, 40 steps from `zero`" in card
    assert "- hyper-parameters: epochs 2, lr 0.05, batch_size 8, seed 3, max_length 128" in card
    assert f"- data sha256: `{'cd' * 32}`" in card and "train_loss 1.5, eval_loss 1.7" in card


def test_a_merged_task_sits_under_its_sources_in_the_model_tree():
    merged = [
        {"name": "a", "content_id": "sha256:" + "2" * 64, "weight": 0.5, "repo_id": "me/a"},
        {"name": "b", "content_id": "sha256:" + "3" * 64, "weight": 0.5, "repo_id": "me/b"},
    ]
    card = coefficients_card(_manifest("org/model", merged_from=merged, lineage="merged", merge={"method": "ties"}))
    data = ModelCard(card).data.to_dict()
    assert data["base_model"] == ["me/a", "me/b"] and data["base_model_relation"] == "merge"
    assert "| a | `sha256:222222222222...` | 0.5 |" in card
