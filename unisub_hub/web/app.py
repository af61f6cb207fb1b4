"""``unisub-hub web``: the registry as pages and ``/api`` JSON, read-only.

Every route is a GET; any other method is 405, anything unknown 404. No route serves a file
from disk (styles are inline, plots drawn from numbers), so no path can reach outside the site.
Every page reads the registry afresh (one query per listing), so pages follow what other
processes register.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RegistryError
from ..registry import Registry
from .pages import FILTERS, basis_page, front_page, task_page
from .render import LIVE, render, render_error

__all__ = ["create_app"]

_READ_METHODS = ("GET", "HEAD")


def create_app(home: str | Path) -> FastAPI:
    """The web view of the registry at ``home``."""
    app = FastAPI(title="unisub-hub web", description="A read-only view of a registry.", version="1")
    label = f" · {Path(home).name}"
    opened = Registry(home)

    def page(request: Request, template: str, builder: Any, *args: Any) -> Response:
        try:
            data = builder(opened, *args)
        except RegistryError as error:
            return _not_found(request, str(error), label)
        if request.url.path.startswith("/api/"):
            return JSONResponse(data)
        return HTMLResponse(render(template, data, link=LIVE, home_label=label))

    @app.middleware("http")
    async def read_only(request: Request, call_next: Any) -> Response:
        if request.method not in _READ_METHODS:
            return JSONResponse(
                {"error": {"message": "this site is read-only", "type": "method_not_allowed"}},
                status_code=405,
                headers={"Allow": ", ".join(_READ_METHODS)},
            )
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, error: StarletteHTTPException) -> Response:
        return (
            _not_found(request, "no such page", label)
            if error.status_code == 404
            else Response(status_code=error.status_code)
        )

    @app.get("/", response_class=HTMLResponse)
    @app.get("/api/front")
    def front(request: Request) -> Response:
        filters = {key: request.query_params.get(key, "") for key in FILTERS}
        return page(request, "front.html", front_page, filters)

    @app.get("/basis/{ref}", response_class=HTMLResponse)
    @app.get("/api/basis/{ref}")
    def basis(request: Request, ref: str) -> Response:
        return page(request, "basis.html", basis_page, ref)

    @app.get("/task/{ref}", response_class=HTMLResponse)
    @app.get("/api/task/{ref}")
    def task(request: Request, ref: str) -> Response:
        return page(request, "task.html", task_page, ref)

    return app


def _not_found(request: Request, message: str, label: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": {"message": message, "type": "not_found"}}, status_code=404)
    return HTMLResponse(render_error(404, message, link=LIVE, home_label=label), status_code=404)
