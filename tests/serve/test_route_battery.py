"""Property batteries against real servers: at least 1,000 generated requests per route.

Bodies, headers, sizes, encodings and methods are generated; each example sends four requests
at once from a thread pool (concurrent clients). Every answer is checked against what it must
be: the status that the request's own defect calls for (401 without the key, 413 over the body
limit, 400 not a JSON object, 422 invalid fields, 404 unknown task or route, 405 wrong method),
a JSON error body without a traceback, and, for a 200, the right answer: classification logits
equal transformers + peft on the materialized adapter, greedy completions equal the merged
model's ``generate``. After each route's battery the server still answers correctly.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import Server
from serve_zoos import PROMPTS, TEXTS, classify_zoo, close, generation_zoo, greedy, reference_logits

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("fastapi")

pytestmark = pytest.mark.slow

KEY = "battery-key"
BODY_LIMIT = 10_485  # --max-body-mb 0.01
PER_ROUTE = 1000
EXAMPLES = PER_ROUTE // 4
OFFLINE = {"SERVE_KEY": KEY, "HF_HUB_OFFLINE": "1"}
TASKS = {"a": "task-a", "b": "task-b", "task-c": "task-c"}
"""Served name -> the task folder whose PEFT export is its reference."""
GEN_TASKS = {"a": "gen-a", "b": "gen-b"}


@dataclass
class Call:
    """One generated request and what its answer must be."""

    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    statuses: frozenset[int] = frozenset({200})
    """The statuses its defects allow (one, unless the request is garbage that may be read two ways)."""
    check: Callable[[httpx.Response], None] | None = None
    """For a 200: asserts the answer is the right one."""


def _send(client: httpx.Client, url: str, call: Call) -> httpx.Response:
    content: Any = call.content
    if call.chunked and content is not None:
        content = iter([content[i : i + 4096] for i in range(0, len(content), 4096)])
    return client.request(call.method, url + call.path, content=content, headers=call.headers, timeout=120)


def _verify(call: Call, response: httpx.Response) -> None:
    where = f"{call.method} {call.path} {call.headers} {(call.content or b'')[:300]!r}"
    assert response.status_code in call.statuses, f"{response.status_code} {response.text[:300]} for {where}"
    assert "Traceback" not in response.text, where
    if response.status_code != 200:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type"}, where
        if response.status_code == 503:
            assert response.headers.get("retry-after") == "1"
    elif call.check is not None:
        call.check(response)


def _run_battery(server: Server, calls: st.SearchStrategy[Call], after: Callable[[str], None]) -> Counter[str]:
    """Send EXAMPLES x 4 generated calls, four at a time; then ``after(url)`` checks the server is still right.

    Returns how many answers came back with each status, and how many 200s were checked for
    their content (``checked``), for the battery's record.
    """
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    with httpx.Client() as client, ThreadPoolExecutor(4) as pool:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(calls, min_size=4, max_size=4))
        def battery(batch: list[Call]) -> None:
            responses = list(pool.map(lambda call: _send(client, server.url, call), batch))
            for call, response in zip(batch, responses, strict=True):
                _verify(call, response)
                with lock:
                    seen[str(response.status_code)] += 1
                    seen["checked"] += response.status_code == 200 and call.check is not None

        battery()
    after(server.url)
    assert server.process.poll() is None, "the server died"
    print(f"battery {calls!r:.40}: {dict(seen)}")
    return seen


def _requests(seen: Counter[str]) -> int:
    return sum(count for status, count in seen.items() if status.isdigit())


# --- what every request may carry ------------------------------------------------------------

AUTH = st.sampled_from(["good"] * 6 + ["wrong", "none", "not-bearer"])
JUNK_HEADER = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
ENCODING = st.sampled_from(["utf-8"] * 6 + ["utf-16", "utf-32"])
JSON_TYPE = st.sampled_from(["application/json"] * 4 + ["application/json; charset=utf-8", "application/vnd.api+json"])
OTHER_TYPE = st.sampled_from(
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
"""Content types a JSON body is not read under: 400, with a line saying to send JSON."""
garbage_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _headers(auth: str, content_type: str | None, junk: str) -> dict[str, str]:
    headers = {"x-battery": junk} if junk else {}
    if auth == "good":
        headers["authorization"] = f"Bearer {KEY}"
    elif auth == "wrong":
        headers["authorization"] = f"Bearer {KEY}x"
    elif auth == "not-bearer":
        headers["authorization"] = KEY
    if content_type is not None:
        headers["content-type"] = content_type
    return headers


@st.composite
def posted(draw: st.DrawFn, path: str, valid: st.SearchStrategy[tuple[Any, frozenset[int], Any]]) -> Call:
    """A POST to ``path``: a generated body (valid, broken in a known way, garbage, oversized or not
    JSON at all) with generated headers, and the statuses it allows."""
    auth, junk = draw(AUTH), draw(JUNK_HEADER)
    shape = draw(st.sampled_from(["valid"] * 6 + ["garbage", "bytes", "other-type", "oversized", "not-object"]))
    check = None
    if shape == "valid":
        body, statuses, check = draw(valid)
        content, content_type = json.dumps(body).encode(draw(ENCODING)), draw(JSON_TYPE)
    elif shape == "garbage":  # any JSON value: an object without the fields is 422, anything else 400
        value = draw(garbage_json)
        content, content_type = json.dumps(value).encode(), draw(JSON_TYPE)
        statuses = frozenset({422}) if isinstance(value, dict) else frozenset({400})
    elif shape == "bytes":  # not JSON (or, rarely, JSON by chance)
        content, content_type = draw(st.binary(min_size=1, max_size=200)), draw(JSON_TYPE)
        statuses = frozenset({400, 422})
    elif shape == "other-type":
        body, _, _ = draw(valid)
        content, content_type = json.dumps(body).encode(), draw(OTHER_TYPE)
        statuses = frozenset({400})
    elif shape == "oversized":
        body, _, _ = draw(valid)
        content = json.dumps(body).encode() + b" " * (BODY_LIMIT + draw(st.integers(1, 20_000)))
        content_type, statuses = draw(JSON_TYPE), frozenset({413})
    else:
        content, content_type = json.dumps(draw(st.lists(st.integers(), max_size=3))).encode(), draw(JSON_TYPE)
        statuses = frozenset({400})
    if auth != "good":
        statuses, check = frozenset({401}), None
    return Call(
        "POST",
        path,
        content,
        _headers(auth, content_type, junk),
        chunked=draw(st.booleans()),
        statuses=statuses,
        check=check if 200 in statuses else None,
    )


@st.composite
def fetched(draw: st.DrawFn, path: str, check: Callable[[httpx.Response], None], open_path: bool = False) -> Call:
    """A GET-only route asked with a generated method, query, headers and (ignored) body."""
    auth, junk = draw(AUTH), draw(JUNK_HEADER)
    method = draw(st.sampled_from(["GET"] * 5 + ["POST", "DELETE", "PUT", "PATCH"]))
    query = draw(st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.text(max_size=12), max_size=3))
    body = draw(st.none() | st.binary(max_size=64))
    statuses = frozenset({200}) if method == "GET" else frozenset({405})
    if auth != "good" and not open_path:
        statuses = frozenset({401})
    call = Call(method, path + ("?" + str(httpx.QueryParams(query)) if query else ""), body, _headers(auth, None, junk))
    call.statuses, call.check = statuses, check
    return call


# --- classification ------------------------------------------------------------------------------

TEXT = st.sampled_from(TEXTS) | st.text(max_size=120)
"""Texts of the pool and anything else (empty, non-ASCII, longer than the model's 32 positions)."""


def _classify_check(zoo: dict[str, Any], rows: list[tuple[str, str, str | None]]) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        results = response.json()["results"]
        assert len(results) == len(rows)
        for (task, text, pair), result in zip(rows, results, strict=True):
            assert result["task"] == task and result["label_id"] == max(range(3), key=result["logits"].__getitem__)
            expected = reference_logits(zoo, TASKS[task], [text], pair)
            assert close([result["logits"]], expected), (task, text, pair, result["logits"], expected)

    return check


@st.composite
def classify_body(draw: st.DrawFn, zoo: dict[str, Any]) -> tuple[Any, frozenset[int], Any]:
    """A /v1/classify body in either form, valid or with one known defect."""
    task = draw(st.sampled_from(list(TASKS)))
    if draw(st.booleans()):  # one task, inputs as texts or [text, pair]
        inputs = draw(st.lists(TEXT.map(lambda t: (t, None)) | st.tuples(TEXT, TEXT), min_size=1, max_size=5))
        body: dict[str, Any] = {"task": task, "inputs": [t if p is None else [t, p] for t, p in inputs]}
        rows = [(task, t, p) for t, p in inputs]
    else:  # a task per row
        items = draw(st.lists(st.tuples(st.sampled_from(list(TASKS)), TEXT, st.none() | TEXT), min_size=1, max_size=5))
        body = {"inputs": [{"task": k, "text": t, **({"text_pair": p} if p is not None else {})} for k, t, p in items]}
        rows = list(items)
    defect = draw(
        st.sampled_from(
            [None] * 8
            + ["unknown-task", "no-inputs", "empty-inputs", "number-input", "triple", "no-task", "too-many", "empty"]
        )
    )
    if defect is None:
        return body, frozenset({200}), _classify_check(zoo, rows)
    if defect == "unknown-task":
        body = {"task": "zz-" + draw(st.text(max_size=10)), "inputs": ["the cat"]}
        return body, frozenset({404}), None
    broken = {
        "no-inputs": {"task": task},
        "empty-inputs": {"task": task, "inputs": []},
        "number-input": {"task": task, "inputs": ["x", draw(st.integers())]},
        "triple": {"task": task, "inputs": [["x", "y", "z"]]},
        "no-task": {"inputs": ["the cat"]},
        "too-many": {"task": task, "inputs": ["x"] * 257},
        "empty": {"task": "", "inputs": ["x"]},
    }[defect]
    return broken, frozenset({422}), None


@st.composite
def load_body(draw: st.DrawFn, zoo: dict[str, Any], loaded: set[str]) -> tuple[Any, frozenset[int], Any]:
    reference, status = draw(
        st.sampled_from(
            [
                ("task-c", 200),
                ("task-a", 200),
                (str(zoo["root"] / "task-b"), 200),
                (str(zoo["root"] / "foreign"), 409),
                ("zz-missing", 404),
                ("zz/missing", 404),
                (str(zoo["base"] / "config.json"), 422),  # a file, not a task folder
                ("/etc/passwd", 422),  # a file outside any task: refused, not read as one
                (str(zoo["base"]), 422),  # a folder, but not a coefficient set
            ]
        )
    )
    name = draw(st.sampled_from(["x1", "x2", None]) | st.text(min_size=1, max_size=12).map(lambda t: "zz-" + t))
    body: dict[str, Any] = {"task": reference, **({"name": name} if name is not None else {})}
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.sampled_from([{"task": ""}, {"name": "x1"}, {"task": 5}, {"task": "task-c", "name": ""}]))
        return body, frozenset({422}), None
    if status == 200:
        loaded.add(name or "task-c")

    def check(response: httpx.Response) -> None:
        answer = response.json()
        assert answer["resident"] and answer["bytes"] > 0 and answer["name"] == (name or answer["name"])

    return body, frozenset({status}), check


@st.composite
def unload_body(draw: st.DrawFn, loaded: set[str]) -> tuple[Any, frozenset[int], Any]:
    name = draw(st.sampled_from(["x1", "x2", "task-c"]) | st.text(min_size=1, max_size=12).map(lambda t: "zz-" + t))
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from([{}, {"name": ""}, {"name": 3}])), frozenset({422}), None
    # whether it is loaded depends on the order of concurrent loads: either answer, never another
    return {"name": name}, frozenset({200, 404}) if name in loaded | {"x1", "x2", "task-c"} else {404}, None


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    zoo = classify_zoo(tmp_path_factory.mktemp("battery-cls"))
    args = ["--base", zoo["base"], "--task", "a=task-a", "--task", "b=task-b", "--api-key-env", "SERVE_KEY"]
    with Server(zoo["basis"], *args, "--max-body-mb", "0.01", home=zoo["home"], env=OFFLINE) as server:
        yield zoo, server, set()  # the names loaded so far, by any test of this server


def _classifier_still_right(zoo: dict[str, Any]) -> Callable[[str], None]:
    def after(url: str) -> None:
        headers = {"authorization": f"Bearer {KEY}"}
        for task in ("a", "b"):
            body = httpx.post(url + "/v1/classify", json={"task": task, "inputs": TEXTS}, headers=headers).json()
            assert close([r["logits"] for r in body["results"]], reference_logits(zoo, TASKS[task], TEXTS))
        assert httpx.get(url + "/healthz").json()["status"] == "ok"

    return after


def _tasks_listed(response: httpx.Response) -> None:
    listed = {task["name"]: task for task in response.json()["tasks"]}
    assert listed["a"]["resident"] and listed["b"]["resident"]


def _models_listed(response: httpx.Response) -> None:
    assert {"a", "b"} <= {model["id"] for model in response.json()["data"]}


def _metrics_text(response: httpx.Response) -> None:
    assert "unisub_requests_total" in response.text


def _healthy(response: httpx.Response) -> None:
    assert response.json()["status"] == "ok"


CLASSIFY_ROUTES = [
    "/v1/classify",
    "/v1/tasks/load",
    "/v1/tasks/unload",
    "/v1/tasks",
    "/v1/models",
    "/metrics",
    "/healthz",
]


@pytest.mark.parametrize("route", CLASSIFY_ROUTES)
def test_a_thousand_generated_requests_per_classification_route(classifier, route):
    zoo, server, loaded = classifier
    calls = {
        "/v1/classify": posted(route, classify_body(zoo)),
        "/v1/tasks/load": posted(route, load_body(zoo, loaded)),
        "/v1/tasks/unload": posted(route, unload_body(loaded)),
        "/v1/tasks": fetched(route, _tasks_listed),
        "/v1/models": fetched(route, _models_listed),
        "/metrics": fetched(route, _metrics_text),
        "/healthz": fetched(route, _healthy, open_path=True),
    }[route]
    seen = _run_battery(server, calls, _classifier_still_right(zoo))
    assert _requests(seen) >= PER_ROUTE and seen["500"] == 0
    # a fair share of the answers were 200s whose content was checked (an unload's answer says only that it went)
    assert seen["checked"] >= {"/v1/tasks/load": 80, "/v1/tasks/unload": 0}.get(route, 200)


def test_unknown_routes_are_404_with_the_key_and_401_without(classifier):
    zoo, server, _ = classifier

    @st.composite
    def unknown(draw: st.DrawFn) -> Call:
        path = "/" + draw(st.from_regex(r"[a-zA-Z0-9_./-]{0,30}", fullmatch=True))
        if path in {*CLASSIFY_ROUTES, "/v1/completions", "/v1/chat/completions", "/docs", "/openapi.json"}:
            path += "-not"
        if path.startswith("/docs") or path.startswith("/openapi") or "/." in path or "//" in path:
            path = "/zz" + path.replace(".", "_").replace("//", "/")
        auth = draw(AUTH)
        method = draw(st.sampled_from(["GET", "POST", "DELETE"]))
        return Call(method, path, None, _headers(auth, None, ""), statuses=frozenset({404 if auth == "good" else 401}))

    seen = _run_battery(server, unknown(), _classifier_still_right(zoo))
    assert _requests(seen) >= PER_ROUTE and seen["404"] > PER_ROUTE // 2
    # made-up paths do not grow the metrics: every label is a route of the app, or "unknown"
    metrics = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {KEY}"}).text
    labels = set(re.findall(r'route="([^"]*)"', metrics))
    assert labels <= {*CLASSIFY_ROUTES, "/v1/completions", "/v1/chat/completions", "unknown"}, labels


# --- generation ----------------------------------------------------------------------------------

PROMPT = st.sampled_from(PROMPTS) | st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)


def _text_of(response: httpx.Response, chat: bool, stream: bool) -> str:
    if not stream:
        choice = response.json()["choices"][0]
        return choice["message"]["content"] if chat else choice["text"]
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    pieces = [json.loads(event)["choices"][0] for event in events[:-1]]
    assert pieces[-1]["finish_reason"] in ("stop", "length")
    return "".join((piece["delta"].get("content") or "") if chat else piece["text"] for piece in pieces)


@st.composite
def generation_body(draw: st.DrawFn, zoo: dict[str, Any], chat: bool) -> tuple[Any, frozenset[int], Any]:
    """A completions or chat body, valid (greedy ones checked against ``generate``) or with one known defect."""
    task, tokens, stream = draw(st.sampled_from(list(GEN_TASKS))), draw(st.integers(1, 5)), draw(st.booleans())
    prompt = draw(PROMPT)
    greedy_run = draw(st.booleans())
    body: dict[str, Any] = {"model": task, "max_tokens": tokens, "stream": stream}
    body.update(
        {"temperature": 0}
        if greedy_run
        else {"temperature": draw(st.floats(0.1, 2)), "seed": draw(st.integers(0, 2**31))}
    )
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = draw(st.sampled_from([prompt, [prompt]]))
    defect = draw(
        st.sampled_from(
            [None] * 10
            + ["model", "empty-model", "max-tokens", "temperature", "top-p", "seed", "stops", "stream", "n", "prompt"]
        )
    )
    if defect is None:

        def check(response: httpx.Response) -> None:
            text = _text_of(response, chat, stream)
            if greedy_run:
                rendered = zoo["chat_render"](prompt) if chat else prompt
                assert text == greedy(zoo, GEN_TASKS[task], rendered, tokens, special=not chat), (prompt, text)

        return body, frozenset({200}), check
    if defect == "model":
        return {**body, "model": "zz-nobody"}, frozenset({404}), None
    field_defects: dict[str, dict[str, Any]] = {
        "empty-model": {"model": ""},
        "max-tokens": {"max_tokens": draw(st.sampled_from([0, -3, 5000, "many"]))},
        "temperature": {"temperature": draw(st.sampled_from([-1, 11, "hot"]))},
        "top-p": {"top_p": draw(st.sampled_from([0, 1.5]))},
        "seed": {"seed": draw(st.sampled_from([-1, 2**64]))},
        "stops": {"stop": draw(st.sampled_from([["a", "b", "c", "d", "e"], "", [""]]))},
        "stream": {"stream": "maybe"},
        "n": {"n": 2},
        "prompt": {"messages": []} if chat else {"prompt": draw(st.sampled_from([5, [], ["p", "q"]]))},
    }
    return {**body, **field_defects[defect]}, frozenset({422}), None


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from transformers import AutoTokenizer

    zoo = generation_zoo(tmp_path_factory.mktemp("battery-gen"))
    tokenizer = AutoTokenizer.from_pretrained(zoo["gpt2"])
    zoo["chat_render"] = lambda text: tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    args = ["--base", zoo["gpt2"], "--task", "a=gen-a", "--task", "b=gen-b", "--api-key-env", "SERVE_KEY"]
    with Server(zoo["gpt2_basis"], *args, "--max-body-mb", "0.01", home=zoo["home"], env=OFFLINE) as server:
        yield zoo, server


def _generator_still_right(zoo: dict[str, Any]) -> Callable[[str], None]:
    def after(url: str) -> None:
        headers = {"authorization": f"Bearer {KEY}"}
        for task, folder in GEN_TASKS.items():
            body = {"model": task, "prompt": PROMPTS[0], "max_tokens": 5, "temperature": 0}
            answer = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=60).json()
            assert answer["choices"][0]["text"] == greedy(zoo, folder, PROMPTS[0], 5)

    return after


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_a_thousand_generated_requests_per_generation_route(generator, route):
    zoo, server = generator
    calls = posted(route, generation_body(zoo, chat=route.endswith("chat/completions")))
    seen = _run_battery(server, calls, _generator_still_right(zoo))
    assert _requests(seen) >= PER_ROUTE and seen["checked"] >= PER_ROUTE // 5
