"""The registry: SQLite (through SQLModel) plus a content-addressed store of artifact folders."""

from .registry import KINDS, Entry, Registry

__all__ = ["KINDS", "Entry", "Registry"]
