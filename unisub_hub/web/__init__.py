"""A read-only web view of a registry: pages for people, ``/api`` JSON for scripts, a static export.

Needs the ``[serve]`` extra (FastAPI, uvicorn, Jinja2).
"""

from .app import create_app
from .export import export_site

__all__ = ["create_app", "export_site"]
