"""RabbitMQ's definitions JSON in and out of the broker (``rabbitmqctl export_definitions`` /
``import_definitions``, ``--definitions FILE`` at boot, the HTTP API's ``/api/definitions``).

* ``model``: the document read into typed items (problems collected, nothing applied);
* ``importer``: validate everything, then apply in RabbitMQ's order; a report of what was done/skipped;
* ``exporter``: the broker's users, vhosts, permissions, limits and topology in RabbitMQ's shape.
"""

from .exporter import export_definitions
from .importer import ImportReport, PolicySink, import_definitions, read_definitions_file
from .model import DefinitionsError

__all__ = ["DefinitionsError", "ImportReport", "PolicySink", "export_definitions", "import_definitions",
           "read_definitions_file"]
