"""What ``mailslot ctl`` changes and reads, in two places:

- :class:`HttpAdmin`: a running broker, through RabbitMQ's management HTTP API (mailslot serves the same
  paths, docs/management-api.md), so every command also works against a real RabbitMQ;
- :class:`OfflineAdmin`: a STOPPED broker's data directory, through the access model itself
  (``core.access.AccessAdmin`` on the metadata store that ``bootstrap.offline_metadata`` opens): users,
  vhosts, permissions, topic permissions, limits, policies and operator policies only, the records a broker
  reads at start.

Both raise :class:`CtlError` with one line for the user; list operations return plain dicts (the rows of
the table, and the objects of ``--format json``).

Semantics follow rabbitmqctl 3.10 where the HTTP API differs from it: ``add_user`` refuses an existing
user (the API's PUT would replace it), ``set_vhost_limits`` replaces the vhost's whole limit set while
``set_user_limits`` merges into the user's, ``add_vhost`` of an existing vhost is no error.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailslot.cli.queues import Api, FetchError

REQUEST_TIMEOUT = 60.0  # seconds: a definitions import or a vhost deletion may take a while


class CtlError(Exception):
    """One line for the user; ``exit_code`` as rabbitmqctl's sysexits where one fits."""

    def __init__(self, text: str, exit_code: int = 1) -> None:
        super().__init__(text)
        self.exit_code = exit_code


UNAVAILABLE = 69  # EX_UNAVAILABLE: rabbitmqctl's code when the node cannot be reached


class Missing(CtlError):
    """The API answered 404: the object named does not exist."""


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def quote(part: str) -> str:
    """A path segment: a vhost ``/`` is ``%2F`` and never splits the path."""
    return urllib.parse.quote(part, safe="")


def parse_limits(text: str, allowed: tuple[str, ...]) -> dict[str, int]:
    """A limits definition as rabbitmqctl takes it: a JSON object of integer values (``-1``: no limit)."""
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CtlError(f"the limits definition is not JSON: {error}") from None
    if not isinstance(value, dict) or not value:
        raise CtlError(f"the limits definition must be a JSON object such as '{{\"{allowed[0]}\": 10}}'")
    for key, number in value.items():
        if key not in allowed:
            raise CtlError(f"unknown limit {key!r}; expected one of {', '.join(allowed)}")
        if not isinstance(number, int) or isinstance(number, bool):
            raise CtlError(f"limit {key!r} must be an integer, not {json.dumps(number)}")
    return value


VHOST_LIMITS = ("max-connections", "max-queues")
USER_LIMITS = ("max-connections", "max-channels")


class HttpAdmin:
    """The management API of a running broker (mailslot's or RabbitMQ's)."""

    def __init__(self, api: Api, cacert: Path | None = None) -> None:
        self.api = api
        self.context = _tls_context(cacert) if cacert is not None else None  # None: the system's CAs

    # ---- transport --------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, not_found: str | None = None,
                headers: dict[str, str] | None = None) -> Any:
        """The JSON answer (None for an empty one); a refusal as CtlError, a 404 as Missing with the
        ``not_found`` text when given (the API's own is a bare "Not Found")."""
        url = self.api.base.rstrip("/") + "/api" + path
        credentials = base64.b64encode(f"{self.api.username}:{self.api.password}".encode()).decode()
        all_headers = {"Authorization": f"Basic {credentials}", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT, context=self.context) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise Missing(not_found or self._refusal(exc, method, path)) from None
            raise CtlError(self._refusal(exc, method, path)) from None
        except urllib.error.URLError as exc:
            why = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                why = f"{exc.reason.verify_message} (--cacert names the CA that signed the API's certificate)"
            raise CtlError(f"cannot reach the management API at {self.api.base}: {why}", UNAVAILABLE) from None
        except OSError as exc:  # timeouts, resets
            raise CtlError(f"cannot reach the management API at {self.api.base}: {exc}", UNAVAILABLE) from None
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise CtlError(f"{method} {url} did not answer JSON") from None

    @staticmethod
    def _refusal(exc: urllib.error.HTTPError, method: str, path: str) -> str:
        reason = str(exc.reason)
        try:
            answer = json.load(exc)
            reason = str(answer.get("reason") or answer.get("error") or reason)
        except (ValueError, AttributeError, OSError):
            pass
        if exc.code == 401:
            reason = f"{reason} (check the credentials: --url, --username/--password)"
        return f"{one_line(reason)} ({method} /api{path}: {exc.code})"

    def _get_or_none(self, path: str) -> Any:
        try:
            return self.request("GET", path)
        except Missing:
            return None

    # ---- users ------------------------------------------------------------------------------------

    def _user(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/users/{quote(name)}", not_found=f"user '{name}' does not exist"))

    def add_user(self, name: str, password: str, tags: list[str] | None = None) -> None:
        if self._get_or_none(f"/users/{quote(name)}") is not None:
            raise CtlError(f"user '{name}' already exists")
        self.request("PUT", f"/users/{quote(name)}", {"password": password, "tags": ",".join(tags or [])})

    def change_password(self, name: str, password: str | None) -> None:
        user = self._user(name)
        body: dict[str, Any] = {"tags": _tags_text(user.get("tags"))}
        if password is None:  # clear_password: a user that only EXTERNAL (certificates) can log in as
            body["password_hash"] = ""
        else:
            body["password"] = password
        self.request("PUT", f"/users/{quote(name)}", body)

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"/users/{quote(name)}", not_found=f"user '{name}' does not exist")

    def set_user_tags(self, name: str, tags: list[str]) -> None:
        user = self._user(name)
        body = {"password_hash": user.get("password_hash", ""), "tags": ",".join(tags)}
        if user.get("hashing_algorithm"):
            body["hashing_algorithm"] = user["hashing_algorithm"]
        self.request("PUT", f"/users/{quote(name)}", body)

    def list_users(self) -> list[dict[str, Any]]:
        return [{"user": u["name"], "tags": _tags_list(u.get("tags"))} for u in self.request("GET", "/users")]

    # ---- vhosts -----------------------------------------------------------------------------------

    def add_vhost(self, name: str, description: str = "", tags: list[str] | None = None,
                  default_queue_type: str | None = None) -> None:
        body: dict[str, Any] = {"description": description, "tags": ",".join(tags or [])}
        if default_queue_type:
            body["default_queue_type"] = default_queue_type
        self.request("PUT", f"/vhosts/{quote(name)}", body)

    def delete_vhost(self, name: str) -> None:
        self.request("DELETE", f"/vhosts/{quote(name)}", not_found=f"vhost '{name}' does not exist")

    def list_vhosts(self) -> list[dict[str, Any]]:
        return [
            {"name": v["name"], "description": v.get("description") or "", "tags": _tags_list(v.get("tags")),
             "default_queue_type": v.get("default_queue_type") or ""}
            for v in self.request("GET", "/vhosts")
        ]

    # ---- permissions ------------------------------------------------------------------------------

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        self.request("PUT", f"/permissions/{quote(vhost)}/{quote(user)}",
                     {"configure": configure, "write": write, "read": read})

    def clear_permissions(self, vhost: str, user: str) -> None:
        self.request("DELETE", f"/permissions/{quote(vhost)}/{quote(user)}",
                     not_found=f"user '{user}' has no permissions in vhost '{vhost}'")

    def list_permissions(self, vhost: str) -> list[dict[str, Any]]:
        rows = self.request("GET", f"/vhosts/{quote(vhost)}/permissions", not_found=f"vhost '{vhost}' does not exist")
        return [{"user": p["user"], "configure": p["configure"], "write": p["write"], "read": p["read"]} for p in rows]

    def list_user_permissions(self, user: str) -> list[dict[str, Any]]:
        rows = self.request("GET", f"/users/{quote(user)}/permissions", not_found=f"user '{user}' does not exist")
        return [{"vhost": p["vhost"], "configure": p["configure"], "write": p["write"], "read": p["read"]}
                for p in rows]

    def set_topic_permissions(self, vhost: str, user: str, exchange: str, write: str, read: str) -> None:
        self.request("PUT", f"/topic-permissions/{quote(vhost)}/{quote(user)}",
                     {"exchange": exchange, "write": write, "read": read})

    def clear_topic_permissions(self, vhost: str, user: str, exchange: str | None = None) -> None:
        path = f"/topic-permissions/{quote(vhost)}/{quote(user)}"
        if exchange is not None:
            path += f"/{quote(exchange)}"
        self.request("DELETE", path, not_found=f"user '{user}' has no topic permissions in vhost '{vhost}'")

    def list_topic_permissions(self, vhost: str) -> list[dict[str, Any]]:
        rows = self.request("GET", f"/vhosts/{quote(vhost)}/topic-permissions",
                            not_found=f"vhost '{vhost}' does not exist")
        return [{"user": p["user"], "exchange": p["exchange"], "write": p["write"], "read": p["read"]} for p in rows]

    # ---- limits -----------------------------------------------------------------------------------

    def vhost_limits(self, vhost: str) -> dict[str, int]:
        rows = self.request("GET", f"/vhost-limits/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
        return dict(rows[0]["value"]) if rows else {}

    def set_vhost_limits(self, vhost: str, limits: dict[str, int]) -> None:
        # rabbitmqctl replaces the whole set (the API's PUT changes one limit): clear the ones not given.
        for name in self.vhost_limits(vhost):
            if name not in limits:
                self.request("DELETE", f"/vhost-limits/{quote(vhost)}/{quote(name)}")
        for name, value in limits.items():
            self.request("PUT", f"/vhost-limits/{quote(vhost)}/{quote(name)}", {"value": value})

    def clear_vhost_limits(self, vhost: str) -> None:
        for name in self.vhost_limits(vhost):
            self.request("DELETE", f"/vhost-limits/{quote(vhost)}/{quote(name)}")

    def user_limits(self, user: str) -> dict[str, int]:
        rows = self.request("GET", f"/user-limits/{quote(user)}", not_found=f"user '{user}' does not exist")
        return dict(rows[0]["value"]) if rows else {}

    def set_user_limits(self, user: str, limits: dict[str, int]) -> None:
        self._user(user)  # RabbitMQ's API would store limits of a user that does not exist
        for name, value in limits.items():
            self.request("PUT", f"/user-limits/{quote(user)}/{quote(name)}", {"value": value})

    def clear_user_limits(self, user: str, name: str) -> None:
        self._user(user)
        names = list(self.user_limits(user)) if name == "all" else [name]
        for limit in names:
            self.request("DELETE", f"/user-limits/{quote(user)}/{quote(limit)}")

    # ---- definitions, connections (running broker only) ---------------------------------------------

    def import_definitions(self, body: Any, vhost: str | None = None) -> None:
        path = "/definitions" if vhost is None else f"/definitions/{quote(vhost)}"
        self.request("POST", path, body, not_found=f"vhost '{vhost}' does not exist")

    def export_definitions(self, vhost: str | None = None) -> Any:
        path = "/definitions" if vhost is None else f"/definitions/{quote(vhost)}"
        return self.request("GET", path, not_found=f"vhost '{vhost}' does not exist")

    def close_connection(self, name: str, reason: str) -> None:
        self.request("DELETE", f"/connections/{quote(name)}", headers={"X-Reason": reason},
                     not_found=f"connection '{name}' does not exist")

    def list_connections(self) -> list[dict[str, Any]]:
        return [
            {"name": c.get("name", ""), "user": c.get("user", ""), "vhost": c.get("vhost", ""),
             "peer_host": c.get("peer_host", ""), "peer_port": c.get("peer_port", ""),
             "state": c.get("state", ""), "channels": c.get("channels", 0),
             "client": _client_name(c.get("client_properties") or {})}
            for c in self.request("GET", "/connections")
        ]

    # ---- policies ---------------------------------------------------------------------------------

    def set_policy(self, kind: str, vhost: str, name: str, pattern: str, definition: dict[str, Any],
                   priority: int, apply_to: str) -> None:
        self.request("PUT", f"/{kind}/{quote(vhost)}/{quote(name)}",
                     {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to})

    def clear_policy(self, kind: str, vhost: str, name: str) -> None:
        what = "policy" if kind == "policies" else "operator policy"
        self.request("DELETE", f"/{kind}/{quote(vhost)}/{quote(name)}",
                     not_found=f"{what} '{name}' does not exist in vhost '{vhost}'")

    def list_policies(self, kind: str, vhost: str) -> list[dict[str, Any]]:
        rows = self.request("GET", f"/{kind}/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
        return [
            {"vhost": p.get("vhost", vhost), "name": p["name"], "pattern": p.get("pattern", ""),
             "apply-to": p.get("apply-to", ""), "definition": p.get("definition", {}),
             "priority": p.get("priority", 0)}
            for p in rows
        ]


def _tls_context(cacert: Path) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(cacert))
    except (OSError, ssl.SSLError) as error:
        raise CtlError(f"cannot use --cacert {cacert}: {error}") from None


def _tags_list(tags: Any) -> list[str]:
    """RabbitMQ 3.10 answers tags as a list, older versions (and some clients) as one comma-separated text."""
    if isinstance(tags, list):
        return [str(t) for t in tags]
    return [t for t in str(tags or "").split(",") if t]


def _tags_text(tags: Any) -> str:
    return ",".join(_tags_list(tags))


def _client_name(properties: dict[str, Any]) -> str:
    product, version = properties.get("product"), properties.get("version")
    return " ".join(str(p) for p in (product, version) if p)


class OfflineAdmin:
    """A stopped broker's users, vhosts, permissions and limits, changed in its metadata store."""

    def __init__(self, admin: Any, policies: Any) -> None:
        self.admin = admin  # core.access.AccessAdmin
        self.policies = policies  # core.policies.PolicyEngine

    @classmethod
    @contextmanager
    def open(cls, data_dir: Path) -> Iterator[OfflineAdmin]:
        from mailslot.bootstrap import DataDirInUse, offline_metadata
        from mailslot.core.access.admin import AccessAdmin
        from mailslot.core.access.control import InternalAccessControl
        from mailslot.core.policies import PolicyEngine

        try:
            with offline_metadata(data_dir) as metadata:
                policies = PolicyEngine(metadata)  # unattached: no live queue to tell, the broker reads them at start
                yield cls(AccessAdmin(InternalAccessControl(metadata), _OfflineHost(metadata, policies)), policies)
        except DataDirInUse as error:
            raise CtlError(str(error)) from None

    @contextmanager
    def _refusals(self) -> Iterator[None]:
        """The access model's refusals (no such user, a bad pattern, ...) as one line."""
        from mailslot.core.errors import BrokerError

        try:
            yield
        except (BrokerError, ValueError) as error:
            raise CtlError(one_line(str(error))) from None

    def add_user(self, name: str, password: str, tags: list[str] | None = None) -> None:
        with self._refusals():
            self.admin.add_user(name, password, tags or ())

    def change_password(self, name: str, password: str | None) -> None:
        with self._refusals():
            self.admin.change_password(name, password)

    def delete_user(self, name: str) -> None:
        with self._refusals():
            self.admin.delete_user(name)

    def set_user_tags(self, name: str, tags: list[str]) -> None:
        with self._refusals():
            self.admin.set_user_tags(name, tags)

    def list_users(self) -> list[dict[str, Any]]:
        return [{"user": u.name, "tags": list(u.tags)} for u in self.admin.list_users()]

    def add_vhost(self, name: str, description: str = "", tags: list[str] | None = None,
                  default_queue_type: str | None = None) -> None:
        with self._refusals():
            self.admin.add_vhost(name, description, tags or (), default_queue_type or None, exist_ok=True)

    def delete_vhost(self, name: str) -> None:
        with self._refusals():
            self.admin.delete_vhost(name)

    def list_vhosts(self) -> list[dict[str, Any]]:
        return [{"name": v.name, "description": v.description, "tags": list(v.tags),
                 "default_queue_type": v.default_queue_type or ""} for v in self.admin.list_vhosts()]

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        with self._refusals():
            self.admin.set_permissions(user, vhost, configure, write, read)

    def clear_permissions(self, vhost: str, user: str) -> None:
        with self._refusals():
            self.admin.clear_permissions(user, vhost)

    def list_permissions(self, vhost: str) -> list[dict[str, Any]]:
        with self._refusals():
            self.admin.access.vhosts.require(vhost)
        return [{"user": p.user, "configure": p.configure, "write": p.write, "read": p.read}
                for p in self.admin.list_permissions(vhost=vhost)]

    def list_user_permissions(self, user: str) -> list[dict[str, Any]]:
        with self._refusals():
            self.admin.access.users.require(user)
        return [{"vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read}
                for p in self.admin.list_permissions(user=user)]

    def set_topic_permissions(self, vhost: str, user: str, exchange: str, write: str, read: str) -> None:
        with self._refusals():
            self.admin.set_topic_permissions(user, vhost, exchange, write, read)

    def clear_topic_permissions(self, vhost: str, user: str, exchange: str | None = None) -> None:
        with self._refusals():
            self.admin.clear_topic_permissions(user, vhost, exchange)

    def list_topic_permissions(self, vhost: str) -> list[dict[str, Any]]:
        with self._refusals():
            self.admin.access.vhosts.require(vhost)
        return [{"user": p.user, "exchange": p.exchange, "write": p.write, "read": p.read}
                for p in self.admin.list_topic_permissions(vhost=vhost)]

    def vhost_limits(self, vhost: str) -> dict[str, int]:
        with self._refusals():
            self.admin.access.vhosts.require(vhost)
        return dict(self.admin.access.limits.of_vhost(vhost))

    def set_vhost_limits(self, vhost: str, limits: dict[str, int]) -> None:
        with self._refusals():
            self.admin.clear_vhost_limits(vhost)  # rabbitmqctl replaces the whole set
            self.admin.set_vhost_limits(vhost, limits)

    def clear_vhost_limits(self, vhost: str) -> None:
        with self._refusals():
            self.admin.clear_vhost_limits(vhost)

    def user_limits(self, user: str) -> dict[str, int]:
        with self._refusals():
            self.admin.access.users.require(user)
        return dict(self.admin.access.limits.of_user(user))

    def set_user_limits(self, user: str, limits: dict[str, int]) -> None:
        with self._refusals():
            self.admin.set_user_limits(user, limits)

    def clear_user_limits(self, user: str, name: str) -> None:
        with self._refusals():
            self.admin.clear_user_limits(user, None if name == "all" else name)


    # ---- policies (kind: the API's path, "policies" or "operator-policies") ------------------------------

    @staticmethod
    def _kind(kind: str) -> str:
        from mailslot.core.policies import OPERATOR_POLICY, POLICY

        return POLICY if kind == "policies" else OPERATOR_POLICY

    def set_policy(self, kind: str, vhost: str, name: str, pattern: str, definition: dict[str, Any],
                   priority: int, apply_to: str) -> None:
        with self._refusals():
            self.admin.access.vhosts.require(vhost)
            self.policies.set(self._kind(kind), vhost, name, pattern, definition, priority, apply_to)

    def clear_policy(self, kind: str, vhost: str, name: str) -> None:
        what = "policy" if kind == "policies" else "operator policy"
        if not self.policies.delete(self._kind(kind), vhost, name):
            raise CtlError(f"{what} '{name}' does not exist in vhost '{vhost}'")

    def list_policies(self, kind: str, vhost: str) -> list[dict[str, Any]]:
        with self._refusals():
            self.admin.access.vhosts.require(vhost)
        return [p.document() for p in self.policies.listed(self._kind(kind), vhost)]


class _OfflineHost:
    """The broker core as offline mode stands in for it: a vhost added here is created by the broker from
    its record at the next start; deleting one is allowed only while it holds no queue (their messages are
    in the message log, which only a running broker deletes properly)."""

    def __init__(self, metadata: Any, policies: Any) -> None:
        self.metadata = metadata
        self.policies = policies

    def add_vhost(self, name: str) -> None:
        pass

    def set_queue_limit(self, name: str, limit: int | None) -> None:
        pass

    def delete_vhost(self, name: str) -> None:
        from mailslot.core.errors import PreconditionFailed

        definitions = self.metadata.load()
        queues = [q.name for q in definitions.queues if q.vhost == name]
        if queues:
            raise PreconditionFailed(
                f"vhost '{name}' holds {len(queues)} queue(s) whose messages only a running broker can delete: "
                "start the broker and run delete_vhost without --data-dir")
        for binding in definitions.bindings:
            if binding.vhost == name:
                self.metadata.delete_binding(binding)
        for exchange in definitions.exchanges:
            if exchange.vhost == name:
                self.metadata.delete_exchange(name, exchange.name)
        self.policies.forget_vhost(name)


__all__ = ["USER_LIMITS", "VHOST_LIMITS", "CtlError", "FetchError", "HttpAdmin", "Missing", "OfflineAdmin", "parse_limits"]
