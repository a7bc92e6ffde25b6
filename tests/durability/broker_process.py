"""A mailslot broker in a child process, for tests that kill it (SIGKILL) and start it again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

LISTENING = re.compile(r"AMQP listening on [^:\s]+:(\d+)")


class BrokerProcess:
    def __init__(self, data_dir: Path, port: int = 0, store: str = "segments") -> None:
        self.data_dir = data_dir
        self.port = port
        self.store = store
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 20.0) -> int:
        """Start ``mailslot serve`` and return the port it reports (reusing the same port on restarts)."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailslot", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir), "--store", self.store, "--http-port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                return self.port
        self.kill()
        raise RuntimeError("broker did not start:\n" + "".join(self.output))

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)
