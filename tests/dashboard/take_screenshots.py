"""The screenshots of docs/dashboard.md: a broker with some traffic, a dead-letter queue and a traced
message, photographed by headless Chromium.

    .venv/bin/python tests/dashboard/take_screenshots.py [OUTPUT_DIR]   # docs/img by default

It runs for about a minute: the charts show what the page has seen, so the traffic runs first.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from mailslot.testing import broker_in_thread  # noqa: E402
from management.client import ManagementApi  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
WARM_UP = 40  # seconds of traffic the overview watches before its picture


def traffic(url: str, stop: threading.Event) -> None:
    """A producer whose rate rises and falls and a consumer that keeps up with most of it."""
    producer = pika.BlockingConnection(pika.URLParameters(url))
    consumer = pika.BlockingConnection(pika.URLParameters(url))
    pub = producer.channel()
    sub = consumer.channel()
    sub.basic_qos(prefetch_count=50)
    sub.basic_consume("orders", lambda ch, m, p, b: ch.basic_ack(m.delivery_tag), consumer_tag="billing-worker")
    start = time.monotonic()
    while not stop.is_set():
        elapsed = time.monotonic() - start
        burst = 20 + int(15 * (1 + math.sin(elapsed / 4)))
        for i in range(burst):
            pub.basic_publish("", "orders", json.dumps({"order": i, "tenant": "acme"}).encode(),
                              pika.BasicProperties(content_type="application/json", delivery_mode=2))
            pub.basic_publish("", "emails", b"welcome")
        producer.process_data_events(0)
        consumer.process_data_events(0.1)
        if int(elapsed) % 7 == 0:
            for _ in range(5):  # a few bounce into the dead-letter queue
                method, _props, _body = sub.basic_get("payments")
                if method is None:
                    break
                sub.basic_reject(method.delivery_tag, requeue=False)
    producer.close()
    consumer.close()


def traced_message(url: str) -> None:
    """One message published, delivered, rejected and dead-lettered, for the trace page's picture."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_publish("", "payments", b'{"invoice": 42}', pika.BasicProperties(
        content_type="application/json", message_id="invoice-42", headers={"tenant": "acme"}))
    method, _props, _body = channel.basic_get("payments")
    channel.basic_reject(method.delivery_tag, requeue=False)
    connection.close()


def setup(api: ManagementApi) -> None:
    api.queue("orders", durable=True)
    api.queue("emails", durable=True, arguments={"x-max-length": 50_000})
    api.queue("payments.dlq", durable=True)
    api.queue("payments", durable=True,
              arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "payments.dlq"})
    api.ok("PUT", "/api/policies/%2F/emails-ttl",
           {"pattern": "^emails$", "definition": {"message-ttl": 3_600_000}, "apply-to": "queues"})
    for i in range(40):
        tenant = "acme" if i % 3 else "globex"
        api.publish("payments", json.dumps({"payment": 1000 + i, "tenant": tenant, "amount": 12.5 * i}),
                    properties={"content_type": "application/json", "message_id": f"payment-{1000 + i}",
                                "headers": {"tenant": tenant}})
    api.ok("PUT", "/api/vhosts/%2F", {"description": "Default virtual host", "tracing": True})
    for name in ("audit", "reports", "search-index", "notifications", "invoices"):
        api.queue(name, durable=True)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with broker_in_thread() as broker, sync_playwright() as playwright:
        api = ManagementApi(broker.http_url)
        setup(api)
        stop = threading.Event()
        worker = threading.Thread(target=traffic, args=(broker.amqp_url, stop), daemon=True)
        worker.start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 820}, device_scale_factor=1)
        page.goto(broker.http_url + "/")
        page.fill("input[name=username]", "guest")
        page.fill("input[name=password]", "guest")
        page.click("button[type=submit]")
        page.wait_for_selector("[data-testid=user]")
        page.wait_for_timeout(WARM_UP * 1000)
        page.screenshot(path=str(out / "dashboard-overview.png"))
        page.evaluate("location.hash = '#/queues'")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "dashboard-queues.png"))
        page.evaluate("location.hash = '#/queue/%2F/emails'")
        page.wait_for_timeout(20_000)
        page.get_by_label("how many").fill("2")
        page.get_by_test_id("peek").click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "dashboard-queue.png"), full_page=True)
        stop.set()
        worker.join()
        traced_message(broker.amqp_url)
        page.evaluate("location.hash = '#/dlq/%2F/payments.dlq'")
        page.wait_for_timeout(1000)
        page.locator("[data-testid=dlq-filter] input[name=header]").fill("tenant=acme")
        page.locator("[data-testid=dlq-filter] button[type=submit]").click()
        page.get_by_test_id("dry-run-matching").click()
        page.wait_for_timeout(800)
        page.screenshot(path=str(out / "dashboard-dlq.png"))
        page.evaluate("location.hash = '#/trace'")
        page.wait_for_timeout(800)
        page.locator("input[name=message_id]").fill("invoice-42")
        page.locator("[data-testid=trace-lookup] button[type=submit]").click()
        page.wait_for_timeout(800)
        page.screenshot(path=str(out / "dashboard-trace.png"))
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        phone.goto(broker.http_url + "/")
        phone.fill("input[name=username]", "guest")
        phone.fill("input[name=password]", "guest")
        phone.click("button[type=submit]")
        phone.wait_for_selector("[data-testid=user]")
        phone.evaluate("location.hash = '#/queues'")
        phone.wait_for_timeout(1500)
        phone.screenshot(path=str(out / "dashboard-phone.png"))
        browser.close()
    print("screenshots in", out)


if __name__ == "__main__":
    main()
