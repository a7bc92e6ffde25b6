"""The one URL parser of mailslot's clients: amqp:// and amqps:// with RabbitMQ's query parameters."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from mailslot.client.url import ConnectParams
from mailslot.testing.certificates import CertificateAuthority


def test_amqp_defaults_and_fields() -> None:
    u = ConnectParams.parse("amqp://bob:s%40cret@example.org:5673/%2Fprod?heartbeat=5&frame_max=8192")
    assert (u.host, u.port, u.username, u.password, u.vhost) == ("example.org", 5673, "bob", "s@cret", "/prod")
    assert (u.heartbeat, u.frame_max, u.tls) == (5, 8192, False)
    assert u.ssl_context() is None and u.server_hostname is None
    assert ConnectParams.parse("amqp://localhost").port == 5672


def test_amqps_defaults_to_5671_and_checks_the_host() -> None:
    u = ConnectParams.parse("amqps://broker.example/")
    assert (u.port, u.tls, u.server_hostname) == (5671, True, "broker.example")
    context = u.ssl_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_amqps_query_parameters(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    ca_file = ca.write(tmp_path)
    client = ca.issue("me").write(tmp_path, "client")
    url = (f"amqps://10.0.0.7:5999/?cacertfile={ca_file}&certfile={client.cert}&keyfile={client.key}"
           "&server_name_indication=broker.internal")
    u = ConnectParams.parse(url)
    assert (u.port, u.server_hostname, u.cacertfile) == (5999, "broker.internal", str(ca_file))
    context = u.ssl_context()
    assert context is not None and context.get_ca_certs()[0]["subject"] == ((("commonName", "mailslot test CA"),),)
    unchecked = ConnectParams.parse("amqps://h/?verify=verify_none").ssl_context()
    assert unchecked is not None and unchecked.verify_mode == ssl.CERT_NONE and not unchecked.check_hostname


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:secret@h/", "only amqp:// and amqps://"),
        ("amqp://h/?cacertfile=ca.pem", "cacertfile needs an amqps:// URL"),
        ("amqps://h/?certfile=c.pem", "certfile and keyfile go together"),
        ("amqps://h/?verify=maybe", "verify must be verify_peer or verify_none"),
        ("amqp://user:secret@h:notaport/", "bad URL"),
    ],
)
def test_bad_urls_say_why_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        ConnectParams.parse(url)
    assert "secret" not in str(info.value)
