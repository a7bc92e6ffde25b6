"""A minimal sans-IO AMQP 0-9-1 *client*, for tests: build the bytes a client sends, parse what a server
sends. Uses pamqp only (independent of the server's fast paths, so tests check one against the other).

    client = ClientPeer()
    server.receive_data(client.start(), now)          # protocol header + nothing else
    client.receive_data(server.data_to_send())        # answers connection.start / tune automatically
"""

from __future__ import annotations

from typing import Any

from pamqp import base, body, commands, frame, header, heartbeat

from .sasl import amqplain_response, plain_response

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
Frame = Any


def method(channel: int, m: base.Frame) -> bytes:
    return frame.marshal(m, channel)


def content(channel: int, m: base.Frame, body_bytes: bytes, properties: commands.Basic.Properties | None = None,
            frame_max: int = 131072) -> bytes:
    """Method + content header + body frames (split by frame_max), as a client would send them."""
    out = [frame.marshal(m, channel),
           frame.marshal(header.ContentHeader(0, len(body_bytes), properties or commands.Basic.Properties()),
                         channel)]
    chunk = frame_max - 8
    for i in range(0, len(body_bytes), chunk):
        out.append(frame.marshal(body.ContentBody(body_bytes[i:i + chunk]), channel))
    return b"".join(out)


def publish(channel: int, exchange: str, routing_key: str, body_bytes: bytes,
            properties: commands.Basic.Properties | None = None, *, mandatory: bool = False,
            frame_max: int = 131072) -> bytes:
    return content(channel, commands.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                                   mandatory=mandatory), body_bytes, properties, frame_max)


def parse_frames(data: bytes) -> tuple[list[tuple[int, Frame]], bytes]:
    """Split ``data`` into (channel, pamqp frame) pairs; returns the unparsed tail too."""
    frames: list[tuple[int, Frame]] = []
    while data:
        if data[:4] == b"AMQP":
            if len(data) < 8:
                break
            frames.append((0, header.ProtocolHeader(*data[5:8])))
            data = data[8:]
            continue
        if len(data) < 8:
            break
        size = int.from_bytes(data[3:7], "big")
        if len(data) < size + 8:
            break
        if data[0] == 8:
            frames.append((int.from_bytes(data[1:3], "big"), heartbeat.Heartbeat()))
            data = data[8:]
            continue
        consumed, channel, f = frame.unmarshal(data)
        frames.append((channel, f))
        data = data[consumed:]
    return frames, data


class ClientPeer:
    """Does the client half of the handshake on its own; everything else is explicit."""

    def __init__(self, username: str = "guest", password: str = "guest", *, mechanism: str = "PLAIN",
                 vhost: str = "/", frame_max: int = 131072, channel_max: int = 2047, heartbeat: int = 60,
                 client_properties: dict[str, Any] | None = None) -> None:
        self.username = username
        self.password = password
        self.mechanism = mechanism
        self.vhost = vhost
        self.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = heartbeat
        self.client_properties: Any = client_properties if client_properties is not None else {
            "product": "mailslot-test-peer",
            "capabilities": {"authentication_failure_close": True, "publisher_confirms": True},
        }
        self.received: list[tuple[int, Frame]] = []
        self.server_start: commands.Connection.Start | None = None
        self.tune: commands.Connection.Tune | None = None
        self._tail = b""

    def start(self) -> bytes:
        return PROTOCOL_HEADER

    def response(self) -> str:
        if self.mechanism == "AMQPLAIN":
            return amqplain_response(self.username, self.password)
        return plain_response(self.username, self.password)

    def receive_data(self, data: bytes) -> tuple[list[tuple[int, Frame]], bytes]:
        """Parse server bytes; returns (frames, reply bytes the handshake needs)."""
        frames, self._tail = parse_frames(self._tail + data)
        replies = []
        for channel, f in frames:
            if isinstance(f, commands.Connection.Start):
                self.server_start = f
                replies.append(method(0, commands.Connection.StartOk(
                    client_properties=self.client_properties, mechanism=self.mechanism,
                    response=self.response(), locale="en_US")))
            elif isinstance(f, commands.Connection.Tune):
                self.tune = f
                replies.append(method(0, commands.Connection.TuneOk(
                    channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat)))
                replies.append(method(0, commands.Connection.Open(virtual_host=self.vhost)))
        self.received.extend(frames)
        return frames, b"".join(replies)

    @staticmethod
    def open_channel(channel: int) -> bytes:
        return method(channel, commands.Channel.Open())

    @staticmethod
    def close_channel(channel: int, code: int = 200, text: str = "Goodbye") -> bytes:
        return method(channel, commands.Channel.Close(reply_code=code, reply_text=text, class_id=0, method_id=0))

    @staticmethod
    def ack(channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
        return method(channel, commands.Basic.Ack(delivery_tag=delivery_tag, multiple=multiple))

    def publish(self, channel: int, exchange: str, routing_key: str, body_bytes: bytes,
                properties: commands.Basic.Properties | None = None, mandatory: bool = False) -> bytes:
        return publish(channel, exchange, routing_key, body_bytes, properties, mandatory=mandatory,
                       frame_max=self.frame_max)
