"""Policies and operator policies, as RabbitMQ 3.10 has them (rabbit_policy, rabbit_policies).

A policy names a vhost, a ``pattern`` (a regular expression searched for in an object's name), what it
``apply-to`` (``queues``, ``classic_queues``, ``quorum_queues``, ``exchanges``, ``all``), a ``priority`` and a
``definition`` (``max-length``, ``message-ttl``, ``dead-letter-exchange``, ...). At most one policy applies to an
object: of those that match, the one with the highest priority. Operator policies are a second set, kept by
administrators, whose limits apply on top: where an operator policy and a policy both set a key, the lower
value wins (every operator policy key is a numeric limit).

How a queue's arguments and the policies combine (rabbit_amqqueue_process:process_args_policy): for the
numeric limits (``max-length``, ``message-ttl``, ``expires``, ``delivery-limit``, ...) the lower value wins;
for everything else (``overflow``, ``dead-letter-exchange``, ``alternate-exchange``, ...) the argument wins.

Ties between policies of equal priority: RabbitMQ sorts the matches by priority with a stable sort over
its runtime-parameter table, whose order is the table's hash order, neither the names' nor the order of
creation (measured on 3.10.8: ``zz`` beats ``aa``, ``m2`` beats ``m1``, but ``pa`` beats ``pb``). mailslot
breaks ties by name, the greatest winning, so the choice is at least stable and predictable; docs/policies.md
tells users to give overlapping policies distinct priorities, as RabbitMQ's own documentation does.

Patterns are compiled with RE2 (core/access/patterns.py): linear-time matching, PCRE's syntax except
backreferences and lookaround. Unlike a permission, an empty policy pattern matches every name, as
``re:run(Name, <<>>)`` does in RabbitMQ.

The engine is the core's :class:`~mailslot.core.argument_source.ArgumentSource`: it answers a queue's or an
exchange's effective arguments and tells the broker (``arguments_changed``) after every change, so live
queues pick the change up at once. Policies are durable records of the metadata store (kinds ``policy`` and
``operator_policy``, key JSON ``[vhost, name]``), written before a change is applied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import re2

from ..storage.api import MetadataStore
from .access.patterns import MAX_PROGRAM_MEMORY, InvalidPattern, compile_pattern
from .arguments import MAX_TTL, OVERFLOW_MODES, QUEUE_MODES
from .errors import BrokerError

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("mailslot.policies")

POLICY = "policy"
OPERATOR_POLICY = "operator_policy"
KINDS = (POLICY, OPERATOR_POLICY)

APPLY_TO = ("queues", "classic_queues", "quorum_queues", "exchanges", "all")
QUEUE = "queue"
EXCHANGE = "exchange"


class InvalidPolicy(BrokerError):
    """A policy refused; ``text`` is RabbitMQ's wording (the management API answers 400 with it)."""


# ---- definition keys ---------------------------------------------------------------------------------


def erlang_term(value: Any) -> str:
    """``value`` as Erlang's ``~p`` prints the decoded JSON term: RabbitMQ's messages quote values so."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return '<<"' + value.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    if isinstance(value, list):
        return "[" + ",".join(erlang_term(v) for v in value) + "]"
    if isinstance(value, dict):
        return "#{" + ",".join(f"{erlang_term(k)} => {erlang_term(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return (
            isinstance(value, int) and not isinstance(value, bool) and value >= minimum
            and (maximum is None or value <= maximum)
        )

    return check


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _one_of(choices: Iterable[str]) -> Callable[[Any], bool]:
    allowed = frozenset(choices)
    return lambda value: isinstance(value, str) and value in allowed


def _delays(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_integer(0)(v) for v in value)


def _anything(value: Any) -> bool:
    return True


@dataclass(frozen=True)
class Key:
    """One definition key: its check and RabbitMQ's text for a bad value; the argument it becomes
    (None: accepted for compatibility, no effect); whether the lower of argument and policy wins."""

    check: Callable[[Any], bool]
    problem: str  # "{value} is not a valid ..."
    argument: str | None
    limit: bool = False  # numeric limit: the lower value wins (policy vs operator policy vs argument)
    operator: bool = False  # allowed in operator policies


KEYS: dict[str, Key] = {
    # RabbitMQ's policy keys that mailslot acts on (rabbit_policies:validate_policy0's texts).
    "max-length": Key(_integer(0), "{} is not a valid maximum length", "x-max-length", True, True),
    "max-length-bytes": Key(_integer(0), "{} is not a valid maximum length in bytes", "x-max-length-bytes",
                            True, True),
    # RabbitMQ takes any TTL here (arguments stop at ten years): longer ones run as ten years (``combine``).
    "message-ttl": Key(_integer(0), "{} is not a valid message TTL", "x-message-ttl", True, True),
    "expires": Key(_integer(1), "{} is not a valid queue expiry", "x-expires", True, True),
    "delivery-limit": Key(_integer(0), "{} is not a valid delivery limit", "x-delivery-limit", True, True),
    "overflow": Key(_one_of(OVERFLOW_MODES), "{} is not a valid overflow value", "x-overflow"),
    "dead-letter-exchange": Key(_string, "{} is not a valid dead letter exchange name", "x-dead-letter-exchange"),
    "dead-letter-routing-key": Key(_string, "{} is not a valid dead letter routing key",
                                   "x-dead-letter-routing-key"),
    "alternate-exchange": Key(_string, "{} is not a valid alternate exchange name", "alternate-exchange"),
    # RabbitMQ 3.12's key (3.10 refuses it); the lower timeout wins, as there.
    "consumer-timeout": Key(_integer(0), "{} is not a valid consumer timeout", "x-consumer-timeout", True),
    # Accepted, no effect: every queue pages beyond its memory window (docs/lifecycle-ttl.md).
    "queue-mode": Key(_one_of(QUEUE_MODES), "{} is not a valid queue-mode value", None),
    # mailslot's own: redelivery delays (docs/lifecycle-redelivery.md) and the deduplication window of a
    # queue declared with x-message-deduplication (docs/deduplication.md).
    "retry-delays": Key(_delays, "{} is not a valid list of retry delays", "x-retry-delays"),
    "cache-size": Key(_integer(1), "{} is not a valid deduplication cache size", "x-cache-size"),
    "cache-ttl": Key(_integer(1), "{} is not a valid deduplication cache TTL", "x-cache-ttl"),
    # RabbitMQ's keys for features mailslot does not have (mirroring, quorum and stream tuning, federation):
    # accepted and reported, no effect, so definitions exported from RabbitMQ import unchanged.
    "max-in-memory-length": Key(_integer(0), "{} is not a valid maximum memory in messages", None, True, True),
    "max-in-memory-bytes": Key(_integer(0), "{} is not a valid maximum memory in bytes", None, True, True),
    "queue-version": Key(_integer(1, 2), "{} is not a valid queue version", None),
    "dead-letter-strategy": Key(_one_of(("at-most-once", "at-least-once")),
                                "{} is not a valid dead letter strategy", None),
    "queue-master-locator": Key(_string, "{} is not a valid queue master locator", None),
    "queue-leader-locator": Key(_string, "{} is not a valid queue leader locator", None),
    "initial-cluster-size": Key(_integer(1), "{} is not a valid initial cluster size", None),
    "max-age": Key(_string, "{} is not a valid max age", None),
    "stream-max-segment-size-bytes": Key(_integer(0), "{} is not a valid segment size", None),
    "ha-mode": Key(_string, "{} is not a valid ha-mode value", None),
    "ha-params": Key(_anything, "{} is not a valid ha-params value", None),
    "ha-sync-mode": Key(_string, "{} is not a valid ha-sync-mode value", None),
    "ha-sync-batch-size": Key(_integer(1), "{} is not a valid ha-sync-batch-size value", None),
    "ha-promote-on-shutdown": Key(_string, "{} is not a valid ha-promote-on-shutdown value", None),
    "ha-promote-on-failure": Key(_string, "{} is not a valid ha-promote-on-failure value", None),
    "federation-upstream": Key(_string, "{} is not a valid federation upstream", None),
    "federation-upstream-set": Key(_string, "{} is not a valid federation upstream set", None),
}
#: Keys that do something in mailslot (the others are kept and reported only).
EFFECTIVE_KEYS = frozenset(name for name, key in KEYS.items() if key.argument is not None)


# ---- one policy --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int | float
    definition: dict[str, Any]
    matcher: Any  # compiled RE2 program

    def matches(self, kind: str, name: str, queue_type: str) -> bool:
        if not _applies_to(self.apply_to, kind, queue_type):
            return False
        return self.matcher.search(name) is not None

    def document(self) -> dict[str, Any]:
        """RabbitMQ's shape (GET /api/policies, definitions files)."""
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
                "definition": dict(self.definition), "priority": self.priority}

    def record(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "apply-to": self.apply_to, "definition": self.definition,
                "priority": self.priority}


def _applies_to(apply_to: str, kind: str, queue_type: str) -> bool:
    if kind == EXCHANGE:
        return apply_to in ("exchanges", "all")
    if apply_to in ("queues", "all"):
        return True
    return apply_to == f"{queue_type}_queues"


def _rank(policy: Policy) -> tuple[int | float, str]:
    return (policy.priority, policy.name)


def validate(
    kind: str, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0, apply_to: Any = "all"
) -> Policy:
    """The policy, or :class:`InvalidPolicy` with RabbitMQ's text (checked in its order: priority, pattern,
    apply-to, definition)."""
    if priority is None:
        priority = 0
    if apply_to is None:
        apply_to = "all"
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise InvalidPolicy(f"priority should be a number, actually was {erlang_term(priority)}")
    if not isinstance(pattern, str):
        raise InvalidPolicy(f"pattern should be a binary but was {erlang_term(pattern)}")
    try:
        # The empty regex matches every name in RabbitMQ; compile_pattern reads "" as a permission's "^$".
        matcher = compile_pattern(pattern or "(?:)")
    except InvalidPattern as error:
        raise InvalidPolicy(f"pattern should be regular expression but is invalid: {error.text}") from None
    if not isinstance(apply_to, str) or apply_to not in APPLY_TO:
        raise InvalidPolicy(
            f"apply-to '{apply_to}' unrecognised; should be one of: 'queues', 'classic_queues', "
            "'quorum_queues', 'exchanges', or 'all'"
        )
    _check_definition(kind, definition)
    if isinstance(priority, float) and priority.is_integer():
        priority = int(priority)
    return Policy(vhost, name, pattern, apply_to, priority, dict(definition), matcher)


def _check_definition(kind: str, definition: Any) -> None:
    if not isinstance(definition, dict):
        raise InvalidPolicy(f"definition must be a dictionary: {erlang_term(definition)}")
    if not definition:
        raise InvalidPolicy("no policy provided")
    operator = kind == OPERATOR_POLICY
    unknown = sorted(k for k in definition if k not in KEYS or (operator and not KEYS[k].operator))
    if unknown:
        listed = ",".join("{" + erlang_term(k) + "," + erlang_term(definition[k]) + "}" for k in unknown)
        raise InvalidPolicy(f"[{listed}] are not recognised policy settings")
    for key_name in sorted(definition):
        key = KEYS[key_name]
        value = definition[key_name]
        if not key.check(value):
            raise InvalidPolicy(key.problem.format(erlang_term(value)))


def merge_definitions(policy: Policy | None, operator: Policy | None) -> dict[str, Any]:
    """rabbit_policy:merge_operator_definitions: the union; for a key both set, the lower value."""
    merged = dict(policy.definition) if policy is not None else {}
    if operator is not None:
        for key, value in operator.definition.items():
            mine = merged.get(key)
            merged[key] = value if mine is None else min(mine, value)
    return dict(sorted(merged.items()))


# ---- the engine --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What applies to one object: the policy and operator policy in force (None: none), and the merged
    definition RabbitMQ reports as ``effective_policy_definition``."""

    policy: Policy | None
    operator_policy: Policy | None
    definition: dict[str, Any]


NONE_APPLIED = Applied(None, None, {})

_SET_OPTIONS = re2.Options()
_SET_OPTIONS.log_errors = False
_SET_OPTIONS.max_mem = MAX_PROGRAM_MEMORY * 8  # several patterns in one program


class _Index:
    """One vhost's policies of one kind, their patterns compiled into one RE2 set: matching a name against
    all of them is one pass (about 1 µs whatever their number, where one search each costs about 4 µs)."""

    __slots__ = ("_policies", "_set")

    def __init__(self, policies: list[Policy]) -> None:
        self._policies = policies
        self._set: Any = None
        try:
            compiled = re2.Set.SearchSet(_SET_OPTIONS)
            for policy in policies:
                compiled.Add(policy.pattern or "(?:)")
            compiled.Compile()
            self._set = compiled
        except Exception:  # noqa: BLE001 -- a set too big for its memory bound: one search per policy instead
            log.warning("policies: %d patterns do not fit one RE2 set; matching them one by one", len(policies))

    def match(self, object_kind: str, name: str, queue_type: str) -> Policy | None:
        if self._set is not None:
            candidates = [self._policies[i] for i in self._set.Match(name) or ()]  # None: no match
        else:
            candidates = [p for p in self._policies if p.matcher.search(name) is not None]
        best: Policy | None = None
        for policy in candidates:
            if (best is None or _rank(policy) > _rank(best)) and _applies_to(policy.apply_to, object_kind, queue_type):
                best = policy
        return best


class PolicyEngine:
    """Every policy and operator policy, in memory and written through to the metadata store."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._metadata = metadata
        # kind -> vhost -> name -> policy
        self._sets: dict[str, dict[str, dict[str, Policy]]] = {POLICY: {}, OPERATOR_POLICY: {}}
        self._changed: Callable[[str], None] = lambda vhost: None
        # Built on first use after a change: each (kind, vhost)'s patterns as one RE2 set, and the merged
        # definition of each (policy, operator policy) pair in force.
        self._indexes: dict[tuple[str, str], _Index] = {}
        self._merged: dict[tuple[str, str | None, str | None], Applied] = {}
        for kind in KINDS:
            for key, value in metadata.load_records(kind).items():
                vhost, name = json.loads(key)
                try:
                    policy = validate(kind, vhost, name, value.get("pattern"), value.get("definition"),
                                      value.get("priority", 0), value.get("apply-to", "all"))
                except InvalidPolicy as error:  # written by a build that knew a key this one does not
                    log.error("%s '%s' in vhost '%s' is not applied: %s", kind, name, vhost, error.text)
                    continue
                self._sets[kind].setdefault(vhost, {})[name] = policy

    def reload(self, source: MetadataStore) -> None:
        """Replace every policy with those ``source`` holds (another node of a cluster changed them,
        mailslot.cluster.sync) and apply the change to each vhost whose policies differ. Writes still go
        to this engine's own store."""
        fresh = PolicyEngine(source)
        changed = {vhost for kind in KINDS for vhost in {*self._sets[kind], *fresh._sets[kind]}
                   if self._sets[kind].get(vhost) != fresh._sets[kind].get(vhost)}
        self._sets = fresh._sets
        self._indexes.clear()
        self._merged.clear()
        for vhost in sorted(changed):
            self._changed(vhost)

    def attach(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(vhost)`` after every change (``Broker.arguments_changed``), so live queues and
        exchanges take their new effective arguments at once."""
        self._changed = changed

    # ---- set, delete, list (policies: kind POLICY; operator policies: kind OPERATOR_POLICY) ----------

    def set(self, kind: str, vhost: str, name: str, pattern: Any, definition: Any, priority: Any = 0,
            apply_to: Any = "all") -> bool:
        """Validate, store durably, apply. Returns whether it replaced one. :class:`InvalidPolicy`: nothing
        changed."""
        policy = validate(kind, vhost, name, pattern, definition, priority, apply_to)
        self._metadata.save_record(kind, json.dumps([vhost, name]), policy.record())
        policies = self._sets[kind].setdefault(vhost, {})
        existed = name in policies
        policies[name] = policy
        self._invalidate(kind, vhost)
        log.info("%s '%s' set in vhost '%s': pattern '%s', apply-to %s, priority %s, %s",
                 kind.replace("_", " "), name, vhost, policy.pattern, policy.apply_to, policy.priority,
                 json.dumps(policy.definition, sort_keys=True))
        self._changed(vhost)
        return existed

    def delete(self, kind: str, vhost: str, name: str) -> bool:
        policies = self._sets[kind].get(vhost, {})
        if name not in policies:
            return False
        self._metadata.delete_record(kind, json.dumps([vhost, name]))
        del policies[name]
        if not policies:
            del self._sets[kind][vhost]
        self._invalidate(kind, vhost)
        log.info("%s '%s' cleared in vhost '%s'", kind.replace("_", " "), name, vhost)
        self._changed(vhost)
        return True

    def _invalidate(self, kind: str, vhost: str) -> None:
        self._indexes.pop((kind, vhost), None)
        self._merged = {pair: a for pair, a in self._merged.items() if pair[0] != vhost}

    def get(self, kind: str, vhost: str, name: str) -> Policy | None:
        return self._sets[kind].get(vhost, {}).get(name)

    def listed(self, kind: str, vhost: str | None = None) -> list[Policy]:
        """In RabbitMQ's listing order (rabbit_policy:sort_by_priority): by priority, lowest first."""
        sets = self._sets[kind]
        vhosts = sorted(sets) if vhost is None else [vhost]
        found = [p for v in vhosts for p in sets.get(v, {}).values()]
        return sorted(found, key=_rank)

    def forget_vhost(self, vhost: str) -> None:
        """The vhost is deleted: so are its policies (no notification, its objects are gone)."""
        for kind in KINDS:
            for name in list(self._sets[kind].get(vhost, {})):
                self._metadata.delete_record(kind, json.dumps([vhost, name]))
            self._sets[kind].pop(vhost, None)
            self._invalidate(kind, vhost)

    # PolicySink (core/definitions): definitions files carry policies, not operator policies.
    def set_policy(self, vhost: str, name: str, pattern: str, definition: dict[str, Any], priority: int,
                   apply_to: str) -> None:
        self.set(POLICY, vhost, name, pattern, definition, priority, apply_to)

    def list_policies(self) -> list[dict[str, Any]]:
        return [p.document() for p in self.listed(POLICY)]

    # ---- what applies --------------------------------------------------------------------------------

    def _index(self, kind: str, vhost: str) -> _Index | None:
        key = (kind, vhost)
        index = self._indexes.get(key)
        if index is None:
            policies = self._sets[kind].get(vhost)
            if not policies:
                return None
            index = self._indexes[key] = _Index(list(policies.values()))
        return index

    def applied(self, vhost: str, object_kind: str, name: str, declared: dict[str, Any] | None = None) -> Applied:
        """The policy and operator policy in force on a queue (``object_kind`` "queue") or an exchange
        ("exchange"), and their merged definition. ``declared``: a queue's arguments (its x-queue-type)."""
        policies, operators = self._index(POLICY, vhost), self._index(OPERATOR_POLICY, vhost)
        if policies is None and operators is None:
            return NONE_APPLIED
        queue_type = _queue_type(declared or {})
        policy = policies.match(object_kind, name, queue_type) if policies is not None else None
        operator = operators.match(object_kind, name, queue_type) if operators is not None else None
        if policy is None and operator is None:
            return NONE_APPLIED
        pair = (vhost, policy.name if policy else None, operator.name if operator else None)
        applied = self._merged.get(pair)
        if applied is None:  # one merge per pair of policies, not per queue
            applied = self._merged[pair] = Applied(policy, operator, merge_definitions(policy, operator))
        return applied

    # ArgumentSource (core/argument_source.py)
    def queue_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        applied = self.applied(vhost, QUEUE, name, declared)
        if applied is NONE_APPLIED:
            return declared  # no policy in this vhost: nothing to pay
        return combine(declared, applied.definition)

    def exchange_arguments(self, vhost: str, name: str, declared: dict[str, Any]) -> dict[str, Any]:
        applied = self.applied(vhost, EXCHANGE, name)
        value = applied.definition.get("alternate-exchange")
        if value is None or "alternate-exchange" in declared:
            return declared  # the argument wins (rabbit_policy:get_arg)
        return {**declared, "alternate-exchange": value}


def _queue_type(declared: dict[str, Any]) -> str:
    value = declared.get("x-queue-type", "classic")
    return value.decode() if isinstance(value, bytes) else str(value)


_DEDUP_WINDOW = frozenset({"x-cache-size", "x-cache-ttl"})
_TEN_YEARS_AT_MOST = frozenset({"x-message-ttl", "x-expires"})  # the longest the arguments take (core.arguments)


def combine(declared: dict[str, Any], definition: dict[str, Any]) -> dict[str, Any]:
    """A queue's effective arguments: its declared ones with the merged policy definition: numeric limits,
    the lower value; the rest, the argument when there is one."""
    effective = dict(declared)
    for key_name, value in definition.items():
        key = KEYS.get(key_name)
        if key is None or key.argument is None or key.argument == "alternate-exchange":
            continue
        if key.argument in _DEDUP_WINDOW and declared.get("x-message-deduplication") is not True:
            continue  # a window only means something on a deduplicating queue
        if key.argument in _TEN_YEARS_AT_MOST:
            value = min(value, MAX_TTL)
        current = effective.get(key.argument)
        if current is None:
            effective[key.argument] = value
        elif key.limit and isinstance(current, int) and not isinstance(current, bool):
            effective[key.argument] = min(current, value)
    return effective


def use_policies(broker: Broker, engine: PolicyEngine) -> None:
    """Make ``engine`` the broker's argument source (``Broker.arguments``, set before ``recover`` so that
    recovered queues run with their policies) and have it tell the broker about every change."""
    broker.arguments = engine
    engine.attach(broker.arguments_changed)
