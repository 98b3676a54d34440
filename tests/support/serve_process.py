"""Run ``python image_captioning.py serve`` as a user does, in a subprocess, for tests and benchmarks.

``running_server`` starts it on a free port (``--port 0``), waits for the line that says where to
open the page, yields a ``ServerProcess`` and stops it with Ctrl-C (SIGINT) at the end, checking
that it shut down cleanly unless told not to.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"^Open (http://\S+/) in a browser")


@dataclass
class ServerProcess:
    process: subprocess.Popen
    url: str = ""
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 60) -> int:
        """Ctrl-C, as a person stops it; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise


@contextlib.contextmanager
def running_server(*args: str, env: dict | None = None, start_timeout: float = 300,
                   check_clean_exit: bool = True) -> Iterator[ServerProcess]:
    """Start ``serve --port 0 ARGS...`` and yield it once it says where to open the page.

    Raises:
        RuntimeError: it exited or did not say where to open the page within ``start_timeout``.
    """
    command = [sys.executable, str(PROJECT_ROOT / "image_captioning.py"), "serve", "--port", "0", *args]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    server = ServerProcess(process)
    ready = threading.Event()

    def read() -> None:  # all output, so a full pipe never blocks the server
        for line in process.stdout:
            server.lines.append(line)
            match = URL_LINE.match(line)
            if match:
                server.url = match.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + start_timeout
    while not ready.wait(0.2) and time.monotonic() < deadline:
        pass
    if not server.url:
        process.kill()
        process.wait(10)
        raise RuntimeError(f"serve did not start within {start_timeout:g} s:\n{server.output}")
    try:
        yield server
    finally:
        status = server.stop()
        if check_clean_exit:
            assert status == 0, f"serve exited with {status}:\n{server.output}"
            assert "Server stopped." in server.output, server.output
            assert "Traceback" not in server.output, server.output
