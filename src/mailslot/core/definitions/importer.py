"""Importing RabbitMQ's definitions JSON into the broker.

Two passes, so that a bad file changes nothing:

1. ``model.parse`` reads the document and :func:`_validate` checks every item against the broker as it
   is plus what the file itself creates: names, password hashes and algorithms, permission patterns
   (patterns.py), limits, exchange types, queue arguments, that each referenced user and vhost exists,
   and RabbitMQ's vhost queue-limit rule ("Adding N queue(s) to virtual host ... Import aborted!").
   Any problem raises :class:`DefinitionsError` listing all of them.
2. Items are applied in RabbitMQ's order (rabbit_definitions:apply_defs): users, vhosts, permissions,
   topic permissions, exchanges, global parameters, policies, parameters, queues, bindings.

What RabbitMQ skips is skipped the same way and reported: exchanges and queues named ``amq.*`` or the
default exchange, and existing exchanges and queues (kept as they are, not compared). What mailslot does
not use is reported and skipped: global parameters (``cluster_name``...), parameters of components other
than ``vhost-limits`` (federation, shovels), policies when no policy engine is plugged in. A binding whose
source or destination does not exist is reported and skipped (RabbitMQ 3.10 leaves internal exchanges
out of its own exports, so its exports can name exchanges they do not contain).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..access.admin import AccessAdmin
from ..access.limits import USER_LIMIT_NAMES, VHOST_LIMIT_NAMES, validate
from ..access.passwords import algorithm_for, check_hash
from ..access.patterns import Pattern, expand_variables
from ..access.users import MAX_NAME_BYTES
from ..arguments import validate_queue_arguments
from ..broker import Broker
from ..errors import BrokerError, NotFound, PreconditionFailed
from ..exchanges import is_known_type
from .model import MAX_DOCUMENT_BYTES, DefinitionsError, Document, parse

log = logging.getLogger("mailslot.definitions")

VHOST_LIMITS_COMPONENT = "vhost-limits"


class PolicySink(Protocol):
    """Where policies go: the core policy engine, once it exists (the import reports policies skipped
    without one). ``list_policies`` gives them back in RabbitMQ's export shape."""

    def set_policy(
        self, vhost: str, name: str, pattern: str, definition: dict[str, Any], priority: int, apply_to: str
    ) -> None: ...

    def list_policies(self) -> list[dict[str, Any]]: ...


@dataclass
class ImportReport:
    """What an import did: counts per category, and one line per item skipped or failed."""

    imported: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        done = ", ".join(f"{count} {kind}" for kind, count in sorted(self.imported.items())) or "nothing"
        extra = f"; {len(self.skipped)} skipped" if self.skipped else ""
        extra += f"; {len(self.failed)} failed" if self.failed else ""
        return f"imported {done}{extra}"


def read_definitions_file(path: Path | str) -> Any:
    """The parsed JSON of a definitions file, or :class:`DefinitionsError` naming the file and problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise DefinitionsError([f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes"])
        return json.loads(path.read_bytes())
    except OSError as error:
        raise DefinitionsError([f"{path}: {error.strerror or error}"]) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DefinitionsError([f"{path}: not valid JSON ({error})"]) from None


def import_definitions(
    body: Any, admin: AccessAdmin, core: Broker, policies: PolicySink | None = None, *, vhost: str | None = None
) -> ImportReport:
    """Validate, then apply. ``vhost``: a vhost-scoped document (exchanges, queues, bindings, policies
    and parameters of that one vhost, as the HTTP API's per-vhost import)."""
    doc, problems = parse(body, vhost=vhost)
    problems += _validate(doc, admin, core, vhost)
    if problems:
        raise DefinitionsError(problems)
    report = ImportReport()
    _apply(doc, admin, core, policies, report)
    for line in report.skipped:
        log.info("definitions: skipped %s", line)
    for line in report.failed:
        log.error("definitions: failed %s", line)
    log.info("definitions: %s", report.summary())
    return report


# ---- pass 1: validation -----------------------------------------------------------------------------


def _validate(doc: Document, admin: AccessAdmin, core: Broker, scoped_vhost: str | None) -> list[str]:
    access = admin.access
    problems: list[str] = []
    users = {u.name for u in access.users} | {u.name for u in doc.users}
    vhosts = {v.name for v in access.vhosts} | {v.name for v in doc.vhosts}
    if scoped_vhost is not None and scoped_vhost not in vhosts:
        problems.append(f"vhost '{scoped_vhost}' does not exist")

    def name_ok(kind: str, name: str) -> None:
        if not name:
            problems.append(f"a {kind} has an empty name")
        elif len(name.encode()) > MAX_NAME_BYTES:
            problems.append(f"{kind} '{name[:40]}...' is longer than {MAX_NAME_BYTES} bytes")

    def refers(where: str, user: str | None, vhost: str) -> None:
        if user is not None and user not in users:
            problems.append(f"{where}: user '{user}' does not exist")
        if vhost not in vhosts:
            problems.append(f"{where}: vhost '{vhost}' does not exist")

    @contextlib.contextmanager
    def guarded(where: str) -> Iterator[None]:
        try:
            yield
        except PreconditionFailed as error:
            problems.append(f"{where}: {error.text}")

    for user in doc.users:
        name_ok("user", user.name)
        if user.password is not None and user.password_hash is not None:
            problems.append(f"user '{user.name}': both password and password_hash are provided")
        elif user.password is None:
            with guarded(f"user '{user.name}'"):
                check_hash(user.password_hash or "", algorithm_for(user.hashing_algorithm, doc.rabbitmq_version))
        if user.limits is not None:
            with guarded(f"user '{user.name}'"):
                validate("user-limits", USER_LIMIT_NAMES, user.limits)
    for vhost_item in doc.vhosts:
        name_ok("vhost", vhost_item.name)
    for permission in doc.permissions:
        where = f"permissions of user '{permission.user}' on vhost '{permission.vhost}'"
        refers(where, permission.user, permission.vhost)
        for pattern in (permission.configure, permission.write, permission.read):
            with guarded(where):
                Pattern(pattern)
    for topic in doc.topic_permissions:
        where = f"topic permissions of user '{topic.user}' on exchange '{topic.exchange}' in vhost '{topic.vhost}'"
        refers(where, topic.user, topic.vhost)
        variables = {"username": topic.user, "vhost": topic.vhost}
        for pattern in (topic.write, topic.read):
            with guarded(where):
                Pattern(expand_variables(pattern, variables))
    for exchange in doc.exchanges:
        where = f"exchange '{exchange.name}' in vhost '{exchange.vhost}'"
        refers(where, None, exchange.vhost)
        if exchange.name and not exchange.name.startswith("amq.") and not is_known_type(exchange.type):
            problems.append(f"{where}: unknown exchange type '{exchange.type}'")
    for queue in doc.queues:
        where = f"queue '{queue.name}' in vhost '{queue.vhost}'"
        name_ok("queue", queue.name)
        refers(where, None, queue.vhost)
        with guarded(where):
            validate_queue_arguments(queue.name, queue.vhost, queue.arguments)
    for binding in doc.bindings:
        refers(f"binding of '{binding.source}' to '{binding.destination}'", None, binding.vhost)
    for parameter in doc.parameters:
        where = f"parameter '{parameter.name}' of component '{parameter.component}' in vhost '{parameter.vhost}'"
        if parameter.component == VHOST_LIMITS_COMPONENT:
            refers(where, None, parameter.vhost)
            if not isinstance(parameter.value, dict):
                problems.append(f"{where}: the value must be an object")
            else:
                with guarded(where):
                    validate("vhost-limits", VHOST_LIMIT_NAMES, parameter.value)
    for policy in doc.policies:
        refers(f"policy '{policy.name}'", None, policy.vhost)
    problems += _queue_limit_problems(doc, core, admin)
    return problems


def _queue_limit_problems(doc: Document, core: Broker, admin: AccessAdmin) -> list[str]:
    """rabbit_definitions:validate_limits: new queues per vhost against its current max-queues."""
    adding: Counter[str] = Counter()
    for queue in doc.queues:
        existing = core.vhosts.get(queue.vhost)
        if not queue.name.startswith("amq.") and (existing is None or queue.name not in existing.queues):
            adding[queue.vhost] += 1
    problems = []
    for vhost, count in adding.items():
        limit = admin.access.limits.vhost_limit(vhost, "max-queues")
        current = len(core.vhosts[vhost].queues) if vhost in core.vhosts else 0
        if limit is not None and limit >= 0 and count + current > limit:
            problems.append(
                f'Adding {count} queue(s) to virtual host "{vhost}" would exceed the limit of {limit} queue(s).'
                f"\n\nThis virtual host currently has {current} queue(s) defined.\n\nImport aborted!"
            )
    return problems


# ---- pass 2: applying, in RabbitMQ's order ------------------------------------------------------------


def _apply(doc: Document, admin: AccessAdmin, core: Broker, policies: PolicySink | None, report: ImportReport) -> None:
    @contextlib.contextmanager
    def attempt(kind: str, what: str) -> Iterator[None]:
        try:
            yield
            report.imported[kind] += 1
        except BrokerError as error:  # validated above: only a broker-side surprise lands here
            report.failed.append(f"{what}: {error.text}")

    for user in doc.users:
        with attempt("users", f"user '{user.name}'"):
            admin.put_user(user.name, password=user.password,
                           password_hash=None if user.password is not None else (user.password_hash or ""),
                           hashing_algorithm=user.hashing_algorithm, tags=user.tags,
                           rabbitmq_version=doc.rabbitmq_version)
            if user.limits:
                admin.set_user_limits(user.name, user.limits)
    for item in doc.vhosts:
        with attempt("vhosts", f"vhost '{item.name}'"):
            admin.add_vhost(item.name, item.description, item.tags, item.default_queue_type, exist_ok=True)
    for permission in doc.permissions:
        with attempt("permissions", f"permissions of user '{permission.user}' on vhost '{permission.vhost}'"):
            admin.set_permissions(permission.user, permission.vhost, permission.configure, permission.write,
                                  permission.read)
    for topic in doc.topic_permissions:
        with attempt("topic_permissions", f"topic permissions of user '{topic.user}' on '{topic.exchange}'"):
            admin.set_topic_permissions(topic.user, topic.vhost, topic.exchange, topic.write, topic.read)
    for exchange in doc.exchanges:
        where = f"exchange '{exchange.name}' in vhost '{exchange.vhost}'"
        vhost = core.vhosts[exchange.vhost]
        if not exchange.name or exchange.name.startswith("amq."):
            report.skipped.append(f"{where}: the default and amq.* exchanges are not imported (as RabbitMQ)")
        elif exchange.name in vhost.exchanges:
            report.skipped.append(f"{where}: exists already (kept as it is)")
        else:
            with attempt("exchanges", where):
                vhost.declare_exchange(exchange.name, exchange.type, passive=False, durable=exchange.durable,
                                       auto_delete=exchange.auto_delete, internal=exchange.internal,
                                       arguments=exchange.arguments)
    for name in doc.global_parameters:
        report.skipped.append(f"global parameter '{name}': not used by mailslot")
    for policy in doc.policies:
        where = f"policy '{policy.name}' in vhost '{policy.vhost}'"
        if policies is None:
            report.skipped.append(f"{where}: no policy engine was given to this import")
        else:
            with attempt("policies", where):
                policies.set_policy(policy.vhost, policy.name, policy.pattern, policy.definition, policy.priority,
                                    policy.apply_to)
    for parameter in doc.parameters:
        where = f"parameter '{parameter.name}' of component '{parameter.component}' in vhost '{parameter.vhost}'"
        if parameter.component == VHOST_LIMITS_COMPONENT:
            with attempt("vhost_limits", where):
                admin.set_vhost_limits(parameter.vhost, parameter.value)
        else:
            report.skipped.append(f"{where}: component '{parameter.component}' is not used by mailslot")
    for queue in doc.queues:
        where = f"queue '{queue.name}' in vhost '{queue.vhost}'"
        vhost = core.vhosts[queue.vhost]
        if queue.name.startswith("amq."):
            report.skipped.append(f"{where}: queues named amq.* are not imported (as RabbitMQ)")
        elif queue.name in vhost.queues:
            report.skipped.append(f"{where}: exists already (kept as it is)")
        else:
            with attempt("queues", where):
                vhost.declare_queue(queue.name, passive=False, durable=queue.durable, exclusive=False,
                                    auto_delete=queue.auto_delete, arguments=queue.arguments, owner=None)
    for binding in doc.bindings:
        where = (f"binding of {binding.destination_type} '{binding.destination}' to exchange '{binding.source}' "
                 f"in vhost '{binding.vhost}'")
        vhost = core.vhosts[binding.vhost]
        try:
            vhost.bind(binding.source, (binding.destination_type, binding.destination), binding.routing_key,
                       binding.arguments, None)
            report.imported["bindings"] += 1
        except NotFound as error:
            report.skipped.append(f"{where}: {error.text}")
        except BrokerError as error:
            report.failed.append(f"{where}: {error.text}")
    core.request_flush()


def describe_problems(error: DefinitionsError) -> str:
    """One line per problem, for a CLI or a log."""
    return "\n".join(f"  - {problem}" for problem in error.problems)

