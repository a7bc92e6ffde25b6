"""The dashboard's queues page with many queues: the API request it makes each second (20 a page, its
columns) timed on a broker holding N empty queues, then the page itself in headless Chromium (click
"next" until the next page shows). docs/dashboard.md quotes the figures.

    flock /tmp/mailslot-bench.lock python benchmarks/dashboard_queue_list.py [--queues 100000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time
import urllib.request

import pika

from mailslot.testing import broker_in_thread

AUTH = "Basic " + base64.b64encode(b"guest:guest").decode()
# The columns the queues page asks for (src/mailslot/http/dashboard/static/js/pages/queues.js).
COLUMNS = (
    "name,vhost,type,durable,auto_delete,exclusive,state,policy,operator_policy,messages,messages_ready,"
    "messages_unacknowledged,consumers,drain_seconds,full_seconds,arguments,message_stats.publish_details.rate,"
    "message_stats.deliver_get_details.rate,message_stats.ack_details.rate"
)


def timed_get(url: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": AUTH})
    start = time.perf_counter()
    with urllib.request.urlopen(request) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def report(label: str, times: list[float]) -> None:
    print(f"{label}: median {statistics.median(times):.0f} ms (min {min(times):.0f}, max {max(times):.0f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    pages = -(-args.queues // 20)
    with broker_in_thread() as broker:
        connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
        channel = connection.channel()
        start = time.time()
        for i in range(args.queues):
            channel.queue_declare(f"q-{i:06d}")
        connection.close()
        print(f"{args.queues:,} queues declared in {time.time() - start:.0f} s", flush=True)
        base = f"{broker.http_url}/api/queues?page_size=20&columns={COLUMNS}"
        cases = {
            "first page, by name": "&page=1&sort=name",
            f"page {pages // 2:,} of {pages:,}": f"&page={pages // 2}&sort=name",
            "by ready messages, reversed": "&page=1&sort=messages_ready&sort_reverse=true",
            "name filter": "&page=1&sort=name&name=q-0999",
        }
        for label, query in cases.items():
            report(label, [timed_get(base + query) for _ in range(args.rounds)])

        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page()
            page.goto(broker.http_url + "/")
            page.fill("input[name=username]", "guest")
            page.fill("input[name=password]", "guest")
            page.click("button[type=submit]")
            page.wait_for_selector("[data-testid=user]")
            page.evaluate("location.hash = '#/queues'")
            page.wait_for_selector(f"text=page 1 of {pages:,}")
            times = []
            for n in range(2, args.rounds + 2):
                start = time.perf_counter()
                page.get_by_test_id("next").click()
                page.wait_for_selector(f"text=page {n} of {pages:,}")
                times.append((time.perf_counter() - start) * 1000)
            report("browser: click next until the next page shows", times)
            browser.close()


if __name__ == "__main__":
    main()
