"""SASL EXTERNAL over AMQPS: the client certificate's subject DN (or its CN) is the username, as RabbitMQ's
rabbitmq_auth_mechanism_ssl (ssl_cert_login_from = distinguished_name | common_name). Certificates are
made by the test (tests/integration/test_tls.py's PKI)."""

from __future__ import annotations

import pika
import pika.credentials
import pika.exceptions
import pytest

from mailslot.testing import broker_in_thread

from .test_tls import PKI, pki  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(60)

SUBJECT = "CN=worker-1,O=Example\\, Inc.,C=DE"  # the test PKI's client certificate, as RabbitMQ writes it


def _external(port: int, context: object) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.credentials.ExternalCredentials(),
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"), connection_attempts=1, socket_timeout=10,
    )


def _grant(broker: object, name: str) -> None:
    admin = broker.access_admin  # type: ignore[attr-defined]
    broker.run_threadsafe(lambda: (admin.add_user(name, None), admin.set_permissions(name, "/", ".*", ".*", ".*")))  # type: ignore[attr-defined]


@pytest.mark.parametrize("login_from, username", [("distinguished_name", SUBJECT), ("common_name", "worker-1")])
def test_external_logs_in_as_the_certificate(pki: PKI, login_from: str, username: str) -> None:  # noqa: F811
    settings = pki.broker_settings(tls_verify_peer=True, ssl_cert_login_from=login_from)
    with broker_in_thread(**settings) as broker:
        _grant(broker, username)  # a user without a password: it can log in only this way
        conn = pika.BlockingConnection(_external(broker.amqps_port, pki.client_context(with_cert=True)))
        channel = conn.channel()
        channel.queue_declare("external")
        connections = broker.run_threadsafe(lambda: [(c.user, c.tls) for c in broker.access.connections])
        assert connections == [(username, True)]
        conn.close()


def test_external_is_refused_for_an_unknown_certificate_user(pki: PKI) -> None:  # noqa: F811
    with broker_in_thread(**pki.broker_settings(tls_verify_peer=True)) as broker:
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as error:
            pika.BlockingConnection(_external(broker.amqps_port, pki.client_context(with_cert=True)))
        assert "Login was refused using authentication mechanism EXTERNAL" in str(error.value)


def test_external_is_not_offered_without_a_certificate(pki: PKI) -> None:  # noqa: F811
    with broker_in_thread(**pki.broker_settings(tls_verify_peer=True)) as broker:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(_external(broker.amqps_port, pki.client_context()))  # TLS, no client cert
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", broker.amqp_port, credentials=pika.credentials.ExternalCredentials(),
                connection_attempts=1, socket_timeout=10))  # plain TCP
