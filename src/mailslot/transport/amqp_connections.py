"""The AMQP 0-9-1 front end's connections as the management API sees them (a ``ConnectionSource``).

This adapter is the only place the API reads AMQP connection internals (the transport's streams, the
front end's connections and channels), so a change there is mended here alone. Views are built when
asked (a request, a sampler tick): a few hundred connections cost microseconds each.
"""

from __future__ import annotations

from typing import Any

from ..core.connections import ChannelView, ConnectionView
from .amqp_listener import AMQPListener, AMQPStream

PROTOCOL = "AMQP 0-9-1"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


class AMQPConnections:
    """Live AMQP connections of one listener."""

    def __init__(self, listener: AMQPListener) -> None:
        self.listener = listener

    def connections(self) -> list[ConnectionView]:
        views = []
        for stream in list(self.listener.streams):
            view = self._view(stream)
            if view is not None:
                views.append(view)
        return views

    def _view(self, stream: AMQPStream) -> ConnectionView | None:
        conn = stream.conn
        if conn is None or conn.closed or conn.vhost is None:
            return None  # still negotiating, or gone: RabbitMQ lists connections once they are open
        proto = conn.proto
        (peer_host, peer_port), (host, port) = stream.peer, stream.local
        client_properties: dict[str, Any] = getattr(proto, "client_properties", None) or {}
        state = "blocked" if conn.gate.throttled or getattr(conn, "_blocked_sent", False) else "running"
        view = ConnectionView(
            key=stream,
            name=f"{_host(peer_host)}:{peer_port} -> {_host(host)}:{port}",
            protocol=PROTOCOL,
            user=conn.username,
            vhost=conn.vhost.name,
            peer_host=peer_host,
            peer_port=peer_port,
            host=host,
            port=port,
            connected_at=int(stream.connected_at * 1000),
            client_properties=client_properties,
            auth_mechanism=proto.mechanism or "PLAIN",
            frame_max=proto.frame_max,
            channel_max=proto.channel_max,
            timeout=proto.heartbeat,
            state=state,
            recv_oct=stream.recv_oct,
            recv_cnt=stream.recv_cnt,
            send_oct=stream.send_oct,
            send_cnt=stream.send_cnt,
        )
        for number, channel in sorted(conn.channels.items()):
            if channel.session.closed:
                continue
            view.channels.append(
                ChannelView(
                    connection=view,
                    number=number,
                    session=channel.session,
                    confirm=channel.confirms is not None,
                    unconfirmed=channel.confirms.published - channel.confirms.confirmed if channel.confirms else 0,
                )
            )
        return view

    def close(self, connection: ConnectionView, reason: str) -> None:
        stream = connection.key
        conn = stream.conn if isinstance(stream, AMQPStream) else None
        if conn is None or conn.closed:
            return
        conn.close_by_operator(reason)  # the front end knows its protocol's close (AMQP: 320)
        self.listener.scheduler.request()  # write the close now

    def churn(self) -> tuple[int, int]:
        return self.listener.opened_total, self.listener.closed_total
