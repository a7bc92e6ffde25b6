"""How API requests act on the core: as a user, through a short-lived core session, durably.

RabbitMQ's management plugin performs declares, deletes, bindings, publishes and gets on a "direct"
channel opened as the calling user (rabbit_mgmt_util:direct_request, with_channel), so every permission
check of the AMQP path applies. mailslot does the same: :func:`require` asks the access control exactly
what an AMQP client would be asked, and :func:`direct_session` opens a core session owned by the request
(another connection's exclusive queue stays locked to it) and closes it afterwards, which requeues
anything it left unacknowledged.

A change is answered only once it is durable: :func:`committed` waits for the batch that holds it (the
same group commit AMQP publishers wait on), so a 201/204 means what a publisher confirm means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from ..core.access import Permission, ResourceKind, User
from ..core.broker import OnCommit
from ..core.errors import AccessRefused
from ..core.message import Entry
from ..core.session import Gate, Session
from ..core.vhost import VirtualHost
from .context import ManagementContext
from .errors import not_authorised, not_found


class _NoDeliveries:
    """An API session never consumes; the core never calls these."""

    def deliver_many(self, consumer_tag: str, first_tag: int, entries: list[Entry]) -> None:
        pass

    def consumer_cancelled(self, consumer_tag: str) -> None:
        pass

    def acknowledgement_timed_out(self, timeout_ms: int) -> None:
        pass


def vhost_or_404(ctx: ManagementContext, name: str) -> VirtualHost:
    vhost = ctx.core.vhosts.get(name)
    if vhost is None:
        raise not_found()
    return vhost


def require(
    ctx: ManagementContext, user: User, vhost: str, permission: Permission, kind: ResourceKind, name: str
) -> None:
    """The AMQP permission check for this operation; a refusal is RabbitMQ's 401 "Access refused."."""
    try:
        ctx.access.check(user, vhost, permission, kind, name)
    except AccessRefused:
        raise not_authorised("Access refused.") from None


@contextmanager
def direct_session(ctx: ManagementContext, vhost: VirtualHost) -> Iterator[Session]:
    """A core session for one request; closed (its unacked deliveries requeued) when the block ends."""
    session = ctx.core.open_session(vhost, object(), _NoDeliveries(), Gate())
    try:
        yield session
    finally:
        session.close()
        ctx.core.request_flush()


async def committed(ctx: ManagementContext) -> bool:
    """Wait until everything staged so far is durable (the next group commit); False if the store failed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def landed(ok: bool) -> None:  # called on the loop (the broker finishes batches there)
        if not done.done():
            done.set_result(ok)

    ctx.core.after_commit(OnCommit(landed))
    ctx.core.request_flush()
    return await done
