"""Format v1: bit-exact round trips, schema refusals, content ids, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import planted_collection

from unisub_hub.constants import FORMAT_VERSION
from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.errors import (
    ArtifactExistsError,
    ContentIdMismatchError,
    FormatError,
    SchemaError,
    UnsupportedVersionError,
)
from unisub_hub.format import (
    canonical_bytes,
    content_id,
    load_basis,
    load_coefficients,
    save_basis,
    save_coefficients,
)

SHAPES = {"enc.0.weight": (8, 6), "enc.1.weight": (6, 8)}
REPO = Path(__file__).resolve().parents[2]


def built():
    sources = planted_collection(5, SHAPES)
    return build_basis(
        [LayerSpec(n, s) for n, s in SHAPES.items()], sources, options=BuildOptions(rank=RankRule(k=2))
    ), sources


def write_basis(out: Path, result, **kwargs):
    return save_basis(
        out,
        result.layers,
        name="toy",
        architecture_name="toy-arch",
        source_kind="checkpoint",
        sources=[{"id": f"model-{i}", "role": "train"} for i in range(5)],
        quality=result.report.summary(),
        **kwargs,
    )


def test_basis_round_trip_is_bit_exact(tmp_path):
    result, _ = built()
    written = write_basis(tmp_path / "basis", result, dtype=torch.float64)
    loaded = load_basis(tmp_path / "basis", verify=True)
    assert loaded.content_id == written.content_id
    for name, layer in result.layers.items():
        again = loaded.layer(name)
        assert torch.equal(again.left, layer.left) and torch.equal(again.right, layer.right)
        assert torch.equal(again.mean, layer.mean)
        assert again.ranks == layer.ranks


def test_same_tensors_give_same_bytes_and_content_id(tmp_path):
    result, _ = built()
    a = write_basis(tmp_path / "a", result)
    b = write_basis(tmp_path / "b", result)
    assert a.content_id == b.content_id
    assert (tmp_path / "a" / "basis.safetensors").read_bytes() == (tmp_path / "b" / "basis.safetensors").read_bytes()
    meta = {"format": "x", "format_version": "1.0.0", "z": "1", "a": "2"}
    assert len({canonical_bytes({"t": torch.ones(3)}, meta) for _ in range(8)}) == 1


def test_sharded_basis_round_trips_with_hf_index(tmp_path):
    result, _ = built()
    written = write_basis(tmp_path / "basis", result, shard_size=200)
    files = sorted(p.name for p in (tmp_path / "basis").glob("basis-*.safetensors"))
    assert len(files) > 1 and files[0] == f"basis-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "basis" / "basis.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    loaded = load_basis(tmp_path / "basis", verify=True)
    for name, layer in result.layers.items():
        assert torch.equal(loaded.layer(name).left, layer.left.float())
    assert written.content_id == content_id((tmp_path / "basis" / f) for f in files)


@pytest.mark.parametrize("small_file_bytes", [1 << 20, 0], ids=["read-whole", "read-per-tensor"])
def test_coefficients_round_trip_with_passthrough(tmp_path, monkeypatch, small_file_bytes):
    import unisub_hub.format.artifact as artifact

    monkeypatch.setattr(artifact, "SMALL_FILE_BYTES", small_file_bytes)
    result, sources = built()
    basis = write_basis(tmp_path / "basis", result)
    coefs = {"enc.0.weight": torch.randn(2, 2), "enc.1.weight": torch.randn(2, 2)}
    passthrough = {"head.bias": torch.arange(5, dtype=torch.bfloat16)}
    saved = save_coefficients(tmp_path / "task", coefs, passthrough, name="task-a", basis_manifest=basis.manifest)
    loaded = load_coefficients(tmp_path / "task", verify=True)
    assert loaded.basis_id == basis.content_id == saved.basis_id
    for name, value in coefs.items():
        assert torch.equal(loaded.coefficient(name), value)
    assert torch.equal(loaded.passthrough("head.bias"), passthrough["head.bias"])
    assert loaded.passthrough("head.bias").dtype == torch.bfloat16


def test_tampered_tensor_file_fails_content_id(tmp_path):
    result, _ = built()
    write_basis(tmp_path / "basis", result)
    path = tmp_path / "basis" / "basis.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    load_basis(tmp_path / "basis", verify=False)  # an open without the check still works: sizes are intact
    with pytest.raises(ContentIdMismatchError, match="modified or corrupt"):
        load_basis(tmp_path / "basis")  # opening for use checks the content id


def edit_manifest(folder: Path, change) -> None:
    path = folder / "unisub_basis.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda m: m.pop("layers"), SchemaError, "'layers' is a required property"),
        (lambda m: m.update(surprise=1), SchemaError, "Additional properties are not allowed"),
        (lambda m: m.update(content_id="md5:abc"), SchemaError, "manifest field content_id"),
        (lambda m: m["layers"][0].update(modes=[1, 2]), SchemaError, "manifest field layers/0/modes"),
        (lambda m: m.update(format="other/thing"), SchemaError, "format is 'other/thing'"),
        (
            lambda m: m.update(format_version="2.0.0"),
            UnsupportedVersionError,
            "major version 2; this unisub-hub reads major version 1 only",
        ),
        (lambda m: m.update(format_version="one"), SchemaError, "is not MAJOR.MINOR.PATCH"),
    ],
)
def test_bad_manifests_are_refused_with_a_clear_message(tmp_path, change, error, message):
    result, _ = built()
    write_basis(tmp_path / "basis", result)
    edit_manifest(tmp_path / "basis", change)
    with pytest.raises(error, match=message) as caught:
        load_basis(tmp_path / "basis")
    assert str(tmp_path / "basis") in str(caught.value)
    assert "\n" not in str(caught.value)


def test_newer_minor_version_with_new_optional_field_is_read(tmp_path):
    result, _ = built()
    write_basis(tmp_path / "basis", result)
    edit_manifest(tmp_path / "basis", lambda m: m.update(format_version="1.7.0", added_in_1_7={"x": 1}))
    assert load_basis(tmp_path / "basis").layer_names == list(SHAPES)


def test_newer_minor_version_may_add_fields_inside_layer_entries_too(tmp_path):
    result, _ = built()
    write_basis(tmp_path / "basis", result)

    def newer(manifest):
        manifest["format_version"] = "1.9.0"
        manifest["layers"][0]["added_in_1_9"] = {"x": 1}

    edit_manifest(tmp_path / "basis", newer)
    assert load_basis(tmp_path / "basis").layer_names == list(SHAPES)
    # ... but not in a manifest of this reader's own minor version, and known fields are still checked.
    edit_manifest(tmp_path / "basis", lambda m: m.update(format_version=FORMAT_VERSION))
    with pytest.raises(SchemaError, match="added_in_1_9"):
        load_basis(tmp_path / "basis")
    edit_manifest(tmp_path / "basis", lambda m: m.update(format_version="1.9.0", centered="yes"))
    with pytest.raises(SchemaError, match="centered"):
        load_basis(tmp_path / "basis")


@pytest.mark.parametrize("small_file_bytes", [1 << 20, 0], ids=["read-whole", "read-per-tensor"])
def test_truncated_tensor_file_is_refused(tmp_path, monkeypatch, small_file_bytes):
    import unisub_hub.format.artifact as artifact

    monkeypatch.setattr(artifact, "SMALL_FILE_BYTES", small_file_bytes)
    result, _ = built()
    write_basis(tmp_path / "basis", result)
    path = tmp_path / "basis" / "basis.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FormatError, match="truncated"):
        load_basis(tmp_path / "basis")


def test_a_small_tensor_file_is_read_once_at_opening_and_each_read_gives_new_tensors(tmp_path):
    result, _ = built()
    basis = write_basis(tmp_path / "basis", result)
    coefs = {"enc.0.weight": torch.randn(2, 2), "enc.1.weight": torch.randn(2, 2)}
    save_coefficients(tmp_path / "task", coefs, {}, name="task-a", basis_manifest=basis.manifest)
    loaded = load_coefficients(tmp_path / "task")
    (tmp_path / "task" / "coefficients.safetensors").unlink()  # what was opened is what is read
    first = loaded.coefficients()
    first["enc.0.weight"].zero_()
    assert torch.equal(loaded.coefficient("enc.0.weight"), coefs["enc.0.weight"])
    assert torch.equal(loaded.coefficients()["enc.1.weight"], coefs["enc.1.weight"])


def test_interrupted_write_leaves_nothing_behind(tmp_path, monkeypatch):
    result, _ = built()
    import unisub_hub.format.artifact as artifact

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact, "content_id", explode)
    with pytest.raises(OSError, match="disk full"):
        write_basis(tmp_path / "basis", result)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_never_overwritten(tmp_path):
    result, _ = built()
    (tmp_path / "basis").mkdir()
    (tmp_path / "basis" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactExistsError, match="already exists"):
        write_basis(tmp_path / "basis", result)
    assert (tmp_path / "basis" / "keep.txt").read_text() == "mine"


def test_invalid_manifest_is_refused_before_anything_is_written(tmp_path):
    result, _ = built()
    with pytest.raises(SchemaError, match="name"):
        save_basis(
            tmp_path / "basis",
            result.layers,
            name="bad name/with slash",
            architecture_name="a",
            source_kind="checkpoint",
            sources=[{"id": "a"}, {"id": "b"}],
        )
    assert not (tmp_path / "basis").exists() and list(tmp_path.iterdir()) == []


def test_package_schemas_are_the_specs_files():
    for spec in (REPO / "specs").glob("*.schema.json"):
        shipped = REPO / "unisub_hub" / "format" / "schemas" / spec.name
        assert shipped.read_bytes() == spec.read_bytes(), f"{shipped} differs from {spec}: copy specs/ into the package"


def test_a_trailing_newline_does_not_pass_an_anchored_pattern(tmp_path):
    result, _ = built()
    write_basis(tmp_path / "basis", result)
    edit_manifest(tmp_path / "basis", lambda m: m.update(name="evil\n"))
    with pytest.raises(SchemaError, match="manifest field name"):
        load_basis(tmp_path / "basis")


def test_a_manifest_validated_before_is_not_validated_again_until_it_changes(tmp_path, monkeypatch):
    """The schema check is remembered by the manifest file's identity, as content ids are: a
    server's cold load of a registered task skips it; an edited manifest is checked again."""
    import unisub_hub.format.artifact as artifact_module

    result, _ = built()
    basis = write_basis(tmp_path / "basis", result)
    coefs = {"enc.0.weight": torch.randn(2, 2), "enc.1.weight": torch.randn(2, 2)}
    save_coefficients(tmp_path / "task", coefs, {}, name="task-a", basis_manifest=basis.manifest)
    memory: dict[str, str] = {}

    class Known:
        def get(self, key):
            return memory.get(key)

        def put(self, key, value):
            memory[key] = value

    calls = []
    real = artifact_module.validate_manifest
    monkeypatch.setattr(artifact_module, "validate_manifest", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load_coefficients(tmp_path / "task", known=Known())
    second = load_coefficients(tmp_path / "task", known=Known())
    assert len(calls) == 1 and first.manifest == second.manifest
    manifest = tmp_path / "task" / "unisub_coefficients.json"
    document = json.loads(manifest.read_text())
    document["layers"][0]["name"] = 5  # now invalid, and a different file
    manifest.write_text(json.dumps(document))
    with pytest.raises(SchemaError):
        load_coefficients(tmp_path / "task", known=Known())
    assert len(calls) == 2
