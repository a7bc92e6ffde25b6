"""Logins, vhost admission, limits, and what changing users and vhosts does to open connections."""

from __future__ import annotations

import logging

import pytest

from mailslot.core.access.admin import AccessAdmin, seed_defaults
from mailslot.core.access.control import InternalAccessControl
from mailslot.core.access.limits import InvalidLimit
from mailslot.core.access.patterns import InvalidPattern
from mailslot.core.access.records import AlreadyExists, NoSuchUser, NoSuchVhost
from mailslot.core.access.throttle import FREE_FAILURES, MAX_DELAY, LoginThrottle, source_of
from mailslot.core.errors import AccessRefused, NotAllowed, PreconditionFailed
from mailslot.core.message import Message
from mailslot.storage.memory import MemoryMetadataStore

from .conftest import World
from .test_permissions import declare_queue


def test_refusals_look_the_same_whatever_the_reason(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.add_user("mona")
    caplog.set_level(logging.WARNING, "mailslot.access")
    errors = []
    for user, password, host in [("nobody", "x", "127.0.0.1"), ("mona", "wrong", "127.0.0.1"),
                                 ("guest", "guest", "10.0.0.7"), ("mona", "", "127.0.0.1")]:
        with pytest.raises(AccessRefused) as error:
            world.access.authenticate(user, password, host)
        errors.append(type(error.value))
    assert set(errors) == {AccessRefused}
    text = caplog.text
    assert "user 'nobody' from 127.0.0.1: invalid credentials" in text
    assert "user 'guest' from 10.0.0.7: user can only connect via localhost" in text
    assert "user 'mona' from 127.0.0.1: blank password" in text
    assert "wrong" not in text.replace("login refused", "")  # the password is never logged
    assert world.access.authenticate("guest", "guest", "::1").name == "guest"
    assert world.access.authenticate("mona", "pw-mona", "10.0.0.7").name == "mona"


def test_logged_names_are_printable_and_bounded(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mailslot.access")
    with pytest.raises(AccessRefused):
        world.access.authenticate("evil\nFAKE LOG LINE" + "x" * 500, "pw", "127.0.0.1")
    assert "evil\\x0aFAKE LOG LINE" in caplog.text
    assert "\nFAKE" not in caplog.text
    assert "x" * 200 not in caplog.text


def test_failed_logins_slow_down_one_source_only() -> None:
    throttle = LoginThrottle()
    now = 100.0
    for _ in range(FREE_FAILURES):
        assert throttle.delay("192.0.2.1", now) == 0.0
        throttle.failed("192.0.2.1", now)
    delays = []
    for _ in range(8):
        delays.append(throttle.delay("192.0.2.1", now))
        throttle.failed("192.0.2.1", now)
    assert delays == sorted(delays) and delays[0] > 0 and delays[-1] == MAX_DELAY
    assert throttle.delay("192.0.2.2", now) == 0.0  # another address is not slowed
    assert throttle.delay("192.0.2.1", now + 61) == 0.0  # failures wear off
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff") == "2001:db8::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"


def test_throttle_memory_is_bounded() -> None:
    from mailslot.core.access import throttle as module

    throttle = LoginThrottle()
    for i in range(module.MAX_SOURCES + 500):
        throttle.failed(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 0.0)
    assert len(throttle._failures) == module.MAX_SOURCES


def test_login_delay_counts_failures_from_authenticate(world: World) -> None:
    for _ in range(FREE_FAILURES + 1):
        with pytest.raises(AccessRefused):
            world.access.authenticate("guest", "nope", "192.0.2.9")
    assert world.access.login_delay("192.0.2.9") > 0
    assert world.access.login_delay("127.0.0.1") == 0


def test_vhost_admission_texts(world: World) -> None:
    world.add_user("nina", perms=None)
    nina = world.access.authenticate("nina", "pw-nina", "127.0.0.1")
    with pytest.raises(NotAllowed) as error:
        world.access.open_vhost(nina, "/")
    assert error.value.text == "access to vhost '/' refused for user 'nina'"
    with pytest.raises(NotAllowed) as error:
        world.access.open_vhost(nina, "nowhere")
    assert error.value.text == "vhost nowhere not found"


def test_vhost_and_user_connection_limits(world: World) -> None:
    world.add_user("oscar")
    world.admin.set_vhost_limits("/", {"max-connections": 2})
    world.login("oscar", "pw-oscar")
    world.login("guest", "guest")
    with pytest.raises(NotAllowed) as error:
        world.login("oscar", "pw-oscar")
    assert error.value.text == "access to vhost '/' refused for user 'oscar': connection limit (2) is reached"
    world.admin.clear_vhost_limits("/")
    world.admin.set_user_limits("oscar", {"max-connections": 1})
    with pytest.raises(NotAllowed) as error:
        world.login("oscar", "pw-oscar")
    assert error.value.text == "connection refused for user 'oscar': user connection limit (1) is reached"
    world.admin.set_user_limits("oscar", {"max-connections": -1})  # negative: no limit
    world.login("oscar", "pw-oscar")
    world.admin.set_vhost_limits("/", {"max-connections": 0})  # 0: none at all
    with pytest.raises(NotAllowed, match="connection limit \\(0\\) is reached"):
        world.login("guest", "guest")


def test_user_channel_limit_counts_every_connection(world: World) -> None:
    world.add_user("pete")
    world.admin.set_user_limits("pete", {"max-channels": 3})
    pete = world.access.authenticate("pete", "pw-pete", "127.0.0.1")
    _, first = world.login("pete", "pw-pete")
    _, second = world.login("pete", "pw-pete")
    first.channels, second.channels = 2, 0
    world.access.check_channel_open(pete)
    second.channels = 1
    with pytest.raises(NotAllowed) as error:
        world.access.check_channel_open(pete)
    assert error.value.text == (
        "number of channels opened for user 'pete' has reached the maximum allowed user limit of (3)"
    )


def test_vhost_queue_limit(world: World) -> None:
    session, _ = world.login("guest", "guest")
    world.admin.set_vhost_limits("/", {"max-queues": 1})
    declare_queue(session, "one")
    declare_queue(session, "one")  # redeclaring an existing queue is fine
    with pytest.raises(PreconditionFailed) as error:
        declare_queue(session, "two")
    assert error.value.text == "cannot declare queue 'two': queue limit in vhost '/' (1) is reached"
    world.admin.clear_vhost_limits("/", "max-queues")
    declare_queue(session, "two")


def test_limits_are_validated() -> None:
    world = World()
    with pytest.raises(InvalidLimit, match="Unrecognised terms \\['max-channels'\\] in vhost-limits"):
        world.admin.set_vhost_limits("/", {"max-channels": 3})
    with pytest.raises(InvalidLimit, match="max-queues should be a number"):
        world.admin.set_vhost_limits("/", {"max-queues": "ten"})
    with pytest.raises(NoSuchVhost):
        world.admin.set_vhost_limits("nope", {"max-queues": 1})
    with pytest.raises(NoSuchUser):
        world.admin.set_user_limits("nope", {"max-channels": 1})


def test_deleting_a_user_closes_its_connections(world: World) -> None:
    world.add_user("quinn")
    _, conn = world.login("quinn", "pw-quinn")
    _, guest_conn = world.login("guest", "guest")
    world.admin.delete_user("quinn")
    assert conn.closed_with == ["user 'quinn' is deleted"]
    assert guest_conn.closed_with == []
    assert world.access.connections.count_user("quinn") == 0
    with pytest.raises(AccessRefused):
        world.access.authenticate("quinn", "pw-quinn", "127.0.0.1")
    assert world.admin.list_permissions(user="quinn") == []


def test_changing_a_password_closes_connections_and_takes_effect(world: World) -> None:
    world.add_user("rosa")
    _, conn = world.login("rosa", "pw-rosa")
    world.admin.change_password("rosa", "new-secret")
    assert conn.closed_with == ["user 'rosa' password changed"]
    with pytest.raises(AccessRefused):
        world.access.authenticate("rosa", "pw-rosa", "127.0.0.1")
    world.access.authenticate("rosa", "new-secret", "127.0.0.1")
    world.admin.change_password("rosa", None)  # clear_password: EXTERNAL only
    with pytest.raises(AccessRefused):
        world.access.authenticate("rosa", "new-secret", "127.0.0.1")
    assert world.access.authenticate_external("rosa", "127.0.0.1").name == "rosa"


def test_deleting_a_vhost_removes_everything_in_it(world: World) -> None:
    world.admin.add_vhost("shop", "the shop")
    world.admin.set_permissions("guest", "shop", ".*", ".*", ".*")
    session, conn = world.login("guest", "guest", "shop")
    declare_queue(session, "orders", durable=True)
    session.vhost.declare_exchange("orders.x", "direct", passive=False, durable=True, auto_delete=False,
                                   internal=False, arguments={})
    session.vhost.bind("orders.x", ("queue", "orders"), "k", {}, session.owner)
    for i in range(3):
        session.publish("", "orders", Message("", "orders", b"\x00\x00", b"m%d" % i, True), False)
    world.core.flush()
    assert len(world.log.read("shop\x00orders", 0, 10)) == 3  # on "disk"
    world.admin.delete_vhost("shop")
    world.core.flush()
    assert conn.closed_with == ["vhost 'shop' is deleted"]
    assert "shop" not in world.core.vhosts
    definitions = world.metadata.load()
    assert [q for q in definitions.queues if q.vhost == "shop"] == []
    assert [x for x in definitions.exchanges if x.vhost == "shop"] == []
    assert [b for b in definitions.bindings if b.vhost == "shop"] == []
    assert world.log.read("shop\x00orders", 0, 10) == []  # the messages are gone from the store
    assert world.admin.list_permissions(vhost="shop") == []
    with pytest.raises(NotAllowed, match="vhost shop not found"):
        world.access.open_vhost(world.access.authenticate("guest", "guest", "127.0.0.1"), "shop")
    world.admin.add_vhost("shop")  # a new vhost of the same name starts empty
    assert world.core.vhosts["shop"].queues == {}


def test_records_survive_a_restart_on_the_same_store() -> None:
    first = World()
    first.add_user("sam", perms=("^s", "^s", "^s"))
    first.admin.add_vhost("v2", "second", ["prod"])
    first.admin.set_topic_permissions("sam", "/", "amq.topic", "^a", "^b")
    first.admin.set_user_limits("sam", {"max-channels": 4})
    first.admin.set_vhost_limits("v2", {"max-queues": 7})
    second = World(first.metadata, first.log)
    assert second.access.authenticate("sam", "pw-sam", "127.0.0.1").name == "sam"
    assert {v.name for v in second.admin.list_vhosts()} == {"/", "v2"}
    assert second.access.vhosts.require("v2").description == "second"
    assert [(p.configure, p.write, p.read) for p in second.admin.list_permissions(user="sam")] == [("^s", "^s", "^s")]
    assert second.admin.list_topic_permissions(user="sam")[0].read == "^b"
    assert second.access.limits.of_user("sam") == {"max-channels": 4}
    assert second.core.vhosts["v2"].max_queues == 7


def test_seeding_happens_only_on_an_empty_store() -> None:
    metadata = MemoryMetadataStore()
    access = InternalAccessControl(metadata)
    assert seed_defaults(access, "admin", "s3cret")
    assert access.authenticate("admin", "s3cret", "10.0.0.1").tags == frozenset({"administrator"})
    again = InternalAccessControl(metadata)
    assert not seed_defaults(again, "guest", "guest")
    assert again.users.get("guest") is None


def test_admin_refusals(world: World) -> None:
    with pytest.raises(AlreadyExists):
        world.admin.add_user("guest", "x")
    with pytest.raises(AlreadyExists):
        world.admin.add_vhost("/")
    with pytest.raises(NoSuchUser):
        world.admin.set_permissions("ghost", "/", ".*", ".*", ".*")
    with pytest.raises(NoSuchVhost):
        world.admin.set_permissions("guest", "ghost", ".*", ".*", ".*")
    with pytest.raises(InvalidPattern):
        world.admin.set_permissions("guest", "/", "(?!x)", ".*", ".*")
    assert world.admin.list_permissions(user="guest")[0].configure == ".*"  # unchanged
    with pytest.raises(PreconditionFailed, match="longer than 255 bytes"):
        world.admin.add_user("u" * 256, "x")
    with pytest.raises(NoSuchVhost):
        world.admin.delete_vhost("ghost")


def test_admin_without_a_core_is_not_needed_for_reads() -> None:
    world = World()
    admin = AccessAdmin(world.access, world.core)
    assert [u.name for u in admin.list_users()] == ["guest"]
    assert admin.list_users()[0].has_password
