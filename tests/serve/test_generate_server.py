"""A generation server as a real process, driven by the official ``openai`` client: greedy completions
equal the merged models' ``generate``, for one task and for tasks decoded together; streaming; 503 when
full; SIGTERM lets requests in flight finish."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest
from live_server import Server
from serve_zoos import PROMPTS, generation_zoo, greedy

transformers = pytest.importorskip("transformers")
openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return generation_zoo(tmp_path_factory.mktemp("serve-gen"))


def test_the_openai_client_works_unchanged_and_greedy_equals_generate(zoo):
    with Server(
        zoo["gpt2_basis"],
        "--base",
        zoo["gpt2"],
        "--task",
        "a=gen-a",
        "--task",
        "b=gen-b",
        "--max-wait-ms",
        "50",
        home=zoo["home"],
    ) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        assert sorted(model.id for model in client.models.list()) == ["a", "b"]
        done = client.completions.create(model="a", prompt=PROMPTS[0], max_tokens=8, temperature=0)
        assert done.choices[0].text == greedy(zoo, "gen-a", PROMPTS[0], 8)
        assert done.usage.prompt_tokens == 3 and done.choices[0].finish_reason in ("stop", "length")
        answers: dict[int, str] = {}

        def ask(i):
            task = "ab"[i % 2]
            answers[i] = (
                client.completions.create(model=task, prompt=PROMPTS[i % 4], max_tokens=6, temperature=0)
                .choices[0]
                .text
            )

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, text in answers.items():
            assert text == greedy(zoo, f"gen-{'ab'[i % 2]}", PROMPTS[i % 4], 6), i
        metrics = httpx.get(server.url + "/metrics").text
        assert "unisub_batch_tasks_count" in metrics
        stream = client.chat.completions.create(
            model="b", messages=[{"role": "user", "content": "the cat"}], max_tokens=6, temperature=0, stream=True
        )
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason is not None
        streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
        whole = client.chat.completions.create(
            model="b", messages=[{"role": "user", "content": "the cat"}], max_tokens=6, temperature=0
        )
        assert streamed == whole.choices[0].message.content
        seeded = [
            client.completions.create(model="a", prompt="the", max_tokens=6, temperature=1.0, seed=5).choices[0].text
            for _ in range(2)
        ]
        assert seeded[0] == seeded[1]
        stopped = client.completions.create(model="a", prompt=PROMPTS[1], max_tokens=8, temperature=0, stop=[" "])
        assert " " not in stopped.choices[0].text
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="nobody", prompt="x", max_tokens=2)


def test_a_full_queue_answers_503_with_retry_after_and_nothing_fails_silently(zoo):
    with Server(
        zoo["gpt2_basis"],
        "--base",
        zoo["gpt2"],
        "--task",
        "a=gen-a",
        "--max-queue",
        "1",
        "--max-batch",
        "1",
        home=zoo["home"],
    ) as server:
        statuses: list[int] = []
        headers: list[str | None] = []

        def ask():
            response = httpx.post(
                server.url + "/v1/completions",
                timeout=120,
                json={"model": "a", "prompt": "the", "max_tokens": 100, "temperature": 0},
            )
            statuses.append(response.status_code)
            headers.append(response.headers.get("retry-after"))

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        assert all(h == "1" for s, h in zip(statuses, headers, strict=True) if s == 503)
        assert (
            httpx.post(
                server.url + "/v1/completions", json={"model": "a", "prompt": "the", "max_tokens": 2}
            ).status_code
            == 200
        )


def test_sigterm_lets_the_request_in_flight_finish(zoo):
    server = Server(zoo["gpt2_basis"], "--base", zoo["gpt2"], "--task", "a=gen-a", home=zoo["home"])
    body = {"model": "a", "prompt": "the", "max_tokens": 100, "temperature": 1.0, "seed": 1, "stream": True}
    lines = []
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120) as response:
        iterator = response.iter_lines()
        lines.append(next(iterator))  # the request is in flight: its first piece has come
        server.process.send_signal(signal.SIGTERM)
        lines.extend(iterator)
    assert [line for line in lines if line][-1] == "data: [DONE]" and response.status_code == 200
    assert server.process.wait(timeout=60) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url + "/healthz", timeout=5)
