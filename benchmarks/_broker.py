"""A fresh mailslot broker in a child process (``python -m mailslot serve``, sqlite store, temp data dir)
for the benchmarks; its pid is what psutil / py-spy watch."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

LISTENING = re.compile(r"AMQP listening on [^:\s]+:(\d+)")


class MailslotProcess:
    def __init__(self, store: str = "sqlite", data_dir: Path | None = None, log_level: str = "warning") -> None:
        self.store = store
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="mailslot-bench-"))
        self.log_level = log_level
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> MailslotProcess:
        # serve runs on uvloop when it is installed (mailslot.cli.serve._loop_factory).
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailslot", "serve", "--host", "127.0.0.1", "--port", "0",
             "--store", self.store, "--data-dir", str(self.data_dir), "--heartbeat", "0", "--http-port", "0",
             "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = LISTENING.search(line)
            if m:
                self.port = int(m.group(1))
                # keep draining its output so the pipe never blocks the broker
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("mailslot did not start:\n" + "".join(self.output))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            del self.output[:-200]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
