"""Model cards: Hub metadata that parses back as written, whatever text a config gave."""

from __future__ import annotations

from huggingface_hub import ModelCard

from unisub_hub.format.card import basis_card, coefficients_card


def _manifest(base_model: str | None) -> dict:
    return {
        "name": "tiny",
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
    }


def test_card_metadata_parses_back_even_with_yaml_characters_in_names():
    awkward = "org/model: #1 - [beta]"
    for card in (basis_card(_manifest(awkward)), coefficients_card(_manifest(awkward))):
        data = ModelCard(card).data.to_dict()
        assert data["library_name"] == "unisub-hub" and data["tags"] == ["unisub-hub", "universal-subspace"]
        assert data["base_model"] == awkward
    assert ModelCard(coefficients_card(_manifest(awkward))).data.to_dict()["basis_repo"] == "me/basis: v2"


def test_card_without_a_base_model_has_no_such_key():
    data = ModelCard(basis_card(_manifest(None))).data.to_dict()
    assert "base_model" not in data
    assert "# tiny: a unisub-hub basis" in basis_card(_manifest(None))
