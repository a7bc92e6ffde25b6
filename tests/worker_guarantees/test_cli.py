"""``mailslot worker module:function`` as a process: handles, stops gracefully on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from helpers import wait_for
from mailslot.cli.worker import load_handler

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

HANDLER = '''
def handle(job):
    job.db.execute("INSERT INTO effects VALUES (?)", (job.key,))
'''


def test_load_handler_errors():
    with pytest.raises(typer.BadParameter, match="module:function"):
        load_handler("nocolon")
    with pytest.raises(typer.BadParameter, match="cannot import"):
        load_handler("no_such_module_xyz:f")
    with pytest.raises(typer.BadParameter, match="no attribute"):
        load_handler("os:no_such_function")
    assert load_handler("os.path:join") is os.path.join


def test_worker_command_runs_exactly_once_and_stops_on_sigterm(tmp_path: Path):
    import pika

    from mailslot.testing import broker_in_thread

    (tmp_path / "myhandlers.py").write_text(HANDLER)
    db_path = tmp_path / "app.db"
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE effects (k TEXT)")
    db.commit()
    with broker_in_thread(store="memory") as broker:
        conn = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        ch = conn.channel()
        ch.queue_declare("cli-in", durable=True)
        for key in ["a", "b", "a"]:
            ch.basic_publish("", "cli-in", b"x", pika.BasicProperties(message_id=key, delivery_mode=2))
        src = str(Path(__file__).resolve().parents[2] / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        with socket.socket() as s:  # a port nothing listens on: the worker goes on to the next URL
            s.bind(("127.0.0.1", 0))
            dead = f"amqp://guest:guest@127.0.0.1:{s.getsockname()[1]}/%2F"
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailslot", "worker", "myhandlers:handle", "-q", "cli-in", "--url",
             f"{dead},{broker.amqp_url}", "--guarantee", "exactly-once", "--sqlite", str(db_path)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: db.execute("SELECT count(*) FROM effects").fetchone()[0] >= 2, 30, what="two effects")
            # Every message taken and acked (the duplicate "a" included): nothing is left for SIGTERM to cut.
            queue = broker.core.vhosts["/"].queues["cli-in"]
            wait_for(lambda: queue.message_count == 0 and queue.unacked == 0, 30, what="the queue empty and acked")
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        conn.close()
    assert proc.returncode == 0, out
    assert sorted(k for (k,) in db.execute("SELECT k FROM effects")) == ["a", "b"]
    assert "already processed" in out and "handled 2, already processed 1" in out
