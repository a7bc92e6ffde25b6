"""Workload (a) of compare.py on NATS JetStream and Redis Streams, with their Python clients.

    python benchmarks/others.py --system nats  --duration 10 [--json]
    python benchmarks/others.py --system redis --duration 10 [--json]
    python benchmarks/others.py --facts        # what each server's "ack" means on disk, as found now

The nearest equivalent of compare.py's workload (a) (1 producer, 1 consumer, 256 B, persistent,
publisher window 1000, consumer acks):

- NATS JetStream (nats-py): a fresh stream per run (file storage, work-queue retention, deleted after);
  ``js.publish_async`` with at most --window PubAcks outstanding; one durable pull consumer (explicit
  ack, max_ack_pending = --window) pulled in requests of --batch messages (a new request whenever fewer
  than --batch are owed, as the newer clients' consume() does; nats-py's fetch() waits out its timeout
  for a full batch on this server, which caps it at about 2 batches a second), each message acked.
- Redis Streams (redis-py asyncio): a fresh stream key per run (deleted after); XADD pipelined in windows
  of --window (one pipeline = one window; the next is sent when its replies are in); a consumer group
  read with XREADGROUP COUNT --batch BLOCK 100, each batch acked with one XACK.

Producer and consumer use separate connections in one process on uvloop (as ``mailslot bench``).
Bodies start with the send time (``time.monotonic_ns()``) and a sequence number, as mailslot bench's do:
publish->deliver latency is measured by the consumer; publish->ack latency is from the send time to the
PubAck / the pipeline's replies. ``--json`` prints one object with the same keys as
``mailslot bench --json`` (published_per_s, consumed_per_s, deliver_latency_ms {p50,p95,p99,max}, ...).

What an acknowledgement means differs (see ``--facts`` and docs/benchmarks.md): mailslot confirms after
fdatasync; JetStream's file store acks once the message is written to the OS (page cache) and syncs on a
timer; this Redis keeps nothing on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
import urllib.request
import uuid
from array import array
from collections.abc import Coroutine
from typing import Any

from mailslot.bench.runner import percentiles

STAMP = struct.Struct(">QQ")  # send time (monotonic ns), sequence number
NATS_URL = "nats://127.0.0.1:4222"
NATS_MONITOR = "http://127.0.0.1:8222"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
SERVICES = {"nats": ("127.0.0.1", 4222), "redis": (REDIS_HOST, REDIS_PORT)}
TITLES = {"nats": "NATS JetStream", "redis": "Redis Streams"}


def reachable(name: str, timeout: float = 0.5) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Stats:
    def __init__(self) -> None:
        self.published = 0
        self.confirmed = 0
        self.consumed = 0
        self.confirm_lat = array("q")
        self.deliver_lat = array("q")
        self.recording = True


def _body(size: int) -> bytearray:
    return bytearray(max(size, STAMP.size))


async def _run_for(
    duration: float, produce: Coroutine[Any, Any, None], consume: Coroutine[Any, Any, None], stats: Stats,
    stop: asyncio.Event,
) -> float:
    """Run producer and consumer for ``duration`` seconds (or until one fails); the seconds it took."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    tasks = [asyncio.ensure_future(consume), asyncio.ensure_future(produce)]
    done, _ = await asyncio.wait(tasks, timeout=duration, return_when=asyncio.FIRST_EXCEPTION)
    elapsed = loop.time() - t0
    stats.recording = False
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return elapsed


def _result(system: str, cfg: dict[str, Any], stats: Stats, elapsed: float) -> dict[str, Any]:
    return {
        "system": system,
        "config": cfg,
        "elapsed_s": round(elapsed, 3),
        "published": stats.published,
        "confirmed": stats.confirmed,
        "nacked": 0,
        "consumed": stats.consumed,
        "published_per_s": round(stats.published / elapsed, 1),
        "confirmed_per_s": round(stats.confirmed / elapsed, 1),
        "consumed_per_s": round(stats.consumed / elapsed, 1),
        "confirm_latency_ms": percentiles(stats.confirm_lat),
        "deliver_latency_ms": percentiles(stats.deliver_lat),
    }


# --------------------------------------------------------------------------------------------- NATS


async def run_nats(duration: float, size: int = 256, window: int = 1000, batch: int = 1000) -> dict[str, Any]:
    import nats
    from nats.js import api

    run_id = uuid.uuid4().hex[:10]
    stream, subject, durable = f"mailslot_bench_{run_id}", f"mailslot-bench.{run_id}", f"bench_{run_id}"
    stats = Stats()
    nc_pub = await nats.connect(NATS_URL, name="mailslot-bench-producer")
    nc_sub = await nats.connect(NATS_URL, name="mailslot-bench-consumer")
    js_pub = nc_pub.jetstream(publish_async_max_pending=window)
    js_sub = nc_sub.jetstream()
    stop = asyncio.Event()
    try:
        await js_sub.add_stream(api.StreamConfig(
            name=stream, subjects=[subject], storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.WORK_QUEUE, num_replicas=1))
        await js_sub.add_consumer(stream, api.ConsumerConfig(
            durable_name=durable, ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=window,
            deliver_policy=api.DeliverPolicy.ALL, max_waiting=16))

        async def produce() -> None:
            body = _body(size)
            seq = 0
            mono = time.monotonic_ns

            def on_ack(fut: asyncio.Future[Any], sent: int) -> None:
                if fut.cancelled() or fut.exception() is not None:
                    return
                stats.confirmed += 1
                if stats.recording:
                    stats.confirm_lat.append(mono() - sent)

            while not stop.is_set():
                seq += 1
                sent = mono()
                STAMP.pack_into(body, 0, sent, seq)
                # waits (semaphore) while `window` PubAcks are outstanding
                fut = await js_pub.publish_async(subject, bytes(body))
                stats.published += 1
                fut.add_done_callback(lambda f, s=sent: on_ack(f, s))

        # The pull consumer, as nats.py's fetch() would do it but without waiting out its timeout for a
        # full batch: pull requests for `batch` messages on one inbox, a new request whenever fewer than
        # `batch` are still owed (at most 2 x batch requested; max_ack_pending bounds the unacked).
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        inbox = nc_sub.new_inbox()
        owed = 0
        expires_ns = int((duration + 60) * 1e9)

        async def pull() -> None:
            nonlocal owed
            while owed < batch:
                owed += batch
                await nc_sub.publish(next_subject, json.dumps({"batch": batch, "expires": expires_ns}).encode(),
                                     reply=inbox)

        mono = time.monotonic_ns
        unpack = STAMP.unpack_from

        async def on_msg(m: Any) -> None:
            nonlocal owed
            if not m.reply:  # a status message (no reply subject to ack), e.g. 408 request expired
                return
            owed -= 1
            if stats.recording:
                stats.consumed += 1
                stats.deliver_lat.append(mono() - unpack(m.data)[0])
            await nc_sub.publish(m.reply, b"+ACK")  # explicit ack of this message (no ack-of-ack wait)
            if owed < batch and not stop.is_set():
                await pull()

        await nc_sub.subscribe(inbox, cb=on_msg, pending_msgs_limit=4 * batch + 1000)

        async def consume() -> None:
            await pull()
            await stop.wait()

        elapsed = await _run_for(duration, produce(), consume(), stats, stop)
    finally:
        with contextlib.suppress(Exception):  # best-effort cleanup
            await js_sub.delete_stream(stream)
        for nc in (nc_pub, nc_sub):
            with contextlib.suppress(Exception):
                await nc.close()
    cfg = {"stream": stream, "storage": "file", "retention": "workqueue", "size": size, "window": window,
           "pull_batch": batch, "max_ack_pending": window, "ack": "explicit, each message", "duration": duration}
    return _result("nats", cfg, stats, elapsed)


def _monitor_varz() -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(NATS_MONITOR + "/varz", timeout=1) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001
        return None


async def nats_facts() -> dict[str, Any]:
    import nats

    nc = await nats.connect(NATS_URL, name="mailslot-bench-facts")
    try:
        info = dict(nc._server_info)
        js = nc.jetstream()
        acct = await js.account_info()
        version = str(info.get("version", "?"))
    finally:
        await nc.close()
    varz = _monitor_varz()
    facts: dict[str, Any] = {
        "version": version,
        "jetstream": bool(info.get("jetstream")),
        "account_storage_bytes": acct.storage,
        "account_max_storage": acct.limits.max_storage if acct.limits else None,
        "monitoring": bool(varz),
    }
    parts = [int(p) for p in version.split("-")[0].split(".")[:2] if p.isdigit()]
    if varz:
        jsc = (varz.get("jetstream") or {}).get("config") or {}
        facts["sync_interval"] = jsc.get("sync_interval")
        facts["sync_always"] = jsc.get("sync_always", False)
        facts["store_dir"] = jsc.get("store_dir")
    if len(parts) == 2 and (parts[0], parts[1]) < (2, 10):
        facts["sync_policy"] = (f"nats-server {version}: the file store fsyncs its blocks from a timer every 60 s "
                                "(filestore.go defaultSyncInterval, not configurable before 2.10); a PubAck "
                                "means written to the OS page cache, not fsynced")
    elif varz and facts.get("sync_always"):
        facts["sync_policy"] = f"nats-server {version}: sync_always is set: every write is fsynced before the PubAck"
    else:
        interval = facts.get("sync_interval") or "2m (default; monitoring port not answering, config not read)"
        facts["sync_policy"] = (f"nats-server {version}: the file store fsyncs on a timer, sync_interval {interval}; "
                                "a PubAck means written to the OS page cache, not fsynced")
    return facts


# -------------------------------------------------------------------------------------------- Redis


async def run_redis(duration: float, size: int = 256, window: int = 1000, batch: int = 1000) -> dict[str, Any]:
    import redis.asyncio as aredis

    run_id = uuid.uuid4().hex[:10]
    key, group = f"mailslot-bench-{run_id}", "bench"
    stats = Stats()
    # two connections (single-connection clients): the consumer's BLOCKing read never delays the producer
    pub = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT, single_connection_client=True)
    sub = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT, single_connection_client=True)
    stop = asyncio.Event()
    try:
        await sub.xgroup_create(key, group, id="$", mkstream=True)

        async def produce() -> None:
            body = _body(size)
            seq = 0
            mono = time.monotonic_ns
            while not stop.is_set():
                pipe = pub.pipeline(transaction=False)
                sent = mono()
                for _ in range(window):
                    seq += 1
                    STAMP.pack_into(body, 0, sent, seq)
                    pipe.xadd(key, {b"b": bytes(body)})
                stats.published += window
                await pipe.execute()
                if stats.recording:
                    lat = mono() - sent
                    stats.confirmed += window
                    stats.confirm_lat.extend([lat] * window)

        async def consume() -> None:
            mono = time.monotonic_ns
            unpack = STAMP.unpack_from
            while not stop.is_set():
                resp = await sub.xreadgroup(group, "c1", {key: ">"}, count=batch, block=100)
                if not resp:
                    continue
                entries = resp[0][1]
                now = mono()
                ids = []
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    if stats.recording:
                        stats.consumed += 1
                        stats.deliver_lat.append(now - unpack(fields[b"b"])[0])
                await sub.xack(key, group, *ids)

        elapsed = await _run_for(duration, produce(), consume(), stats, stop)
    finally:
        # a cancelled pipeline/blocking read may leave its connection mid-reply: clean up on a fresh one
        await asyncio.gather(pub.aclose(), sub.aclose(), return_exceptions=True)
        clean = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT)
        try:
            await clean.delete(key)
        finally:
            await clean.aclose()
    cfg = {"key": key, "size": size, "window": window, "xreadgroup_count": batch, "block_ms": 100,
           "ack": "XACK per read batch", "duration": duration}
    return _result("redis", cfg, stats, elapsed)


async def redis_facts() -> dict[str, Any]:
    import redis.asyncio as aredis

    r = aredis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    try:
        server = await r.info("server")
        pers = await r.info("persistence")
        cfg = {}
        for k in ("appendonly", "appendfsync", "save", "dir"):
            try:
                cfg.update(await r.config_get(k))
            except Exception:  # noqa: BLE001 - CONFIG may be renamed/disabled
                cfg[k] = "? (CONFIG GET refused)"
    finally:
        await r.aclose()
    aof = cfg.get("appendonly") == "yes"
    rdb = bool(str(cfg.get("save", "")).strip())
    if not aof and not rdb:
        policy = ("no AOF (appendonly no) and no RDB snapshots (save \"\"): nothing is written to disk; "
                  "an XADD reply means in memory only")
    elif aof:
        policy = (f"AOF on, appendfsync {cfg.get('appendfsync')}: "
                  + ("fsync before reply" if cfg.get("appendfsync") == "always"
                     else "an XADD reply precedes the fsync (at most ~1 s of writes can be lost)"))
    else:
        policy = f"RDB snapshots only (save {cfg.get('save')!r}): an XADD reply means in memory only"
    return {
        "version": server.get("redis_version"),
        "appendonly": cfg.get("appendonly"),
        "appendfsync": cfg.get("appendfsync"),
        "save": cfg.get("save"),
        "aof_enabled": pers.get("aof_enabled"),
        "rdb_saves": pers.get("rdb_saves"),
        "sync_policy": policy,
    }


# ------------------------------------------------------------------------------------------------ CLI

RUNNERS = {"nats": run_nats, "redis": run_redis}
FACTS = {"nats": nats_facts, "redis": redis_facts}


async def gather_facts(names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        if not reachable(name):
            out[name] = {"reachable": False}
            continue
        try:
            out[name] = {"reachable": True, **await FACTS[name]()}
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            out[name] = {"reachable": True, "error": f"{type(exc).__name__}: {exc}"}
    return out


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=sorted(RUNNERS), help="which server to run workload (a) against")
    ap.add_argument("--facts", action="store_true", help="print what an ack means on disk for each server")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--window", type=int, default=1000, help="publishes awaiting their ack (PubAck / reply)")
    ap.add_argument("--batch", type=int, default=1000, help="consumer fetch / XREADGROUP COUNT")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.facts:
        print(json.dumps(_run(gather_facts(sorted(FACTS))), indent=1))
        return 0
    if not args.system:
        ap.error("--system or --facts")
    if not reachable(args.system):
        print(f"{TITLES[args.system]} on {SERVICES[args.system]} not reachable", file=sys.stderr)
        return 2
    r = _run(RUNNERS[args.system](args.duration, args.size, args.window, args.batch))
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{TITLES[args.system]}: consumed {r['consumed_per_s']:,.0f} msg/s, published "
              f"{r['published_per_s']:,.0f}/s, publish->deliver p99 {r['deliver_latency_ms']['p99']:.1f} ms, "
              f"publish->ack p99 {r['confirm_latency_ms']['p99']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
