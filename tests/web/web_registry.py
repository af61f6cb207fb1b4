"""A registry with every kind of page: bases in two versions, projected, merged, rebased and
trained-looking tasks, an evaluation, and a card that holds markup.

Not a ``conftest.py``: a second module of that name would shadow ``tests/conftest.py`` for
every later ``from conftest import ...`` (and in Dask workers that unpickle test objects).
Each test module makes its ``site`` fixture with :func:`make_site`."""

from __future__ import annotations

import json

import pytest
from clitools import SHAPES, run, write_checkpoints

from unisub_hub.registry import Registry

HOSTILE = "<script>window.__pwned = 1</script>"


def make_site(root):
    """(home, facts) of a registry made under ``root`` through the commands users run."""
    home = root / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNISUB_HOME", str(home))
        zoo = write_checkpoints(root / "zoo", 8, SHAPES)
        run("build", *zoo[:4], "--out", root / "b1", "--k", "2", "--name", "zb")
        run("project", zoo[5], "--basis", "zb", "--out", root / "t1", "--name", "alpha")
        run("project", zoo[6], "--basis", "zb", "--out", root / "t2", "--name", "beta")
        run("merge", "alpha", "beta", "--out", root / "m", "--name", "blend")
        hostile = root / "hostile"
        run("project", zoo[7], "--basis", "zb", "--out", hostile, "--name", "hostile", "--no-register")
        (hostile / "README.md").write_text(f"# hostile\n\n{HOSTILE}\n")
        run("registry", "add", hostile)
        run("build", *zoo[:6], "--out", root / "b2", "--k", "3", "--name", "zb")
        run("rebase", "alpha", "--basis", "zb", "--out", root / "moved", "--name", "alpha-moved")
        registry = Registry(home)
        alpha = registry.resolve("alpha", "task")
        registry.record_evaluation(
            alpha.content_id,
            data_sha256="0" * 64,
            data_name="held-out.jsonl",
            objective="classification",
            metrics={"accuracy": 0.875, "loss": 0.3125},
            count=64,
        )
        facts = {
            "alpha": alpha.content_id,
            "blend": registry.resolve("blend", "task").content_id,
            "moved": registry.resolve("alpha-moved", "task").content_id,
            "zb1": registry.resolve("zb:1", "basis").content_id,
            "manifest_b1": json.loads((root / "b1" / "unisub_basis.json").read_text()),
        }
        registry.close()
    return home, facts
