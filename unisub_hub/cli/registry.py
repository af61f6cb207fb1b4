"""``unisub-hub registry ...``: list, show, alias, tag, rm, gc, verify, add."""

from __future__ import annotations

from pathlib import Path

import click

from .options import json_option
from .output import emit_json, human_bytes, print_table, stdout
from .refs import open_registry


@click.group("registry")
def registry_group():
    """Find, version, alias, tag and check registered bases and tasks.

    References: NAME (latest version), NAME:VERSION, NAME@ALIAS, or a content id prefix.

    Example:

        unisub-hub registry list tasks --arch sentence-transformers/all-MiniLM-L6-v2
    """


@registry_group.command("list")
@click.argument("what", type=click.Choice(["bases", "tasks", "architectures"]), default="bases")
@click.option("--arch", default=None, help="Only artifacts of this architecture name.")
@click.option("--name", default=None, help="Only artifacts of this name (all versions).")
@click.option(
    "--stale", is_flag=True, help="Only tasks whose basis has a newer version (move them with `unisub-hub rebase`)."
)
@json_option
def list_command(what, arch, name, stale, as_json):
    """List registered bases, tasks or architectures (newest first).

    Example:

        unisub-hub registry list tasks --stale --json
    """
    if stale and what != "tasks":
        raise click.BadParameter("--stale lists tasks only", param_hint="--stale")
    rows = open_registry().list(what, arch=arch, name=name, stale=stale)
    if as_json:
        emit_json(rows)
        return
    if what == "architectures":
        print_table(
            "Architectures",
            ["name", "fingerprint", "base model", "bases"],
            [[r["name"], r["fingerprint"][:19], r["base_model"], r["bases"]] for r in rows],
        )
    elif what == "bases":
        print_table(
            "Bases",
            ["ref", "content id", "architecture", "modes", "size", "hub"],
            [
                [
                    f"{r['name']}:{r['version']}",
                    r["content_id"][7:19],
                    r["architecture"],
                    r["modes"],
                    human_bytes(r["size_bytes"]),
                    r["hub_repo"],
                ]
                for r in rows
            ],
        )
    else:
        print_table(
            "Tasks",
            ["ref", "content id", "basis", "size", "mean rel. error", "hub"],
            [
                [
                    f"{r['name']}:{r['version']}",
                    r["content_id"][7:19],
                    r["basis"] + (f" (newest {r['newest_basis']})" if r["stale"] else ""),
                    human_bytes(r["size_bytes"]),
                    "" if r["mean_rel_error"] is None else f"{r['mean_rel_error']:.4f}",
                    r["hub_repo"],
                ]
                for r in rows
            ],
        )


@registry_group.command("show")
@click.argument("ref")
@json_option
def show_command(ref, as_json):
    """Show one artifact: versions, aliases, tags, lineage (sources, tasks, basis).

    Example:

        unisub-hub registry show minilm-basis@latest
    """
    data = open_registry().show(ref)
    if as_json:
        emit_json(data)
        return
    stdout.print(f"[bold]{data['kind']} {data['name']}:{data['version']}[/bold]  {data['content_id']}")
    stdout.print(f"stored at {data['path']} ({human_bytes(data['size_bytes'])})")
    if data["hub_repo"]:
        stdout.print(f"on the Hub: {data['hub_repo']} @ {data['hub_revision']}")
    stdout.print(
        f"aliases: {', '.join(data['aliases']) or '-'}; tags: "
        f"{', '.join(f'{k}={v}' for k, v in data['tags'].items()) or '-'}"
    )
    if data["kind"] == "basis":
        stdout.print(
            f"architecture {data['architecture']}, modes {data['modes']}, "
            f"{'centred' if data['centered'] else 'uncentred'}, {data['dtype']}"
        )
        print_table(
            "Built from",
            ["source", "revision", "sha256", "role"],
            [[s["locator"], s["revision"], (s["sha256"] or "")[:12], s["role"]] for s in data["sources"]],
        )
        stdout.print(f"tasks using it: {', '.join(data['tasks']) or '-'}")
    else:
        stdout.print(f"basis {data['basis']['ref']} ({data['basis']['content_id'][:19]}...)")
        if data["source"]:
            stdout.print(f"projected from {data['source']['locator']}")
    if data["evaluations"]:
        print_table(
            "Evaluations",
            ["data", "sha256", "objective", "metric", "value", "count", "date"],
            [
                [
                    e["data_name"],
                    e["data_sha256"][:12],
                    e["objective"],
                    e["metric"],
                    f"{e['value']:.4f}",
                    e["count"],
                    e["created"],
                ]
                for e in data["evaluations"]
            ],
        )


@registry_group.command("add")
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@json_option
def add_command(folders, as_json):
    """Register artifact folders (bases before the tasks that use them).

    Example:

        unisub-hub registry add my-basis my-task
    """
    registry = open_registry()
    entries = [registry.add(folder) for folder in folders]
    if as_json:
        emit_json([{**e.to_dict(), "created": e.created} for e in entries])
        return
    for entry in entries:
        stdout.print(f"{entry.kind} {entry.ref}: {'registered' if entry.created else 'already registered'}")


@registry_group.command("alias")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("alias")
@json_option
def alias_command(name, version, alias, as_json):
    """Point NAME@ALIAS at NAME:VERSION (moves the alias if it existed).

    Example:

        unisub-hub registry alias minilm-basis 2 prod
    """
    entry = open_registry().alias(name, version, alias)
    if as_json:
        emit_json({**entry.to_dict(), "alias": alias})
    else:
        stdout.print(f"{name}@{alias} -> {entry.ref}")


@registry_group.command("tag")
@click.argument("ref")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
def tag_command(ref, pairs, as_json):
    """Attach free key=value tags to an artifact.

    Example:

        unisub-hub registry tag sst2-task dataset=sst2 owner=me
    """
    registry = open_registry()
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="KEY=VALUE")
        tags[key] = value
    for key, value in tags.items():
        entry = registry.tag(ref, key, value)
    if as_json:
        emit_json({**entry.to_dict(), "tags": tags})
    else:
        stdout.print(f"tagged {entry.kind} {entry.ref}: {', '.join(f'{k}={v}' for k, v in tags.items())}")


@registry_group.command("rm")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Also remove the tasks that use a basis.")
@json_option
def rm_command(ref, force, as_json):
    """Remove an artifact from the registry and the store.

    Example:

        unisub-hub registry rm old-basis:1 --force
    """
    removed = open_registry().remove(ref, force=force)
    if as_json:
        emit_json([e.to_dict() for e in removed])
    else:
        for entry in removed:
            stdout.print(f"removed {entry.kind} {entry.ref}")


@registry_group.command("gc")
@click.option(
    "--force", is_flag=True, help="Delete stored artifacts even when the registry lists none (a lost database)."
)
@json_option
def gc_command(force, as_json):
    """Delete store folders that no registry row refers to.

    Example:

        unisub-hub registry gc
    """
    removed = open_registry().gc(force=force)
    if as_json:
        emit_json({"removed": [str(p) for p in removed]})
    else:
        stdout.print(f"removed {len(removed)} unreferenced folder(s)")


@registry_group.command("verify")
@json_option
def verify_command(as_json):
    """Re-hash every stored artifact; exit 1 if any no longer matches its content id.

    Example:

        unisub-hub registry verify --json
    """
    report = open_registry().verify()
    if as_json:
        emit_json(report)
    else:
        for problem in report["problems"]:
            stdout.print(f"[red]FAIL[/red] {problem['kind']} {problem['ref']}: {problem['problem']}")
        stdout.print(
            f"checked {report['checked']} artifact(s): {len(report['problems'])} problem(s), "
            f"{len(report['unreferenced_folders'])} unreferenced folder(s)"
        )
    if report["problems"]:
        raise SystemExit(1)
