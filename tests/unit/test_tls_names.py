"""The peer certificate's DN as RabbitMQ writes it (rabbit_ssl:format_rdn_sequence), which SASL EXTERNAL
with ``ssl_cert_login_from = distinguished_name`` compares with user names."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mailslot.testing.certificates import CertificateAuthority
from mailslot.transport.tls import format_dn, parse_certificate


def _name(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (_name((NameOID.COUNTRY_NAME, "DE"), (NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.COMMON_NAME, "app")),
         "CN=app,O=Acme,C=DE"),  # most specific first, as RFC 4514 and RabbitMQ
        (_name((NameOID.COMMON_NAME, "a,b+c")), "CN=a\\,b\\+c"),
        (_name((NameOID.COMMON_NAME, "#lead")), "CN=\\#lead"),
        (_name((NameOID.COMMON_NAME, " both ")), "CN=\\ both\\ "),
        (_name((NameOID.COMMON_NAME, "tab\there")), "CN=tab\\09here"),
        (_name((NameOID.COMMON_NAME, "Jürgen")), "CN=J\\C3\\BCrgen"),  # non-ASCII as escaped UTF-8 bytes
        (_name((NameOID.EMAIL_ADDRESS, "ops@example.com"), (NameOID.DOMAIN_COMPONENT, "example")),
         "DC=example,EMAILADDRESS=ops@example.com"),
        (_name((NameOID.BUSINESS_CATEGORY, "bank")), "2.5.4.15=bank"),  # no short name: the dotted OID
    ],
)
def test_format_dn(name: x509.Name, expected: str) -> None:
    assert format_dn(name) == expected


def test_multi_valued_rdn_is_joined_with_plus() -> None:
    rdn = x509.RelativeDistinguishedName([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "ops"),
        x509.NameAttribute(NameOID.COMMON_NAME, "x"),
    ])
    formatted = format_dn(x509.Name([rdn]))
    assert sorted(formatted.split("+")) == ["CN=x", "OU=ops"]


def test_parse_certificate() -> None:
    ca = CertificateAuthority("Test Root")
    issued = ca.issue("worker-7", subject=_name((NameOID.ORGANIZATION_NAME, "Acme"), (NameOID.COMMON_NAME, "worker-7")))
    from cryptography.hazmat.primitives import serialization

    peer = parse_certificate(issued.certificate.public_bytes(serialization.Encoding.DER))
    assert (peer.subject, peer.common_name, peer.issuer) == ("CN=worker-7,O=Acme", "worker-7", "CN=Test Root")
    assert peer.serial_number == issued.certificate.serial_number
