"""Permission checks at the core's operations, as rabbit_channel's check_*_permitted calls place them,
with RabbitMQ's refusal texts (the same texts are compared against RabbitMQ in tests/interop)."""

from __future__ import annotations

import pytest

from mailslot.core.errors import AccessRefused, NotFound
from mailslot.core.message import Message

from .conftest import World

NO = ("^$", "^$", "^$")


def refused(user: str, kind: str, name: str, vhost: str = "/") -> str:
    return f"access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"


def declare_queue(session, name: str, **kwargs) -> None:
    options = {"passive": False, "durable": False, "exclusive": False, "auto_delete": False, "arguments": {}}
    options.update(kwargs)
    session.vhost.declare_queue(name, owner=session.owner, authz=session.authz, **options)


def declare_exchange(session, name: str, type_: str = "direct", **kwargs) -> None:
    options = {"passive": False, "durable": False, "auto_delete": False, "internal": False, "arguments": {}}
    options.update(kwargs)
    session.vhost.declare_exchange(name, type_, authz=session.authz, **options)


def publish(session, exchange: str, routing_key: str) -> int:
    return session.publish(exchange, routing_key, Message(exchange, routing_key, b"\x00\x00", b"x", False), False)


def test_queue_declare_needs_configure_passive_needs_nothing(world: World) -> None:
    world.add_user("carol", perms=("^mine\\.", ".*", ".*"))
    session, _ = world.login("carol", "pw-carol")
    declare_queue(session, "mine.q")
    with pytest.raises(AccessRefused) as error:
        declare_queue(session, "theirs.q")
    assert error.value.text == refused("carol", "queue", "theirs.q")
    admin_session, _ = world.login("guest", "guest")
    declare_queue(admin_session, "theirs.q")
    declare_queue(session, "theirs.q", passive=True)  # rabbit_channel: no permission check when passive


def test_reserved_prefix_is_checked_before_configure(world: World) -> None:
    world.add_user("dave", perms=NO)
    session, _ = world.login("dave", "pw-dave")
    with pytest.raises(AccessRefused, match="queue name 'amq.x' contains reserved prefix 'amq.\\*'"):
        declare_queue(session, "amq.x")


def test_dead_letter_exchange_needs_read_on_queue_and_write_on_exchange(world: World) -> None:
    world.add_user("erin", perms=(".*", "^$", ".*"))
    session, _ = world.login("erin", "pw-erin")
    with pytest.raises(AccessRefused) as error:
        declare_queue(session, "q.dlx", arguments={"x-dead-letter-exchange": "dlx"})
    assert error.value.text == refused("erin", "exchange", "dlx")
    world.admin.set_permissions("erin", "/", ".*", "^dlx$", "^$")
    with pytest.raises(AccessRefused) as error:
        declare_queue(session, "q.dlx", arguments={"x-dead-letter-exchange": "dlx"})
    assert error.value.text == refused("erin", "queue", "q.dlx")  # read on the queue comes first


def test_exchange_declare_delete_and_alternate_exchange(world: World) -> None:
    world.add_user("fred", perms=("^fx", "^$", ".*"))
    session, _ = world.login("fred", "pw-fred")
    declare_exchange(session, "fx.a")
    with pytest.raises(AccessRefused) as error:
        declare_exchange(session, "other")
    assert error.value.text == refused("fred", "exchange", "other")
    with pytest.raises(AccessRefused) as error:
        declare_exchange(session, "fx.b", arguments={"alternate-exchange": "fx.a"})
    assert error.value.text == refused("fred", "exchange", "fx.a")  # write on the alternate exchange
    with pytest.raises(AccessRefused) as error:
        session.vhost.delete_exchange("other", if_unused=False, authz=session.authz, missing_ok=True)
    assert error.value.text == refused("fred", "exchange", "other")  # 403 even when it does not exist
    session.vhost.delete_exchange("fx.a", if_unused=False, authz=session.authz)


def test_delete_queue_needs_configure(world: World) -> None:
    admin, _ = world.login("guest", "guest")
    declare_queue(admin, "q1")
    world.add_user("gail", perms=("^$", ".*", ".*"))
    session, _ = world.login("gail", "pw-gail")
    with pytest.raises(AccessRefused) as error:
        session.vhost.delete_queue("q1", if_unused=False, if_empty=False, owner=session.owner, authz=session.authz)
    assert error.value.text == refused("gail", "queue", "q1")


def test_bind_needs_write_on_destination_and_read_on_source(world: World) -> None:
    admin, _ = world.login("guest", "guest")
    declare_queue(admin, "q1")
    declare_exchange(admin, "x1")
    world.add_user("hank", perms=(".*", "^$", ".*"))
    session, _ = world.login("hank", "pw-hank")
    vhost = session.vhost
    with pytest.raises(AccessRefused) as error:
        vhost.bind("x1", ("queue", "q1"), "k", {}, session.owner, session.authz)
    assert error.value.text == refused("hank", "queue", "q1")
    world.admin.set_permissions("hank", "/", ".*", "^q1$", "^$")
    with pytest.raises(AccessRefused) as error:
        vhost.bind("x1", ("queue", "q1"), "k", {}, session.owner, session.authz)
    assert error.value.text == refused("hank", "exchange", "x1")
    world.admin.set_permissions("hank", "/", ".*", "^(q1|x2)$", "^x1$")
    vhost.bind("x1", ("queue", "q1"), "k", {}, session.owner, session.authz)
    with pytest.raises(NotFound):  # write on x2 and read on x1 granted: then the lookup
        vhost.bind("x1", ("exchange", "x2"), "k", {}, session.owner, session.authz)
    world.admin.set_permissions("hank", "/", ".*", "^$", "^x1$")
    with pytest.raises(AccessRefused) as error:  # unbinding is checked as binding
        vhost.unbind("x1", ("queue", "q1"), "k", {}, session.authz)
    assert error.value.text == refused("hank", "queue", "q1")


def test_publish_needs_write_on_the_exchange_before_it_is_looked_up(world: World) -> None:
    world.add_user("ivan", perms=(".*", "^x-ok$", ".*"))
    session, _ = world.login("ivan", "pw-ivan")
    with pytest.raises(AccessRefused) as error:
        publish(session, "", "q")
    assert error.value.text == refused("ivan", "exchange", "amq.default")  # the default exchange's name
    with pytest.raises(AccessRefused) as error:
        publish(session, "missing", "q")
    assert error.value.text == refused("ivan", "exchange", "missing")  # 403 before 404
    with pytest.raises(NotFound):
        publish(session, "x-ok", "q")


def test_consume_and_get_need_read(world: World) -> None:
    admin, _ = world.login("guest", "guest")
    declare_queue(admin, "jobs")
    world.add_user("judy", perms=(".*", ".*", "^$"))
    session, _ = world.login("judy", "pw-judy")
    with pytest.raises(AccessRefused) as error:
        session.get("jobs", no_ack=True)
    assert error.value.text == refused("judy", "queue", "jobs")
    with pytest.raises(AccessRefused):
        session.consume("jobs", "", no_ack=True, exclusive=False, arguments={})
    with pytest.raises(AccessRefused):
        session.consume("missing", "", no_ack=True, exclusive=False, arguments={})  # 403 before 404


def test_topic_permissions_with_escaped_variables(world: World) -> None:
    world.add_user("k.*")
    world.admin.set_topic_permissions("k.*", "/", "amq.topic", "^{username}\\.", "^public\\.")
    session, _ = world.login("k.*", "pw-k.*")
    assert publish(session, "amq.topic", "k.*.news") == 0  # allowed (and unroutable)
    with pytest.raises(AccessRefused) as error:
        publish(session, "amq.topic", "kxx.news")  # "k.*" escaped: does not match "kxx"
    assert error.value.text == (
        "access to topic 'kxx.news' in exchange topic 'amq.topic' in vhost '/' refused for user 'k.*'"
    )
    declare_queue(session, "tq")
    session.vhost.bind("amq.topic", ("queue", "tq"), "public.#", {}, session.owner, session.authz)
    with pytest.raises(AccessRefused, match="access to topic 'private.#'"):
        session.vhost.bind("amq.topic", ("queue", "tq"), "private.#", {}, session.owner, session.authz)
    declare_exchange(session, "plain", "direct")
    publish(session, "plain", "anything")  # topic permissions apply to topic exchanges only
    declare_exchange(session, "other.topic", "topic")
    publish(session, "other.topic", "anything")  # no topic permission for this exchange: allowed


def test_permission_changes_reach_open_sessions(world: World) -> None:
    world.add_user("liam")
    session, _ = world.login("liam", "pw-liam")
    admin, _ = world.login("guest", "guest")
    declare_queue(admin, "q")
    assert publish(session, "", "q") == 1
    world.admin.set_permissions("liam", "/", ".*", "^$", ".*")
    with pytest.raises(AccessRefused):
        publish(session, "", "q")
    world.admin.clear_permissions("liam", "/")
    with pytest.raises(AccessRefused):
        session.get("q", no_ack=True)
