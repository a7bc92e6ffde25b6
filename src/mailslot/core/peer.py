"""What a front end knows about the peer's TLS client certificate, in protocol-neutral terms.

The transport fills it in when a TLS connection's handshake is done (transport/tls.py) and hands it to
the front end before any byte of the protocol is read; SASL ``EXTERNAL`` (core/access.py) takes the
username from it, as RabbitMQ's ``rabbit_auth_mechanism_ssl`` does (``ssl_cert_login_from``:
``distinguished_name`` -> :attr:`subject`, ``common_name`` -> :attr:`common_name`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A client certificate that the TLS handshake verified against the configured CA."""

    # The subject DN as RabbitMQ formats it (rabbit_ssl:peer_cert_subject): RFC 4514 order (most specific
    # RDN first), short attribute names (CN, O, OU, C, L, ST, DC, EMAILADDRESS, ...), RFC 4514 escaping.
    # E.g. "CN=worker-1,O=Example,C=DE".
    subject: str
    # The first commonName of the subject, unescaped (None when the subject has none).
    common_name: str | None
    issuer: str  # the issuer DN, formatted like ``subject``
    serial_number: int
    der: bytes  # the certificate itself (DER), for anything the fields above do not cover
