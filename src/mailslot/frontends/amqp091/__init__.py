"""AMQP 0-9-1 front end: protocol events onto core sessions, core results onto frames and reply codes.

* ``connection``: :class:`AMQPConnection`, one per client connection; wraps the sans-IO
  ``ServerConnection`` (framing, negotiation, content assembly, heartbeats), dispatches its events,
  maps core errors onto reply codes, and says how the connection closes (shutdown: 320).
* ``channel``: :class:`Channel`, a core ``Session`` plus what is AMQP-only, and the method table
  (handlers typed with pamqp's method classes).
* ``confirms``: publisher confirms released after each group commit.
* ``auth``: who may log in (users, loopback-only users); SASL decoding is the protocol layer's.
* ``properties``: the core's ``PropertiesCodec`` for AMQP property blocks.

See docs/amqp091-frontend.md.
"""

from .auth import Users
from .channel import Channel
from .connection import AMQPConnection, server_properties
from .properties import AMQPPropertiesCodec

__all__ = ["AMQPConnection", "AMQPPropertiesCodec", "Channel", "Users", "server_properties"]
