"""Registry: immutability, versions, references, lineage, removal, gc and verify."""

from __future__ import annotations

from contextlib import closing

import pytest
from helpers import make_basis, make_task

from unisub_hub.errors import (
    AmbiguousReferenceError,
    DependencyError,
    FormatError,
    ReferenceNotFoundError,
    RegistryError,
)
from unisub_hub.registry import Registry


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "home")
    yield reg
    reg.close()


def test_adding_known_content_is_a_no_op(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    first = registry.add(basis.path)
    stored = first.path / "basis.safetensors"
    before = stored.stat().st_mtime_ns
    again = registry.add(basis.path)
    assert first.created and not again.created
    assert (again.content_id, again.version) == (first.content_id, 1)
    assert stored.stat().st_mtime_ns == before
    assert len(registry.list("bases")) == 1
    # The same content written to another folder is still the same artifact.
    assert not registry.add(make_basis(tmp_path / "b-copy").path).created


def test_losing_a_registration_race_is_not_a_creation(registry, tmp_path, monkeypatch):
    # Another process registers the same content between our lookup and our transaction.
    basis = make_basis(tmp_path / "b")
    rival = Registry(tmp_path / "home")
    real_find = Registry._find

    def find_after_the_rival(self, kind, content_id):
        if self is registry:
            rival.add(basis.path)
            monkeypatch.setattr(Registry, "_find", real_find)
            return None
        return real_find(self, kind, content_id)

    monkeypatch.setattr(Registry, "_find", find_after_the_rival)
    entry = registry.add(basis.path)
    rival.close()
    assert not entry.created
    assert [b["version"] for b in registry.list("bases")] == [1]


def test_new_content_under_a_name_is_a_new_version_and_latest_moves(registry, tmp_path):
    one = registry.add(make_basis(tmp_path / "b1", k=1).path)
    two = registry.add(make_basis(tmp_path / "b2", k=2).path)
    assert (one.version, two.version) == (1, 2)
    assert registry.resolve("toy").content_id == two.content_id
    assert registry.resolve("toy@latest").content_id == two.content_id
    assert registry.resolve("toy:1").content_id == one.content_id
    registry.alias("toy", 1, "prod")
    assert registry.resolve("toy@prod").version == 1
    registry.alias("toy", 2, "prod")  # aliases move
    assert registry.resolve("toy@prod").version == 2
    assert registry.resolve(one.content_id[7:19]).version == 1
    assert registry.resolve(one.content_id).version == 1


def test_reference_errors_name_the_problem(registry, tmp_path):
    basis = make_basis(tmp_path / "b", name="same")
    registry.add(basis.path)
    registry.add(make_task(tmp_path / "t", basis, name="same").path)
    with pytest.raises(AmbiguousReferenceError, match=r"same: matches 2 artifacts: basis same:1 .*, task same:1"):
        registry.resolve("same")
    assert registry.resolve("same", "task").kind == "task"
    with pytest.raises(ReferenceNotFoundError, match="nope:3: no registered artifact matches"):
        registry.resolve("nope:3")
    with pytest.raises(ReferenceNotFoundError, match="same@prod"):
        registry.resolve("same@prod")


def test_ambiguous_content_id_prefix_lists_matches(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    registry.add(basis.path)
    ids = [registry.add(make_task(tmp_path / f"t{i}", basis, name=f"t{i}", seed=i).path).content_id for i in range(20)]
    first_chars = [cid[7] for cid in ids]
    shared = next(c for c in first_chars if first_chars.count(c) > 1)
    with pytest.raises(AmbiguousReferenceError, match=f"sha256:{shared}: matches"):
        registry.resolve(f"sha256:{shared}", "task")


def test_lineage_queries(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    registry.add(basis.path)
    for i in range(3):
        registry.add(make_task(tmp_path / f"t{i}", basis, name=f"task{i}", seed=i).path)
    assert [s["locator"] for s in registry.sources_of(basis.content_id)] == [f"src-{m}" for m in range(4)]
    assert [t.name for t in registry.tasks_of("toy")] == ["task0", "task1", "task2"]
    assert [b.name for b in registry.bases_built_from("src-2")] == ["toy"]
    shown = registry.show("task1")
    assert shown["basis"]["ref"] == "toy:1" and shown["source"]["locator"] == "finetune-1"
    assert registry.show("toy")["tasks"] == ["task0:1", "task1:1", "task2:1"]


def test_task_needs_its_basis_registered(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    task = make_task(tmp_path / "t", basis)
    with pytest.raises(RegistryError, match="is not registered; register the basis first"):
        registry.add(task.path)
    assert registry.list("tasks") == []
    assert not (registry.home / "store").exists() or registry.store.folders() == []


def test_remove_refuses_dependents_unless_forced_and_leaves_no_dangling_rows(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    entry = registry.add(basis.path)
    task = registry.add(make_task(tmp_path / "t", basis).path)
    with pytest.raises(DependencyError, match="1 task\\(s\\) use this basis \\(task:1\\); pass force"):
        registry.remove("toy")
    assert entry.path.is_dir()
    removed = registry.remove("toy", force=True)
    assert {e.kind for e in removed} == {"basis", "task"}
    assert not entry.path.exists() and not task.path.exists()
    assert registry.list("bases") == [] and registry.list("tasks") == []
    assert registry.verify()["ok"]
    from sqlmodel import select

    from unisub_hub.registry.models import BasisLayer, BasisSource

    with registry.db.read() as session:  # the links went with the basis row (ON DELETE CASCADE)
        assert session.exec(select(BasisLayer)).all() == [] and session.exec(select(BasisSource)).all() == []


def test_gc_and_verify(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    entry = registry.add(basis.path)
    orphan = registry.store.root / ("ab" * 32)
    orphan.mkdir()
    assert registry.verify()["unreferenced_folders"] == [str(orphan)]
    assert registry.gc() == [orphan] and not orphan.exists()
    data = bytearray((entry.path / "basis.safetensors").read_bytes())
    data[-1] ^= 1
    (entry.path / "basis.safetensors").write_bytes(bytes(data))
    report = registry.verify()
    assert not report["ok"] and "modified or corrupt" in report["problems"][0]["problem"]


def test_tags_and_hub_location(registry, tmp_path):
    basis = make_basis(tmp_path / "b")
    registry.add(basis.path)
    registry.tag("toy", "owner", "me")
    registry.set_hub(basis.content_id, "org/toy", "a" * 40)
    shown = registry.show("toy")
    assert shown["tags"] == {"owner": "me"}
    assert (shown["hub_repo"], shown["hub_revision"]) == ("org/toy", "a" * 40)


def test_newer_schema_is_refused(tmp_path):
    reg = Registry(tmp_path / "home")
    reg.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(RegistryError, match="schema version 99 is newer"):
        Registry(tmp_path / "home")


def _registry_with_one_task(tmp_path):
    """A registry holding one basis and a task ``old-task`` projected from a fine-tune; the basis."""
    reg = Registry(tmp_path / "home")
    basis = make_basis(tmp_path / "b")
    reg.add(basis.path)
    reg.add(make_task(tmp_path / "t", basis, name="old-task").path)
    reg.close()
    return basis


def test_a_version_1_registry_is_migrated(tmp_path):
    """A file made by schema 1 (no task.mean_rel_error) opens, keeps its rows and gains the column."""
    import sqlite3

    _registry_with_one_task(tmp_path)
    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        db.execute("ALTER TABLE task DROP COLUMN mean_rel_error")
        db.execute("DROP INDEX ix_task_lineage")
        db.execute("ALTER TABLE task DROP COLUMN lineage")
        db.execute("PRAGMA user_version=1")
        assert "mean_rel_error" not in [row[1] for row in db.execute("PRAGMA table_info(task)")]
    migrated = Registry(tmp_path / "home")
    (task,) = migrated.list("tasks")
    assert task["name"] == "old-task" and task["mean_rel_error"] == pytest.approx(0.1)
    assert migrated.verify()["ok"]
    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4


def test_a_version_3_registry_gains_task_lineage(tmp_path):
    """Schema 3 had no task.lineage: a task with a source becomes projected (one without: unknown)."""
    import sqlite3

    basis = _registry_with_one_task(tmp_path)
    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        assert db.execute("SELECT source_id IS NOT NULL FROM task").fetchone()[0]  # projected from a fine-tune
        db.execute("DROP INDEX ix_task_lineage")
        db.execute("ALTER TABLE task DROP COLUMN lineage")
        db.execute("PRAGMA user_version=3")
    migrated = Registry(tmp_path / "home")
    (task,) = migrated.list("tasks")
    assert task["lineage"] == "projected"
    migrated.add(make_task(tmp_path / "t2", basis, name="new-task", seed=1).path)
    assert {t["name"]: t["lineage"] for t in migrated.list("tasks")}["new-task"] == "projected"
    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4


def test_json_columns_read_the_text_older_versions_wrote(tmp_path):
    """Schema 1 and 2 stored ``json.dumps`` text in VARCHAR columns; the JSON columns read it as is."""
    import json
    import sqlite3

    reg = Registry(tmp_path / "home")
    basis = make_basis(tmp_path / "b")
    reg.add(basis.path)
    task = reg.add(make_task(tmp_path / "t", basis, name="old-task").path)
    reg.close()
    with sqlite3.connect(tmp_path / "home" / "registry.db") as db:
        stored = json.loads(db.execute("SELECT metrics FROM task").fetchone()[0])  # plain JSON text on disk
        db.execute("UPDATE task SET metrics = ?", (json.dumps({**stored, "written_by": "schema 2"}),))
    shown = Registry(tmp_path / "home").show(task.content_id)
    assert shown["metrics"] == {**stored, "written_by": "schema 2"}
    assert shown["metrics"]["mean_rel_error"] == pytest.approx(0.1)


def test_a_version_number_is_never_given_twice_even_after_rm(tmp_path):
    registry = Registry(tmp_path / "home")
    first = registry.add(make_basis(tmp_path / "b1", name="toy", seed=1).path)
    second = registry.add(make_basis(tmp_path / "b2", name="toy", seed=2).path)
    assert (first.version, second.version) == (1, 2)
    registry.remove("toy:2")
    third = registry.add(make_basis(tmp_path / "b3", name="toy", seed=3).path)
    assert third.version == 3  # toy:2 named another basis once: it is not reused
    with pytest.raises(ReferenceNotFoundError):
        registry.resolve("toy:2")
    registry.close()


def _claim_huge_ranks(folder) -> None:
    """Ranks of 10^30 in a manifest whose tensors are valid (the content id covers tensors only)."""
    import json

    path = folder / "unisub_basis.json"
    manifest = json.loads(path.read_text())
    for layer in manifest["layers"]:
        layer["ranks"] = {mode: 10**30 for mode in layer["ranks"]}
    path.write_text(json.dumps(manifest))


def test_add_refuses_a_basis_its_tensors_cannot_back(tmp_path):
    basis = make_basis(tmp_path / "b")
    _claim_huge_ranks(basis.path)
    registry = Registry(tmp_path / "home")
    with pytest.raises(FormatError, match="U"):
        registry.add(basis.path)
    assert registry.list("bases") == [] and registry.store.folders() == []


def test_verify_finds_a_stored_manifest_its_tensors_cannot_back(tmp_path):
    basis = make_basis(tmp_path / "b")
    registry = Registry(tmp_path / "home")
    entry = registry.add(basis.path)
    assert registry.verify()["ok"]
    _claim_huge_ranks(entry.path)
    report = registry.verify()
    assert not report["ok"] and [p["ref"] for p in report["problems"]] == [entry.ref]
    assert "shape" in report["problems"][0]["problem"] or "tensor" in report["problems"][0]["problem"]


def test_a_registered_task_opens_from_the_store_without_hashing_or_schema_check(tmp_path, monkeypatch):
    from unisub_hub.format import artifact, verified
    from unisub_hub.hub.resolve import open_coefficients

    home = tmp_path / "home"
    with closing(Registry(home)) as registry:
        basis = make_basis(tmp_path / "b")
        registry.add(basis.path)
        registry.add(make_task(tmp_path / "t", basis, name="served").path)
    monkeypatch.setattr(verified, "_memory", {})  # a new process: only the registry remembers
    work = []
    monkeypatch.setattr(verified, "content_id", lambda files: work.append("hash") or "sha256:" + "0" * 64)
    real_validate = artifact.validate_manifest
    monkeypatch.setattr(artifact, "validate_manifest", lambda *a, **k: work.append("schema") or real_validate(*a, **k))
    with closing(Registry(home)) as registry:
        task = open_coefficients("served", registry=registry)
    assert task.manifest["name"] == "served" and work == []


def test_the_verified_memory_is_pruned_to_its_bound_and_keeps_the_newest(tmp_path, monkeypatch):
    from unisub_hub.registry import verified

    monkeypatch.setattr(verified, "_MAX_ROWS", 5)
    with closing(Registry(tmp_path / "home")) as registry:
        for number in range(9):
            registry.verified.put(f"key-{number}", f"sha256:{number:064x}")
    with closing(Registry(tmp_path / "home")) as registry:  # a fresh memory reads the table
        kept = [number for number in range(9) if registry.verified.get(f"key-{number}") is not None]
        assert kept == [4, 5, 6, 7, 8]
        assert registry.verified.get("key-8") == f"sha256:{8:064x}"
