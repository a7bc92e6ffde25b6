"""A small blocking client for the management API (urllib only), used against both brokers.

Shared RabbitMQ: every object a test creates there carries a unique name and is deleted afterwards (the
``queue``/``exchange`` helpers register it; ``cleanup`` deletes).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

RABBITMQ_API = "http://127.0.0.1:15672"
RABBITMQ_PROMETHEUS = "http://127.0.0.1:15692"
TIMEOUT = 30.0  # seconds: the reference answers listings slowly under load


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]  # names in lower case

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def q(name: str) -> str:
    """A path segment (``/`` as ``%2F``, as RabbitMQ's clients write vhosts)."""
    return urllib.parse.quote(name, safe="")


@dataclass
class ManagementApi:
    base: str
    user: str = "guest"
    password: str = "guest"
    name: str = ""
    prometheus: str = ""
    created: list[str] = field(default_factory=list)  # paths to DELETE afterwards

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                user: tuple[str, ...] | None = None, headers: dict[str, str] | None = None) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        all_headers = {"content-type": "application/json", **(headers or {})}
        who = user if user is not None else (self.user, self.password)
        if who:
            all_headers["Authorization"] = "Basic " + base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
        request = urllib.request.Request(self.base + path, method=method, data=data, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return Reply(response.status, response.read(), {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read(), {k.lower(): v for k, v in error.headers.items()})

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("PUT", path, body, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Reply:
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        reply = self.request(method, path, body)
        assert 200 <= reply.status < 300, (self.name, method, path, reply.status, reply.body[:500])
        return reply.json

    def queue(self, name: str, vhost: str = "/", **body: Any) -> str:
        self.ok("PUT", f"/api/queues/{q(vhost)}/{q(name)}", body)
        self.created.append(f"/api/queues/{q(vhost)}/{q(name)}")
        return name

    def exchange(self, name: str, type_: str = "direct", vhost: str = "/", **body: Any) -> str:
        self.ok("PUT", f"/api/exchanges/{q(vhost)}/{q(name)}", {"type": type_, **body})
        self.created.insert(0, f"/api/exchanges/{q(vhost)}/{q(name)}")
        return name

    def publish(self, routing_key: str, payload: str, exchange: str = "amq.default", vhost: str = "/",
                properties: dict[str, Any] | None = None) -> Any:
        body = {"routing_key": routing_key, "payload": payload, "payload_encoding": "string",
                "properties": properties or {}}
        return self.ok("POST", f"/api/exchanges/{q(vhost)}/{q(exchange)}/publish", body)

    def metrics(self, path: str = "/metrics") -> str:
        with urllib.request.urlopen(self.prometheus + path, timeout=TIMEOUT) as response:
            return str(response.read().decode())

    def cleanup(self) -> None:
        for path in self.created:
            self.delete(path)
        self.created.clear()
