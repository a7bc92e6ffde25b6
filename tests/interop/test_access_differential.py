"""Access control, differentially: the same users, vhosts, permissions, topic permissions and limits on
mailslot and on the reference RabbitMQ 3.10 (127.0.0.1:5672); every operation gets the same reply code
and the same text on both, for every permission class (rabbit_channel's check_*_permitted calls), the
login and vhost refusals, and each limit.

The world is made once per module from one definitions document whose password hashes mailslot computed:
RabbitMQ gets it with ``rabbitmqctl import_definitions`` (so RabbitMQ accepting those logins shows the hashes
are RabbitMQ's), mailslot with ``--definitions`` at boot. Per-test users and vhosts are made with
``rabbitmqctl add_user / add_vhost / set_permissions / set_*_limits`` on RabbitMQ and the same calls of
``Broker.access_admin`` on mailslot. Every name carries a uuid and is removed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from helpers import outcome, wait_for
from mailslot.core.access.passwords import hash_password

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

# Roles: (configure, write, read) on the world's vhost; None: a user with no permission there.
ROLES: dict[str, tuple[str, str, str] | None] = {
    "full": (".*", ".*", ".*"),
    "reader": ("^$", "^$", ".*"),
    "writer": ("^$", ".*", "^$"),
    "configurer": (".*", "^$", "^$"),
    "prefix": ("^p\\.", "^p\\.", "^p\\."),
    "defaultonly": ("^$", "^amq\\.default$", "^$"),
    "noperm": None,
}


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


@dataclass
class Side:
    """One broker under test: where it listens and how to administer it."""

    name: str
    port: int
    admin: Callable[..., Any]
    users: list[str] = field(default_factory=list)
    vhosts: list[str] = field(default_factory=list)

    def url(self, user: str, vhost: str, password: str | None = None) -> str:
        return f"amqp://{quote(user, safe='')}:{quote(password or 'pw-' + user, safe='')}@127.0.0.1:{self.port}/" + \
            quote(vhost, safe="")

    def connect(self, user: str, vhost: str, password: str | None = None) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.url(user, vhost, password)))


def _rabbitmq_admin(method: str, *args: Any) -> None:
    """The AccessAdmin call ``method(*args)`` done with rabbitmqctl."""
    if method == "add_user":
        _rabbitmqctl("add_user", args[0], args[1])
    elif method == "set_permissions":
        user, vhost, configure, write, read = args
        _rabbitmqctl("set_permissions", "-p", vhost, user, configure, write, read)
    elif method == "set_vhost_limits":
        _rabbitmqctl("set_vhost_limits", "-p", args[0], json.dumps(args[1]))
    elif method == "set_user_limits":
        _rabbitmqctl("set_user_limits", args[0], json.dumps(args[1]))
    elif method in ("add_vhost", "delete_vhost", "delete_user", "change_password"):
        _rabbitmqctl(method, *args)
    else:
        raise AssertionError(method)


def _import_into_rabbitmq(body: dict[str, Any]) -> None:
    """rabbitmqctl runs as the rabbitmq user (Debian's wrapper): the file must be readable by it."""
    fd, name = tempfile.mkstemp(prefix="mailslot-acc-", suffix=".json")
    try:
        os.write(fd, json.dumps(body).encode())
        os.close(fd)
        os.chmod(name, 0o644)
        _rabbitmqctl("import_definitions", name)
    finally:
        os.unlink(name)


def world_definitions(uid: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The definitions document (hashes made by mailslot) and role -> user name."""
    vhost = f"acc-{uid}"
    names = {role: f"acc-{uid}-{role}" for role in [*ROLES, "topic", "impersonator"]}
    users = [{"name": name, "password_hash": hash_password("pw-" + name),
              "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": ["impersonator"] if role == "impersonator" else []} for role, name in names.items()]
    permissions = [{"user": names[role], "vhost": vhost, "configure": p[0], "write": p[1], "read": p[2]}
                   for role, p in {**ROLES, "topic": (".*", ".*", ".*"), "impersonator": (".*", ".*", ".*")}.items()
                   if p is not None]
    topic = [{"user": names["topic"], "vhost": vhost, "exchange": "amq.topic", "write": "^{username}\\.",
              "read": "^public\\."}]
    body = {"rabbit_version": "3.10.8", "users": users, "vhosts": [{"name": vhost}], "permissions": permissions,
            "topic_permissions": topic}
    return body, names


def _make_topology(side: Side, user: str, vhost: str) -> None:
    conn = side.connect(user, vhost)
    ch = conn.channel()
    ch.queue_declare("q.existing", durable=True)
    ch.exchange_declare("x.direct", "direct", durable=True)
    ch.exchange_declare("x.topic", "topic", durable=True)
    conn.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Side], dict[str, str], str]]:
    from conftest import _service_missing, rabbitmq_reachable

    if not rabbitmq_reachable() or shutil.which("rabbitmqctl") is None:
        _service_missing("RabbitMQ (with rabbitmqctl) not reachable on 127.0.0.1:5672")
    from mailslot.testing import broker_in_thread

    uid = uuid.uuid4().hex[:10]
    body, names = world_definitions(uid)
    vhost = f"acc-{uid}"
    path = tmp_path_factory.mktemp("defs") / "world.json"
    path.write_text(json.dumps(body))
    _import_into_rabbitmq(body)
    rabbit = Side("rabbitmq", 5672, _rabbitmq_admin, users=list(names.values()), vhosts=[vhost])
    try:
        with broker_in_thread(definitions=path) as broker:
            ours = Side("mailslot", broker.amqp_port,
                        lambda method, *args: broker.run_threadsafe(lambda: getattr(broker.access_admin, method)(*args)))
            for side in (rabbit, ours):
                _make_topology(side, names["full"], vhost)
            yield {"rabbitmq": rabbit, "mailslot": ours}, names, vhost
    finally:
        for name in rabbit.vhosts:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60, check=False)
        for name in rabbit.users:
            subprocess.run(["rabbitmqctl", "-q", "delete_user", name], capture_output=True, timeout=60, check=False)


def connect_outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok",) or ("refused", code, text) for a connection attempt (pika wraps the broker's close)."""
    try:
        fn()
    except (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError) as error:
        found = re.match(r"ConnectionClosedByBroker: \((\d+)\) (['\"])(.*)\2$", str(error.args[0]), re.DOTALL)
        assert found, error.args
        return ("refused", int(found.group(1)), found.group(3))
    return ("ok",)


# ---- the permission matrix ------------------------------------------------------------------------------

OPERATIONS: dict[str, Callable[[Any, str], Any]] = {
    "queue.declare": lambda ch, role: ch.queue_declare(f"q.new.{role}"),
    "queue.declare p.": lambda ch, role: ch.queue_declare(f"p.q.{role}"),
    "queue.declare amq.": lambda ch, role: ch.queue_declare("amq.reserved"),
    "queue.declare passive": lambda ch, role: ch.queue_declare("q.existing", passive=True),
    "queue.declare dlx": lambda ch, role: ch.queue_declare(f"q.dlx.{role}",
                                                           arguments={"x-dead-letter-exchange": "x.direct"}),
    "queue.delete missing": lambda ch, role: ch.queue_delete("q.none"),
    "queue.purge": lambda ch, role: ch.queue_purge("q.existing"),
    "queue.bind": lambda ch, role: ch.queue_bind("q.existing", "x.direct", f"k.{role}"),
    "queue.unbind": lambda ch, role: ch.queue_unbind("q.existing", "x.direct", f"k.{role}"),
    "basic.get": lambda ch, role: ch.basic_get("q.existing", auto_ack=False),
    "basic.consume": lambda ch, role: ch.basic_consume("q.existing", lambda *a: None),
    "basic.consume missing": lambda ch, role: ch.basic_consume("q.none", lambda *a: None),
    "publish x.direct": lambda ch, role: (ch.confirm_delivery(), ch.basic_publish("x.direct", "nowhere", b"m")),
    "publish default": lambda ch, role: (ch.confirm_delivery(), ch.basic_publish("", "nowhere", b"m")),
    "publish missing": lambda ch, role: (ch.confirm_delivery(), ch.basic_publish("x.none", "k", b"m")),
    "exchange.declare": lambda ch, role: ch.exchange_declare(f"x.new.{role}", "direct"),
    "exchange.declare passive": lambda ch, role: ch.exchange_declare("x.direct", passive=True),
    "exchange.declare ae": lambda ch, role: ch.exchange_declare(f"x.ae.{role}", "fanout",
                                                               arguments={"alternate-exchange": "x.direct"}),
    "exchange.delete missing": lambda ch, role: ch.exchange_delete("x.none"),
    "exchange.delete amq.": lambda ch, role: ch.exchange_delete("amq.direct"),
    "exchange.bind": lambda ch, role: ch.exchange_bind("x.topic", "x.direct", f"e.{role}"),
    "exchange.unbind": lambda ch, role: ch.exchange_unbind("x.topic", "x.direct", f"e.{role}"),
}


def _run_matrix(side: Side, names: dict[str, str], vhost: str) -> dict[str, tuple[Any, ...]]:
    results: dict[str, tuple[Any, ...]] = {}
    for role in ROLES:
        if ROLES[role] is None:
            continue
        for op, fn in OPERATIONS.items():
            conn = side.connect(names[role], vhost)
            try:
                results[f"{role} {op}"] = outcome(lambda f=fn, c=conn, r=role: f(c.channel(), r))
            finally:
                if conn.is_open:
                    conn.close()
    return results


def test_every_permission_class_gets_rabbitmqs_reply(world: tuple[dict[str, Side], dict[str, str], str]) -> None:
    sides, names, vhost = world
    theirs = _run_matrix(sides["rabbitmq"], names, vhost)
    ours = _run_matrix(sides["mailslot"], names, vhost)
    differences = {key: (ours[key], theirs[key]) for key in theirs if ours[key] != theirs[key]}
    assert differences == {}
    refusals = [v for v in theirs.values() if v[0] != "ok"]
    assert len(refusals) > 40  # the matrix really exercises refusals, not just successes


def test_topic_permissions(world: tuple[dict[str, Side], dict[str, str], str]) -> None:
    sides, names, vhost = world
    user = names["topic"]
    results = {}
    for name, side in sides.items():
        steps = {
            "publish own key": lambda ch: ch.basic_publish("amq.topic", f"{user}.news", b"m"),
            "publish other key": lambda ch: ch.basic_publish("amq.topic", "someone.news", b"m"),
            "bind public": lambda ch: ch.queue_bind("q.existing", "amq.topic", "public.#"),
            "bind private": lambda ch: ch.queue_bind("q.existing", "amq.topic", "private.#"),
            "publish x.topic": lambda ch: ch.basic_publish("x.topic", "anything", b"m"),
        }
        for step, fn in steps.items():
            conn = side.connect(user, vhost)
            ch = conn.channel()
            ch.confirm_delivery()
            results[(name, step)] = outcome(lambda f=fn, c=ch: f(c))
            if conn.is_open:
                conn.close()
    for step in ("publish own key", "publish other key", "bind public", "bind private", "publish x.topic"):
        assert results[("mailslot", step)] == results[("rabbitmq", step)], step
    assert results[("rabbitmq", "publish other key")][1] == 403


def test_login_and_vhost_refusals(world: tuple[dict[str, Side], dict[str, str], str]) -> None:
    sides, names, vhost = world
    results = {}
    for name, side in sides.items():
        results[name] = {
            "wrong password": connect_outcome(lambda s=side: s.connect(names["full"], vhost, "nope")),
            "unknown user": connect_outcome(lambda s=side: s.connect("acc-nobody-" + vhost, vhost)),
            "no permission": connect_outcome(lambda s=side: s.connect(names["noperm"], vhost)),
            "unknown vhost": connect_outcome(lambda s=side: s.connect(names["full"], vhost + "-none")),
        }
    assert results["mailslot"] == results["rabbitmq"]
    assert results["rabbitmq"]["wrong password"][1] == 403
    assert results["rabbitmq"]["no permission"][1] == 530


def test_user_id_needs_the_impersonator_tag(world: tuple[dict[str, Side], dict[str, str], str]) -> None:
    sides, names, vhost = world
    results = {}
    for name, side in sides.items():
        for role in ("full", "impersonator"):
            conn = side.connect(names[role], vhost)
            ch = conn.channel()
            ch.confirm_delivery()
            results[(name, role)] = outcome(
                lambda c=ch: c.basic_publish("", "nowhere", b"m", pika.BasicProperties(user_id="someone-else")))
            if conn.is_open:
                conn.close()
    assert results[("mailslot", "full")] == results[("rabbitmq", "full")]
    assert results[("mailslot", "impersonator")] == results[("rabbitmq", "impersonator")] == ("ok",)


def test_update_secret_is_accepted(world: tuple[dict[str, Side], dict[str, str], str]) -> None:
    sides, names, vhost = world
    for side in sides.values():
        conn = side.connect(names["full"], vhost)
        conn.update_secret("new-token", "token refresh")  # update-secret-ok, as RabbitMQ's internal backend
        ok = conn.channel().queue_declare("q.existing", passive=True)  # still open and working
        assert ok.method.queue == "q.existing" and conn.is_open
        conn.close()


# ---- limits and runtime changes (each test makes its own users and vhosts) -------------------------------


@pytest.fixture
def scratch(world: tuple[dict[str, Side], dict[str, str], str]) -> Iterator[Callable[[str], tuple[str, str]]]:
    """``make(role)``: a fresh user (password pw-<name>) and vhost with full permissions, on both sides."""
    sides = world[0]
    made: list[tuple[str, str]] = []

    def make(role: str) -> tuple[str, str]:
        uid = uuid.uuid4().hex[:8]
        user, vhost = f"acc-{uid}-{role}", f"acc-{uid}-v"
        for side in sides.values():
            side.admin("add_vhost", vhost)
            side.admin("add_user", user, "pw-" + user)
            side.admin("set_permissions", user, vhost, ".*", ".*", ".*")
        sides["rabbitmq"].users.append(user)
        sides["rabbitmq"].vhosts.append(vhost)
        made.append((user, vhost))
        return user, vhost

    yield make


def _both(world: tuple[dict[str, Side], dict[str, str], str], fn: Callable[[Side], Any]) -> dict[str, Any]:
    return {name: fn(side) for name, side in world[0].items()}


@pytest.mark.parametrize("limit", ["set_vhost_limits", "set_user_limits"])
def test_connection_limits(world: Any, scratch: Callable[[str], tuple[str, str]], limit: str) -> None:
    user, vhost = scratch("conn")

    def run(side: Side) -> tuple[Any, ...]:
        side.admin(limit, vhost if limit == "set_vhost_limits" else user, {"max-connections": 1})
        first = side.connect(user, vhost)
        try:
            return connect_outcome(lambda: side.connect(user, vhost).close())
        finally:
            first.close()

    results = _both(world, run)
    assert results["mailslot"] == results["rabbitmq"]
    assert results["rabbitmq"][:2] == ("refused", 530)


def test_user_channel_limit(world: Any, scratch: Callable[[str], tuple[str, str]]) -> None:
    user, vhost = scratch("uchan")

    def run(side: Side) -> tuple[Any, ...]:
        side.admin("set_user_limits", user, {"max-channels": 2})
        conn = side.connect(user, vhost)
        try:
            conn.channel()
            conn.channel()
            return outcome(conn.channel)
        finally:
            if conn.is_open:
                conn.close()

    results = _both(world, run)
    assert results["mailslot"] == results["rabbitmq"]
    assert results["rabbitmq"][:2] == ("connection", 530)


def test_vhost_queue_limit(world: Any, scratch: Callable[[str], tuple[str, str]]) -> None:
    user, vhost = scratch("vq")

    def run(side: Side) -> tuple[Any, ...]:
        side.admin("set_vhost_limits", vhost, {"max-queues": 1})
        conn = side.connect(user, vhost)
        try:
            ch = conn.channel()
            ch.queue_declare("first")
            ch.queue_declare("first")  # an existing queue is not counted again
            return outcome(lambda: ch.queue_declare("second"))
        finally:
            if conn.is_open:
                conn.close()

    results = _both(world, run)
    assert results["mailslot"] == results["rabbitmq"]
    assert results["rabbitmq"][:2] == ("channel", 406)


@pytest.mark.parametrize("what", ["delete_user", "delete_vhost"])
def test_deleting_closes_connections(world: Any, scratch: Callable[[str], tuple[str, str]], what: str) -> None:
    user, vhost = scratch("del")

    def run(side: Side) -> tuple[Any, ...]:
        conn = side.connect(user, vhost)
        conn.channel().queue_declare("q", durable=True)
        side.admin(what, user if what == "delete_user" else vhost)
        closed: list[tuple[Any, ...]] = []

        def pump() -> bool:
            try:
                conn.process_data_events(time_limit=0.1)
            except pika.exceptions.ConnectionClosedByBroker as error:
                closed.append(("connection", error.reply_code, error.reply_text))
            return bool(closed) or not conn.is_open

        wait_for(pump, timeout=15, what="the broker closes the connection")
        return closed[0] if closed else ("closed",)

    results = _both(world, run)
    assert results["rabbitmq"][:2] == ("connection", 320)
    if what == "delete_user":
        assert results["mailslot"] == results["rabbitmq"]
    else:
        # RabbitMQ's text races between its vhost_down and vhost_deleted events ("vhost 'v' is down" or
        # "... is deleted"); mailslot always says "is deleted".
        assert results["mailslot"] == ("connection", 320, f"CONNECTION_FORCED - vhost '{vhost}' is deleted")
        assert results["rabbitmq"][2] in {f"CONNECTION_FORCED - vhost '{vhost}' is deleted",
                                          f"CONNECTION_FORCED - vhost '{vhost}' is down"}
