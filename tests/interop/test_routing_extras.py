"""RabbitMQ's routing extras, differentially: each scenario runs on the reference RabbitMQ 3.10 on 127.0.0.1:5672
and on mailslot, and what the client sees must be the same (and what RabbitMQ's docs promise). Alternate
exchanges (by argument, in chains, in cycles, with mandatory, by policy through each broker's management
API), sender-selected distribution (CC, BCC, dead-lettering of a CC message, a refused header) and consumer
priorities. Clients speak AMQP through pika."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pika
import pika.exceptions
import pytest

from conftest import _rabbitmq_url_or_skip, _service_missing
from helpers import closed_by_broker, get_all, pump_until, rabbitmq_management_reachable, wait_for
from management.client import RABBITMQ_API, ManagementApi

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


@dataclass
class Side:
    """One broker, and the names a scenario made there (deleted afterwards: RabbitMQ is shared)."""

    name: str
    url: str
    api: ManagementApi
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    exchanges: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)

    def n(self, name: str) -> str:
        return f"rx.{name}.{self.tag}"


@pytest.fixture
def sides() -> Iterator[list[Side]]:
    """mailslot and RabbitMQ, in that order."""
    from mailslot.testing import broker_in_thread

    url = _rabbitmq_url_or_skip()
    if not rabbitmq_management_reachable():
        _service_missing("RabbitMQ's management API is not reachable on 127.0.0.1:15672")
    with broker_in_thread() as broker:
        made = [Side("mailslot", broker.amqp_url, ManagementApi(broker.http_url, name="mailslot")),
                Side("rabbitmq", url, ManagementApi(RABBITMQ_API, name="rabbitmq"))]
        try:
            yield made
        finally:
            for side in made:
                for policy in side.policies:
                    side.api.delete(f"/api/policies/%2F/{quote(policy, safe='')}")
                for exchange in side.exchanges:
                    side.api.delete(f"/api/exchanges/%2F/{quote(exchange, safe='')}")


Scenario = Callable[[Side, pika.adapters.blocking_connection.BlockingChannel], Any]


def compare(sides: list[Side], scenario: Scenario) -> Any:
    """Run ``scenario`` on each broker (a fresh connection each); the results must be equal. Returns it."""
    results = []
    for side in sides:
        connection = pika.BlockingConnection(pika.URLParameters(side.url))
        try:
            results.append(scenario(side, connection.channel()))
        finally:
            if connection.is_open:
                connection.close()
    assert results[0] == results[1], f"mailslot: {results[0]!r}\nrabbitmq: {results[1]!r}"
    return results[0]


def exchange(side: Side, ch: Any, name: str, type_: str, alternate: str | None = None) -> str:
    full = side.n(name)
    ch.exchange_declare(full, type_, arguments={"alternate-exchange": side.n(alternate)} if alternate else None)
    side.exchanges.append(full)
    return full


def queue(side: Side, ch: Any, name: str, source: str | None = None, key: str = "", **arguments: Any) -> str:
    full = side.n(name)
    ch.queue_declare(full, exclusive=True, arguments=arguments or None)
    if source is not None:
        ch.queue_bind(full, source, key)
    return full


def publish(ch: Any, exchange_name: str, key: str, body: bytes, mandatory: bool = False,
            headers: dict[str, Any] | None = None) -> str:
    """Publish with confirms: "routed", or "returned" for a mandatory publish that was unroutable."""
    try:
        ch.basic_publish(exchange_name, key, body, pika.BasicProperties(headers=headers), mandatory=mandatory)
    except pika.exceptions.UnroutableError:
        return "returned"
    return "routed"


def bodies(ch: Any, *queues: str) -> list[list[bytes]]:
    return [[body for _m, _p, body in get_all(ch, q)] for q in queues]


# ---- alternate exchanges ---------------------------------------------------------------------------


def test_alternate_exchange_takes_what_its_exchange_cannot_route(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        ae = exchange(side, ch, "ae", "fanout")
        x = exchange(side, ch, "x", "direct", alternate="ae")
        eu, lost = queue(side, ch, "eu", x, "eu"), queue(side, ch, "lost", ae)
        outcomes = [publish(ch, x, "eu", b"routed", True), publish(ch, x, "us", b"unroutable", True)]
        return outcomes, bodies(ch, eu, lost)

    assert compare(sides, scenario) == (["routed", "routed"], [[b"routed"], [b"unroutable"]])


def test_a_chain_of_alternate_exchanges(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        third = exchange(side, ch, "third", "fanout")
        second = exchange(side, ch, "second", "direct", alternate="third")
        first = exchange(side, ch, "first", "direct", alternate="second")
        middle, end = queue(side, ch, "middle", second, "k2"), queue(side, ch, "end", third)
        outcomes = [publish(ch, first, "k2", b"to-second", True), publish(ch, first, "zz", b"to-third", True)]
        return outcomes, bodies(ch, middle, end)

    assert compare(sides, scenario) == (["routed", "routed"], [[b"to-second"], [b"to-third"]])


def test_a_cycle_of_alternate_exchanges_is_cut(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        exchange(side, ch, "b", "direct", alternate="a")  # "a" does not exist yet: allowed
        a = exchange(side, ch, "a", "direct", alternate="b")
        looped = publish(ch, a, "k", b"lost", True)
        found = queue(side, ch, "found", side.n("b"), "k")
        return looped, publish(ch, a, "k", b"found", True), bodies(ch, found)

    assert compare(sides, scenario) == ("returned", "routed", [[b"found"]])


def test_mandatory_is_returned_only_when_the_alternate_exchange_fails_too(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        ae = exchange(side, ch, "ae", "direct")
        x = exchange(side, ch, "x", "direct", alternate="ae")
        missing = exchange(side, ch, "to-missing", "direct", alternate="never-declared")
        caught = queue(side, ch, "caught", ae, "known")
        outcomes = [publish(ch, x, "known", b"by-ae", True), publish(ch, x, "unknown", b"nowhere", True),
                    publish(ch, missing, "k", b"missing-ae", True)]
        return outcomes, bodies(ch, caught)

    assert compare(sides, scenario) == (["routed", "returned", "returned"], [[b"by-ae"]])


def test_alternate_exchange_set_by_policy_applies_to_a_live_exchange_and_clearing_it_lifts_it(
    sides: list[Side],
) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        ae = exchange(side, ch, "ae", "fanout")
        x = exchange(side, ch, "x", "direct")
        lost = queue(side, ch, "lost", ae)
        before = publish(ch, x, "k", b"before", True)
        policy = side.n("policy")
        side.policies.append(policy)
        side.api.ok("PUT", f"/api/policies/%2F/{quote(policy, safe='')}",
                    {"pattern": f"^{x}$", "definition": {"alternate-exchange": ae}, "apply-to": "exchanges"})
        # RabbitMQ applies a policy asynchronously: publish until one is routed, then count what got there.
        wait_for(lambda: publish(ch, x, "k", b"with", True) == "routed", timeout=15, interval=0.2,
                 what=f"{side.name}: the policy's alternate exchange")
        side.api.ok("DELETE", f"/api/policies/%2F/{quote(policy, safe='')}")
        wait_for(lambda: publish(ch, x, "k", b"after", True) == "returned", timeout=15, interval=0.2,
                 what=f"{side.name}: the policy cleared")
        return before, set(bodies(ch, lost)[0])

    assert compare(sides, scenario) == ("returned", {b"with"})


# ---- sender-selected distribution -----------------------------------------------------------------


def _delivered(ch: Any, *queues: str) -> list[list[tuple[str, dict[str, Any] | None, bytes]]]:
    return [[(m.routing_key, p.headers, body) for m, p, body in get_all(ch, q)] for q in queues]


def test_cc_and_bcc_add_routing_keys_and_bcc_is_stripped(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        names = [queue(side, ch, name, "amq.direct", side.n(name)) for name in ("main", "copy", "hidden", "other")]
        main, copy, hidden, _other = names
        outcome = publish(ch, "amq.direct", main, b"m", True, {"CC": [copy], "BCC": [hidden], "h": "v"})
        only_bcc = publish(ch, "amq.direct", side.n("nowhere"), b"b", True, {"BCC": [hidden]})
        seen = [[(key.replace(side.tag, "T"), {k: [x.replace(side.tag, "T") for x in v] if k == "CC" else v
                                                for k, v in (headers or {}).items()}, body)
                 for key, headers, body in q] for q in _delivered(ch, *names)]
        return outcome, only_bcc, seen

    sent = ("rx.main.T", {"CC": ["rx.copy.T"], "h": "v"}, b"m")
    assert compare(sides, scenario) == (
        "routed", "routed", [[sent], [sent], [sent, ("rx.nowhere.T", {}, b"b")], []]  # BCC alone: an empty table
    )


def test_cc_through_the_default_exchange_names_queues(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        ch.confirm_delivery()
        a, b = queue(side, ch, "a"), queue(side, ch, "b")
        outcome = publish(ch, "", side.n("none"), b"m", True, {"CC": [a, b, a, 5]})
        return outcome, bodies(ch, a, b)

    assert compare(sides, scenario) == ("routed", [[b"m"], [b"m"]])


def test_a_cc_header_that_is_no_array_is_refused(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        q = queue(side, ch, "q")
        refused = closed_by_broker(lambda: (ch.basic_publish("", q, b"m", pika.BasicProperties(headers={"CC": q})),
                                            ch.queue_declare(q, passive=True)))
        return refused

    assert compare(sides, scenario) == (406, 'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}')


def test_a_dead_lettered_cc_message_keeps_its_routing_keys(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        work = queue(side, ch, "work", **{"x-dead-letter-exchange": "amq.direct"})
        fixed = queue(side, ch, "fixed", "amq.direct", side.n("fixed"))
        work2 = queue(side, ch, "work2", **{"x-dead-letter-exchange": "amq.direct",
                                            "x-dead-letter-routing-key": fixed})
        copy, hidden = (queue(side, ch, name, "amq.direct", side.n(name)) for name in ("copy", "hidden"))
        ch.queue_bind(work, "amq.direct", work)
        ch.confirm_delivery()
        for target in (work, work2):
            publish(ch, "", target, b"m", headers={"CC": [side.n("copy")], "BCC": [side.n("hidden")]})
        get_all(ch, copy), get_all(ch, hidden)  # the publishes' own copies
        for target in (work, work2):
            method = wait_for(lambda t=target: ch.basic_get(t)[0])
            ch.basic_reject(method.delivery_tag, requeue=False)

        def dead(name: str) -> list[tuple[bool, list[str], Any]]:
            got: list[Any] = []  # RabbitMQ dead-letters asynchronously: collect until one is there

            def arrived() -> bool:
                got.extend(get_all(ch, name))
                return bool(got)

            wait_for(arrived, what=f"{side.name}: dead letters in {name}")
            return [(m.routing_key == work, [k.replace(side.tag, "T") for k in p.headers["x-death"][0]["routing-keys"]],
                     [k.replace(side.tag, "T") for k in p.headers["CC"]] if "CC" in p.headers else None)
                    for m, p, _b in got]

        # Without a dead-letter routing key: routed on the key, CC's and BCC's; x-death names the key and CC's.
        return dead(work), dead(copy), dead(hidden), [(x[1], x[2]) for x in dead(fixed)]

    by_key, by_cc, by_bcc, fixed = compare(sides, scenario)
    assert by_key == [(True, ["rx.work.T", "rx.copy.T"], ["rx.copy.T"])]
    assert by_cc == by_key and by_bcc == by_key
    assert fixed == [(["rx.work2.T", "rx.copy.T"], None)]  # a dead-letter routing key drops CC


# ---- consumer priorities ----------------------------------------------------------------------------


def _consume(side: Side, ch: Any, q: str, plan: list[tuple[str, int | None, int]], count: int) -> dict[str, int]:
    """Consumers (tag, x-priority, prefetch) on ``ch``; ``count`` messages published on another channel;
    how many each consumer got (none acked)."""
    got = {tag: 0 for tag, _p, _n in plan}

    def on_message(tag: str) -> Callable[..., None]:
        def record(_ch: Any, _method: Any, _properties: Any, _body: bytes) -> None:
            got[tag] += 1
        return record

    for tag, priority, prefetch in plan:
        ch.basic_qos(prefetch_count=prefetch)
        ch.basic_consume(q, on_message(tag), consumer_tag=side.n(tag),
                         arguments=None if priority is None else {"x-priority": priority})
    publisher = ch.connection.channel()
    publisher.confirm_delivery()
    for i in range(count):
        publisher.basic_publish("", q, b"%d" % i)
    pump_until(ch.connection, lambda: sum(got.values()) >= count, what=f"{side.name}: {got}")
    return got


def test_higher_priority_consumers_get_messages_while_they_have_room(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        return _consume(side, ch, queue(side, ch, "q"), [("low", 1, 10), ("high", 10, 2), ("plain", None, 1)], 7)

    assert compare(sides, scenario) == {"high": 2, "plain": 0, "low": 5}


def test_equal_priorities_share_round_robin(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        return _consume(side, ch, queue(side, ch, "q"), [("a", 5, 10), ("b", 5, 10), ("low", 0, 10)], 4)

    assert compare(sides, scenario) == {"a": 2, "b": 2, "low": 0}


def test_a_priority_that_is_no_integer_is_refused(sides: list[Side]) -> None:
    def scenario(side: Side, ch: Any) -> Any:
        q = queue(side, ch, "q")
        code, text = closed_by_broker(lambda: ch.basic_consume(q, lambda *a: None, arguments={"x-priority": "high"}))
        return code, text.replace(q, "Q")

    assert compare(sides, scenario) == (
        406, "PRECONDITION_FAILED - invalid arg 'x-priority' for queue 'Q' in vhost '/': \"expected integer, got longstr\""
    )


# ---- tracing -------------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")


def _cc_traces(url: str) -> list[tuple[str, Any, Any, Any]]:
    """A CC/BCC publish and its two deliveries on a traced vhost: (trace routing key, routing_keys,
    routed_queues or None, the traced properties' headers) of each firehose message, in order."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ch = connection.channel()
        ch.queue_declare("fh", exclusive=True)
        ch.queue_bind("fh", "amq.rabbitmq.trace", "#")
        for name in ("main", "copy"):
            ch.queue_declare(name, exclusive=True)
            ch.queue_bind(name, "amq.direct", name)
        ch.confirm_delivery()
        ch.basic_publish("amq.direct", "main", b"m", pika.BasicProperties(headers={"CC": ["copy"], "BCC": ["gone"]}))
        for name in ("main", "copy"):
            wait_for(lambda n=name: ch.basic_get(n, auto_ack=True)[0])
        traces: list[tuple[str, Any, Any, Any]] = []

        def collect() -> bool:
            method, properties, _body = ch.basic_get("fh", auto_ack=True)
            if method is not None:
                headers = properties.headers
                traces.append((method.routing_key, headers["routing_keys"], headers.get("routed_queues"),
                               headers["properties"].get("headers")))
            return len(traces) >= 3

        wait_for(collect, what="three trace messages")
        return traces
    finally:
        connection.close()


def test_the_firehose_lists_cc_and_bcc_keys_as_rabbitmq_does() -> None:
    from mailslot.testing import broker_in_thread

    rabbit_url = _rabbitmq_url_or_skip()
    vhost = f"routing-trace-{uuid.uuid4().hex[:10]}"
    path = quote(vhost, safe="")
    try:
        _rabbitmqctl("add_vhost", vhost)
    except (OSError, RuntimeError) as error:
        _service_missing(f"rabbitmqctl cannot add a vhost here ({error})")
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        _rabbitmqctl("trace_on", "-p", vhost)
        reference = _cc_traces(rabbit_url.rsplit("/", 1)[0] + "/" + path)
    finally:
        _rabbitmqctl("delete_vhost", vhost)
    with broker_in_thread() as broker:
        api = ManagementApi(broker.http_url, name="mailslot")
        api.ok("PUT", f"/api/vhosts/{path}", {})
        api.ok("PUT", f"/api/permissions/{path}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
        api.ok("PUT", f"/api/vhosts/{path}", {"tracing": True})
        ours = _cc_traces(str(broker.amqp_url).rsplit("/", 1)[0] + "/" + path)
    assert ours == reference
    assert ours[0] == ("publish.amq.direct", ["main", "copy", "gone"], ["copy", "main"], {"CC": ["copy"]})
