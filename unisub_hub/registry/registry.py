"""The registry: what artifacts exist, where they are stored, how they relate.

Registration order is what keeps the registry consistent when a process dies: the folder
is placed in the store first (atomically), then all rows are written in one transaction.
A crash leaves at most an unreferenced folder (``gc`` removes it), never a row without its
folder. Removal deletes the rows first, then the folder, for the same reason.
"""

from __future__ import annotations

import builtins
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select

from ..constants import BASIS_FORMAT, unisub_home
from ..errors import (
    AmbiguousReferenceError,
    ContentIdMismatchError,
    DependencyError,
    FormatError,
    ReferenceNotFoundError,
    RegistryError,
    option,
)
from .database import Database
from .models import (
    Alias,
    Architecture,
    Basis,
    BasisLayer,
    BasisSource,
    Evaluation,
    LastVersion,
    Layer,
    Source,
    Tag,
    Task,
)
from .store import Store
from .verified import RegistryVerifiedIds

_Row = TypeVar("_Row", Alias, Architecture, Basis, Task, Source)

if TYPE_CHECKING:
    from ..format.artifact import Artifact
    from ..format.verified import VerifiedIds


def read_artifact(folder: Path, *, verify: bool, known: VerifiedIds | None = None, cached: bool = False) -> Artifact:
    """Open an artifact; the format module (and torch with it) loads only when one is read,
    so listing and resolving (``registry list``, ``--help``) start without it.

    Registering and ``registry verify`` always hash (``cached=False``); what they find is
    remembered in ``known``."""
    from ..format.artifact import read_artifact as read

    return read(folder, verify=verify, cached=cached, known=known)


def check_tensor_table(artifact: Artifact) -> None:
    """``validate``'s tensor-table check (loaded as :func:`read_artifact` is, when needed)."""
    from ..format.checks import check_tensor_table as check

    check(artifact)


__all__ = ["KINDS", "Entry", "Registry"]

KINDS = ("basis", "task")
_ENTRY_COLUMNS = "content_id, name, version, path, hub_repo, hub_revision"
"""What :class:`Entry` needs of a ``basis`` or ``task`` row, in its order."""
_HEX_PREFIX = re.compile(r"^(sha256:[0-9a-f]{1,64}|[0-9a-f]{6,64})$")
_NAME_VERSION = re.compile(r"^(?P<name>[^:@]+):(?P<version>\d+)$")
_NAME_ALIAS = re.compile(r"^(?P<name>[^:@]+)@(?P<alias>[^:@]+)$")


@dataclass(frozen=True)
class Entry:
    """One registered artifact, as a reference resolves to it."""

    kind: str
    content_id: str
    name: str
    version: int
    path: Path
    hub_repo: str | None = None
    hub_revision: str | None = None
    created: bool = False
    """True when :meth:`Registry.add` made new rows, False when the content was known."""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "content_id": self.content_id,
            "name": self.name,
            "version": self.version,
            "path": str(self.path),
            "hub_repo": self.hub_repo,
            "hub_revision": self.hub_revision,
        }


def _get(session: Session, model: type[_Row], key: Any) -> _Row:
    """The row with this primary key; one removed by another process since it was resolved is not found."""
    row = session.get(model, key)
    if row is None:
        raise ReferenceNotFoundError(f"{key}: no longer in the registry (removed by another process?)")
    return row


DOWNLOADS = "downloads"
"""Folder of the home where pulls download before registering."""


class Registry:
    """An embedded registry at ``home`` (``registry.db`` + ``store/``).

    Example:
        >>> registry = Registry(Path("~/.cache/unisub-hub").expanduser())
        >>> entry = registry.add(Path("my-basis"))
        >>> registry.resolve("my-basis@latest").path
    """

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else unisub_home()
        self.db = Database(self.home / "registry.db")
        self.store = Store(self.home / "store")
        self.verified = RegistryVerifiedIds(self.db)
        """What this registry remembers of hashed tensor files: pass it as ``known`` when loading artifacts."""

    @property
    def read_only(self) -> bool:
        """True where this process can list and read the registry but not change it."""
        return self.db.read_only

    def close(self) -> None:
        self.db.close()

    # --- adding ---------------------------------------------------------------------------

    def add(
        self, folder: str | Path, *, hub_repo: str | None = None, hub_revision: str | None = None, verify: bool = True
    ) -> Entry:
        """Register an artifact folder (copied into the store); a no-op for known content.

        ``verify=False`` skips re-hashing the tensor files, for callers that have just done it
        (a pull checks the download before registering it).

        Raises:
            FormatError: the folder is not a valid artifact or its bytes do not match its id.
            RegistryError: a coefficient set whose basis is not registered.
        """
        artifact = read_artifact(Path(folder), verify=verify, known=self.verified)
        check_tensor_table(artifact)  # what validate checks: a manifest its tensors cannot back is not registered
        kind = "basis" if artifact.kind == BASIS_FORMAT else "task"
        with self.store.lease():  # gc waits until the folder has its rows
            known = self._find(kind, artifact.content_id)
            if known is not None:
                self.store.put(Path(folder), artifact.content_id)  # restores a stored folder that went missing
                if hub_repo and (known.hub_repo, known.hub_revision) != (hub_repo, hub_revision):
                    self._set_hub(kind, artifact.content_id, hub_repo, hub_revision)
                    return self._find(kind, artifact.content_id)  # type: ignore[return-value]
                return known
            if kind == "task" and self._find("basis", artifact.manifest["basis"]["content_id"]) is None:
                raise RegistryError(
                    f"{folder}: its basis {artifact.manifest['basis']['content_id'][:19]}... is not registered; "
                    "register the basis first"
                )
            if kind == "basis":
                self._check_basis_name(folder, artifact.manifest)
            stored = self.store.put(Path(folder), artifact.content_id)
            if kind == "task":
                # Tasks are opened from the store (a server's cold load); checking the copy now, while
                # it is a few KiB, lets the first load find it verified and its schema checked.
                read_artifact(stored, verify=True, cached=True, known=self.verified)
            created = self._insert(kind, artifact, hub_repo, hub_revision)
        entry = self.resolve(artifact.content_id, kind)
        return Entry(**{**entry.__dict__, "created": created})

    def _check_basis_name(self, folder: str | Path, manifest: dict[str, Any]) -> None:
        """A basis name names versions of one architecture's basis: ``--basis NAME`` resolves to the
        newest, so an unrelated basis under a taken name would be picked silently."""
        fingerprint = manifest["architecture"]["fingerprint"]
        with self.db.read() as session:
            taken = session.exec(
                select(Basis.version, Architecture.fingerprint, Architecture.name)
                .join(Architecture)
                .where(Basis.name == manifest["name"])
            ).all()
        other = next(((version, arch) for version, found, arch in taken if found != fingerprint), None)
        if other is not None:
            raise RegistryError(
                f"{folder}: basis name {manifest['name']!r} is taken by {manifest['name']}:{other[0]}, a basis of "
                "another layer table "
                f"({other[1]}); give this one its own name (the build's {option('name')})"
            )

    def _insert(self, kind: str, artifact: Artifact, hub_repo: str | None, hub_revision: str | None) -> bool:
        """Write the artifact's rows; ``False`` when another process registered it first."""
        manifest = artifact.manifest
        with self.db.write() as session:
            model = Basis if kind == "basis" else Task
            if session.get(model, artifact.content_id) is not None:
                return False  # another process registered it between our lookup and this transaction
            highest = session.exec(select(func.max(model.version)).where(model.name == manifest["name"])).one() or 0
            last = session.get(LastVersion, (kind, manifest["name"]))
            version = max(highest, last.version if last is not None else 0) + 1
            session.merge(LastVersion(kind=kind, name=manifest["name"], version=version))
            common = {
                "content_id": artifact.content_id,
                "name": manifest["name"],
                "version": version,
                "size_bytes": artifact.size_bytes(),
                "path": self.store.relative(artifact.content_id),
                "hub_repo": hub_repo,
                "hub_revision": hub_revision,
            }
            if kind == "basis":
                architecture = self._architecture(session, manifest)
                assert architecture.id is not None  # flushed: the row has its key
                session.add(
                    Basis(
                        **common,
                        architecture_id=architecture.id,
                        source_kind=manifest["source_kind"],
                        modes=",".join(map(str, manifest["modes"])),
                        centered=manifest["centered"],
                        dtype=manifest["dtype"],
                        ranks={entry["name"]: entry["ranks"] for entry in manifest["layers"]},
                        quality=manifest.get("quality", {}),
                    )
                )
                session.flush()
                for entry in manifest["layers"]:
                    layer = self._layer(session, architecture.id, entry["name"], entry["shape"])
                    session.add(
                        BasisLayer(
                            basis_id=artifact.content_id,
                            layer_id=layer.id,
                            ranks=entry["ranks"],
                            explained_variance=entry.get("explained_variance", {}),
                        )
                    )
                for provenance in manifest["sources"]:
                    source = self._source(session, provenance)
                    session.add(
                        BasisSource(
                            basis_id=artifact.content_id, source_id=source.id, role=provenance.get("role", "train")
                        )
                    )
            else:
                projected_from = self._source(session, manifest["source"]) if manifest.get("source") else None
                session.add(
                    Task(
                        **common,
                        basis_id=manifest["basis"]["content_id"],
                        source_id=projected_from.id if projected_from else None,
                        metrics=manifest.get("metrics", {}),
                        mean_rel_error=(manifest.get("metrics") or {}).get("mean_rel_error"),
                        lineage=manifest.get("lineage", "projected"),
                    )
                )
            session.merge(Alias(kind=kind, name=manifest["name"], alias="latest", version=version))
        return True

    @staticmethod
    def _architecture(session: Session, manifest: dict[str, Any]) -> Architecture:
        arch = manifest["architecture"]
        found = session.exec(select(Architecture).where(Architecture.fingerprint == arch["fingerprint"])).first()
        if found is None:
            base = arch.get("base_model") or {}
            found = Architecture(
                name=arch["name"],
                fingerprint=arch["fingerprint"],
                base_model_id=base.get("id"),
                base_model_revision=base.get("revision"),
            )
            session.add(found)
            session.flush()
        return found

    @staticmethod
    def _layer(session: Session, architecture_id: int, name: str, shape: list[int]) -> Layer:
        found = session.exec(select(Layer).where(Layer.architecture_id == architecture_id, Layer.name == name)).first()
        if found is None:
            found = Layer(architecture_id=architecture_id, name=name, shape="x".join(map(str, shape)))
            session.add(found)
            session.flush()
        return found

    @staticmethod
    def _source(session: Session, provenance: dict[str, Any]) -> Source:
        query = select(Source).where(
            Source.locator == provenance["id"],
            Source.revision == provenance.get("revision"),
            Source.sha256 == provenance.get("sha256"),
        )
        found = session.exec(query).first()
        if found is None:
            found = Source(
                locator=provenance["id"],
                revision=provenance.get("revision"),
                sha256=provenance.get("sha256"),
                kind=provenance.get("kind"),
            )
            session.add(found)
            session.flush()
        return found

    def _set_hub(self, kind: str, content_id: str, repo: str, revision: str | None) -> None:
        with self.db.write() as session:
            row: Basis | Task = _get(session, Basis, content_id) if kind == "basis" else _get(session, Task, content_id)
            row.hub_repo, row.hub_revision = repo, revision
            session.add(row)

    def set_hub(self, content_id: str, repo: str, revision: str) -> None:
        """Record where an artifact was pushed (location metadata, not content)."""
        for kind in KINDS:
            if self._find(kind, content_id) is not None:
                self._set_hub(kind, content_id, repo, revision)
                return
        raise ReferenceNotFoundError(f"{content_id}: not in the registry")

    # --- finding --------------------------------------------------------------------------

    def _entry(self, kind: str, row: Basis | Task) -> Entry:
        return Entry(kind, row.content_id, row.name, row.version, self.home / row.path, row.hub_repo, row.hub_revision)

    def _entry_of(self, kind: str, row: Any) -> Entry:
        """An entry from a plain row of :data:`_ENTRY_COLUMNS`."""
        content_id, name, version, path, hub_repo, hub_revision = row
        return Entry(kind, content_id, name, version, self.home / path, hub_repo, hub_revision)

    def find(self, kind: str, content_id: str) -> Entry | None:
        """The registered ``kind`` (``basis`` or ``task``) with exactly this content id, if any."""
        return self._find(kind, content_id)

    def find_by_hub(self, repo_id: str, revision: str | None = None) -> Entry | None:
        """The artifact last pulled from or pushed to ``repo_id`` (at ``revision``, when given)."""
        with self.db.read() as session:
            for kind, model in (("task", Task), ("basis", Basis)):
                query = select(model).where(model.hub_repo == repo_id)
                if revision is not None:
                    query = query.where(model.hub_revision == revision)
                row = session.exec(query.order_by(col(model.created).desc())).first()
                if row is not None:
                    return self._entry(kind, row)
        return None

    def _find(self, kind: str, content_id: str) -> Entry | None:
        with self.db.read() as session:
            row: Basis | Task | None = (
                session.get(Basis, content_id) if kind == "basis" else session.get(Task, content_id)
            )
            return None if row is None else self._entry(kind, row)

    def resolve(self, ref: str, kind: str | None = None) -> Entry:
        """Find an artifact by ``name``, ``name:version``, ``name@alias`` or content id prefix.

        Raises:
            ReferenceNotFoundError: nothing matches.
            AmbiguousReferenceError: a prefix or name matches several artifacts.
        """
        kinds = [kind] if kind else list(KINDS)
        matches: list[Entry] = []
        with self.db.rows() as query:
            for each in kinds:
                table = "basis" if each == "basis" else "task"
                found = f"SELECT {_ENTRY_COLUMNS} FROM {table} WHERE "
                if _HEX_PREFIX.match(ref):  # an id prefix, or a name that looks like one (build --out cafe01)
                    prefix = ref if ref.startswith("sha256:") else f"sha256:{ref}"
                    matches += [self._entry_of(each, r) for r in query(found + "content_id LIKE ?", (prefix + "%",))]
                if m := _NAME_VERSION.match(ref):
                    rows = query(found + "name = ? AND version = ?", (m["name"], int(m["version"])))
                elif m := _NAME_ALIAS.match(ref):
                    rows = query(
                        found + "name = ? AND version = (SELECT version FROM alias WHERE kind = ? AND name = ? "
                        "AND alias = ?)",
                        (m["name"], each, m["name"], m["alias"]),
                    )
                else:
                    rows = query(found + "name = ? ORDER BY version DESC LIMIT 1", (ref,))
                matches += [self._entry_of(each, r) for r in rows]
        matches = list({(e.kind, e.content_id): e for e in matches}.values())
        what = kind or "artifact"
        if not matches:
            raise ReferenceNotFoundError(f"{ref}: no registered {what} matches (try `unisub-hub registry list`)")
        if len(matches) > 1:
            listed = ", ".join(f"{e.kind} {e.ref} ({e.content_id[7:19]})" for e in matches[:10])
            raise AmbiguousReferenceError(
                f"{ref}: matches {len(matches)} artifacts: {listed}; give more of the content id or name:version"
            )
        return matches[0]

    def list(
        self, kind: str, *, arch: str | None = None, name: str | None = None, stale: bool = False
    ) -> builtins.list[dict[str, Any]]:
        """Registered bases, tasks or architectures, as plain dicts (newest first).

        Each task says whether its basis is ``stale``: a newer version of the basis's name is
        registered (``rebase`` moves the task onto it); ``stale=True`` lists only those.
        """
        with self.db.read() as session:
            if kind == "architectures":
                return self._list_architectures(session)
            if kind == "bases":
                return self._list_bases(session, arch, name)
            return self._list_tasks(session, arch, name, stale)

    @staticmethod
    def _list_architectures(session: Session) -> builtins.list[dict[str, Any]]:
        rows = session.exec(select(Architecture).order_by(col(Architecture.name))).all()
        return [
            {
                "name": a.name,
                "fingerprint": a.fingerprint,
                "base_model": a.base_model_id,
                "bases": session.exec(
                    select(func.count()).select_from(Basis).where(Basis.architecture_id == a.id)
                ).one(),
            }
            for a in rows
        ]

    def _list_bases(self, session: Session, arch: str | None, name: str | None) -> builtins.list[dict[str, Any]]:
        query = select(Basis, Architecture).join(Architecture)
        if arch:
            query = query.where(Architecture.name == arch)
        if name:
            query = query.where(Basis.name == name)
        rows = session.exec(query.order_by(col(Basis.created).desc(), col(Basis.version).desc())).all()
        return [
            {
                **self._entry("basis", b).to_dict(),
                "architecture": a.name,
                "modes": b.modes,
                "size_bytes": b.size_bytes,
                "created": b.created,
            }
            for b, a in rows
        ]

    def _list_tasks(
        self, session: Session, arch: str | None, name: str | None, stale: bool
    ) -> builtins.list[dict[str, Any]]:
        # One query for every column a listing shows (SQLAlchemy's select: more columns than
        # sqlmodel's types spell out).
        columns = (
            Task.content_id,
            Task.name,
            Task.version,
            Task.path,
            Task.hub_repo,
            Task.hub_revision,
            Task.size_bytes,
            Task.mean_rel_error,
            Task.lineage,
            Task.created,
            Basis.name,
            Basis.version,
            Architecture.name,
        )
        query = (
            sa_select(*map(col, columns)).join(Basis, col(Task.basis_id) == col(Basis.content_id)).join(Architecture)
        )
        if arch:
            query = query.where(col(Architecture.name) == arch)
        if name:
            query = query.where(col(Task.name) == name)
        rows = session.execute(query.order_by(col(Task.created).desc(), col(Task.version).desc())).all()
        newest = dict(session.exec(select(Basis.name, func.max(Basis.version)).group_by(col(Basis.name))).all())
        tasks = [
            {
                "kind": "task",
                "content_id": cid,
                "name": task_name,
                "version": version,
                "path": str(self.home / path),
                "hub_repo": repo,
                "hub_revision": revision,
                "basis": f"{basis_name}:{basis_version}",
                "architecture": arch_name,
                "size_bytes": size,
                "mean_rel_error": error,
                "lineage": lineage,
                "created": created,
                "newest_basis": f"{basis_name}:{newest[basis_name]}",
                "stale": basis_version < newest[basis_name],
            }
            for (
                cid,
                task_name,
                version,
                path,
                repo,
                revision,
                size,
                error,
                lineage,
                created,
                basis_name,
                basis_version,
                arch_name,
            ) in rows
        ]
        return [task for task in tasks if task["stale"]] if stale else tasks

    def show(self, ref: str) -> dict[str, Any]:
        """Everything known of one artifact: row, aliases, tags, lineage."""
        entry = self.resolve(ref)
        with self.db.read() as session:
            aliases = [
                a.alias
                for a in session.exec(
                    select(Alias).where(
                        Alias.kind == entry.kind, Alias.name == entry.name, Alias.version == entry.version
                    )
                ).all()
            ]
            tags = {t.key: t.value for t in session.exec(select(Tag).where(Tag.content_id == entry.content_id)).all()}
            out: dict[str, Any] = {**entry.to_dict(), "aliases": sorted(aliases), "tags": tags}
            out["evaluations"] = self.evaluations(entry.content_id, session=session)
            if entry.kind == "basis":
                basis = _get(session, Basis, entry.content_id)
                out["architecture"] = _get(session, Architecture, basis.architecture_id).name
                out.update(
                    modes=basis.modes,
                    centered=basis.centered,
                    dtype=basis.dtype,
                    size_bytes=basis.size_bytes,
                    ranks=basis.ranks,
                )
                out["sources"] = self.sources_of(entry.content_id, session=session)
                out["tasks"] = [
                    f"{t.name}:{t.version}"
                    for t in session.exec(select(Task).where(Task.basis_id == entry.content_id)).all()
                ]
            else:
                task = _get(session, Task, entry.content_id)
                basis = _get(session, Basis, task.basis_id)
                out.update(
                    basis={"content_id": basis.content_id, "ref": f"{basis.name}:{basis.version}"},
                    size_bytes=task.size_bytes,
                    metrics=task.metrics,
                )
                source = session.get(Source, task.source_id) if task.source_id else None
                out["source"] = (
                    None
                    if source is None
                    else {"locator": source.locator, "revision": source.revision, "sha256": source.sha256}
                )
        return out

    def sources_of(self, content_id: str, *, session: Session | None = None) -> builtins.list[dict[str, Any]]:
        """Which sources built a basis (lineage)."""

        def query(s: Session) -> builtins.list[dict[str, Any]]:
            rows = s.exec(select(Source, BasisSource).join(BasisSource).where(BasisSource.basis_id == content_id)).all()
            return [
                {"locator": src.locator, "revision": src.revision, "sha256": src.sha256, "role": link.role}
                for src, link in rows
            ]

        if session is not None:
            return query(session)
        with self.db.read() as s:
            return query(s)

    def tasks_of(self, basis_ref: str) -> builtins.list[Entry]:
        """Which tasks use a basis."""
        basis = self.resolve(basis_ref, "basis")
        with self.db.read() as session:
            return [
                self._entry("task", t)
                for t in session.exec(
                    select(Task).where(Task.basis_id == basis.content_id).order_by(Task.name, Task.version)
                ).all()
            ]

    def bases_built_from(self, locator: str) -> builtins.list[Entry]:
        """Which bases a source took part in."""
        with self.db.read() as session:
            rows = session.exec(select(Basis).join(BasisSource).join(Source).where(Source.locator == locator)).all()
            return [self._entry("basis", b) for b in rows]

    # --- changing -------------------------------------------------------------------------

    def alias(self, name: str, version: int, alias: str, *, kind: str | None = None) -> Entry:
        """Point ``name@alias`` at ``name:version`` (moving it if it pointed elsewhere)."""
        entry = self.resolve(f"{name}:{version}", kind)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", alias) or alias.isdigit():
            raise RegistryError(f"alias {alias!r} must be letters, digits, '.', '_' or '-', and not a number")
        with self.db.write() as session:
            session.merge(Alias(kind=entry.kind, name=name, alias=alias, version=version))
        return entry

    def tag(self, ref: str, key: str, value: str) -> Entry:
        entry = self.resolve(ref)
        with self.db.write() as session:
            session.merge(Tag(content_id=entry.content_id, key=key, value=value))
        return entry

    def remove(self, ref: str, *, force: bool = False) -> builtins.list[Entry]:
        """Remove an artifact (rows, then folder). A basis with tasks needs ``force``, which removes them too."""
        entry = self.resolve(ref)
        removed = [entry]
        with self.db.write() as session:
            if entry.kind == "basis":
                tasks = session.exec(select(Task).where(Task.basis_id == entry.content_id)).all()
                if tasks and not force:
                    names = ", ".join(f"{t.name}:{t.version}" for t in tasks[:5])
                    raise DependencyError(
                        f"{entry.ref}: {len(tasks)} task(s) use this basis "
                        f"({names}{', ...' if len(tasks) > 5 else ''}); pass {option('force')} to remove them too"
                    )
                for task in tasks:
                    removed.append(self._entry("task", task))
                    self._delete_rows(session, "task", task)
            row: Basis | Task = (
                _get(session, Basis, entry.content_id)
                if entry.kind == "basis"
                else _get(session, Task, entry.content_id)
            )
            self._delete_rows(session, entry.kind, row)
        for gone in removed:
            self.store.remove(gone.content_id)
        return removed

    @staticmethod
    def _delete_rows(session: Session, kind: str, row: Basis | Task) -> None:
        # A basis's layer and source links go with its row: their foreign keys are ON DELETE CASCADE
        # (and the connection turns foreign keys on). Tags and aliases name rows of either kind: by hand.
        for tag in session.exec(select(Tag).where(Tag.content_id == row.content_id)).all():
            session.delete(tag)
        for score in session.exec(select(Evaluation).where(Evaluation.content_id == row.content_id)).all():
            session.delete(score)
        alias_rows = session.exec(
            select(Alias).where(Alias.kind == kind, Alias.name == row.name, Alias.version == row.version)
        ).all()
        for alias in alias_rows:
            session.delete(alias)
        session.delete(row)
        session.flush()
        if any(a.alias == "latest" for a in alias_rows):
            model = Basis if kind == "basis" else Task
            newest = session.exec(select(func.max(model.version)).where(model.name == row.name)).one()
            if newest:
                session.merge(Alias(kind=kind, name=row.name, alias="latest", version=newest))

    # --- evaluations -----------------------------------------------------------------------

    def record_evaluation(
        self,
        content_id: str,
        *,
        data_sha256: str,
        data_name: str,
        objective: str,
        metrics: dict[str, float],
        count: int,
        command: str | None = None,
    ) -> int:
        """Record the scores of a registered artifact on one data file (one row per metric).

        Returns:
            The number of rows written (0 for a read-only registry, which cannot record).

        Raises:
            ReferenceNotFoundError: no registered basis or task has this content id.
        """
        kind = next((k for k in KINDS if self._find(k, content_id) is not None), None)
        if kind is None:
            raise ReferenceNotFoundError(f"{content_id}: not in the registry")
        if self.read_only:
            return 0
        with self.db.write() as session:
            for metric, value in metrics.items():
                session.add(
                    Evaluation(
                        content_id=content_id,
                        kind=kind,
                        data_sha256=data_sha256,
                        data_name=data_name,
                        objective=objective,
                        metric=metric,
                        value=float(value),
                        count=count,
                        command=command,
                    )
                )
        return len(metrics)

    def evaluations(self, content_id: str, *, session: Session | None = None) -> builtins.list[dict[str, Any]]:
        """Every score recorded for an artifact, oldest first."""

        def query(s: Session) -> builtins.list[dict[str, Any]]:
            rows = s.exec(
                select(Evaluation).where(Evaluation.content_id == content_id).order_by(col(Evaluation.id))
            ).all()
            return [row.model_dump(exclude={"id", "content_id"}) for row in rows]

        if session is not None:
            return query(session)
        with self.db.read() as opened:
            return query(opened)

    def known_ids(self) -> set[str]:
        with self.db.read() as session:
            return set(session.exec(select(Basis.content_id)).all()) | set(session.exec(select(Task.content_id)).all())

    def gc(self, *, force: bool = False) -> builtins.list[Path]:
        """Remove store folders that no row refers to (left by crashes or interrupted copies).

        It holds the store's lock exclusively, so a folder being placed by ``add`` in another
        process is never taken for garbage.

        Raises:
            RegistryError: the database lists nothing while the store holds artifacts (a lost
                or replaced database: removing them would lose every artifact), unless ``force``.
        """
        with self.store.lease(exclusive=True):
            known = self.known_ids()
            garbage = self.store.garbage(known)
            stored = [folder for folder in garbage if not folder.name.startswith(".")]
            if not known and stored and not force:
                raise RegistryError(
                    f"{self.home / 'registry.db'}: the registry lists nothing but the store holds {len(stored)} "
                    "artifact(s); "
                    "if the database was lost, register them again with `unisub-hub registry add` of the store folders "
                    f"(or run gc with {option('force')} to delete them)"
                )
            for folder in garbage:
                self.store.remove(folder.name)
            leftovers = sorted((self.home / DOWNLOADS).iterdir()) if (self.home / DOWNLOADS).is_dir() else []
            for folder in leftovers:  # pulls killed midway (a live pull holds the shared lease)
                shutil.rmtree(folder, ignore_errors=True)
        return garbage + leftovers

    def verify(self) -> dict[str, Any]:
        """Re-hash every stored artifact; report rows whose folder is missing or changed."""
        problems: builtins.list[dict[str, str]] = []
        checked = 0
        with self.db.read() as session:
            rows = [("basis", b) for b in session.exec(select(Basis)).all()] + [
                ("task", t) for t in session.exec(select(Task)).all()
            ]
        for kind, row in rows:
            folder = self.home / row.path
            checked += 1
            try:
                artifact = read_artifact(folder, verify=True, known=self.verified)
                if artifact.content_id != row.content_id:
                    raise ContentIdMismatchError(
                        f"manifest names {artifact.content_id}, registry row {row.content_id}", path=folder
                    )
                check_tensor_table(artifact)
            except FormatError as error:
                problems.append(
                    {
                        "kind": kind,
                        "ref": f"{row.name}:{row.version}",
                        "content_id": row.content_id,
                        "problem": str(error),
                    }
                )
        unreferenced = [str(p) for p in self.store.garbage({row.content_id for _, row in rows})]
        return {"checked": checked, "problems": problems, "unreferenced_folders": unreferenced, "ok": not problems}
