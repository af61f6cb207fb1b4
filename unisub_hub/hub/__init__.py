"""Hugging Face Hub I/O: push, pull, downloads of sources, model cards, a local test Hub."""
