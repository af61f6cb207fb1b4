"""The registry: SQLite (through SQLModel) plus a content-addressed store of artifact folders."""

from .registry import DOWNLOADS, KINDS, Entry, Registry

__all__ = ["DOWNLOADS", "KINDS", "Entry", "Registry"]
