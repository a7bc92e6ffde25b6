"""RabbitMQ's definitions JSON (``rabbitmqctl export_definitions``) read into typed items, every problem
collected with where it is (``users[2]: ...``), nothing applied yet.

The shape follows RabbitMQ 3.10's rabbit_definitions.erl: top-level lists ``users``, ``vhosts``,
``permissions``, ``topic_permissions``, ``parameters``, ``global_parameters``, ``policies``, ``queues``,
``exchanges``, ``bindings``, each optional; unknown keys are ignored, as RabbitMQ ignores them. Older and
newer variants are accepted where RabbitMQ accepts them: user tags as a list or a comma-separated string,
the vhost description and tags at the top of the vhost or under ``metadata``, no ``hashing_algorithm``
(then decided by ``rabbitmq_version``: MD5 before 3.6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PreconditionFailed
from ..policies import POLICY, InvalidPolicy
from ..policies import validate as validate_policy

#: Largest definitions document accepted (bytes of JSON). RabbitMQ sets none; 64 MiB holds ~200k queues
#: and keeps a mistaken upload from taking the broker's memory.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


class DefinitionsError(PreconditionFailed):
    """The document cannot be imported; ``problems`` lists each one. Nothing was changed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))
        self.problems = problems


@dataclass
class UserItem:
    name: str
    password: str | None
    password_hash: str | None
    hashing_algorithm: str | None
    tags: list[str] | str
    limits: dict[str, Any] | None


@dataclass
class VhostItem:
    name: str
    description: str
    tags: list[str] | str
    default_queue_type: str | None


@dataclass
class PermissionItem:
    user: str
    vhost: str
    configure: str
    write: str
    read: str


@dataclass
class TopicPermissionItem:
    user: str
    vhost: str
    exchange: str
    write: str
    read: str


@dataclass
class ExchangeItem:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


@dataclass
class QueueItem:
    vhost: str
    name: str
    durable: bool
    auto_delete: bool
    arguments: dict[str, Any]


@dataclass
class BindingItem:
    vhost: str
    source: str
    destination: str
    destination_type: str
    routing_key: str
    arguments: dict[str, Any]


@dataclass
class PolicyItem:
    vhost: str
    name: str
    pattern: str
    definition: dict[str, Any]
    priority: int
    apply_to: str


@dataclass
class ParameterItem:
    vhost: str
    component: str
    name: str
    value: Any


@dataclass
class Document:
    rabbitmq_version: str | None = None
    users: list[UserItem] = field(default_factory=list)
    vhosts: list[VhostItem] = field(default_factory=list)
    permissions: list[PermissionItem] = field(default_factory=list)
    topic_permissions: list[TopicPermissionItem] = field(default_factory=list)
    exchanges: list[ExchangeItem] = field(default_factory=list)
    queues: list[QueueItem] = field(default_factory=list)
    bindings: list[BindingItem] = field(default_factory=list)
    policies: list[PolicyItem] = field(default_factory=list)
    parameters: list[ParameterItem] = field(default_factory=list)
    global_parameters: list[str] = field(default_factory=list)  # names: reported, never applied


class _Reader:
    """Typed access to one item, recording problems instead of raising."""

    def __init__(self, where: str, item: Any, problems: list[str]) -> None:
        self.where, self.problems = where, problems
        self.ok = isinstance(item, dict)
        self.item: dict[str, Any] = item if isinstance(item, dict) else {}
        if not self.ok:
            problems.append(f"{where}: expected an object")

    def problem(self, text: str) -> None:
        self.ok = False
        self.problems.append(f"{self.where}: {text}")

    def string(self, key: str, default: str | None = None) -> str:
        value = self.item.get(key, default)
        if not isinstance(value, str):
            self.problem(f"'{key}' must be a string")
            return ""
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.item.get(key)
        if value is not None and not isinstance(value, str):
            self.problem(f"'{key}' must be a string")
            return None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.item.get(key, default)
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"  # RabbitMQ's older exports wrote some booleans as strings
        if not isinstance(value, bool):
            self.problem(f"'{key}' must be true or false")
            return default
        return value

    def table(self, key: str) -> dict[str, Any]:
        value = self.item.get(key) or {}
        if not isinstance(value, dict):
            self.problem(f"'{key}' must be an object")
            return {}
        return value

    def tags(self, value: Any) -> list[str] | str:
        if isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value)):
            return value
        if value is None:
            return []
        self.problem("'tags' must be a list of strings or a comma-separated string")
        return []


def parse(body: Any, *, vhost: str | None = None) -> tuple[Document, list[str]]:
    """The document's items and its problems. ``vhost``: a vhost-scoped document (the HTTP API's
    ``POST /api/definitions/{vhost}``): its items carry no vhost, and users, vhosts and permissions are
    not read (RabbitMQ's import_parsed/2)."""
    problems: list[str] = []
    if not isinstance(body, dict):
        return Document(), ["the definitions must be a JSON object"]
    version = body.get("rabbitmq_version", body.get("rabbit_version"))
    doc = Document(rabbitmq_version=version if isinstance(version, str) else None)

    def items(key: str) -> list[tuple[str, Any]]:
        value = body.get(key) or []
        if not isinstance(value, list):
            problems.append(f"'{key}' must be a list")
            return []
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]

    def vhost_of(r: _Reader) -> str:
        return vhost if vhost is not None else r.string("vhost")

    if vhost is None:
        for where, item in items("users"):
            r = _Reader(where, item, problems)
            limits = r.item.get("limits")
            if limits is not None and not isinstance(limits, dict):
                r.problem("'limits' must be an object")
                limits = None
            user = UserItem(r.string("name"), r.optional_string("password"), r.optional_string("password_hash"),
                            r.optional_string("hashing_algorithm"), r.tags(r.item.get("tags")), limits or None)
            if r.ok:
                doc.users.append(user)
        for where, item in items("vhosts"):
            r = _Reader(where, item, problems)
            metadata = r.item.get("metadata")
            if not isinstance(metadata, dict):
                metadata = {}
            description = r.item.get("description", metadata.get("description", ""))
            tags = r.tags(r.item.get("tags", metadata.get("tags", [])) or [])
            queue_type = metadata.get("default_queue_type")
            item_vhost = VhostItem(r.string("name"), description if isinstance(description, str) else "", tags,
                                   queue_type if isinstance(queue_type, str) else None)
            if r.ok:
                doc.vhosts.append(item_vhost)
        for where, item in items("permissions"):
            r = _Reader(where, item, problems)
            permission = PermissionItem(r.string("user"), r.string("vhost"), r.string("configure"),
                                        r.string("write"), r.string("read"))
            if r.ok:
                doc.permissions.append(permission)
        for where, item in items("topic_permissions"):
            r = _Reader(where, item, problems)
            topic = TopicPermissionItem(r.string("user"), r.string("vhost"), r.string("exchange"),
                                        r.string("write"), r.string("read"))
            if r.ok:
                doc.topic_permissions.append(topic)
        for where, item in items("global_parameters"):
            r = _Reader(where, item, problems)
            name = r.string("name")
            if r.ok:
                doc.global_parameters.append(name)
    for where, item in items("exchanges"):
        r = _Reader(where, item, problems)
        exchange = ExchangeItem(vhost_of(r), r.string("name"), r.string("type"), r.boolean("durable", True),
                                r.boolean("auto_delete", False), r.boolean("internal", False), r.table("arguments"))
        if r.ok:
            doc.exchanges.append(exchange)
    for where, item in items("queues"):
        r = _Reader(where, item, problems)
        queue = QueueItem(vhost_of(r), r.string("name"), r.boolean("durable", True), r.boolean("auto_delete", False),
                          r.table("arguments"))
        if r.ok:
            doc.queues.append(queue)
    for where, item in items("bindings"):
        r = _Reader(where, item, problems)
        binding = BindingItem(vhost_of(r), r.string("source"), r.string("destination"),
                              r.string("destination_type"), r.string("routing_key", ""), r.table("arguments"))
        if r.ok and binding.destination_type not in ("queue", "exchange"):
            r.problem(f"'destination_type' must be queue or exchange, not '{binding.destination_type}'")
        if r.ok:
            doc.bindings.append(binding)
    for where, item in items("policies"):
        r = _Reader(where, item, problems)
        priority = r.item.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            r.problem("'priority' must be an integer")
        policy = PolicyItem(vhost_of(r), r.string("name"), r.string("pattern"), r.table("definition"),
                            priority if isinstance(priority, int) else 0, r.string("apply-to", "all"))
        if r.ok:  # the policy engine's own checks, so that a refused policy stops the import before it starts
            try:
                validate_policy(POLICY, policy.vhost, policy.name, policy.pattern, policy.definition,
                                policy.priority, policy.apply_to)
            except InvalidPolicy as error:
                r.problem(error.text)
        if r.ok:
            doc.policies.append(policy)
    for where, item in items("parameters"):
        r = _Reader(where, item, problems)
        parameter = ParameterItem(vhost_of(r), r.string("component"), r.string("name"), r.item.get("value"))
        if r.ok:
            doc.parameters.append(parameter)
    return doc, problems
