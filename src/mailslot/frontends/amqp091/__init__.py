"""AMQP 0-9-1 front end: protocol events onto core sessions, core results onto frames and reply codes.

* ``connection``: :class:`AMQPConnection`, one per client connection; wraps the sans-IO
  ``ServerConnection`` (framing, negotiation, content assembly, heartbeats), dispatches its events,
  maps core errors onto reply codes, and says how the connection closes (shutdown: 320).
* ``channel``: :class:`Channel`, a core ``Session`` plus what is AMQP-only, and the method table
  (handlers typed with pamqp's method classes).
* ``confirms``: publisher confirms released after each group commit.
* ``auth``: logging in through the access control (PLAIN/AMQPLAIN credentials, EXTERNAL from the TLS
  client certificate, throttled logins) and the connection-table entry of an open connection.
* ``properties``: AMQP 0-9-1's ``PropertiesCodec`` (core/message.py): how the core reads a message published
  here, and how a message published in another protocol is encoded for delivery here.

See docs/amqp091-frontend.md.
"""

from .channel import Channel
from .connection import AMQPConnection, server_properties
from .properties import AMQP_CODEC, AMQPPropertiesCodec

__all__ = ["AMQP_CODEC", "AMQPConnection", "AMQPPropertiesCodec", "Channel", "server_properties"]
