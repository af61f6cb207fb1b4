"""A classification server as a real process: served logits equal transformers + peft on the
materialized adapters (single-task, mixed and concurrent requests); tasks loaded, unloaded and
bounded; every error a JSON body with its status."""

from __future__ import annotations

import threading

import httpx
import pytest
from live_server import Server
from serve_zoos import TEXTS, classify_zoo, close, reference_logits

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return classify_zoo(tmp_path_factory.mktemp("serve-cls"))


def test_served_logits_equal_transformers_and_peft(zoo):
    with Server(
        zoo["basis"],
        "--base",
        zoo["base"],
        "--task",
        "a=task-a",
        "--task",
        f"b={zoo['root'] / 'task-b'}",
        home=zoo["home"],
    ) as server:
        single = httpx.post(server.url + "/v1/classify", json={"task": "a", "inputs": TEXTS}, timeout=60).json()
        assert [r["task"] for r in single["results"]] == ["a"] * 4
        assert close([r["logits"] for r in single["results"]], reference_logits(zoo, "task-a", TEXTS))
        assert all(
            r["label"] == f"LABEL_{r['label_id']}" and abs(sum(r["scores"]) - 1) < 1e-5 for r in single["results"]
        )
        rows = [{"task": "a" if i % 2 else "b", "text": text} for i, text in enumerate(TEXTS)]
        mixed = httpx.post(server.url + "/v1/classify", json={"inputs": rows}, timeout=60).json()["results"]
        for i, result in enumerate(mixed):
            task = "task-a" if i % 2 else "task-b"
            assert result["task"] == rows[i]["task"] and close(
                [result["logits"]], reference_logits(zoo, task, [TEXTS[i]])
            )
        # concurrent clients, each with its own task and text: every answer is its own
        answers: dict[int, list] = {}

        def ask(i):
            task = "a" if i % 2 else "b"
            body = {"task": task, "inputs": [TEXTS[i % 4]]}
            answers[i] = httpx.post(server.url + "/v1/classify", json=body, timeout=60).json()["results"][0]["logits"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, logits in answers.items():
            assert close([logits], reference_logits(zoo, "task-a" if i % 2 else "task-b", [TEXTS[i % 4]]))
        metrics = httpx.get(server.url + "/metrics").text
        assert (
            "unisub_batch_tasks_bucket" in metrics
            and 'unisub_requests_total{route="/v1/classify",status="200"}' in metrics
        )


def test_tasks_are_loaded_on_use_unloaded_and_bounded(zoo):
    with Server(zoo["basis"], "--base", zoo["base"], "--max-resident-mb", "0.001", home=zoo["home"]) as server:
        url = server.url
        # on first use, by registry reference
        first = httpx.post(url + "/v1/classify", json={"task": "task-a", "inputs": ["the cat"]}, timeout=60)
        assert first.status_code == 200
        loaded = httpx.post(url + "/v1/tasks/load", json={"task": "task-b", "name": "b"}, timeout=60).json()
        assert loaded["resident"] and loaded["bytes"] > 0 and loaded["basis"].startswith("sha256:")
        listing = httpx.get(url + "/v1/tasks").json()
        tasks = {t["name"]: t for t in listing["tasks"]}
        assert tasks["b"]["resident"] and not tasks["task-a"]["resident"]  # the budget holds one: LRU went
        assert listing["resident_bytes"] == tasks["b"]["bytes"]  # the running total followed the eviction
        again = httpx.post(url + "/v1/classify", json={"task": "task-a", "inputs": TEXTS}, timeout=60).json()
        assert close([r["logits"] for r in again["results"]], reference_logits(zoo, "task-a", TEXTS))
        assert httpx.post(url + "/v1/tasks/unload", json={"name": "b"}).json() == {"name": "b", "resident": False}
        listing = httpx.get(url + "/v1/tasks").json()
        assert "b" not in {t["name"] for t in listing["tasks"]}
        assert listing["resident_bytes"] == sum(t["bytes"] for t in listing["tasks"] if t["resident"]) > 0
        foreign = httpx.post(url + "/v1/tasks/load", json={"task": str(zoo["root"] / "foreign")}, timeout=60)
        assert foreign.status_code == 409 and "rebase" in foreign.json()["error"]["message"]


def test_every_error_is_json_with_its_status_and_the_server_stays_right(zoo):
    env = {"SERVE_KEY": "s3cret"}
    with Server(
        zoo["basis"],
        "--base",
        zoo["base"],
        "--task",
        "a=task-a",
        "--api-key-env",
        "SERVE_KEY",
        "--max-body-mb",
        "0.01",
        home=zoo["home"],
        env=env,
    ) as server:
        url, key = server.url, {"Authorization": "Bearer s3cret"}
        cases = [
            (httpx.post(url + "/v1/classify", json={"task": "a", "inputs": ["x"]}), 401),
            (
                httpx.post(
                    url + "/v1/classify", json={"task": "a", "inputs": ["x"]}, headers={"Authorization": "Bearer no"}
                ),
                401,
            ),
            (
                httpx.post(url + "/v1/classify", content=b"{nope", headers={**key, "content-type": "application/json"}),
                400,
            ),
            (httpx.post(url + "/v1/classify", json={"task": "zz", "inputs": ["x"]}, headers=key), 404),
            (httpx.get(url + "/v1/nothing", headers=key), 404),
            (httpx.post(url + "/v1/classify", json={"task": "a", "inputs": ["x" * 20000]}, headers=key), 413),
            (httpx.post(url + "/v1/classify", json={"task": "a", "inputs": ["x"] * 300}, headers=key), 422),
            (httpx.post(url + "/v1/classify", json={"task": "a", "inputs": [3]}, headers=key), 422),
            (httpx.post(url + "/v1/classify", json={"inputs": ["x"]}, headers=key), 422),
            (httpx.delete(url + "/v1/tasks", headers=key), 405),
            (httpx.post(url + "/v1/completions", json={"model": "a", "prompt": "x"}, headers=key), 404),
        ]
        for response, status in cases:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert set(error) == {"message", "type"} and "Traceback" not in response.text
        assert httpx.get(url + "/healthz").status_code == 200  # no key needed
        fine = httpx.post(url + "/v1/classify", json={"task": "a", "inputs": TEXTS}, headers=key).json()
        assert close([r["logits"] for r in fine["results"]], reference_logits(zoo, "task-a", TEXTS))
