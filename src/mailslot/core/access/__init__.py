"""Access control: users, vhosts, permissions, topic permissions and limits, RabbitMQ's model.

Front ends code against :class:`AccessControl` (interface.py) and the per-connection
:class:`~mailslot.core.access.authorizer.Authorizer`; administrators change things through
:class:`~mailslot.core.access.admin.AccessAdmin`. Modules:

* ``interface``: the protocol every front end asks (authenticate / vhost_allowed / check), ``User``;
* ``passwords``: RabbitMQ-compatible salted hashes; ``patterns``: permission regexes in linear time;
* ``users``, ``vhosts``, ``permissions``, ``limits``: the records, each written through to the store;
* ``control``: logins, vhost admission, checks; ``authorizer``: one connection's cached rights;
* ``admin``: runtime changes and their consequences; ``throttle``: failed-login slow-down.
"""

from .interface import KNOWN_TAGS, AccessControl, Permission, ResourceKind, User, is_loopback

__all__ = ["KNOWN_TAGS", "AccessControl", "Permission", "ResourceKind", "User", "is_loopback"]
