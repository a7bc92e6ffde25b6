"""A mailslot broker in a child process (``python -m mailslot serve`` on 127.0.0.1, a free port, a temp data
dir): a separate process, so its pid gives the broker's RSS, the load generator does not share its event
loop (or its CPU core) with it, and a test can SIGKILL it and start it again on the same data. Used by
``mailslot spike --start``, the benchmarks and the durability tests."""

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

LISTENING = re.compile(r"(AMQPS?) listening on [^:\s]+:(\d+)")
STARTED = "storing messages"  # Broker.start logs it once every listener is bound
# "HTTP API listening on 127.0.0.1:PORT (http://127.0.0.1:PORT/api/)" and the metrics' line (bootstrap)
HTTP_URL = re.compile(r"HTTP API listening on \S+ \((http://[^/\s]+)/api/\)")
METRICS_URL = re.compile(r"Prometheus metrics listening on \S+ \((http://[^/\s]+)/metrics\)")


class BrokerProcess:
    def __init__(
        self,
        store: str = "segments",
        data_dir: Path | None = None,
        log_level: str = "info",
        port: int = 0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.extra_args = extra_args  # more ``mailslot serve`` flags (TLS, --max-message-size, ...)
        self.tls_port = 0  # the AMQPS port, when extra_args turn that listener on
        self.log_level = log_level
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="mailslot-broker-"))
        self.process: subprocess.Popen[str] | None = None
        self.port = port  # 0: a free one; after a start, restarts reuse the port it got
        self.http_url = ""  # the management API's base URL, once started
        self.prometheus_url = ""  # the metrics endpoint's base URL, once started
        self.output: list[str] = []

    def start(self, timeout: float = 30.0) -> Self:
        args = [sys.executable, "-m", "mailslot", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--store", self.store, "--data-dir", str(self.data_dir), "--heartbeat", "0",
                "--log-level", self.log_level, "--http-port", "0", "--prometheus-port", "0",  # never collide with a broker here
                *self.extra_args]
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
            for pattern, attribute in ((HTTP_URL, "http_url"), (METRICS_URL, "prometheus_url")):
                found = pattern.search(line)
                if found:
                    setattr(self, attribute, found.group(1))
            m = LISTENING.search(line)
            if m and m.group(1) == "AMQP":
                self.port = int(m.group(2))
            elif m:
                self.tls_port = int(m.group(2))
            elif STARTED in line:
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

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed (the data directory stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful stop) and its exit code; the data directory stays."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

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
