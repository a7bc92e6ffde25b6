"""The cluster link's TLS checks who is at the other end (mailslot.cluster.link.check_identity): a
certificate of the cluster's CA that names neither the node dialed nor its host is refused, with a
log line saying so; SIGHUP re-reads the link's certificate files, and new link connections use them."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path

import aio_pika
import pytest

from helpers import async_wait_for
from mailslot.bench.broker_process import BrokerProcess
from mailslot.cluster import link
from mailslot.storage.postgres import PostgresSettings
from mailslot.testing import running_broker
from mailslot.testing.certificates import CertificateAuthority

SECRET = "a-secret-of-the-cluster-0123456789"


def _tls(ca: CertificateAuthority, directory: Path, stem: str, names: tuple[str, ...]) -> link.LinkTLS:
    files = ca.issue(stem, server=True, client=True, names=names).write(directory, stem)
    return link.link_tls(files.cert, files.key, ca.write(directory, "ca"))


async def _listen(tls: link.LinkTLS) -> tuple[asyncio.Server, link.Address, list[object]]:
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await link.accept(reader, writer, SECRET.encode()))
        except Exception as exc:
            seen.append(exc)
        finally:
            writer.close()

    server, bound = await link.start_server(link.parse_address("127.0.0.1:0"), handle, tls)
    return server, bound, seen


async def test_each_side_accepts_a_certificate_naming_the_node_or_its_host(tmp_path: Path) -> None:
    ca = CertificateAuthority("cluster CA")
    by_name = _tls(ca, tmp_path, "a", ("a",))  # the node's name in its subjectAltName
    by_host = _tls(ca, tmp_path, "b", ("127.0.0.1",))  # the host it is reached at
    for server_tls, client_tls, dialed in ((by_name, by_host, "a"), (by_host, by_name, "b")):
        server, bound, seen = await _listen(server_tls)
        async with server:
            reader, writer = await link.connect(bound, SECRET.encode(), "a" if client_tls is by_name else "b",
                                                client_tls, dialed)
            writer.close()
            await async_wait_for(lambda seen=seen: seen, timeout=5, what="the server's side of the handshake")
        assert seen in (["a"], ["b"]), seen


async def test_a_node_named_mailslot_at_host_may_present_a_certificate_for_the_host(tmp_path: Path) -> None:
    ca = CertificateAuthority("cluster CA")
    server, bound, seen = await _listen(_tls(ca, tmp_path, "n1", ("n1.nodes.example",)))
    async with server:
        reader, writer = await link.connect(bound, SECRET.encode(), "mailslot@n2.nodes.example",
                                            _tls(ca, tmp_path, "n2", ("n2.nodes.example",)), "mailslot@n1.nodes.example")
        writer.close()
        await async_wait_for(lambda: seen, timeout=5, what="the listener's verdict")
    assert seen == ["mailslot@n2.nodes.example"]


def test_a_wildcard_name_covers_one_label() -> None:
    assert link._matches("*.nodes.example", "n1.nodes.example")
    assert not link._matches("*.nodes.example", "a.n1.nodes.example")
    assert not link._matches("*.nodes.example", "nodes.example")


async def test_a_server_certificate_for_another_node_is_refused_by_the_dialer(tmp_path: Path) -> None:
    ca = CertificateAuthority("cluster CA")
    impostor = _tls(ca, tmp_path, "c", ("c", "c.nodes.example"))  # the CA's, but node c's
    server, bound, _ = await _listen(impostor)
    async with server:
        with pytest.raises(link.LinkError, match=r"the TLS certificate of node 'a' at 127\.0\.0\.1:\d+ is for "
                           r"'c', 'c\.nodes\.example', not for 'a' or '127\.0\.0\.1': refused"):
            await link.connect(bound, SECRET.encode(), "b", _tls(ca, tmp_path, "b", ("b",)), "a")


async def test_a_client_certificate_for_another_node_is_refused_by_the_listener(tmp_path: Path) -> None:
    ca = CertificateAuthority("cluster CA")
    server, bound, seen = await _listen(_tls(ca, tmp_path, "a", ("a",)))
    async with server:
        with pytest.raises((link.LinkError, asyncio.IncompleteReadError, ConnectionError)):
            # says it is b (and knows the secret), but its certificate is node c's, from another address
            await link.connect(bound, SECRET.encode(), "b", _tls(ca, tmp_path, "c", ("c", "10.9.9.9")), "a")
        await async_wait_for(lambda: seen, timeout=5, what="the listener's verdict")
    assert "the TLS certificate of node 'b' (connecting from 127.0.0.1) is for '10.9.9.9', 'c'" in str(seen[0])


@pytest.mark.slow
async def test_a_wrong_host_certificate_is_refused_until_sighup_loads_the_right_one(
    node_process: Callable[..., BrokerProcess], cluster_settings: Callable[[str], PostgresSettings],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """a (a real process, the queue's owner) starts with a certificate of the cluster's CA for another
    host; b refuses to forward to it and logs why. The right certificate written over a's files and
    SIGHUP: b's next link connection is accepted and its publishes are confirmed."""
    ca = CertificateAuthority("cluster CA")
    ca_file = ca.write(tmp_path, "ca")
    a_files = ca.issue("elsewhere", server=True, client=True, names=("elsewhere.example",)).write(tmp_path, "a")
    b_files = ca.issue("b", server=True, client=True).write(tmp_path, "b")
    a = node_process("a", "--cluster-link", "127.0.0.1:0", "--cluster-secret", SECRET, "--cluster-link-tls",
                     "--tls-cert", str(a_files.cert), "--tls-key", str(a_files.key), "--tls-ca", str(ca_file))
    settings = cluster_settings("b")
    caplog.set_level(logging.WARNING, "mailslot.cluster")
    async with running_broker(store="postgres", postgres_dsn=settings.dsn, postgres_schema=settings.schema,
                              node_name="b", cluster=True, lease_ttl=3.0, cluster_link="127.0.0.1:0",
                              cluster_secret=SECRET, cluster_link_tls=True, tls_cert=b_files.cert,
                              tls_key=b_files.key, tls_ca=ca_file) as b:
        on_a, on_b = await aio_pika.connect(a.url), await aio_pika.connect(b.amqp_url)
        async with on_a, on_b:
            await (await on_a.channel()).declare_queue("orders", durable=True)
            channel = await on_b.channel(publisher_confirms=True, on_return_raises=True)

            async def forwarded() -> bool:
                try:
                    await channel.default_exchange.publish(aio_pika.Message(b"probe", delivery_mode=2), "orders",
                                                           mandatory=True)
                    return True
                except (aio_pika.exceptions.DeliveryError, aio_pika.exceptions.PublishError):
                    return False

            def refused_for_its_name() -> bool:
                return any("cluster link to node 'a' failed: the TLS certificate of node 'a' at 127.0.0.1:" in r.message
                           and "is for 'elsewhere.example', not for 'a' or '127.0.0.1': refused" in r.message
                           for r in caplog.records)

            async def refused() -> bool:
                assert not await forwarded(), "forwarded to a node whose certificate is for another host"
                return refused_for_its_name()

            await async_wait_for(refused, timeout=15, interval=0.1, what="b to refuse a's certificate")

            ca.issue("a", server=True, client=True, names=("a",)).write(tmp_path, "a")
            a.process.send_signal(signal.SIGHUP)
            await async_wait_for(lambda: any("cluster link TLS certificates reloaded" in line for line in a.output),
                                 timeout=10, what="a to log the reload")
            await async_wait_for(forwarded, timeout=10, interval=0.1, what="a publish through b to be confirmed")
