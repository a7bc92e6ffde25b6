"""The metric families, under rabbitmq_prometheus's names, types, help texts and groups.

Each family belongs to one of RabbitMQ's groups (``queue_coarse_metrics``, ``channel_metrics``, ...: the
``family=`` values of ``/metrics/detailed``) and reads one number from one kind of object: the broker, a
vhost, a queue, a channel (session) or a connection. Values are read at scrape time from the counters
the core keeps (nothing is updated per message for metrics). RabbitMQ's Erlang-only families (reductions,
garbage collection, Mnesia, Raft) have no counterpart and are not emitted; every family that is emitted
carries a real value.

Label sets (rabbit_prometheus's ``label/1``): queues ``vhost``, ``queue``; exchanges ``vhost``,
``exchange``; channels and connections ``channel`` (RabbitMQ puts the process id there; mailslot the
channel's or connection's name). Where RabbitMQ keys a family by (channel, queue) or (channel,
exchange) pairs, mailslot counts per channel and per queue, not per pair, and labels accordingly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Object kinds a family reads.
BROKER, QUEUE, CHANNEL, CONNECTION = "broker", "queue", "channel", "connection"


@dataclass(frozen=True, slots=True)
class Family:
    group: str  # RabbitMQ's metrics table (the family= filter of /metrics/detailed)
    name: str  # without the rabbitmq_ / rabbitmq_detailed_ prefix
    kind: str  # gauge | counter | untyped
    help: str
    source: str  # BROKER | QUEUE | CHANNEL | CONNECTION
    value: Callable[[Any], float]


def _broker(group: str, name: str, kind: str, help_: str, value: Callable[[Any], float]) -> Family:
    return Family(group, name, kind, help_, BROKER, value)


def _queue(group: str, name: str, kind: str, help_: str, value: Callable[[Any], float]) -> Family:
    return Family(group, name, kind, help_, QUEUE, value)


def _channel(group: str, name: str, kind: str, help_: str, value: Callable[[Any], float]) -> Family:
    return Family(group, name, kind, help_, CHANNEL, value)


def _connection(group: str, name: str, kind: str, help_: str, value: Callable[[Any], float]) -> Family:
    return Family(group, name, kind, help_, CONNECTION, value)


# Objects the families read (built by the collector per scrape):
#   broker: a Snapshot (collector.py); queue: a QueueSample; channel: a ChannelSample; connection: a
#   ConnectionView. Their attribute names are the keys used below.

FAMILIES: tuple[Family, ...] = (
    # ---- connection_churn_metrics ------------------------------------------------------------------
    _broker("connection_churn_metrics", "connections_opened_total", "counter", "Total number of connections opened", lambda b: b.churn[0]),
    _broker("connection_churn_metrics", "connections_closed_total", "counter", "Total number of connections closed or terminated", lambda b: b.churn[1]),
    _broker("connection_churn_metrics", "channels_opened_total", "counter", "Total number of channels opened", lambda b: b.churn[2]),
    _broker("connection_churn_metrics", "channels_closed_total", "counter", "Total number of channels closed", lambda b: b.churn[3]),
    _broker("connection_churn_metrics", "queues_declared_total", "counter", "Total number of queues declared", lambda b: b.churn[4]),
    _broker("connection_churn_metrics", "queues_created_total", "counter", "Total number of queues created", lambda b: b.churn[5]),
    _broker("connection_churn_metrics", "queues_deleted_total", "counter", "Total number of queues deleted", lambda b: b.churn[6]),
    # ---- node_coarse_metrics / node_metrics ----------------------------------------------------------
    _broker("node_coarse_metrics", "process_open_fds", "gauge", "Open file descriptors", lambda b: b.fd_used),
    _broker("node_coarse_metrics", "process_open_tcp_sockets", "gauge", "Open TCP sockets", lambda b: b.sockets_used),
    _broker("node_coarse_metrics", "process_resident_memory_bytes", "gauge", "Memory used in bytes", lambda b: b.rss),
    _broker("node_coarse_metrics", "disk_space_available_bytes", "gauge", "Disk space available in bytes", lambda b: b.disk_free),
    _broker("node_metrics", "process_max_fds", "gauge", "Open file descriptors limit", lambda b: b.fd_total),
    _broker("node_metrics", "process_max_tcp_sockets", "gauge", "Open TCP sockets limit", lambda b: b.fd_total),
    _broker("node_metrics", "resident_memory_limit_bytes", "gauge", "Memory high watermark in bytes", lambda b: b.memory_limit),
    _broker("node_metrics", "disk_space_available_limit_bytes", "gauge", "Free disk space low watermark in bytes", lambda b: b.disk_free_limit),
    _broker("node_metrics", "erlang_uptime_seconds", "gauge", "Node uptime", lambda b: b.uptime),
    # ---- queue_coarse_metrics / queue_metrics --------------------------------------------------------
    _queue("queue_coarse_metrics", "queue_messages_ready", "gauge", "Messages ready to be delivered to consumers", lambda q: q.ready),
    _queue("queue_coarse_metrics", "queue_messages_unacked", "gauge", "Messages delivered to consumers but not yet acknowledged", lambda q: q.unacked),
    _queue("queue_coarse_metrics", "queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth", lambda q: q.ready + q.unacked),
    _queue("queue_metrics", "queue_consumers", "gauge", "Consumers on a queue", lambda q: q.consumers),
    _queue("queue_metrics", "queue_process_memory_bytes", "gauge", "Memory in bytes used by the Erlang queue process", lambda q: q.memory),
    _queue("queue_metrics", "queue_messages_ram", "gauge", "Ready and unacknowledged messages stored in memory", lambda q: q.ready - q.paged + q.unacked),
    _queue("queue_metrics", "queue_messages_ready_ram", "gauge", "Ready messages stored in memory", lambda q: q.ready - q.paged),
    _queue("queue_metrics", "queue_messages_unacked_ram", "gauge", "Unacknowledged messages stored in memory", lambda q: q.unacked),
    _queue("queue_metrics", "queue_messages_bytes", "gauge", "Size in bytes of ready and unacknowledged messages", lambda q: q.ready_bytes),
    _queue("queue_metrics", "queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages", lambda q: q.ready_bytes),
    _queue("queue_metrics", "queue_messages_paged_out", "gauge", "Messages paged out to disk", lambda q: q.paged),
    # ---- channel_metrics -------------------------------------------------------------------------------
    _channel("channel_metrics", "channel_consumers", "gauge", "Consumers on a channel", lambda c: len(c.session.consumers)),
    _channel("channel_metrics", "channel_messages_unacked", "gauge", "Delivered but not yet acknowledged messages", lambda c: c.session.unacked_count),
    _channel("channel_metrics", "channel_messages_unconfirmed", "gauge", "Published but not yet confirmed messages", lambda c: c.unconfirmed),
    _channel("channel_metrics", "channel_messages_uncommitted", "gauge", "Messages received in a transaction but not yet committed", lambda c: len(c.session.tx.publishes) if c.session.tx else 0),
    _channel("channel_metrics", "channel_acks_uncommitted", "gauge", "Message acknowledgements in a transaction not yet committed", lambda c: len(c.session.tx.settles) if c.session.tx else 0),
    _channel("channel_metrics", "consumer_prefetch", "gauge", "Limit of unacknowledged messages for each consumer", lambda c: c.session.consumer_prefetch),
    _channel("channel_metrics", "channel_prefetch", "gauge", "Total limit of unacknowledged messages for all consumers on a channel", lambda c: c.session.channel_prefetch),
    # ---- channel_exchange_metrics / channel_queue_metrics (per channel; aggregated: every channel ever) --
    _channel("channel_exchange_metrics", "channel_messages_published_total", "counter", "Total number of messages published into an exchange on a channel", lambda c: c.counts["publish"]),
    _channel("channel_exchange_metrics", "channel_messages_confirmed_total", "counter", "Total number of messages published into an exchange and confirmed on the channel", lambda c: c.counts["confirm"]),
    _channel("channel_exchange_metrics", "channel_messages_unroutable_returned_total", "counter", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", lambda c: c.counts["return_unroutable"]),
    _channel("channel_exchange_metrics", "channel_messages_unroutable_dropped_total", "counter", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", lambda c: c.counts["drop_unroutable"]),
    _channel("channel_queue_metrics", "channel_get_ack_total", "counter", "Total number of messages fetched with basic.get in manual acknowledgement mode", lambda c: c.counts["get"]),
    _channel("channel_queue_metrics", "channel_get_total", "counter", "Total number of messages fetched with basic.get in automatic acknowledgement mode", lambda c: c.counts["get_no_ack"]),
    _channel("channel_queue_metrics", "channel_messages_delivered_ack_total", "counter", "Total number of messages delivered to consumers in manual acknowledgement mode", lambda c: c.counts["deliver"]),
    _channel("channel_queue_metrics", "channel_messages_delivered_total", "counter", "Total number of messages delivered to consumers in automatic acknowledgement mode", lambda c: c.counts["deliver_no_ack"]),
    _channel("channel_queue_metrics", "channel_messages_redelivered_total", "counter", "Total number of messages redelivered to consumers", lambda c: c.counts["redeliver"]),
    _channel("channel_queue_metrics", "channel_messages_acked_total", "counter", "Total number of messages acknowledged by consumers", lambda c: c.counts["ack"]),
    _channel("channel_queue_metrics", "channel_get_empty_total", "counter", "Total number of times basic.get operations fetched no message", lambda c: c.counts["get_empty"]),
    # ---- connection_coarse_metrics / connection_metrics -------------------------------------------------
    _connection("connection_coarse_metrics", "connection_incoming_bytes_total", "counter", "Total number of bytes received on a connection", lambda c: c.recv_oct),
    _connection("connection_coarse_metrics", "connection_outgoing_bytes_total", "counter", "Total number of bytes sent on a connection", lambda c: c.send_oct),
    _connection("connection_metrics", "connection_incoming_packets_total", "counter", "Total number of packets received on a connection", lambda c: c.recv_cnt),
    _connection("connection_metrics", "connection_outgoing_packets_total", "counter", "Total number of packets sent on a connection", lambda c: c.send_cnt),
    _connection("connection_metrics", "connection_pending_packets", "gauge", "Number of packets waiting to be sent on a connection", lambda c: 0),
    _connection("connection_metrics", "connection_channels", "gauge", "Channels on a connection", lambda c: len(c.channels)),
    # ---- channel_queue_exchange_metrics (per queue in mailslot) ------------------------------------------
    _queue("channel_queue_exchange_metrics", "queue_messages_published_total", "counter", "Total number of messages published to queues", lambda q: q.published),
)

# /metrics/detailed's cluster-wide groups (prefix rabbitmq_cluster_).
CLUSTER_GROUPS = ("vhost_status", "exchange_bindings", "exchange_names")
GROUPS = tuple(dict.fromkeys(f.group for f in FAMILIES)) + CLUSTER_GROUPS
