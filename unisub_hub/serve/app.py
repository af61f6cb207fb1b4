"""The HTTP surface: classification, OpenAI-compatible generation, tasks, health and metrics.

Routes follow what users already script against: OpenAI's ``/v1/completions``,
``/v1/chat/completions`` and ``/v1/models`` with the task in the ``model`` field (as vLLM and
LoRAX take the adapter), ``/v1/classify`` for classifier tasks, ``/v1/tasks`` to list, load
and unload, ``/healthz`` and Prometheus ``/metrics``. Every error is
``{"error": {"message", "type"}}`` with its status, and no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ServeError
from .generation import Completion, Sequence_
from .metrics import Metrics
from .pool import TaskPool
from .worker import ClassifyRow, Worker

__all__ = ["ServerState", "create_app"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    500: "server_error",
    503: "overloaded_error",
}


@dataclass
class ServerState:
    """What the routes need: the worker (and its pool), the tokenizer, the family, limits, the key."""

    worker: Worker
    pool: TaskPool
    tokenizer: Any
    family: str
    """``classification`` or ``causal-lm``."""
    metrics: Metrics
    api_key: str | None = None
    max_inputs: int = 256
    max_body_bytes: int = 8 * 1024 * 1024


# --- request bodies ---------------------------------------------------------------------------


class ClassifyItem(BaseModel):
    task: str = Field(min_length=1)
    text: str
    text_pair: str | None = None


class ClassifyRequest(BaseModel):
    task: str | None = Field(default=None, min_length=1)
    inputs: list[str | list[str] | ClassifyItem] = Field(min_length=1)


class _Sampling(BaseModel):
    model: str = Field(min_length=1)
    max_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=1.0, ge=0, le=10)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    role: str = Field(min_length=1)
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class LoadRequest(BaseModel):
    task: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1)


class UnloadRequest(BaseModel):
    name: str = Field(min_length=1)


# --- errors -----------------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error")}}
    return JSONResponse(body, status_code=status, headers=headers)


def _serve_error(error: ServeError) -> JSONResponse:
    return _error(error.status, str(error), {"Retry-After": "1"} if error.status == 503 else None)


async def _result(future: Any) -> Any:
    """A worker job's result, awaited without blocking the event loop."""
    return await asyncio.wrap_future(future)


def create_app(state: ServerState) -> FastAPI:
    """The ASGI app for ``state`` (its OpenAPI page is at ``/docs``)."""
    app = FastAPI(title="unisub-hub serve", description="One basis, many kilobyte tasks.", version="1")
    _install_error_handlers(app)
    _install_limits_and_metrics(app, state)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "tasks": len(state.pool.resident)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        state.metrics.resident(len(state.pool.resident), state.pool.resident_bytes)
        return Response(state.metrics.render(), media_type=state.metrics.content_type)

    app.include_router(_task_routes(state))
    app.include_router(_inference_routes(state))
    return app


def _install_error_handlers(app: FastAPI) -> None:
    """Every error, the framework's included, answers JSON ``{error: {message, type}}``."""

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, error: ServeError) -> JSONResponse:
        return _serve_error(error)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return _error(400, "the body is not valid JSON")
        if any(tuple(p.get("loc", ())) == ("body",) for p in problems):  # not a JSON object at all
            kind = request.headers.get("content-type")
            if not _is_json_type(kind):  # the body was never read as JSON (curl -d sends a form type)
                return _error(400, f"send the body as JSON with Content-Type: application/json (got {kind or 'none'})")
            return _error(400, "the body is not a JSON object")
        first = problems[0] if problems else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def on_anything(request: Request, error: Exception) -> JSONResponse:
        return _error(500, "internal error")


_OPEN_PATHS = frozenset({"/healthz"})
"""What answers without the API key: a health check must work for probes that hold no secret."""


def _authorized(request: Request, key: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <key>`` (compared in constant time)."""
    if key is None or request.url.path in _OPEN_PATHS:
        return True
    header = request.headers.get("authorization", "")
    given = header[7:] if header.lower().startswith("bearer ") else ""
    return hmac.compare_digest(given.encode(), key.encode())


def _is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type makes the framework read the body as JSON (``application/json`` or ``+json``)."""
    if not content_type:
        return False
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _install_limits_and_metrics(app: FastAPI, state: ServerState) -> None:
    """The key first, then bodies over ``state.max_body_bytes`` (413), both before a route reads
    anything: an unauthorized request learns nothing, not even whether its body parses. Every
    answer is counted."""
    metrics = state.metrics

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        declared = request.headers.get("content-length")
        if not _authorized(request, state.api_key):
            response: Response = _error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        elif declared is not None and (not declared.isdigit() or int(declared) > state.max_body_bytes):
            response = _error(413, f"the body is over {state.max_body_bytes} bytes")
        elif declared is None and request.method in ("POST", "PUT", "PATCH"):
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > state.max_body_bytes:
                    break
            if len(body) > state.max_body_bytes:
                response = _error(413, f"the body is over {state.max_body_bytes} bytes")
            else:
                request._body = body  # read once here, as the route will read it
                response = await call_next(request)
        else:
            response = await call_next(request)
        metrics.request(_route_label(request), response.status_code, time.perf_counter() - started)
        return response


def _route_label(request: Request) -> str:
    """The metrics label of a request: the route it matched, else ``unknown`` (a client's made-up
    paths, and any request refused before routing, must not grow the metrics without bound)."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unknown"


def _task_routes(state: ServerState) -> APIRouter:
    """``/v1/tasks``: what is known and resident, and loading and unloading by name."""
    router = APIRouter()

    @router.get("/v1/tasks")
    async def list_tasks() -> dict[str, Any]:
        basis = state.pool.basis.content_id
        resident = [task.to_dict(basis) for task in state.pool.resident.values()]
        known = [
            {"name": name, "reference": ref, "basis": basis, "resident": False}
            for name, ref in state.pool.known.items()
            if name not in state.pool.resident
        ]
        return {"basis": basis, "tasks": resident + known, "resident_bytes": state.pool.resident_bytes}

    @router.post("/v1/tasks/load")
    async def load(body: LoadRequest) -> dict[str, Any]:
        started = time.perf_counter()
        task = await _result(state.worker.control(lambda pool: pool.load(body.task, body.name)))
        state.metrics.cold_load(time.perf_counter() - started)
        return {**task.to_dict(state.pool.basis.content_id), "seconds": round(task.load_seconds, 6)}

    @router.post("/v1/tasks/unload")
    async def unload(body: UnloadRequest) -> dict[str, Any]:
        await _result(state.worker.control(lambda pool: pool.forget(body.name)))
        return {"name": body.name, "resident": False}

    return router


def _inference_routes(state: ServerState) -> APIRouter:
    """Classification and the OpenAI-compatible generation routes, each a task per request or row."""
    router = APIRouter()

    @router.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = list(dict.fromkeys([*state.pool.resident, *state.pool.known]))
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "unisub-hub"} for name in names],
        }

    @router.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        _family(state, "classification", "/v1/classify")
        rows = _classify_rows(body, state.max_inputs)
        return {"results": await _result(state.worker.submit("classify", rows))}

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        _family(state, "causal-lm", "/v1/completions")
        if isinstance(body.prompt, list) and len(body.prompt) != 1:
            raise ServeError("prompt: give one prompt per request", status=422)
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        ids = list(state.tokenizer(prompt)["input_ids"])
        return await _generate(state, body, ids, chat=False)

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> Any:
        _family(state, "causal-lm", "/v1/chat/completions")
        if not getattr(state.tokenizer, "chat_template", None):
            raise ServeError("the base model's tokenizer has no chat template: use /v1/completions", status=422)
        messages = [message.model_dump() for message in body.messages]
        text = state.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = list(state.tokenizer(text, add_special_tokens=False)["input_ids"])
        return await _generate(state, body, ids, chat=True)

    return router


def _family(state: ServerState, needed: str, route: str) -> None:
    if state.family != needed:
        other = "/v1/classify" if state.family == "classification" else "/v1/completions"
        raise ServeError(f"{route} needs a {needed} base model; this server's is {state.family} ({other})", status=404)


def _classify_rows(body: ClassifyRequest, limit: int) -> list[ClassifyRow]:
    if len(body.inputs) > limit:
        raise ServeError(f"inputs: {len(body.inputs)} inputs, at most {limit} per request", status=422)
    rows = []
    for number, item in enumerate(body.inputs):
        if isinstance(item, ClassifyItem):
            rows.append(ClassifyRow(item.task, item.text, item.text_pair))
            continue
        if body.task is None:
            raise ServeError(f"inputs.{number}: no task (give 'task', or objects with their own)", status=422)
        if isinstance(item, list):
            if len(item) != 2:
                raise ServeError(f"inputs.{number}: a pair is [text, text_pair]", status=422)
            rows.append(ClassifyRow(body.task, item[0], item[1]))
        else:
            rows.append(ClassifyRow(body.task, item))
    return rows


async def _generate(state: ServerState, body: _Sampling, ids: list[int], *, chat: bool) -> Any:
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > 4 or any(not stop for stop in stops):
        raise ServeError("stop: up to 4 non-empty strings", status=422)
    identifier = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    item = Sequence_(body.model, ids, body.max_tokens, body.temperature, body.top_p, body.seed, stops)
    if not body.stream:
        done: Completion = await _result(state.worker.submit("generate", item))
        return _completion_body(identifier, created, body.model, done, chat)
    if body.model not in state.pool.resident:  # an unknown task is a 404, not an error inside a 200 stream
        await _result(state.worker.control(lambda pool: pool.ensure([body.model])))
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def on_text(text: str) -> None:  # called on the model's thread
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    item.on_text = on_text
    future = state.worker.submit("generate", item)
    future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))

    async def events() -> AsyncIterator[str]:
        if chat:
            yield _event(identifier, created, body.model, {"role": "assistant", "content": ""}, None, chat)
        while (piece := await pieces.get()) is not None:
            if piece:
                yield _event(identifier, created, body.model, {"content": piece} if chat else piece, None, chat)
        try:
            done = future.result()
        except ServeError as error:
            yield f"data: {json.dumps({'error': {'message': str(error), 'type': _TYPES.get(error.status)}})}\n\n"
            return
        yield _event(identifier, created, body.model, {} if chat else "", done.finish_reason, chat)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def _completion_body(identifier: str, created: int, model: str, done: Completion, chat: bool) -> dict[str, Any]:
    usage = {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "finish_reason": done.finish_reason,
        }
        return {
            "id": identifier,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}
    return {
        "id": identifier,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def _event(identifier: str, created: int, model: str, delta: Any, finish: str | None, chat: bool) -> str:
    if chat:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {
            "id": identifier,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [choice],
        }
    else:
        choice = {"index": 0, "text": delta, "finish_reason": finish, "logprobs": None}
        body = {"id": identifier, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n"
