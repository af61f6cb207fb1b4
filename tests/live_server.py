"""A real ``unisub-hub serve`` or ``web`` process on an ephemeral loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx


class Server:
    """``unisub-hub COMMAND ARGS --port 0`` in its own process; ``url`` once it answers ``health``."""

    def __init__(
        self,
        *args: object,
        home: Path,
        env: dict[str, str] | None = None,
        command_name: str = "serve",
        health: str = "/healthz",
    ) -> None:
        command = [sys.executable, "-m", "unisub_hub", "--home", str(home), command_name, *map(str, args)]
        command += ["--port", "0"] + (["--device", "cpu"] if command_name == "serve" else [])
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
        )
        self.url = ""
        self.output: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise RuntimeError("the server exited: " + "".join(self.output))
            self.output.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                self.url = found.group(1)
                break
        assert self.url, "".join(self.output)
        # Keep reading what the server prints: a full pipe would block it mid-request.
        threading.Thread(target=self._drain, daemon=True).start()
        assert httpx.get(self.url + health, timeout=10).status_code == 200

    def _drain(self) -> None:
        for line in self.process.stdout or ():
            self.output.append(line)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
