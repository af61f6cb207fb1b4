"""The web view's pages and JSON against the registry they show (in process, through the ASGI app)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from fastapi.testclient import TestClient
from web_registry import HOSTILE, make_site

from unisub_hub.registry import Registry
from unisub_hub.web import create_app


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def client(site):
    home, _ = site
    with TestClient(create_app(home)) as test_client:
        yield test_client


def test_the_front_page_lists_every_artifact_with_counts_and_filters(client, site):
    _, facts = site
    front = client.get("/api/front").json()
    assert front["counts"] == {"bases": 2, "tasks": 5}
    assert {t["ref"] for t in front["tasks"]} == {"alpha:1", "beta:1", "blend:1", "hostile:1", "alpha-moved:1"}
    assert {t["name"]: t["lineage"] for t in front["tasks"]} == {
        "alpha": "projected",
        "beta": "projected",
        "blend": "merged",
        "hostile": "projected",
        "alpha-moved": "rebased",
    }
    assert front["sizes"]["tasks"] == sum(t["size_bytes"] for t in front["tasks"])
    assert all("path" not in row for row in front["tasks"] + front["bases"])  # no path of this machine
    stale = {t["name"] for t in front["tasks"] if t["stale"]}
    assert stale == {"alpha", "beta", "blend", "hostile"}  # zb:2 came after them
    merged = client.get("/api/front", params={"lineage": "merged"}).json()
    assert [t["name"] for t in merged["tasks"]] == ["blend"] and merged["bases"] == []
    named = client.get("/api/front", params={"name": "ALPHA"}).json()
    assert {t["name"] for t in named["tasks"]} == {"alpha", "alpha-moved"}
    html = client.get("/", params={"lineage": "rebased"}).text
    assert "alpha-moved:1" in html and "blend:1" not in html


def test_a_basis_page_shows_layers_spectra_null_versions_and_tasks(client, site):
    _, facts = site
    page = client.get("/api/basis/zb:1").json()
    assert page["content_id"] == facts["zb1"]
    manifest = facts["manifest_b1"]
    assert [layer["name"] for layer in page["layers"]] == [entry["name"] for entry in manifest["layers"]]
    for layer, entry in zip(page["layers"], manifest["layers"], strict=True):
        assert layer["ranks"] == entry["ranks"] and layer["explained_variance"] == entry["explained_variance"]
        for mode, values in layer["spectra"].items():  # the stored spectrum gives the stored explained variance
            k = entry["ranks"][mode]
            energy = [v * v for v in values]
            assert sum(energy[:k]) / sum(energy) == pytest.approx(entry["explained_variance"][mode], abs=1e-5)
    assert [v["ref"] for v in page["versions"]] == ["zb:2", "zb:1"]
    assert {t["name"] for t in page["tasks"]} == {"alpha", "beta", "blend", "hostile"} and page["stale_tasks"] == 4
    assert {s["role"] for s in page["sources"]} == {"train"} and len(page["sources"]) == 4
    html = client.get("/basis/zb:1").text
    assert html.count("<svg") == sum(len(layer["spectra"]) for layer in page["layers"]) > 0
    assert 'href="/task/blend:1"' in html and 'href="/basis/zb:2"' in html


def test_a_task_page_shows_lineage_links_evaluations_files_and_commands(client, site):
    _, facts = site
    alpha = client.get("/api/task/alpha").json()
    assert alpha["content_id"] == facts["alpha"] and alpha["lineage"] == "projected"
    assert [(e["metric"], e["value"]) for e in alpha["evaluations"]] == [("accuracy", 0.875), ("loss", 0.3125)]
    assert {f["name"] for f in alpha["files"]} >= {"unisub_coefficients.json", "coefficients.safetensors"}
    stored = Registry(site[0]).resolve("alpha", "task").path
    for entry in alpha["files"]:  # sizes and hashes of the files as stored
        data = (stored / entry["name"]).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    blend = client.get("/api/task/blend").json()
    merged_from = [link for link in blend["links"] if link["relation"].startswith("merged from")]
    assert [link["href"] for link in merged_from] == [["task", "alpha:1"], ["task", "beta:1"]]
    assert blend["merge"]["method"] == "linear"
    moved = client.get("/api/task/alpha-moved").json()
    assert {"relation": "rebased from", "label": "alpha:1", "href": ["task", "alpha:1"]} in moved["links"]
    assert moved["links"][0] == {"relation": "basis", "label": "zb:2", "href": ["basis", "zb:2"]}
    html = client.get("/task/blend:1").text
    assert 'href="/task/alpha:1"' in html and 'href="/task/beta:1"' in html
    assert "unisub-hub materialize blend:1" in html and "--task blend=blend:1" in html


def test_markup_in_a_card_is_shown_as_text(client):
    html = client.get("/task/hostile").text
    assert HOSTILE not in html and "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html


@pytest.mark.parametrize(
    "path",
    [
        "/basis/nothing",
        "/task/zb:1",
        "/api/task/nothing",
        "/nowhere",
        "/../../etc/passwd",
        "/basis/..%2F..%2Fetc%2Fpasswd",
        "/static/../../../etc/passwd",
        "/task/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_what_does_not_exist_is_404_and_no_file_is_served(client, path):
    answer = client.get(path)
    assert answer.status_code == 404 and "root:" not in answer.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_every_write_is_405(client, method):
    for path in ("/", "/api/front", "/task/alpha", "/anything"):
        answer = client.request(method, path)
        assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"


def test_no_page_links_outside_the_site_or_loads_a_remote_asset(client):
    for path in ("/", "/basis/zb:1", "/task/blend:1"):
        html = client.get(path).text
        assert not re.search(r'(src|href)="(https?:)?//', html)


def test_export_writes_every_page_and_refuses_a_used_folder(site, tmp_path):
    from click.testing import CliRunner

    from unisub_hub.cli import cli

    home, _ = site
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    refused = CliRunner().invoke(cli, ["--home", str(home), "web", "--export", str(used)])
    assert refused.exit_code == 2 and "--export" in refused.output and (used / "keep.txt").read_text() == "mine"
    done = CliRunner().invoke(cli, ["--home", str(home), "web", "--export", str(tmp_path / "site"), "--json"])
    assert done.exit_code == 0, done.output
    site_folder = tmp_path / "site"
    assert json.loads(done.stdout)["pages"] == 1 + 2 + 5
    assert {p.name for p in site_folder.glob("*.html")} == {
        "index.html",
        "basis-zb-1.html",
        "basis-zb-2.html",
        *(f"task-{name}-1.html" for name in ("alpha", "beta", "blend", "hostile", "alpha-moved")),
    }
    for page in site_folder.glob("*.html"):  # every link of the export is to a page of the export
        for target in re.findall(r'href="([^"#?]+)"', page.read_text()):
            assert target == "data:," or (site_folder / target).is_file(), (page.name, target)
    assert json.loads((site_folder / "api" / "task-blend-1.json").read_text())["lineage"] == "merged"
