"""Helpers for offline tests of code that talks to the Hugging Face Hub."""

from .hub import LocalHub, RequestRecord

__all__ = ["LocalHub", "RequestRecord"]
