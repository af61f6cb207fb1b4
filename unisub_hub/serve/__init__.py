"""Serving many tasks of one basis behind one HTTP endpoint (``unisub-hub serve``).

One base model and one basis in memory; each task a few KiB of coefficients, switched per
request and mixed in one forward pass. OpenAI-compatible generation for causal LMs,
``/v1/classify`` for classifiers. See :mod:`.app` for the routes, :mod:`.worker` for batching.
"""

from .server import ServeSettings, open_server, run_app, run_server

__all__ = ["ServeSettings", "open_server", "run_app", "run_server"]
