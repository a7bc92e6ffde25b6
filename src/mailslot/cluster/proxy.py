"""Management requests about a queue another node owns, answered by the owner (docs/cluster.md).

Rules of this module:

* Only the owner holds a shared queue's messages, so browsing it, summarising a dead-letter queue and
  redriving it (``/api/mailslot/...``, ``mailslot dlq``) must run there. The node that gets such a
  request passes it to the owner over the cluster link: a QUERY frame (the method, the path with its
  query string, the caller's ``Authorization`` and ``Content-Type`` headers and the body), answered by
  one ANSWER frame (the status, ``Content-Type``, ``Location`` and the body). One link connection per
  request (they are rare, operators' requests): nothing to multiplex, and a slow answer holds up
  no forwarded publish.
* The owner makes the request of its own management API (:class:`QueryServer`, over loopback), which
  authenticates and authorises the caller as any request: users and permissions are the same on every
  node. The request carries :data:`PROXIED`, so an owner that lost the queue meanwhile answers with its
  own view instead of passing it on again.
* Every failure to reach the owner is a :class:`ConnectionError` whose text says why; the management
  API answers it with 503 (http/extras.py).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from . import link

log = logging.getLogger("mailslot.cluster")

PROXIED = "X-Mailslot-Proxied-By"  # the node that passed the request on (header)
FORWARDED_HEADERS = ("Authorization", "Content-Type")
ANSWERED_HEADERS = ("Content-Type", "Location")
# Seconds the asking node waits for the answer: a browse of a deep queue or a dry run reads up to
# core.browse.SCAN_LIMIT messages on the owner.
QUERY_TIMEOUT = 30.0


class QueryClient:
    """The asking node's side: one link connection per request to the owner."""

    def __init__(self, node_name: str, secret: bytes, links: Callable[[], dict[str, str]],
                 tls: link.LinkTLS | None = None) -> None:
        self.node_name, self.secret, self.links, self.tls = node_name, secret, links, tls

    async def ask(self, owner: str, method: str, path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The owner's answer: ``{"status", "headers", "body"}``; ConnectionError saying why when it gives none."""
        address = self.links().get(owner, "")
        if not address:
            raise ConnectionError(f"node '{owner}' is not running or has no cluster link")
        query = {
            "method": method, "path": path, "by": self.node_name,
            "headers": {name: headers[name] for name in FORWARDED_HEADERS if name in headers},
            "body": base64.b64encode(body).decode(),
        }
        try:
            reader, writer = await link.connect(link.parse_address(address), self.secret, self.node_name, self.tls,
                                                owner)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            raise ConnectionError(f"cannot reach node '{owner}' at {address}: {exc or type(exc).__name__}") from None
        try:
            writer.write(link.encode_frame(link.QUERY, json.dumps(query).encode()))
            kind, payload = await asyncio.wait_for(link.read_frame(reader), QUERY_TIMEOUT)
            if kind != link.ANSWER:
                raise link.LinkError(f"expected an ANSWER frame, got type {kind}")
            answer: dict[str, Any] = json.loads(payload)
            answer["body"] = base64.b64decode(answer.get("body", ""))
            return answer
        except TimeoutError:
            raise ConnectionError(f"node '{owner}' did not answer within {QUERY_TIMEOUT:.0f} s") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise ConnectionError(f"node '{owner}' broke the link: {exc or type(exc).__name__}") from None
        finally:
            writer.close()


class QueryServer:
    """The owner's side: answers each QUERY by making the request of its own management API."""

    def __init__(self, management_url: Callable[[], str]) -> None:
        self.management_url = management_url  # "" until (unless) this node's HTTP API listens
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, payload: bytes, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(payload, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, payload: bytes, writer: asyncio.StreamWriter) -> None:
        try:
            answer = await self._request(json.loads(payload))
        except (ValueError, KeyError, TypeError) as exc:
            answer = _error(400, f"a malformed query from another node: {exc}")
        if not writer.is_closing():
            writer.write(link.encode_frame(link.ANSWER, json.dumps(answer).encode()))

    async def _request(self, query: dict[str, Any]) -> dict[str, Any]:
        base = self.management_url()
        if not base:
            return _error(503, "the queue's owner has no management listener (--http-port) to answer")
        method, path = str(query["method"]), str(query["path"])
        if not path.startswith("/api/mailslot/"):
            return _error(400, "only /api/mailslot/ requests are passed to a queue's owner")
        headers = {name: str(value) for name, value in dict(query["headers"]).items() if name in FORWARDED_HEADERS}
        headers[PROXIED] = str(query.get("by", "?"))
        try:
            async with aiohttp.ClientSession() as session, session.request(
                    method, base + path, headers=headers, data=base64.b64decode(query["body"]), ssl=False,
                    allow_redirects=False, timeout=aiohttp.ClientTimeout(total=QUERY_TIMEOUT)) as response:
                body = await response.read()
                return {
                    "status": response.status,
                    "headers": {name: response.headers[name] for name in ANSWERED_HEADERS if name in response.headers},
                    "body": base64.b64encode(body).decode(),
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not answer a management query of node '%s': %s", query.get("by"), exc)
            return _error(503, f"the queue's owner could not answer: {exc or type(exc).__name__}")

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


def _error(status: int, reason: str) -> dict[str, Any]:
    error = "service_unavailable" if status == 503 else "bad_request"
    body = json.dumps({"error": error, "reason": reason}).encode()
    return {"status": status, "headers": {"Content-Type": "application/json"}, "body": base64.b64encode(body).decode()}
