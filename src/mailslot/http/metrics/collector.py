"""A prometheus-client collector that reads the broker at scrape time.

Three views, as rabbitmq_prometheus serves them:

* ``aggregated`` (``/metrics``): one sample per family, summed over its objects, plus the totals
  (``rabbitmq_connections``...), identity, the ``rabbitmq_global_*`` counters, the alarm gauges and
  mailslot's own families. Channel counters are the broker's totals including closed channels, so they
  never go down (RabbitMQ's sum over live channels does when a channel closes).
* ``per-object`` (``/metrics/per-object``): one sample per queue, channel and connection.
* ``detailed`` (``/metrics/detailed?family=...&vhost=...``): the chosen groups only, per object, under the
  ``rabbitmq_detailed_`` prefix, queue groups limited to the chosen vhosts.

Nothing is kept between scrapes except what the core counts anyway.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from ...core.connections import ChannelView, ConnectionView
from ...core.dedup import DedupWindow
from ...core.queue import Queue
from ...core.stats import SESSION_COUNTERS, CommitStats, memory_estimate, session_counts
from ...core.storekeys import decode as decode_store_key
from ..context import ManagementContext, file_descriptors
from .exposition import family_text, labels
from .families import BROKER, CHANNEL, CONNECTION, FAMILIES, QUEUE, Family

QUEUE_LABELS = ("vhost", "queue")
CHANNEL_LABELS = ("channel",)  # RabbitMQ labels channel and connection samples with the process id

PREFIX = "rabbitmq_"
DETAILED_PREFIX = "rabbitmq_detailed_"
CLUSTER_PREFIX = "rabbitmq_cluster_"
RABBITMQ_API_VERSION = "3.10.8"
# rabbit_global_counters' label values for what mailslot is: AMQP 0-9-1, classic queues.
PROTOCOL = "amqp091"
QUEUE_TYPE = "rabbit_classic_queue"


class QueueSample:
    __slots__ = ("consumers", "memory", "name", "paged", "published", "ready", "ready_bytes", "unacked", "vhost")

    def __init__(self, queue: Queue | None = None) -> None:
        if queue is None:
            self.vhost = self.name = ""
            self.ready = self.unacked = self.paged = self.consumers = self.ready_bytes = self.memory = 0
            self.published = 0
            return
        self.vhost, self.name = queue.vhost, queue.name
        self.ready, self.unacked, self.paged = queue.message_count, queue.unacked, queue.paged
        self.consumers = len(queue.consumers)
        self.ready_bytes = queue.ready_bytes
        self.memory = memory_estimate(self.ready - self.paged + self.unacked, self.ready_bytes)
        self.published = queue.stats_published

    def add(self, other: QueueSample) -> None:
        self.ready += other.ready
        self.unacked += other.unacked
        self.paged += other.paged
        self.consumers += other.consumers
        self.ready_bytes += other.ready_bytes
        self.memory += other.memory
        self.published += other.published


@dataclass
class ChannelSample:
    """A channel's view for the families, or (``session`` None) the broker's channel totals."""

    counts: dict[str, int]
    session: Any = None
    unconfirmed: int = 0
    name: str = ""


@dataclass
class Snapshot:
    churn: tuple[int, ...] = (0,) * 7
    fd_used: int = 0
    fd_total: int = 0
    sockets_used: int = 0
    rss: int = 0
    disk_free: int = 0
    memory_limit: int = 0
    disk_free_limit: int = 0
    uptime: float = 0.0
    channel_totals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    mode: str  # aggregated | per-object | detailed
    groups: frozenset[str] | None = None  # detailed: the family= groups asked for
    vhosts: frozenset[str] | None = None  # detailed: vhost= filter for queue groups


AnyFamily = CounterMetricFamily | GaugeMetricFamily | UnknownMetricFamily


def _family(name: str, kind: str, help_: str, labels: Sequence[str] = ()) -> AnyFamily:
    if kind == "counter":
        return CounterMetricFamily(name, help_, labels=labels)
    if kind == "gauge":
        return GaugeMetricFamily(name, help_, labels=labels)
    return UnknownMetricFamily(name, help_, labels=labels)


class BrokerCollector:
    """Yields the families of one view, reading the broker when collected."""

    def __init__(self, ctx: ManagementContext, view: View, commit_stats: CommitStats | None = None) -> None:
        self._bounded: list[Queue] = []  # queues with a length limit, found by _queue_totals
        self.ctx = ctx
        self.view = view
        self.commit_stats = commit_stats

    # ---- data ------------------------------------------------------------------------------------

    def _snapshot(self, connections: list[ConnectionView]) -> Snapshot:
        ctx = self.ctx
        snap = Snapshot()
        snap.churn = ctx.churn()
        snap.fd_used, snap.fd_total = file_descriptors()
        snap.sockets_used = len(connections)
        monitor = ctx.node.monitor
        if monitor is not None:
            snap.memory_limit, snap.disk_free_limit = monitor.limits.memory_bytes, monitor.limits.disk_free_bytes
            if monitor.last is not None:
                snap.rss, snap.disk_free = monitor.last.memory_bytes, monitor.last.disk_free_bytes
        if not snap.rss:
            snap.rss = ctx.sampler.rss_bytes or 0
        snap.uptime = time.time() - ctx.node.started_at
        live = [ch.session for conn in connections for ch in conn.channels]
        snap.channel_totals = dict(zip(SESSION_COUNTERS, ctx.session_totals(live=live), strict=True))
        return snap

    def _queues(self, vhosts: frozenset[str] | None) -> Iterator[Queue]:
        for name, vhost in self.ctx.core.vhosts.items():
            if vhosts is None or name in vhosts:
                for queue in vhost.queues.values():
                    if not queue.deleted:
                        yield queue

    @staticmethod
    def _channels(connections: Iterable[ConnectionView]) -> list[tuple[ChannelView, ChannelSample]]:
        out = []
        for conn in connections:
            for channel in conn.channels:
                counts = dict(zip(SESSION_COUNTERS, session_counts(channel.session), strict=True))
                out.append((channel, ChannelSample(counts, channel.session, channel.unconfirmed, channel.name)))
        return out

    # ---- collect ------------------------------------------------------------------------------------

    def _families(self) -> list[Family]:
        groups = self.view.groups
        return [f for f in FAMILIES if groups is None or f.group in groups]

    def _queue_totals(self) -> QueueSample:
        """Every queue's numbers summed in one pass, no object per queue (/metrics must stay fast with
        tens of thousands of queues: about 1 us a queue)."""
        total = QueueSample()
        ready = unacked = paged = consumers = ready_bytes = published = 0
        bounded = self._bounded = []
        for vhost in self.ctx.core.vhosts.values():
            for queue in vhost.queues.values():
                if queue.policy.bounded:  # the only idle queues that may have a forecast (_mailslot)
                    bounded.append(queue)
                ready += queue.message_count
                unacked += queue.unacked
                paged += queue.paged
                consumers += len(queue.consumers)
                ready_bytes += queue.ready_bytes
                published += queue.stats_published
        total.ready, total.unacked, total.paged, total.consumers = ready, unacked, paged, consumers
        total.ready_bytes, total.published = ready_bytes, published
        total.memory = memory_estimate(ready - paged + unacked, ready_bytes)
        return total

    def collect(self) -> Iterator[Metric]:
        """The families prometheus-client writes: the broker's, every family aggregated (/metrics), and the
        totals, identity, global counters and alarms. Per-object samples come from :meth:`object_text`."""
        view = self.view
        aggregated = view.mode == "aggregated"
        connections = self.ctx.connections.connections()
        prefix = DETAILED_PREFIX if view.mode == "detailed" else PREFIX
        families = self._families()
        wanted = {f.source for f in families}
        snap = self._snapshot(connections) if BROKER in wanted or CHANNEL in wanted or view.mode != "detailed" else None
        queues = self._queue_totals() if aggregated or view.mode == "per-object" else None
        channels = self._channels(connections) if aggregated and CHANNEL in wanted else []
        for family in families:
            name = prefix + family.name
            if family.source == BROKER:
                metric = _family(name, family.kind, family.help)
                metric.add_metric((), family.value(snap))
                yield metric
            elif aggregated:
                yield self._aggregated(family, name, snap, queues, channels, connections)
        if view.mode == "detailed":
            yield from self._cluster_groups()
        else:
            assert snap is not None and queues is not None
            yield from self._totals(connections, queues.consumers)
        yield from self._identity()
        if view.mode != "detailed":
            assert snap is not None and queues is not None
            yield from self._global_counters(snap, queues.consumers)
            yield from self._alarms()
            yield from self._mailslot(not aggregated)

    def _aggregated(
        self,
        family: Family,
        name: str,
        snap: Snapshot | None,
        queues: QueueSample | None,
        channels: list[tuple[ChannelView, ChannelSample]],
        connections: list[ConnectionView],
    ) -> Metric:
        metric = _family(name, family.kind, family.help)
        if family.source == QUEUE:
            metric.add_metric((), family.value(queues))
        elif family.source == CHANNEL and family.kind == "counter":  # every channel ever, closed ones too
            assert snap is not None
            metric.add_metric((), family.value(ChannelSample(snap.channel_totals)))
        elif family.source == CHANNEL:
            metric.add_metric((), sum(family.value(sample) for _, sample in channels))
        else:
            metric.add_metric((), sum(family.value(conn) for conn in connections))
        return metric

    def object_text(self) -> str:
        """Per-object samples (per-object and detailed views), in the text format (exposition.py says why
        not through prometheus-client)."""
        view = self.view
        if view.mode == "aggregated":
            return ""
        prefix = DETAILED_PREFIX if view.mode == "detailed" else PREFIX
        families = [f for f in self._families() if f.source != BROKER]
        sources = {f.source for f in families}
        parts: list[str] = []
        if QUEUE in sources:
            samples = [(labels(QUEUE_LABELS, (q.vhost, q.name)), QueueSample(q))
                       for q in self._queues(view.vhosts if view.mode == "detailed" else None)]
            for family in families:
                if family.source == QUEUE:
                    value = family.value
                    parts.append(family_text(prefix + family.name, family.kind, family.help,
                                             [(label, value(q)) for label, q in samples]))
        connections = self.ctx.connections.connections() if sources & {CHANNEL, CONNECTION} else []
        if CHANNEL in sources:
            channels = [(labels(CHANNEL_LABELS, (view_.name,)), sample) for view_, sample in self._channels(connections)]
            for family in families:
                if family.source == CHANNEL:
                    parts.append(family_text(prefix + family.name, family.kind, family.help,
                                             [(label, family.value(c)) for label, c in channels]))
        if CONNECTION in sources:
            conns = [(labels(CHANNEL_LABELS, (conn.name,)), conn) for conn in connections]
            for family in families:
                if family.source == CONNECTION:
                    parts.append(family_text(prefix + family.name, family.kind, family.help,
                                             [(label, family.value(c)) for label, c in conns]))
        return "".join(parts)

    def _totals(self, connections: list[ConnectionView], consumers: int) -> Iterator[Metric]:
        vhosts = self.ctx.core.vhosts.values()
        values = (
            ("connections", "Connections currently open", len(connections)),
            ("channels", "Channels currently open", sum(len(c.channels) for c in connections)),
            ("consumers", "Consumers currently connected", consumers),
            ("queues", "Queues available", sum(len(v.queues) for v in vhosts)),
        )
        for name, help_, value in values:
            metric = GaugeMetricFamily(PREFIX + name, help_)
            metric.add_metric((), value)
            yield metric

    def _identity(self) -> Iterator[Metric]:
        ctx = self.ctx
        build = UnknownMetricFamily(
            PREFIX + "build_info",
            "RabbitMQ & Erlang/OTP version info",
            labels=("rabbitmq_version", "prometheus_plugin_version", "prometheus_client_version",
                    "erlang_version", "product_name", "product_version", "python_version"),
        )
        build.add_metric(
            (RABBITMQ_API_VERSION, RABBITMQ_API_VERSION, _client_version(), "", "mailslot",
             ctx.node.product_version, platform.python_version()),
            1,
        )
        yield build
        identity = UnknownMetricFamily(
            PREFIX + "identity_info",
            "RabbitMQ node & cluster identity info",
            labels=("rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"),
        )
        cluster = ctx.parameters.global_value("cluster_name") or ctx.node.cluster_name
        cluster_id = ctx.parameters.global_value("internal_cluster_id") or ""
        identity.add_metric((ctx.node.name, str(cluster), str(cluster_id)), 1)
        yield identity

    def _global_counters(self, snap: Snapshot, consumers_now: int) -> Iterator[Metric]:
        """rabbit_global_counters' families: per protocol, and per queue type where RabbitMQ splits them."""
        counts = snap.channel_totals
        by_protocol = (
            ("messages_received_total", "Total number of messages received from publishers", counts["publish"]),
            ("messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations",
             self._received_confirm()),
            ("messages_routed_total", "Total number of messages routed to queues or streams",
             counts["publish"] - counts["drop_unroutable"] - counts["return_unroutable"]),
            ("messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable",
             counts["drop_unroutable"]),
            ("messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable",
             counts["return_unroutable"]),
            ("messages_confirmed_total", "Total number of messages confirmed to publishers", counts["confirm"]),
        )
        for name, help_, value in by_protocol:
            metric = CounterMetricFamily(PREFIX + "global_" + name, help_, labels=("protocol",))
            metric.add_metric((PROTOCOL,), value)
            yield metric
        by_queue_type = (
            ("messages_delivered_total", "Total number of messages delivered to consumers", counts["deliver_get"]),
            ("messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment",
             counts["deliver"]),
            ("messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment",
             counts["deliver_no_ack"]),
            ("messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment",
             counts["get"]),
            ("messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment",
             counts["get_no_ack"]),
            ("messages_get_empty_total", "Total number of times basic.get operations fetched no message", counts["get_empty"]),
            ("messages_redelivered_total", "Total number of messages redelivered to consumers", counts["redeliver"]),
            ("messages_acknowledged_total", "Total number of message acknowledgements received from consumers", counts["ack"]),
        )
        for name, help_, value in by_queue_type:
            metric = CounterMetricFamily(PREFIX + "global_" + name, help_, labels=("protocol", "queue_type"))
            metric.add_metric((PROTOCOL, QUEUE_TYPE), value)
            yield metric
        dead_lettered: dict[tuple[str, bool], int] = {}
        for vhost in self.ctx.core.vhosts.values():
            for key, value in vhost.stats.dead_lettered.items():
                dead_lettered[key] = dead_lettered.get(key, 0) + value
        for reason in ("delivery_limit", "expired", "maxlen", "rejected"):
            metric = CounterMetricFamily(
                PREFIX + f"global_messages_dead_lettered_{reason}_total",
                f"Total number of messages dead-lettered due to {reason.replace('_', '-')}",
                labels=("queue_type", "dead_letter_strategy"),
            )
            for strategy, has_dlx in (("at_most_once", True), ("disabled", False)):
                metric.add_metric((QUEUE_TYPE, strategy), dead_lettered.get((reason, has_dlx), 0))
            yield metric
        publishers = GaugeMetricFamily(PREFIX + "global_publishers", "Current number of publishers", labels=("protocol",))
        publishers.add_metric((PROTOCOL,), sum(1 for s in self._live_sessions() if s.stats_published))
        yield publishers
        consumers = GaugeMetricFamily(PREFIX + "global_consumers", "Current number of consumers", labels=("protocol",))
        consumers.add_metric((PROTOCOL,), consumers_now)
        yield consumers

    def _live_sessions(self) -> list[Any]:
        return self.ctx.live_sessions()

    def _received_confirm(self) -> int:
        """Publishes received on confirm channels: the live ones' sequence numbers (closed channels' are
        not kept apart from their other publishes)."""
        return sum(
            ch.session.stats_published
            for conn in self.ctx.connections.connections()
            for ch in conn.channels
            if ch.confirm
        )

    def _alarms(self) -> Iterator[Metric]:
        active = self.ctx.node.alarms()
        for name, help_, on in (
            ("file_descriptor_limit", "is 1 if file descriptor limit alarm is in effect", False),
            ("free_disk_space_watermark", "is 1 if free disk space watermark alarm is in effect", "disk" in active),
            ("memory_used_watermark", "is 1 if VM memory watermark alarm is in effect", "memory" in active),
        ):
            metric = UnknownMetricFamily(PREFIX + "alarms_" + name, help_)
            metric.add_metric((), 1 if on else 0)
            yield metric

    def _cluster_groups(self) -> Iterator[Metric]:
        groups = self.view.groups or frozenset()
        vhosts = self.ctx.core.vhosts
        if "vhost_status" in groups:
            metric = GaugeMetricFamily(CLUSTER_PREFIX + "vhost_status", "Whether a given vhost is running", labels=("vhost",))
            for name in sorted(vhosts):
                metric.add_metric((name,), 1)
            yield metric
        if "exchange_bindings" in groups or "exchange_names" in groups:
            bindings = GaugeMetricFamily(
                CLUSTER_PREFIX + "exchange_bindings",
                "Number of bindings for an exchange. This value is cluster-wide.",
                labels=("vhost", "exchange", "type"),
            )
            names = GaugeMetricFamily(
                CLUSTER_PREFIX + "exchange_name",
                "Enumerates exchanges without any additional info. This value is cluster-wide. A cheaper alternative to `exchange_bindings`",
                labels=("vhost", "exchange", "type"),
            )
            for vhost_name, vhost in vhosts.items():
                for exchange in vhost.exchanges.values():
                    if exchange.internal or not exchange.name:
                        continue
                    bindings.add_metric((vhost_name, exchange.name, exchange.type), len(exchange.bindings))
                    names.add_metric((vhost_name, exchange.name, exchange.type), 1)
            if "exchange_bindings" in groups:
                yield bindings
            if "exchange_names" in groups:
                yield names

    # ---- mailslot's own families ---------------------------------------------------------------------

    def _mailslot(self, per_object: bool) -> Iterator[Metric]:
        stats = self.commit_stats
        if stats is not None:
            yield _histogram(
                "mailslot_store_commit_seconds",
                "Time to write and fsync one batch of the message store (group commit)",
                stats.seconds.cumulative(),
                stats.seconds.sum,
            )
            if stats.bytes.count:
                yield _histogram(
                    "mailslot_store_commit_bytes",
                    "Bytes written to the message store by one batch (group commit)",
                    stats.bytes.cumulative(),
                    stats.bytes.sum,
                )
        sampler = self.ctx.sampler
        drain = GaugeMetricFamily(
            "mailslot_queue_drain_seconds",
            "Seconds until the queue's ready messages are gone at the current rates (absent: not draining)",
            labels=("vhost", "queue"),
        )
        full = GaugeMetricFamily(
            "mailslot_queue_full_seconds",
            "Seconds until the queue reaches x-max-length / x-max-length-bytes at the current rates (absent: never)",
            labels=("vhost", "queue"),
        )
        draining = filling = 0
        # A forecast needs rates (a queue that moved within the window) or a limit already reached: idle,
        # unbounded queues have none, so only those two kinds are looked at (not every queue per scrape).
        moving: list[Queue] = sampler.queues.active()  # type: ignore[assignment]  # keys are queues
        candidates = list(dict.fromkeys([*(q for q in moving if not q.deleted), *self._bounded]))
        for queue in candidates:
            forecast = sampler.queue_stats(queue)
            if forecast.drain_seconds is not None and forecast.messages_ready:
                draining += 1
                if per_object:
                    drain.add_metric((queue.vhost, queue.name), forecast.drain_seconds)
            if forecast.full_seconds is not None:
                filling += 1
                if per_object:
                    full.add_metric((queue.vhost, queue.name), forecast.full_seconds)
        if per_object:
            yield drain
            yield full
        counts = GaugeMetricFamily(
            "mailslot_queues_forecast",
            "Queues with a forecast: draining (will be empty) and filling (will reach their length limit)",
            labels=("forecast",),
        )
        counts.add_metric(("draining",), draining)
        counts.add_metric(("filling",), filling)
        yield counts
        window = GaugeMetricFamily(
            "mailslot_dedup_window_keys",
            "Deduplication keys held by an x-message-deduplication queue or exchange (kind: queue or exchange)",
            labels=("vhost", "kind", "name"),
        )
        total_keys = 0
        for vhost_name, vhost in self.ctx.core.vhosts.items():
            for store_key, owner in vhost.owners.items():
                if not isinstance(owner, DedupWindow):
                    continue  # another feature's rows (a delayed exchange's schedule)
                size = owner.index.count
                total_keys += size
                if per_object:
                    key = decode_store_key(store_key)  # kind dedup-queue / dedup-exchange (core/storekeys.py)
                    window.add_metric((vhost_name, key.kind.removeprefix("dedup-"), key.name), size)
        if per_object:
            yield window
        total = GaugeMetricFamily("mailslot_dedup_window_keys_all", "Deduplication keys held by all windows together")
        total.add_metric((), total_keys)
        yield total
        yield from self._cluster()

    def _cluster(self) -> Iterator[Metric]:
        """A node of a cluster (docs/cluster.md): its leases, takeovers, forwarding, and the nodes it sees."""
        cluster = self.ctx.node.cluster
        if cluster is None:
            return
        extras = cluster.node_extras()
        leases = GaugeMetricFamily("mailslot_cluster_leases", "Shared queues this node owns (leases it holds)")
        leases.add_metric((), extras.get("leases", 0))
        yield leases
        for name, help_ in (("takeovers", "Queues this node took over from another node since it started"),
                            ("forwarded", "Messages this node forwarded to the queue's owner"),
                            ("received", "Messages other nodes forwarded to this node")):
            counter = CounterMetricFamily(f"mailslot_cluster_{name}", help_)
            counter.add_metric((), extras.get(name, 0))
            yield counter
        peers = cluster.peers()
        nodes = GaugeMetricFamily("mailslot_cluster_nodes", "Nodes of the cluster by state (this one included)",
                                  labels=("state",))
        running = 1 + sum(1 for peer in peers if peer.get("running"))
        nodes.add_metric(("running",), running)
        nodes.add_metric(("stopped",), len(peers) + 1 - running)
        yield nodes


def _client_version() -> str:
    try:
        return version("prometheus-client")
    except PackageNotFoundError:
        return "unknown"


def _histogram(name: str, help_: str, buckets: list[tuple[float, int]], total: float) -> Metric:
    metric = HistogramMetricFamily(name, help_)
    metric.add_metric((), [(_bound(b), n) for b, n in buckets], total)
    return metric


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def scrape(ctx: ManagementContext, view: View, commit_stats: CommitStats | None = None) -> bytes:
    """One scrape of ``view``: prometheus-client's families, then the per-object samples."""
    collector = BrokerCollector(ctx, view, commit_stats)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)  # type: ignore[arg-type]
    return generate_latest(reg) + collector.object_text().encode()
