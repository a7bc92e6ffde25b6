"""AMQPS and HTTPS: pika and aio-pika over TLS, client certificates, TLS versions, certificate reload.

Every certificate is made by the test (mailslot.testing.certificates), in its own temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from helpers import async_wait_for, wait_for
from mailslot.bootstrap import BrokerServer
from mailslot.config import ConfigError
from mailslot.core.broker import Broker as CoreBroker
from mailslot.frontends.amqp091 import AMQP_CODEC, AMQPConnection
from mailslot.storage.memory import MemoryMessageLog, MemoryMetadataStore
from mailslot.testing import broker_in_thread, default_access, running_broker
from mailslot.testing.certificates import CertificateAuthority, PemFiles
from mailslot.transport.amqp_listener import AMQPListener
from mailslot.transport.tls import TLSFiles, server_context


@dataclass
class PKI:
    directory: Path
    ca: CertificateAuthority
    ca_file: Path
    server: PemFiles
    client: PemFiles
    stranger: PemFiles  # a client certificate from a CA the broker does not trust

    def broker_settings(self, **extra: Any) -> dict[str, Any]:
        return {"tls_port": 0, "tls_cert": self.server.cert, "tls_key": self.server.key, "tls_ca": self.ca_file, **extra}

    def client_context(self, with_cert: bool = False, cert: PemFiles | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert or cert is not None:
            files = cert or self.client
            context.load_cert_chain(files.cert, files.key)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    ca = CertificateAuthority("mailslot test CA")
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example, Inc."),
        x509.NameAttribute(NameOID.COMMON_NAME, "worker-1"),
    ])
    return PKI(
        directory=tmp_path,
        ca=ca,
        ca_file=ca.write(tmp_path),
        server=ca.issue("localhost", server=True).write(tmp_path, "server"),
        client=ca.issue("worker-1", subject=subject).write(tmp_path, "client"),
        stranger=CertificateAuthority("other CA").issue("intruder").write(tmp_path, "stranger"),
    )


def _pika_parameters(port: int, context: ssl.SSLContext) -> pika.ConnectionParameters:
    return pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
        connection_attempts=1,
        socket_timeout=10,
    )


def _round_trip(connection: pika.BlockingConnection, queue: str, body: bytes) -> bytes:
    channel = connection.channel()
    channel.queue_declare(queue)
    channel.confirm_delivery()
    channel.basic_publish("", queue, body)
    _method, _props, got = channel.basic_get(queue, auto_ack=True)
    assert got is not None
    return bytes(got)


def test_pika_over_tls_next_to_plain_amqp(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings()) as broker:
        assert broker.amqps_port and broker.amqp_port and broker.amqps_port != broker.amqp_port
        secure = pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context()))
        plain = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        try:
            assert _round_trip(secure, "over-tls", b"secret payload") == b"secret payload"
            # Both listeners feed the same broker: a message published over TLS is read over plain TCP.
            secure.channel().basic_publish("", "over-tls", b"crossing")
            _m, _p, body = plain.channel().basic_get("over-tls", auto_ack=True)
            assert body == b"crossing"
        finally:
            secure.close()
            plain.close()


def test_a_plain_client_on_the_tls_port_gets_no_amqp(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings()) as broker, socket.create_connection(
        ("127.0.0.1", broker.amqps_port), timeout=10
    ) as sock:
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        reply = sock.recv(100)
        assert not reply.startswith(b"\x01\x00\x00")  # no connection.start frame in the clear


async def test_aio_pika_over_tls_with_a_client_certificate(pki: PKI) -> None:
    settings = pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True, amqp_port=None)
    async with running_broker(**settings) as broker:
        assert broker.amqp_port == 0  # the plain listener is off
        context = pki.client_context(with_cert=True)
        connection = await aio_pika.connect(f"amqps://guest:guest@localhost:{broker.amqps_port}/", ssl_context=context)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("aio-tls")
            await channel.default_exchange.publish(aio_pika.Message(b"hello over tls"), routing_key="aio-tls")
            message = await queue.get(timeout=10)
            assert message.body == b"hello over tls"
        # The same, with the certificate files named in the URL (aiormq's query parameters).
        url = (
            f"amqps://guest:guest@localhost:{broker.amqps_port}/?cafile={pki.ca_file}"
            f"&certfile={pki.client.cert}&keyfile={pki.client.key}"
        )
        async with await aio_pika.connect(url) as connection:
            assert not connection.is_closed


def test_verify_peer_refuses_a_client_without_certificate(pki: PKI) -> None:
    settings = pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True)
    with broker_in_thread(**settings) as broker:
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context()))
        with pytest.raises(pika.exceptions.AMQPConnectionError):  # a certificate from an unknown CA
            pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context(cert=pki.stranger)))
        accepted = pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context(with_cert=True)))
        assert _round_trip(accepted, "verified", b"x") == b"x"
        accepted.close()


def test_verify_peer_without_fail_if_no_peer_cert_accepts_both(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings(tls_verify_peer=True)) as broker:
        for context in (pki.client_context(), pki.client_context(with_cert=True)):
            connection = pika.BlockingConnection(_pika_parameters(broker.amqps_port, context))
            assert _round_trip(connection, "optional-cert", b"y") == b"y"
            connection.close()
        # A certificate that is sent is still verified: one from an untrusted CA is refused.
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context(cert=pki.stranger)))


def _tls11_client(ca_file: Path) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.create_default_context(cafile=str(ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.1 at the default level
    return context


def test_tls_1_1_is_refused(pki: PKI) -> None:
    client = _tls11_client(pki.ca_file)
    # Control: this client does speak TLS 1.1 with a server that allows it, so the refusal below is
    # the broker's doing and not the client library's.
    with _tls11_server(pki) as port, _tls_socket(port, client) as tls:
        assert tls.version() == "TLSv1.1"
    with broker_in_thread(**pki.broker_settings()) as broker:
        with pytest.raises(ssl.SSLError), _tls_socket(broker.amqps_port, client):
            pass
        with _tls_socket(broker.amqps_port, pki.client_context()) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


@contextlib.contextmanager
def _tls_socket(port: int, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, context.wrap_socket(
        sock, server_hostname="localhost"
    ) as tls:
        yield tls


@contextlib.contextmanager
def _tls11_server(pki: PKI) -> Iterator[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(pki.server.cert, pki.server.key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            sock, _ = listener.accept()
            with context.wrap_socket(sock, server_side=True) as tls:
                tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def _server_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    with _tls_socket(port, context) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_reload_serves_new_certificates_to_new_connections_only(pki: PKI) -> None:
    new_ca = CertificateAuthority("rotated CA")
    trust_both = ssl.create_default_context(cafile=str(pki.ca_file))
    trust_both.load_verify_locations(cadata=new_ca.cert_pem().decode())
    settings = pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True)
    with broker_in_thread(**settings) as broker:
        trust_both.load_cert_chain(pki.client.cert, pki.client.key)
        before = _server_certificate(broker.amqps_port, trust_both)
        assert before.issuer.rfc4514_string() == "CN=mailslot test CA"
        old = pika.BlockingConnection(_pika_parameters(broker.amqps_port, trust_both))
        assert _round_trip(old, "rotation", b"before") == b"before"

        # Rotate everything: server certificate, key, and the CA that client certificates must chain to.
        new_ca.issue("localhost", server=True).write(pki.directory, "server")
        new_ca.write(pki.directory, "ca")
        new_client = new_ca.issue("worker-2").write(pki.directory, "client2")
        broker.reload_tls()

        after = _server_certificate(broker.amqps_port, _with_cert(new_ca, pki.directory, new_client))
        assert after.issuer.rfc4514_string() == "CN=rotated CA"
        assert after.serial_number != before.serial_number
        # The client CA changed too: the old client certificate is no longer accepted on new connections...
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(_pika_parameters(broker.amqps_port, trust_both))
        # ...while the connection made before the reload carries on.
        assert _round_trip(old, "rotation", b"after") == b"after"
        old.close()


def _with_cert(ca: CertificateAuthority, directory: Path, cert: PemFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.write(directory, "trust-rotated")))
    context.load_cert_chain(cert.cert, cert.key)
    return context


def test_reload_with_bad_files_keeps_the_old_certificate(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings()) as broker:
        before = _server_certificate(broker.amqps_port, pki.client_context())
        other = CertificateAuthority("other").issue("localhost", server=True)
        pki.server.key.write_bytes(other.key_pem())  # a key that does not match the certificate
        with pytest.raises(ConfigError, match="tls_key: .* is not the key of the certificate"):
            broker.reload_tls()
        pki.server.cert.unlink()
        with pytest.raises(ConfigError, match="tls_cert: cannot read"):
            broker.reload_tls()
        after = _server_certificate(broker.amqps_port, pki.client_context())
        assert after.serial_number == before.serial_number


def test_https_api_next_to_http(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings(http_tls_port=0)) as broker:
        assert broker.https_port and broker.https_port != broker.http_port
        request = urllib.request.Request(broker.https_url.replace("127.0.0.1", "localhost") + "/api/overview")
        request.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        with urllib.request.urlopen(request, context=pki.client_context(), timeout=10) as response:
            assert response.status == 200
            assert b"mailslot" in response.read()
        with pytest.raises(OSError):  # the HTTPS port does not speak plain HTTP (URLError, RemoteDisconnected)
            urllib.request.urlopen(f"http://127.0.0.1:{broker.https_port}/api/overview", timeout=10)


async def test_the_broker_refuses_to_start_without_usable_files(pki: PKI) -> None:
    with pytest.raises(ConfigError, match="tls_cert: cannot read"):
        async with running_broker(**pki.broker_settings(tls_cert=pki.directory / "missing.crt")):
            pass
    encrypted = pki.ca.issue("localhost", server=True).write(pki.directory, "locked", password=b"hunter2")
    locked = pki.broker_settings(tls_cert=encrypted.cert, tls_key=encrypted.key)
    with pytest.raises(ConfigError, match="tls_key: cannot decrypt"):
        async with running_broker(**locked):
            pass
    async with running_broker(**locked, tls_key_password="hunter2") as broker:
        assert broker.amqps_port


async def test_the_connection_carries_the_verified_client_certificate(pki: PKI) -> None:
    """What SASL EXTERNAL reads: AMQPConnection.peer_certificate (subject DN as RabbitMQ writes it, CN)."""
    files = TLSFiles(pki.server.cert, pki.server.key, pki.ca_file, verify_peer=True)
    core = CoreBroker(MemoryMessageLog(), MemoryMetadataStore(), [AMQP_CODEC])
    made: list[AMQPConnection] = []
    loop = asyncio.get_running_loop()

    def make_connection(peer_host: str, outbox: set[AMQPConnection]) -> AMQPConnection:
        conn = AMQPConnection(
            core, peer_host=peer_host, access=default_access(), heartbeat=0,
            frame_max=131072, channel_max=2047, max_message_size=1 << 20, now=loop.time(), outbox=outbox,
        )
        made.append(conn)
        return conn

    listener = AMQPListener(loop, core, make_connection)
    port = await listener.start("127.0.0.1", 0, server_context(files))
    plain_port = await listener.start("127.0.0.1", 0)
    try:
        for n, context in enumerate((pki.client_context(with_cert=True), pki.client_context()), 1):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
            await async_wait_for(lambda: len(made) == n)  # noqa: B023 -- awaited within the iteration
            writer.close()
        _reader, writer = await asyncio.open_connection("127.0.0.1", plain_port)
        await async_wait_for(lambda: len(made) == 3)
        writer.close()
        with_cert, without_cert, plain = made
        assert with_cert.peer_certificate is not None
        assert with_cert.peer_certificate.subject == "CN=worker-1,O=Example\\, Inc.,C=DE"
        assert with_cert.peer_certificate.common_name == "worker-1"
        assert with_cert.peer_certificate.issuer == "CN=mailslot test CA"
        assert without_cert.peer_certificate is None
        assert plain.peer_certificate is None
    finally:
        await listener.stop(grace=0.1)
        core.close()


def test_amqp_listener_off_refuses_plain_connections(pki: PKI) -> None:
    with broker_in_thread(**pki.broker_settings(amqp_port=None, http_port=None)) as broker:
        assert broker.amqp_port == 0 and broker.http_port == 0
        assert broker.amqps_port
        connection = pika.BlockingConnection(_pika_parameters(broker.amqps_port, pki.client_context()))
        assert _round_trip(connection, "tls-only", b"z") == b"z"
        connection.close()


def test_broker_config_is_checked(pki: PKI) -> None:
    from mailslot.bootstrap import BrokerConfig

    with pytest.raises(ConfigError, match="tls_cert"):
        BrokerConfig(tls_port=5671)
    with pytest.raises(ConfigError, match="tls_fail_if_no_peer_cert: needs tls_verify_peer"):
        BrokerConfig(**pki.broker_settings(tls_fail_if_no_peer_cert=True))
    with pytest.raises(ConfigError, match="tls_verify_peer: needs tls_ca"):
        BrokerConfig(**pki.broker_settings(tls_verify_peer=True, tls_ca=None))
    assert BrokerServer(BrokerConfig(**pki.broker_settings())).config.tls_files is not None


@pytest.mark.slow
def test_sighup_reloads_the_certificates_of_mailslot_serve(pki: PKI) -> None:
    """The real command (uvloop's TLS, signal handling): SIGHUP picks up rotated files; bad files are
    logged and the previous certificate stays."""
    import signal

    from mailslot.bench.broker_process import BrokerProcess

    flags = ("--tls-port", "0", "--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    with BrokerProcess(store="memory", extra_args=flags) as broker:
        assert broker.tls_port
        before = _server_certificate(broker.tls_port, pki.client_context())
        old = pika.BlockingConnection(_pika_parameters(broker.tls_port, pki.client_context()))
        rotated = pki.ca.issue("localhost", server=True).write(pki.directory, "server")
        os_kill = broker.process.send_signal  # type: ignore[union-attr]
        os_kill(signal.SIGHUP)
        wait_for(lambda: _server_certificate(broker.tls_port, pki.client_context()).serial_number != before.serial_number,
                 20, 0.05, what="the certificate reloaded")
        served = x509.load_pem_x509_certificate(rotated.cert.read_bytes())
        assert _server_certificate(broker.tls_port, pki.client_context()).serial_number == served.serial_number
        assert _round_trip(old, "hup", b"still here") == b"still here"
        old.close()

        pki.server.key.write_text("not a key")
        os_kill(signal.SIGHUP)
        wait_for(lambda: any("TLS certificates not reloaded" in line for line in broker.output), 20, 0.05,
                 what="the failed reload logged")
        assert _server_certificate(broker.tls_port, pki.client_context()).serial_number == served.serial_number
        assert broker.alive()


# -- the clients mailslot ships, over TLS -------------------------------------------------------------


def _client_url(pki: PKI, port: int, cert: bool = True) -> str:
    url = f"amqps://guest:guest@localhost:{port}/%2F?cacertfile={pki.ca_file}"
    return url + (f"&certfile={pki.client.cert}&keyfile={pki.client.key}" if cert else "")


def test_publish_and_consume_commands_over_tls(pki: PKI) -> None:
    from typer.testing import CliRunner

    from mailslot.cli.main import app

    runner = CliRunner()
    settings = pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True, amqp_port=None)
    with broker_in_thread(**settings) as broker:
        url = _client_url(pki, broker.amqps_port)
        published = runner.invoke(app, ["publish", "--url", url, "--declare", "--confirm", "-r", "tls-cli", "hi"])
        assert published.exit_code == 0, published.output
        consumed = runner.invoke(app, ["consume", "--url", url, "-q", "tls-cli", "--count", "1"])
        assert consumed.exit_code == 0, consumed.output
        assert consumed.stdout.splitlines() == ["tls-cli\thi"]
        # Without the client certificate the broker refuses the handshake: one line, exit 1.
        refused = runner.invoke(app, ["publish", "--url", _client_url(pki, broker.amqps_port, cert=False), "x"])
        assert refused.exit_code == 1 and len(refused.stderr.splitlines()) == 1
        assert refused.stderr.startswith("error: cannot connect to the broker")
        # A server name the certificate does not carry: the client refuses the broker.
        wrong = runner.invoke(app, ["publish", "--url", url + "&server_name_indication=elsewhere.example", "x"])
        assert wrong.exit_code == 1 and "certificate" in wrong.stderr.lower()


async def test_bench_and_spike_over_tls(pki: PKI) -> None:
    from mailslot.bench import BenchConfig, run_bench
    from mailslot.bench.spike import SpikeConfig, run_spike

    async with running_broker(**pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True)) as broker:
        url = _client_url(pki, broker.amqps_port)
        result = await run_bench(BenchConfig(url=url, count=300, size=64, confirm=50, multi_ack=10))
        assert result["published"] == result["consumed"] == result["confirmed"] == 300
        spike = await run_spike(SpikeConfig(url=url, rate=300, duration=0.5, worker_rate=1000, workers=1, producers=1))
        assert spike["report"]["lost"] == 0 and spike["report"]["published"] > 0


async def test_mailslot_client_and_worker_over_tls(pki: PKI) -> None:
    from mailslot import client
    from mailslot.worker import Worker

    async with running_broker(**pki.broker_settings(tls_verify_peer=True, tls_fail_if_no_peer_cert=True)) as broker:
        url = _client_url(pki, broker.amqps_port)
        conn = await client.connect(url)
        try:
            channel = await conn.channel()
            await channel.declare_queue("tls-worker", durable=True)
            await channel.confirm_select()
            for i in range(3):
                await channel.publish("", "tls-worker", f"job {i}".encode())
        finally:
            await conn.close()
        handled: list[bytes] = []

        async def handle(job: Any) -> None:
            handled.append(bytes(job.body))
            if len(handled) == 3:
                worker.stop()

        worker = Worker(url, "tls-worker", handle, shutdown_timeout=5)
        await asyncio.wait_for(worker.run(), 30)
        assert sorted(handled) == [b"job 0", b"job 1", b"job 2"]
        # No client certificate: refused in the handshake (TLS 1.3 reports it after the client finished).
        with pytest.raises((OSError, client.ConnectionLost)):
            await client.connect(_client_url(pki, broker.amqps_port, cert=False))
