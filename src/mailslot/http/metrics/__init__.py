"""The Prometheus endpoint: rabbitmq_prometheus's families read from the broker at scrape time."""
