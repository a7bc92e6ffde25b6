"""The Prometheus endpoint, differentially against the reference's rabbitmq_prometheus: the families mailslot
emits carry RabbitMQ's names, types and labels, and the same traffic moves the same numbers. Parsed with
prometheus-client's own text parser (what a scraper reads), never with string matching."""

from __future__ import annotations

import uuid
from typing import Any

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import wait_for

from .client import ManagementApi, q

pytestmark = pytest.mark.timeout(120)
SETTLE = 25.0  # RabbitMQ's statistics reach its metrics every 5 s


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(text: str, sample_name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# Families RabbitMQ emits that mailslot cannot (Erlang VM, Mnesia, Raft, process reductions, I/O
# counters of its message store) or does not count yet (auth attempts): docs/metrics.md lists them.
NOT_IN_MAILSLOT_PREFIXES = ("erlang_", "telemetry_", "process_start_time", "rabbitmq_erlang_", "rabbitmq_raft_",
                            "rabbitmq_io_", "rabbitmq_schema_db_", "rabbitmq_msg_store_", "rabbitmq_queue_index_",
                            "rabbitmq_auth_attempts")
NOT_IN_MAILSLOT = {
    "rabbitmq_queue_process_reductions", "rabbitmq_channel_process_reductions", "rabbitmq_connection_process_reductions",
    "rabbitmq_queue_consumer_capacity", "rabbitmq_queue_consumer_utilisation", "rabbitmq_queue_messages_ram_bytes",
    "rabbitmq_queue_messages_persistent", "rabbitmq_queue_messages_persistent_bytes",
    "rabbitmq_queue_messages_unacked_bytes", "rabbitmq_queue_messages_paged_out_bytes",
    "rabbitmq_queue_head_message_timestamp", "rabbitmq_queue_disk_reads", "rabbitmq_queue_disk_writes",
    "rabbitmq_global_messages_dead_lettered_confirmed",
}


@pytest.mark.interop
def test_aggregated_families_have_rabbitmqs_names_and_types(apis: dict[str, ManagementApi]) -> None:
    theirs = families(apis["rabbitmq"].metrics("/metrics"))
    ours = families(apis["mailslot"].metrics("/metrics"))
    expected = {name: f for name, f in theirs.items()
                if not name.startswith(NOT_IN_MAILSLOT_PREFIXES) and name not in NOT_IN_MAILSLOT}
    missing = sorted(set(expected) - set(ours))
    assert not missing, f"mailslot lacks {missing}"
    for name, family in expected.items():
        assert ours[name].type == family.type, name
        their_labels = {frozenset(s.labels) for s in family.samples}
        our_labels = {frozenset(s.labels) for s in ours[name].samples}
        if name.endswith("_info"):  # mailslot adds product and Python versions to the build info
            assert all(t <= o for t in their_labels for o in our_labels), name
        else:
            assert our_labels <= their_labels or not their_labels, (name, our_labels, their_labels)
    extra = sorted(n for n in set(ours) - set(theirs) if not n.startswith("mailslot_"))
    assert not extra, f"undocumented families {extra}"  # mailslot's own all start with mailslot_


@pytest.mark.interop
def test_the_same_traffic_moves_the_same_numbers(apis: dict[str, ManagementApi]) -> None:
    queue = f"mailslot-test.metrics.{uuid.uuid4().hex[:10]}"
    before = {n: api.metrics("/metrics") for n, api in apis.items()}
    for name, api in apis.items():
        api.queue(queue)
        url = getattr(api, "amqp_url", "amqp://guest:guest@127.0.0.1:5672/%2F")
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(7):
            channel.basic_publish("", queue, b"m")
        channel.basic_publish("", queue + ".nowhere", b"lost")
        for _ in range(2):
            channel.basic_get(queue, auto_ack=True)
        connection.close()
    for name, api in apis.items():
        def settled(api: ManagementApi = api) -> Any:
            text = api.metrics("/metrics/per-object")
            return value(text, "rabbitmq_queue_messages_ready", vhost="/", queue=queue) == 5 and text
        per_object = wait_for(settled, SETTLE, 0.25, what=f"{name} per-object")
        assert value(per_object, "rabbitmq_queue_messages", vhost="/", queue=queue) == 5
        assert value(per_object, "rabbitmq_queue_consumers", vhost="/", queue=queue) == 0
        after = api.metrics("/metrics")
        for sample, at_least in (
            ("rabbitmq_global_messages_received_total", 8),
            ("rabbitmq_global_messages_received_confirm_total", 0),
            ("rabbitmq_global_messages_routed_total", 7),
            ("rabbitmq_global_messages_unroutable_dropped_total", 1),
            ("rabbitmq_global_messages_confirmed_total", 8),
            ("rabbitmq_global_messages_delivered_get_auto_ack_total", 2),
            ("rabbitmq_connections_opened_total", 1),
            ("rabbitmq_queues_created_total", 1),
        ):
            grew = (value(after, sample) or 0) - (value(before[name], sample) or 0)
            assert grew >= at_least, (name, sample, grew)
    ours = apis["mailslot"].metrics("/metrics")
    for sample, exactly in (("rabbitmq_global_messages_received_total", 8),
                            ("rabbitmq_global_messages_routed_total", 7),
                            ("rabbitmq_global_messages_unroutable_dropped_total", 1),
                            ("rabbitmq_global_messages_delivered_get_auto_ack_total", 2),
                            ("rabbitmq_queues", 1), ("rabbitmq_connections", 0)):
        assert value(ours, sample) == exactly, sample  # a broker of its own: exact counts


@pytest.mark.interop
def test_detailed_takes_families_and_vhosts(apis: dict[str, ManagementApi]) -> None:
    queue = f"mailslot-test.detailed.{uuid.uuid4().hex[:10]}"
    for api in apis.values():
        api.queue(queue)
    path = "/metrics/detailed?family=queue_coarse_metrics&family=exchange_names&vhost=%2F"
    for name, api in apis.items():
        text = wait_for(lambda api=api: (t := api.metrics(path)) and
                    value(t, "rabbitmq_detailed_queue_messages", vhost="/", queue=queue) is not None and t, SETTLE, 0.25, what=f"{name} detailed")
        names = set(families(text))
        assert {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_messages_unacked",
                "rabbitmq_detailed_queue_messages", "rabbitmq_cluster_exchange_name", "rabbitmq_identity_info"} <= names
        assert not any(n.startswith("rabbitmq_detailed_channel") for n in names), name
        assert value(text, "rabbitmq_cluster_exchange_name", vhost="/", exchange="amq.direct", type="direct") == 1
        other = api.metrics("/metrics/detailed?family=queue_coarse_metrics&vhost=" + q("no-such-vhost"))
        assert value(other, "rabbitmq_detailed_queue_messages", vhost="/", queue=queue) is None


def test_mailslots_own_families(tmp_path: Any) -> None:
    from mailslot.testing import broker_in_thread

    with broker_in_thread(store="segments", data_dir=tmp_path) as broker:
        api = ManagementApi(broker.http_url, prometheus=broker.prometheus_url)
        api.queue("draining", durable=True, arguments={"x-max-length": 100})
        api.queue("dedup", arguments={"x-message-deduplication": True})
        for i in range(3):
            api.publish("dedup", "x", properties={"headers": {"x-deduplication-header": f"k{i}"}})
            api.publish("draining", "x", properties={"delivery_mode": 2})
        text = wait_for(lambda: (t := api.metrics("/metrics/per-object"))
                    and (value(t, "mailslot_store_commit_seconds_count") or 0) > 0 and t, SETTLE, 0.25, what="commits")
        fams = families(text)
        assert fams["mailslot_store_commit_seconds"].type == "histogram"
        assert value(text, "mailslot_store_commit_bytes_count") > 0  # the segment log reports its bytes
        assert value(text, "mailslot_store_commit_bytes_sum") > 0
        assert value(text, "mailslot_dedup_window_keys", vhost="/", kind="queue", name="dedup") == 3
        assert value(text, "mailslot_dedup_window_keys_all") == 3
        full = wait_for(lambda: value(api.metrics("/metrics/per-object"), "mailslot_queue_full_seconds",
                                                     vhost="/", queue="draining"), SETTLE, 0.25, what="a fill forecast")
        assert full > 0
        aggregated = api.metrics("/metrics")
        assert value(aggregated, "mailslot_queues_forecast", forecast="filling") == 1
        assert value(aggregated, "mailslot_queue_full_seconds", vhost="/", queue="draining") is None  # per-object only
