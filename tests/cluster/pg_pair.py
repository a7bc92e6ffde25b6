"""A private PostgreSQL 15 primary and its synchronous standby, on free ports, for the deployment tests.

``PgPair.start()`` runs initdb, starts the primary with ``synchronous_standby_names = 'standby1'`` and
``synchronous_commit = on``, clones it with pg_basebackup, starts the standby (``application_name``
``standby1``) and waits until the primary reports it as its *sync* standby: from then on every COMMIT
returns only once the standby has its WAL. ``dsn`` names both servers with
``target_session_attrs=read-write``, so libpq connects to whichever of them is the primary.
``fail_over()`` promotes the standby (after a test killed or stopped the primary);
``rebuild_standby()`` then clones a new synchronous standby on the lost server's port, so ``dsn``
stays valid and the pair is whole again.

PostgreSQL refuses to run as root: when the tests run as root (CI), every server command runs as the
``postgres`` OS user (``runuser``) in a temp dir it owns. The primary gets ``synchronous_standby_names``
(ALTER SYSTEM) after the standby was cloned from it, so a promoted standby does not wait for a standby
of its own.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psutil
import psycopg

from helpers import wait_for

BIN = Path(os.environ.get("MAILSLOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
STANDBY_NAME = "standby1"
# A small server: the tests write a few hundred messages; fsync stays on (a confirm means on disk).
SERVER_SETTINGS = ("-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=16MB", "-c", "max_connections=40",
                   "-c", "wal_level=replica", "-c", "max_wal_senders=4", "-c", "synchronous_commit=on",
                   "-c", "wal_receiver_status_interval=1s", "-c", "logging_collector=off")


def missing() -> str:
    """Why a pair cannot start here ("" if it can)."""
    if not all((BIN / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
        return f"PostgreSQL binaries (initdb, pg_ctl, pg_basebackup) absent from {BIN}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run PostgreSQL as"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class PgServer:
    """One PostgreSQL data directory and its server process."""

    def __init__(self, pair: PgPair, name: str, port: int = 0) -> None:
        self.pair, self.name = pair, name
        self.data = pair.root / name
        self.port = port or _free_port()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = " ".join((*SERVER_SETTINGS, "-c", f"port={self.port}",
                            "-c", f"unix_socket_directories={self.pair.root}"))
        self.pair.run("pg_ctl", "-D", str(self.data), "-l", str(self.pair.root / f"{self.name}.log"), "-w",
                      "-t", "30", "-o", options, "start")

    def stop(self) -> None:
        """A fast shutdown (what an operator's ``pg_ctl stop`` does)."""
        self.pair.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def postmaster(self) -> psutil.Process | None:
        pid_file = self.data / "postmaster.pid"
        try:
            return psutil.Process(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and every process of it at once: the machine is lost, nothing shuts down."""
        postmaster = self.postmaster()
        if postmaster is None:
            return
        processes = [postmaster, *postmaster.children(recursive=True)]
        for process in processes:
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        wait_for(lambda: not any(_alive(process) for process in processes), timeout=10,
                 what=f"the {self.name} server's processes gone after SIGKILL")
        # What a clean stop removes. (A killed server's PIDs may linger as zombies, and PostgreSQL takes a
        # lock file whose PID exists for a live server's.)
        for leftover in (self.data / "postmaster.pid", self.pair.root / f".s.PGSQL.{self.port}",
                         self.pair.root / f".s.PGSQL.{self.port}.lock"):
            leftover.unlink(missing_ok=True)

    def promote(self) -> None:
        self.pair.run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "promote")

    def running(self) -> bool:
        postmaster = self.postmaster()
        return postmaster is not None and postmaster.is_running()

    def query(self, statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description is not None else []


class PgPair:
    """A primary and a synchronous standby (see the module's docstring)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailslot-pgpair-"))
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.primary = PgServer(self, "primary")
        self.standby = PgServer(self, "standby")
        self._servers = 2

    @property
    def dsn(self) -> str:
        """Both servers; libpq picks the one that accepts writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/postgres"
                "?target_session_attrs=read-write")

    def run(self, tool: str, *args: str) -> None:
        command = [str(BIN / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{self._logs()}")

    def _logs(self) -> str:
        return "".join(f"\n--- {log.name}\n" + log.read_text()[-2000:] for log in sorted(self.root.glob("*.log")))

    def start(self) -> PgPair:
        self.run("initdb", "-D", str(self.primary.data), "-U", "postgres", "-A", "trust", "--no-sync",
                 "--no-instructions")
        self.primary.start()
        self._clone_standby()
        self._require_standby()
        return self

    def _clone_standby(self) -> None:
        self.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                 "-D", str(self.standby.data), "-X", "stream", "--checkpoint=fast", "--no-sync")
        (self.standby.data / "standby.signal").touch()
        with open(self.standby.data / "postgresql.auto.conf", "a") as conf:  # the last setting wins
            conf.write(f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user=postgres "
                       f"application_name={STANDBY_NAME}'\n")
        self.standby.start()

    def fail_over(self) -> None:
        """What a failover tool does once the primary is gone: promote the standby, and let it commit
        without a synchronous standby of its own (it has none yet)."""
        self.standby.promote()
        self.standby.query("ALTER SYSTEM RESET synchronous_standby_names")
        self.standby.query("SELECT pg_reload_conf()")
        self.primary, self.standby = self.standby, self.primary

    def rebuild_standby(self) -> None:
        """After a failover: a new synchronous standby cloned from the new primary, on the lost server's
        port (so the nodes' DSN names both again), then the primary waits for it on every commit."""
        lost = self.standby
        lost.kill()
        shutil.rmtree(lost.data)
        self._servers += 1
        self.standby = PgServer(self, f"server{self._servers}", port=lost.port)
        self._clone_standby()
        self._require_standby()

    def _require_standby(self) -> None:
        """Every COMMIT on the primary waits for the standby from now on (set after the clone was taken,
        so the standby's own files do not ask for a standby once it is promoted)."""
        self.primary.query(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
        self.primary.query("SELECT pg_reload_conf()")
        self.wait_sync()

    def wait_sync(self, timeout: float = 30.0) -> None:
        """Until the primary streams to the standby synchronously."""
        wait_for(self.healthy, timeout=timeout,
                 what=lambda: "the standby streaming as the synchronous standby" + self._logs())

    def healthy(self) -> bool:
        """Both servers up, the standby synchronous."""
        try:
            return bool(self.primary.query(
                f"SELECT 1 FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}' "
                "AND state = 'streaming' AND sync_state = 'sync'"))
        except psycopg.OperationalError:
            return False

    def close(self) -> None:
        for server in (self.primary, self.standby):
            server.kill()
        shutil.rmtree(self.root, ignore_errors=True)
