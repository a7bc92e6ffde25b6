"""The internal link between the nodes of a cluster: framed, authenticated, with pluggable transports.

Rules of this module:

* One layer, transports underneath: ``tcp`` (``HOST:PORT``, between machines) and ``unix``
  (``unix:/path``, between processes of one machine) give the same asyncio streams; everything
  above (handshake, frames) is the same for both. :func:`parse_address` is the only place that
  knows the address forms.
* A frame is ``length (4 bytes, big-endian) | type (1 byte) | payload``. Frames are batch-shaped:
  the forwarder sends one frame per batch per owner, never one per message (measured in issue 14:
  7-46 us per message unbatched against 0.55 us batched).
* Authentication before anything else, both ways, with a shared secret (``--cluster-secret``) and
  HMAC-SHA256 over both sides' random nonces: the server sends a nonce, the client answers with
  its node name, its own nonce and a MAC, the server proves it knows the secret too. The secret
  never crosses the wire. Until then a frame may not exceed :data:`HANDSHAKE_FRAME_MAX`, so an
  unauthenticated peer cannot make a node allocate much.
* TLS when configured (:func:`link_tls`): both sides present a certificate and verify the other's
  against the cluster's CA (mutual TLS), under the same secret handshake. Each side also checks that
  the other's certificate is for the node it talks to (:func:`check_identity`): its subjectAltName
  (or CN) names the node's name (``--node-name``) or the host of its link address (the dialer: the
  host it dialed; the listener: the peer's IP address or the host the node table advertises for the
  node the peer says it is, after the secret proved it a member). The files are re-read by
  :meth:`LinkTLS.reload` (SIGHUP, with the AMQPS/HTTPS ones).
* Peers' sizes are checked before anything is allocated: :data:`FRAME_MAX` after the handshake.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailslot.transport.tls import TLSFiles, client_context, handing_over, server_context

log = logging.getLogger("mailslot.cluster")

# The largest frame a peer may send once authenticated: a forwarded batch is split before this (a
# message is at most 512 MiB, RabbitMQ's cap, and is never split).
FRAME_MAX = 600 * 1024 * 1024
# The largest frame before authentication: a nonce, a node name and a MAC.
HANDSHAKE_FRAME_MAX = 1024
NONCE_BYTES = 32
HANDSHAKE_TIMEOUT = 10.0  # seconds, as an AMQP handshake

_HEADER = struct.Struct("!IB")

CHALLENGE, HELLO, WELCOME = 1, 2, 3  # the handshake's frames; 10-29 are forward.py's
QUERY, ANSWER = 30, 31  # a management request passed to a queue's owner, and its answer (proxy.py)


class LinkError(ConnectionError):
    """The peer broke the link's protocol or failed authentication."""


@dataclass(frozen=True, slots=True)
class Address:
    transport: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.transport == "unix" else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """``HOST:PORT`` (or ``tcp:HOST:PORT``, ``[v6]:PORT``) or ``unix:/path``; ValueError otherwise."""
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise ValueError(f"{text!r}: a Unix socket address needs a path (unix:/run/mailslot/link.sock)")
        return Address("unix", path=path)
    text = text.removeprefix("tcp:")
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT or unix:/path")
    return Address("tcp", host=host.strip("[]") or "0.0.0.0", port=int(port))


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LinkTLS:
    """Mutual TLS of the link from this node's certificate and key and the cluster's CA. A node's
    certificate is both server and client. :meth:`reload` reads the files again (SIGHUP): new link
    connections, both ways, use them; connections already up keep theirs."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._server, self.client = self._build()
        self.server = handing_over(self._server, lambda: self._server)  # the listener's, for its whole life
        self.reloads = 0

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return server_context(self.files), client_context(self.files)

    def reload(self) -> None:
        """Read the files again; ConfigError naming the setting (and the old ones kept) when unusable."""
        self._server, self.client = self._build()
        self.reloads += 1
        log.info("cluster link TLS certificates reloaded from %s and %s", self.files.cert, self.files.key)


def link_tls(cert: Path, key: Path, ca: Path, key_password: str | None = None) -> LinkTLS:
    """The link's TLS (ConfigError naming the setting when a file is unusable)."""
    return LinkTLS(TLSFiles(cert, key, ca, key_password, verify_peer=True, fail_if_no_peer_cert=True))


def certificate_names(der: bytes) -> set[str]:
    """The names a certificate is for: its subjectAltName's DNS names (lower case) and IP addresses,
    or its CN when it has none of those (as browsers no longer do, but self-made node certificates
    often have only a CN)."""
    certificate = x509.load_der_x509_certificate(der)
    names: set[str] = set()
    try:
        alternatives = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        names |= {name.lower() for name in alternatives.get_values_for_type(x509.DNSName)}
        names |= {str(address) for address in alternatives.get_values_for_type(x509.IPAddress)}
    if not names:
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            value = attribute.value
            names.add((value if isinstance(value, str) else value.decode(errors="replace")).lower())
    return names


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower().rstrip(".")


def _matches(pattern: str, name: str) -> bool:
    """RFC 6125: equal, or ``*.example.com`` for exactly one more label on the left."""
    if pattern == name:
        return True
    if pattern.startswith("*.") and "." in name:
        return name.split(".", 1)[1] == pattern[2:]
    return False


def check_identity(writer: asyncio.StreamWriter, acceptable: list[str], who: str) -> None:
    """LinkError unless the peer's certificate names one of ``acceptable`` (see the module's rules);
    nothing to check without TLS."""
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return
    der = ssl_object.getpeercert(binary_form=True)
    names = certificate_names(der) if der else set()
    # A node named as by default, mailslot@HOST, may present a certificate for HOST.
    wanted = [_normal(name) for name in acceptable for name in (name, name.partition("@")[2]) if name]
    if any(_matches(name, want) for name in names for want in wanted):
        return
    listed = ", ".join(repr(name) for name in sorted(names)) or "no name"
    raise LinkError(f"the TLS certificate of {who} is for {listed}, not for "
                    f"{' or '.join(repr(w) for w in dict.fromkeys(wanted))}: refused (a certificate of the "
                    "cluster's CA must name the node: its node name or the host of its cluster link address)")


async def open_connection(address: Address, tls: LinkTLS | None = None) -> Streams:
    context = tls.client if tls is not None else None
    hostname = "mailslot-cluster-link" if tls is not None else None  # SNI; names are checked by check_identity
    if address.transport == "unix":
        return await asyncio.open_unix_connection(address.path, ssl=context, server_hostname=hostname)
    return await asyncio.open_connection(address.host, address.port, ssl=context, server_hostname=hostname)


async def start_server(address: Address, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                            Awaitable[None]],
                       tls: LinkTLS | None = None) -> tuple[asyncio.Server, Address]:
    """Listen on ``address``; returns the server and the address it really bound (port 0: a free one)."""
    context = tls.server if tls is not None else None
    if address.transport == "unix":
        if os.path.exists(address.path):
            os.unlink(address.path)  # a stale socket of a former process
        server = await asyncio.start_unix_server(handle, address.path, ssl=context)
        return server, address
    server = await asyncio.start_server(handle, address.host, address.port, ssl=context)
    port = server.sockets[0].getsockname()[1]
    return server, Address("tcp", address.host, port)


# -- frames -------------------------------------------------------------------------------------------


def encode_frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


async def read_frame(reader: asyncio.StreamReader, limit: int = FRAME_MAX) -> tuple[int, bytes]:
    """The next frame; LinkError if it is larger than ``limit``, IncompleteReadError at end of stream."""
    length, kind = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length > limit:
        raise LinkError(f"frame of {length} bytes exceeds the limit of {limit}")
    return kind, await reader.readexactly(length)


# -- the handshake ------------------------------------------------------------------------------------


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes,
                 hosts_of: Callable[[str], list[str]] = lambda node: []) -> str:
    """Server side: authenticate the peer; returns its node name. LinkError when it fails. With TLS,
    the peer's certificate must name that node, its IP address or one of ``hosts_of(node)``."""
    server_nonce = os.urandom(NONCE_BYTES)
    writer.write(encode_frame(CHALLENGE, server_nonce))
    kind, payload = await asyncio.wait_for(read_frame(reader, HANDSHAKE_FRAME_MAX), HANDSHAKE_TIMEOUT)
    if kind != HELLO or len(payload) < NONCE_BYTES + 32:
        raise LinkError("expected a HELLO frame")
    client_nonce, mac, name = payload[:NONCE_BYTES], payload[NONCE_BYTES:NONCE_BYTES + 32], payload[NONCE_BYTES + 32:]
    if not hmac.compare_digest(mac, _mac(secret, b"mailslot-link-client", server_nonce, client_nonce, name)):
        raise LinkError("authentication failed: the peer does not know the cluster secret")
    node = name.decode(errors="replace")
    peer = writer.get_extra_info("peername")
    peer_ip = peer[0] if isinstance(peer, tuple) else ""
    check_identity(writer, [node, peer_ip, *hosts_of(node)], f"node '{node}' (connecting from {peer_ip or 'a socket'})")
    writer.write(encode_frame(WELCOME, _mac(secret, b"mailslot-link-server", client_nonce, server_nonce)))
    await writer.drain()
    return node


async def connect(address: Address, secret: bytes, node_name: str, tls: LinkTLS | None = None,
                  peer: str = "") -> Streams:
    """Client side: connect to node ``peer`` at ``address`` and authenticate both ways. LinkError when
    it fails. With TLS, the peer's certificate must name ``peer`` or the host of ``address``."""
    reader, writer = await asyncio.wait_for(open_connection(address, tls), HANDSHAKE_TIMEOUT)
    try:
        check_identity(writer, [peer, address.host], f"node '{peer}' at {address}")
        kind, server_nonce = await asyncio.wait_for(read_frame(reader, HANDSHAKE_FRAME_MAX), HANDSHAKE_TIMEOUT)
        if kind != CHALLENGE or len(server_nonce) != NONCE_BYTES:
            raise LinkError("expected a CHALLENGE frame")
        client_nonce = os.urandom(NONCE_BYTES)
        name = node_name.encode()
        mac = _mac(secret, b"mailslot-link-client", server_nonce, client_nonce, name)
        writer.write(encode_frame(HELLO, client_nonce + mac + name))
        kind, proof = await asyncio.wait_for(read_frame(reader, HANDSHAKE_FRAME_MAX), HANDSHAKE_TIMEOUT)
        if kind != WELCOME or not hmac.compare_digest(
                proof, _mac(secret, b"mailslot-link-server", client_nonce, server_nonce)):
            raise LinkError("authentication failed: the peer does not know the cluster secret")
    except BaseException:
        writer.close()
        raise
    return reader, writer
