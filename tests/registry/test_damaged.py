"""A damaged or unusable registry database is one clear error, never a traceback (#15 item 7)."""

from __future__ import annotations

import pytest
from helpers import make_basis

from unisub_hub.errors import RegistryError
from unisub_hub.registry import Registry


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "directory"])
def test_a_damaged_database_is_a_registry_error_with_the_way_out(tmp_path, damage):
    home = tmp_path / "home"
    registry = Registry(home)
    registry.add(make_basis(tmp_path / "basis").path)
    registry.close()
    database = home / "registry.db"
    for suffix in ("-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    if damage == "random bytes":
        database.write_bytes(b"\\x13\\x37 not sqlite at all " * 100)
    elif damage == "truncated":
        database.write_bytes(database.read_bytes()[:1000])
    else:
        database.unlink()
        database.mkdir()
    with pytest.raises(RegistryError, match="registry.db: the registry database"):
        Registry(home).list("bases")


def test_a_home_whose_path_holds_url_characters_works(tmp_path):
    home = tmp_path / "odd?name#1"
    registry = Registry(home)
    registry.add(make_basis(tmp_path / "basis").path)
    assert (home / "registry.db").is_file() and len(registry.list("bases")) == 1
    registry.close()


def test_a_database_damaged_while_open_is_a_registry_error_on_the_plain_row_path(tmp_path):
    """``resolve`` (a server's cold load) reads through sqlite3's own cursor, not SQLAlchemy's."""
    home = tmp_path / "home"
    registry = Registry(home)
    registry.add(make_basis(tmp_path / "basis").path)
    registry.resolve(registry.list("bases")[0]["name"])  # the pooled connection exists
    registry.db.close()
    for suffix in ("", "-wal", "-shm"):
        (home / f"registry.db{suffix}").unlink(missing_ok=True)
    (home / "registry.db").write_bytes(b"\x13\x37 not sqlite at all " * 100)
    with pytest.raises(RegistryError, match="registry.db: the registry database is damaged"):
        registry.resolve("anything")
