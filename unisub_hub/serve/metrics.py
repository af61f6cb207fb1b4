"""Prometheus metrics of a server (``GET /metrics``), through ``prometheus_client``.

Requests by route and status, latency, batch size, distinct tasks per batch, cold loads of
tasks, and resident tasks and bytes. Each server has its own collector registry, so two
servers in one process (tests) do not share counts.
"""

from __future__ import annotations

__all__ = ["Metrics"]


class Metrics:
    """The server's counters, histograms and gauges."""

    def __init__(self) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.content_type = CONTENT_TYPE_LATEST
        self.requests = Counter("unisub_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("unisub_request_seconds", "Request latency", ["route"], registry=self.registry)
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256)
        self.batch_size = Histogram(
            "unisub_batch_size", "Rows per forward batch", buckets=sizes, registry=self.registry
        )
        self.batch_tasks = Histogram(
            "unisub_batch_tasks", "Distinct tasks per batch", buckets=sizes, registry=self.registry
        )
        self.cold_loads = Histogram(
            "unisub_task_load_seconds",
            "Loading a task",
            registry=self.registry,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )
        self.resident_tasks = Gauge("unisub_resident_tasks", "Tasks on the model", registry=self.registry)
        self.resident_bytes = Gauge("unisub_resident_bytes", "Bytes of the resident tasks", registry=self.registry)

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, size: int, tasks: int) -> None:
        self.batch_size.observe(size)
        self.batch_tasks.observe(tasks)

    def cold_load(self, seconds: float) -> None:
        self.cold_loads.observe(seconds)

    def resident(self, tasks: int, size: int) -> None:
        self.resident_tasks.set(tasks)
        self.resident_bytes.set(size)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
