"""The HTTP front end: RabbitMQ's management API (``/api/...``, docs/management-api.md) and the Prometheus
endpoint (``/metrics``, docs/metrics.md), served on the broker's event loop."""
