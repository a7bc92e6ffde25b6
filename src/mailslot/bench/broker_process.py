"""A mailslot broker in a child process (``python -m mailslot serve`` on 127.0.0.1, a free port, a temp data
dir) for ``mailslot spike --start``: a separate process, so its pid gives the broker's RSS and the load
generator does not share its event loop (or its CPU core) with it."""

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


def _serve_has(param: str) -> bool:
    import inspect

    from mailslot.cli.main import serve

    return param in inspect.signature(serve).parameters


class BrokerProcess:
    def __init__(self, store: str = "segments", data_dir: Path | None = None) -> None:
        self.store = store
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="mailslot-spike-"))
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> Self:
        args = [sys.executable, "-m", "mailslot", "serve", "--host", "127.0.0.1", "--port", "0",
                "--store", self.store, "--data-dir", str(self.data_dir), "--heartbeat", "0", "--log-level", "info"]
        if _serve_has("http_port"):
            args += ["--http-port", "0"]  # never collide with a broker already on the machine
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
                threading.Thread(target=self._drain, daemon=True).start()  # never let the pipe fill up
                return self
        self.stop()
        raise RuntimeError("mailslot did not start:\n" + "".join(self.output[-30:]))

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

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, wait (kill after 20 s); removes the temp data dir. Returns the exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
