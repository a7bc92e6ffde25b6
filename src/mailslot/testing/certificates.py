"""Throw-away certificates for TLS tests: a CA, server and client certificates issued by it, written as
PEM files (``cryptography``; nothing from outside, nothing that outlives the test's directory).

::

    ca = CertificateAuthority("test CA")
    server = ca.issue("localhost", server=True).write(tmp_path, "server")
    client = ca.issue("worker-1").write(tmp_path, "client")
    ca_file = ca.write(tmp_path)
    # running_broker(tls_port=0, tls_cert=server.cert, tls_key=server.key, tls_ca=ca_file, ...)

Keys are EC P-256: generating one takes about a millisecond (RSA-2048 takes ~50 ms).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)  # a test certificate needs to outlive the test, nothing more


@dataclass(frozen=True)
class PemFiles:
    """Where :meth:`IssuedCertificate.write` put a certificate and its key."""

    cert: Path
    key: Path


class IssuedCertificate:
    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self.key = key

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    def write(self, directory: Path, stem: str, password: bytes | None = None) -> PemFiles:
        """``<stem>.crt`` and ``<stem>.key`` in ``directory`` (the key encrypted with ``password``)."""
        directory.mkdir(parents=True, exist_ok=True)
        files = PemFiles(directory / f"{stem}.crt", directory / f"{stem}.key")
        files.cert.write_bytes(self.cert_pem())
        files.key.write_bytes(self.key_pem(password))
        files.key.chmod(0o600)
        return files


class CertificateAuthority:
    """A self-signed CA that issues server and client certificates."""

    def __init__(self, name: str = "mailslot test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path, stem: str = "ca") -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{stem}.crt"
        path.write_bytes(self.cert_pem())
        return path

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        client: bool = False,
        names: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        subject: x509.Name | None = None,
    ) -> IssuedCertificate:
        """A certificate for ``common_name`` (or the whole ``subject``); ``server=True`` adds the
        subject alternative ``names`` (host names and IP addresses) and the serverAuth usage, and
        ``client=True`` with it the clientAuth usage too (a cluster node's certificate is both)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH] if server and not client
                                      else [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server
                                      else [ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        return IssuedCertificate(builder.sign(self.key, hashes.SHA256()), key)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
