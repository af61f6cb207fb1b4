"""A local, in-memory, Hugging Face Hub-compatible HTTP server for offline tests and demos.

It implements the subset of the Hub API that ``huggingface_hub`` (2.x) uses to create model
repos, commit files, tag, list and download them: enough for ``create_repo``,
``create_commit``/``upload_folder``, ``create_tag``, ``list_repo_refs``, ``repo_info``,
``list_repo_files``, ``hf_hub_download`` and ``snapshot_download``. Uploads are always
answered ``regular`` (base64 in the commit), so no LFS or Xet server is needed.

Example:
    >>> with LocalHub() as hub, hub.activate():
    ...     HfApi().create_repo("me/basis")   # huggingface_hub and unisub-hub talk to the local Hub

Run it alone with ``python -m unisub_hub.testing.hub --port 8765``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHub", "RequestRecord"]


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    oid: str
    files: dict[str, bytes]
    message: str
    parent: str | None
    created: float


@dataclass
class _Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    pulls: int = 0

    def resolve(self, revision: str) -> _Commit | None:
        oid = self.branches.get(revision) or self.tags.get(revision) or (revision if revision in self.commits else None)
        return self.commits.get(oid) if oid else None


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (tests count downloads with these)."""

    method: str
    path: str
    status: int
    bytes_sent: int


_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")

_FAULTS = {"cut-download", "drop-commit", "garbage-commit"}


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class LocalHub:
    """An in-memory Hub on ``127.0.0.1``; a context manager that starts and stops it.

    Args:
        port: 0 picks a free port.
        token: when set, writes need ``Authorization: Bearer <token>``, and so do reads of
            private repos.
    """

    def __init__(self, port: int = 0, *, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, _Repo] = {}
        self.requests: list[RequestRecord] = []
        self.faults: list[str] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}" if isinstance(host, str) else f"http://{host.decode()}:{port}"

    def start(self) -> LocalHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextmanager
    def activate(self) -> Iterator[LocalHub]:
        """Point this process (``huggingface_hub`` and unisub-hub) at this server for the block.

        ``huggingface_hub`` reads its settings once, at import, into ``huggingface_hub.constants``;
        this sets ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` (for child processes) and patches
        those constants (for this one), and puts both back afterwards.
        """
        from huggingface_hub import constants

        from ..hf import endpoint_settings

        patched = {**endpoint_settings(self.url), "HF_HUB_DISABLE_XET": True}
        saved = {name: getattr(constants, name) for name in patched}
        saved_env = {key: os.environ.get(key) for key in ("HF_ENDPOINT", "HF_HUB_DISABLE_XET")}
        os.environ.update(HF_ENDPOINT=self.url, HF_HUB_DISABLE_XET="1")
        for name, value in patched.items():
            setattr(constants, name, value)
        try:
            yield self
        finally:
            for name, value in saved.items():
                setattr(constants, name, value)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # --- helpers for tests ---------------------------------------------------------------

    def bytes_downloaded(self, repo_id: str | None = None) -> int:
        """Bytes sent by ``GET .../resolve/...`` (file downloads), for one repo or all."""
        prefix = f"/{repo_id}/resolve/" if repo_id else None
        return sum(
            r.bytes_sent
            for r in self.requests
            if r.method == "GET" and "/resolve/" in r.path and (prefix is None or r.path.startswith(prefix))
        )

    def fail_next(self, fault: str, times: int = 1) -> None:
        """Misbehave on the next ``times`` requests the fault applies to.

        ``"cut-download"``: a file download stops half-way and the connection closes;
        ``"drop-commit"``: a commit closes the connection without an answer (a server dying
        mid-push; nothing is committed); ``"garbage-commit"``: a commit answers 200 with a
        body that is not JSON (a proxy's error page; nothing is committed).
        """
        if fault not in _FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {sorted(_FAULTS)}")
        self.faults.extend([fault] * times)

    def _take_fault(self, fault: str) -> bool:
        with self._lock:
            if fault in self.faults:
                self.faults.remove(fault)
                return True
            return False

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace a file's bytes in place, keeping the commit id (a corrupted mirror)."""
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            assert commit is not None
            commit.files[path] = data

    # --- repository operations -----------------------------------------------------------

    def _new_oid(self, seed: str) -> str:
        self._counter += 1
        return hashlib.sha1(f"{seed}\0{self._counter}\0{time.time_ns()}".encode()).hexdigest()

    def create_repo(self, repo_id: str, private: bool) -> tuple[_Repo, bool]:
        with self._lock:
            if repo_id in self.repos:
                return self.repos[repo_id], False
            repo = _Repo(repo_id, private)
            initial = _Commit(
                self._new_oid(repo_id),
                {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                "initial commit",
                None,
                time.time(),
            )
            repo.commits[initial.oid] = initial
            repo.branches["main"] = initial.oid
            self.repos[repo_id] = repo
            return repo, True

    def commit(
        self, repo: _Repo, revision: str, lines: list[dict[str, Any]], create_pr: bool
    ) -> tuple[str, str | None]:
        with self._lock:
            head = repo.resolve(revision)
            if head is None:
                raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if revision not in repo.branches and not create_pr:
                raise _HubError(400, f"Cannot commit to {revision}: not a branch")
            files = dict(head.files)
            summary = ""
            for line in lines:
                key, value = line.get("key"), line.get("value", {})
                if key == "header":
                    summary = value.get("summary", "")
                    parent = value.get("parentCommit")
                    if parent and parent != head.oid:
                        raise _HubError(412, "A commit has happened since the parent commit")
                elif key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    path = value["path"].rstrip("/")
                    for name in [n for n in files if n == path or n.startswith(path + "/")]:
                        del files[name]
                elif key == "lfsFile":
                    raise _HubError(400, "this local Hub accepts regular uploads only")
            commit = _Commit(self._new_oid(repo.repo_id + summary), files, summary, head.oid, time.time())
            repo.commits[commit.oid] = commit
            pr_url = None
            if create_pr:
                repo.pulls += 1
                repo.branches[f"refs/pr/{repo.pulls}"] = commit.oid
                pr_url = f"{self.url}/{repo.repo_id}/discussions/{repo.pulls}"
            else:
                repo.branches[revision] = commit.oid
            return commit.oid, pr_url


class _Handler(BaseHTTPRequestHandler):
    """The Hub's HTTP API, as much of it as ``huggingface_hub`` uses; ``hub`` is set per server."""

    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "unisub-local-hub/1"

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr logging
        return

    # --- plumbing ----------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
    ) -> None:
        self.send_response(status)
        all_headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        for key, value in all_headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        self.hub.requests.append(
            RequestRecord(self.command, urlsplit(self.path).path, status, 0 if head else len(body))
        )

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, error: _HubError, *, head: bool = False) -> None:
        headers = {"X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        self._send(error.status, b"" if head else json.dumps({"error": error.message}).encode(), headers, head=head)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.hub.token is None or self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise _HubError(401, "Invalid username or password.")

    def _repo(self, repo_id: str) -> _Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise _HubError(404 if self.hub.token is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _commit(self, repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _dispatch(self, head: bool = False) -> None:
        split = urlsplit(self.path)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        try:
            self._route(self.command, parts, query, head)
        except _HubError as error:
            self._error(error, head=head)

    do_GET = lambda self: self._dispatch()  # noqa: E731
    do_POST = lambda self: self._dispatch()  # noqa: E731
    do_DELETE = lambda self: self._dispatch()  # noqa: E731
    do_HEAD = lambda self: self._dispatch(head=True)  # noqa: E731

    # --- routes --------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], query: dict[str, str], head: bool) -> None:
        if parts[:2] == ["api", "repos"] and method == "POST" and parts[2:] == ["create"]:
            return self._create_repo()
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        if parts[:2] == ["api", "whoami-v2"]:
            if not self._authorized() or self.headers.get("Authorization") is None:
                raise _HubError(401, "Invalid credentials in Authorization header")
            return self._json(
                200, {"type": "user", "name": "local-user", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
            )
        if parts == ["api", "models"] and method == "GET":
            return self._json(200, self._listing(self._query_lists()))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._repo_route(method, self._repo(f"{parts[2]}/{parts[3]}"), parts[4:], query)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo(f"{parts[0]}/{parts[1]}")
            return self._resolve(repo, parts[3], "/".join(parts[4:]), head)
        raise _HubError(404, f"no route for {method} /{'/'.join(parts)}")

    def _repo_route(self, method: str, repo: _Repo, rest: list[str], query: dict[str, str]) -> None:
        """``/api/models/{repo_id}/...``."""
        if method == "GET" and not rest:
            return self._info(repo, "main", query)
        if method == "GET" and rest[:1] == ["revision"]:
            return self._info(repo, "/".join(rest[1:]), query)
        if method == "GET" and rest[:1] == ["tree"]:
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if method == "GET" and rest == ["refs"]:
            return self._json(
                200,
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": o}
                        for n, o in repo.branches.items()
                        if not n.startswith("refs/pr/")
                    ],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": o} for n, o in repo.tags.items()],
                    "converts": [],
                    "pullRequests": [
                        {"name": n, "ref": n, "targetCommit": o}
                        for n, o in repo.branches.items()
                        if n.startswith("refs/pr/")
                    ],
                },
            )
        if method == "POST" and rest[:1] == ["preupload"]:
            return self._preupload(repo, "/".join(rest[1:]))
        if method == "POST" and rest[:1] == ["commit"]:
            return self._commit_route(repo, "/".join(rest[1:]), query)
        if method == "POST" and rest[:1] == ["tag"]:
            return self._tag(repo, "/".join(rest[1:]))
        if method == "POST" and rest[:1] == ["branch"]:
            return self._branch(repo, "/".join(rest[1:]))
        raise _HubError(404, f"no route for {method} /api/models/{repo.repo_id}/{'/'.join(rest)}")

    def _query_lists(self) -> dict[str, list[str]]:
        """The query string with repeated keys kept (``filter=a&filter=b``, ``expand=...``)."""
        return parse_qs(urlsplit(self.path).query)

    def _listing(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """``GET /api/models`` as the Hub answers it: every filter a tag the repo has (its card's
        tags, library and ``base_model:[relation:]ID``), ``author`` its namespace, ``search`` a
        case-insensitive part of its id; ``sort`` orders largest first and ``limit`` cuts;
        ``expand`` picks the fields, ``cardData`` adds the card's."""
        wanted = query.get("filter", [])
        author, search = (query.get("author") or [""])[-1], (query.get("search") or [""])[-1].lower()
        expand = set(query.get("expand", []))
        rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for repo_id, repo in sorted(self.hub.repos.items()):
            commit = repo.resolve("main")
            if commit is None or (repo.private and not self._authorized()):
                continue
            card = _card_data(commit.files.get("README.md", b""))
            tags = _hub_tags(card)
            if not set(wanted) <= set(tags) or (author and not repo_id.startswith(author + "/")):
                continue
            if search and search not in repo_id.lower():
                continue
            full: dict[str, Any] = {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "private": repo.private,
                "tags": tags,
                "library_name": card.get("library_name"),
                "downloads": sum(
                    1 for r in self.hub.requests if r.method == "GET" and r.path.startswith(f"/{repo_id}/resolve/")
                ),
                "likes": 0,
                "sha": commit.oid,
                "usedStorage": sum(len(data) for data in commit.files.values()),
                "cardData": card,
                "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created)),
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created)),
            }
            keep = expand or {"_id", "id", "modelId", "private", "tags", "library_name", "downloads", "likes"}
            if (query.get("cardData") or ["false"])[-1].lower() in ("1", "true"):
                keep = keep | {"cardData"}
            rows.append((full, {key: value for key, value in full.items() if key in keep | {"_id", "id"}}))
        order = (query.get("sort") or [""])[-1]
        if order in ("downloads", "likes", "createdAt", "lastModified"):  # the Hub sorts these largest first
            rows.sort(key=lambda pair: pair[0].get(order) or 0, reverse=True)
        limit = (query.get("limit") or [""])[-1]
        return [shown for _, shown in rows][: int(limit) if limit.isdigit() else None]

    def _create_repo(self) -> None:
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        name, org = payload.get("name"), payload.get("organization") or "local-user"
        repo_id = f"{org}/{name}"
        private = payload.get("private") or payload.get("visibility") == "private"
        _, created = self.hub.create_repo(repo_id, bool(private))
        url = f"{self.hub.url}/{repo_id}"
        if not created:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _info(self, repo: _Repo, revision: str, query: dict[str, str]) -> None:
        commit = self._commit(repo, revision)
        blobs = query.get("blobs") in ("1", "true", "True")  # files_metadata=True: sizes, blob ids, LFS hashes

        def sibling(name: str, data: bytes) -> dict[str, Any]:
            entry: dict[str, Any] = {"rfilename": name, "size": len(data)}
            if blobs:
                entry["blobId"] = _git_blob_oid(data)
                if name.endswith(_LFS_SUFFIXES):  # the Hub's .gitattributes sends these through LFS
                    entry["lfs"] = {
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    }
            return entry

        self._json(
            200,
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "siblings": [sibling(name, data) for name, data in sorted(commit.files.items())],
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created)),
            },
        )

    def _tree(self, repo: _Repo, revision: str, path: str, query: dict[str, str]) -> None:
        commit = self._commit(repo, revision)
        recursive = query.get("recursive") in ("1", "true", "True")
        prefix = f"{path.rstrip('/')}/" if path else ""
        entries, folders = [], set()
        for name, data in sorted(commit.files.items()):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            if recursive:
                for depth in range(1, rest.count("/") + 1):
                    folders.add(prefix + "/".join(rest.split("/")[:depth]))
            entries.append({"type": "file", "path": name, "size": len(data), "oid": _git_blob_oid(data)})
        entries += [
            {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0}
            for f in sorted(folders)
        ]
        if path and not entries:
            raise _HubError(404, f"{path} does not exist", "EntryNotFound")
        self._json(200, entries)

    def _preupload(self, repo: _Repo, revision: str) -> None:
        self._require_write()
        commit = repo.resolve(revision)
        payload = json.loads(self._body() or b"{}")
        files = []
        for item in payload.get("files", []):
            existing = commit.files.get(item["path"]) if commit else None
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": _git_blob_oid(existing) if existing is not None else None,
                }
            )
        self._json(200, {"files": files, "commitOid": commit.oid if commit else None})

    def _commit_route(self, repo: _Repo, revision: str, query: dict[str, str]) -> None:
        self._require_write()
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if self.hub._take_fault("drop-commit"):
            self.close_connection = True
            return
        if self.hub._take_fault("garbage-commit"):
            return self._send(200, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})
        oid, pr_url = self.hub.commit(repo, revision, lines, create_pr=query.get("create_pr") == "1")
        self._json(
            200,
            {
                "commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": pr_url,
                "success": True,
            },
        )

    def _tag(self, repo: _Repo, revision: str) -> None:
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        commit = self._commit(repo, revision)
        tag = payload.get("tag")
        if not tag:
            raise _HubError(400, "missing tag name")
        if tag in repo.tags:
            raise _HubError(409, f"tag {tag} already exists")
        repo.tags[tag] = commit.oid
        self._json(200, {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit.oid})

    def _branch(self, repo: _Repo, branch: str) -> None:
        self._require_write()
        payload = json.loads(self._body() or b"{}")
        if branch in repo.branches:
            raise _HubError(409, f"branch {branch} already exists")
        start = self._commit(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        self._json(200, {"name": branch})

    def _resolve(self, repo: _Repo, revision: str, path: str, head: bool) -> None:
        commit = self._commit(repo, revision)
        data = commit.files.get(path)
        if data is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": etag,
            "Accept-Ranges": "bytes",
        }
        if not head and self.hub._take_fault("cut-download"):
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if not head and (requested := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")):
            start = int(requested[1])
            stop = min(int(requested[2]) + 1 if requested[2] else len(data), len(data))
            if start < len(data):  # a partial read (safetensors headers are read this way): only those bytes travel
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
                return self._send(206, data[start:stop], headers)
        self._send(200, data, headers, head=head)


def _card_data(readme: bytes) -> dict[str, Any]:
    """A README's YAML front matter, as the Hub reads it (empty when there is none or it is broken)."""
    from huggingface_hub import ModelCard

    try:
        return ModelCard(readme.decode("utf-8", errors="replace")).data.to_dict()
    except Exception:  # the Hub lists a repo with an unreadable card, without card data
        return {}


def _hub_tags(card: dict[str, Any]) -> list[str]:
    """The tags the Hub gives a repo from its card: its own, its library, and the model tree's
    ``base_model:ID`` and ``base_model:RELATION:ID``."""
    tags = [str(tag) for tag in card.get("tags") or []]
    if card.get("library_name"):
        tags.append(str(card["library_name"]))
    bases = card.get("base_model") or []
    relation = card.get("base_model_relation")
    for base in [bases] if isinstance(bases, str) else bases:
        tags.append(f"base_model:{base}")
        if relation:
            tags.append(f"base_model:{relation}:{base}")
    return list(dict.fromkeys(tags))


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"hub": hub})


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run a local Hugging Face Hub-compatible server (in memory).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default=None, help="Require this bearer token for writes and private reads.")
    args = parser.parse_args()
    hub = LocalHub(args.port, token=args.token)
    print(f"local Hub at {hub.url} (export HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1); Ctrl-C stops it", flush=True)
    try:
        hub._server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
