"""TLS for the listeners (AMQPS, HTTPS): server contexts built from certificate files, replaced without a
restart, and the verified client certificate of a connection. docs/tls.md for users.

Rules of this module:

* TLS 1.2 and 1.3 only, as RabbitMQ's defaults (https://www.rabbitmq.com/docs/ssl, "TLS Versions"):
  a client offering TLS 1.1 or older fails the handshake.
* Every problem with the files (missing, unreadable, key not matching the certificate, bad password)
  is a :class:`~mailslot.config.ConfigError` naming the setting, raised before anything listens, or
  from :meth:`ReloadableTLS.reload`, which then keeps the contexts it had.
* A listener gets one :class:`ssl.SSLContext` for its whole life (asyncio offers no way to swap it).
  Reloading builds new contexts; the listener's context hands each new handshake over to the newest
  one from its server-name callback, which OpenSSL calls for every ClientHello, with or without SNI.
  Connections already up keep the certificate they were made with.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..config import ConfigError
from ..core.peer import PeerCertificate

log = logging.getLogger("mailslot.tls")

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # RabbitMQ 3.x/4.x accept tlsv1.2 and tlsv1.3 by default
# Seconds a TLS handshake may take before the socket is closed: RabbitMQ's ssl_handshake_timeout (5000 ms).
HANDSHAKE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Where the server's identity and the client CA come from, and how clients are checked."""

    cert: Path
    key: Path
    ca: Path | None = None
    key_password: str | None = None
    verify_peer: bool = False  # ask clients for a certificate and verify it against ``ca``
    fail_if_no_peer_cert: bool = False  # with verify_peer: refuse clients that send none


def server_context(files: TLSFiles, *, verify_clients: bool = True) -> ssl.SSLContext:
    """A server context for ``files``; ``verify_clients=False`` for HTTPS (its clients log in with
    passwords, and a browser asked for a certificate shows a dialog)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # client-initiated renegotiation is a DoS lever
    _load(context, files)
    if verify_clients and files.verify_peer:
        context.verify_mode = ssl.CERT_REQUIRED if files.fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    return context


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """A client context that presents ``files``' certificate and verifies the server's against its CA
    (the cluster link: mailslot.cluster.link). Host names are checked by the caller, which knows
    which names the peer may have."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    _load(context, files)
    return context


def handing_over(first: ssl.SSLContext, newest: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """``first``, made to hand every new handshake over to ``newest()`` (a listener keeps the context it
    was created with; see the module's rules)."""

    def hand_over(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        current = newest()
        if current is not context:
            connection.context = current  # SSL_set_SSL_CTX: certificate, key and CA store of the new one

    first.sni_callback = hand_over  # type: ignore[assignment]  # typeshed wants SSLSocket; asyncio passes SSLObject
    return first


def _load(context: ssl.SSLContext, files: TLSFiles) -> None:
    for key, path in (("tls_cert", files.cert), ("tls_key", files.key), ("tls_ca", files.ca)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(key, f"cannot read {path}: no such file")
    try:
        # Always a password (empty when none is configured): without one OpenSSL would prompt on the
        # terminal for an encrypted key, and a server must fail instead.
        context.load_cert_chain(files.cert, files.key, password=lambda: files.key_password or "")
    except OSError as error:  # ssl.SSLError is an OSError too
        raise ConfigError(*_cert_chain_problem(files, error)) from None
    if files.ca is not None:
        try:
            context.load_verify_locations(cafile=files.ca)
        except (OSError, ValueError) as error:
            raise ConfigError("tls_ca", f"{files.ca} holds no usable CA certificate: {_reason(error)}") from None


def _cert_chain_problem(files: TLSFiles, error: OSError) -> tuple[str, str]:
    """Why OpenSSL refused the pair, in words: it says little more than "PEM lib", so look again."""
    reason = _reason(error)
    if "KEY_VALUES_MISMATCH" in reason or "key values mismatch" in reason:
        return "tls_key", f"{files.key} is not the key of the certificate in {files.cert}"
    password = files.key_password.encode() if files.key_password else None
    try:
        serialization.load_pem_private_key(Path(files.key).read_bytes(), password)
    except TypeError:  # encrypted and no password, or a password for a key that is not encrypted
        if password is None:
            return "tls_key", f"cannot decrypt {files.key}: it is encrypted and no tls_key_password is set"
        return "tls_key_password", f"is set, but {files.key} is not encrypted"
    except ValueError:
        if password is not None and b"ENCRYPTED" in Path(files.key).read_bytes():
            return "tls_key_password", f"does not decrypt {files.key} (wrong password)"
        return "tls_key", f"{files.key} holds no PEM private key"
    except OSError as read_error:
        return "tls_key", f"cannot read {files.key}: {read_error.strerror or read_error}"
    try:
        x509.load_pem_x509_certificate(Path(files.cert).read_bytes())
    except ValueError:
        return "tls_cert", f"{files.cert} holds no PEM certificate"
    return "tls_cert", f"cannot load the certificate {files.cert} with the key {files.key}: {reason}"


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason) if reason else str(error)


class ReloadableTLS:
    """The contexts of the TLS listeners, rebuilt from their files by :meth:`reload` (SIGHUP, or an API
    call): new connections get the new certificate, connections already up keep theirs."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._amqp, self._http = self._build()
        # The contexts listeners were created with; each forwards new handshakes to the newest context.
        self.amqp_context = handing_over(self._amqp, lambda: self._amqp)
        self.http_context = handing_over(self._http, lambda: self._http)
        self.reloads = 0

    def _build(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        return server_context(self.files), server_context(self.files, verify_clients=False)

    def reload(self) -> None:
        """Read the files again. On any problem raise :class:`ConfigError` and keep serving the old ones."""
        amqp, http = self._build()
        self._amqp, self._http = amqp, http
        self.reloads += 1
        log.info("TLS certificates reloaded from %s and %s", self.files.cert, self.files.key)


# ---- the peer's certificate ------------------------------------------------------------------------

# rabbit_ssl:format_rdn: the short names RabbitMQ writes; any other attribute as its dotted OID.
_SHORT_NAMES: dict[ObjectIdentifier, str] = {
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GIVENNAME",
    NameOID.INITIALS: "INITIALS",
    NameOID.GENERATION_QUALIFIER: "GENERATIONQUALIFIER",
    NameOID.COMMON_NAME: "CN",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.TITLE: "TITLE",
    NameOID.COUNTRY_NAME: "C",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.PSEUDONYM: "PSEUDONYM",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "EMAILADDRESS",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.USER_ID: "UID",
}


def format_dn(name: x509.Name) -> str:
    """A DN as RabbitMQ writes it (rabbit_ssl:format_rdn_sequence): RDNs last-to-first joined by ``,``,
    multi-valued RDNs joined by ``+``, values escaped as RFC 4514 says (plus every non-printable byte)."""
    rdns = []
    for rdn in reversed(list(name.rdns)):
        rdns.append("+".join(f"{_attribute_name(a.oid)}={_escape(_text(a.value))}" for a in rdn))
    return ",".join(rdns)


def _attribute_name(oid: ObjectIdentifier) -> str:
    return _SHORT_NAMES.get(oid, oid.dotted_string)


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _escape(value: str) -> str:
    """rabbit_ssl:escape_rdn_value: ``\\`` before a leading space or ``#``, a trailing space and any of
    ``"+,;<>\\``; ``\\XX`` for each UTF-8 byte below 32 or from 126 up."""
    out: list[str] = []
    data = value.encode("utf-8")
    last = len(data) - 1
    for i, byte in enumerate(data):
        char = chr(byte)
        if (i == 0 and char in " #") or (i == last and char == " " and i != 0) or char in '"+,;<>\\':
            out.append("\\" + char)
        elif byte < 32 or byte >= 126:
            out.append(f"\\{byte:02X}")
        else:
            out.append(char)
    return "".join(out)


def peer_certificate_of(transport: asyncio.BaseTransport) -> PeerCertificate | None:
    """The client certificate the handshake verified, or None (plain TCP, or a client that sent none)."""
    ssl_object: Any = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    try:
        der = ssl_object.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None
    if not der:
        return None
    return parse_certificate(der)


def parse_certificate(der: bytes) -> PeerCertificate:
    certificate = x509.load_der_x509_certificate(der)
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return PeerCertificate(
        subject=format_dn(certificate.subject),
        common_name=_text(names[0].value) if names else None,
        issuer=format_dn(certificate.issuer),
        serial_number=certificate.serial_number,
        der=der,
    )
