"""The HTTP management front end: for now a read-only JSON API (``/api/overview``, ``/api/queues``,
see docs/http.md) served on the broker's event loop; later the full management API and dashboard."""
