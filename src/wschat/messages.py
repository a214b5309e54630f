"""A chat message's path: numbered, kept, then delivered.

Imports: anyio and the standard library (core layer).

The :class:`~wschat.manager.ConnectionManager` publishes through one
:class:`MessagePath`: it sets a message's server-owned fields (``id``, ``ts``), has
the history store number and keep it when history is on, and hands the frame to the
manager's delivery (this process's members, and the other processes through a shared
backplane). With a store that awaits it waits for the store's answer, waits a little
more for an append the store received but did not answer (``PublishInDoubt``), and
with a store that publishes in its append (``RedisHistoryStore`` beside a backplane)
it queues a sender's messages in order before their answers come (:meth:`submit`).

The manager tells the path what changes when it starts and stops (:meth:`use`): the
delivery, the history in use, whether it is clustered, the task group for appends in
doubt. The manager's public methods (``publish``, ``publish_nowait``, ``submit``, ...)
document the behaviour; the path does the work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

import anyio.abc

from .backplane.envelope import KIND_MESSAGE, envelope, room_channel
from .connection import Connection
from .delivery import Delivery
from .errors import ConfigurationError, NotSent, PublishInDoubt
from .history.base import PendingAppend, Stored
from .history.template import FrameTemplate, encode_message_template
from .ids import ChatId, IdSource
from .protocol import JSON, Published, encode_message, encode_resync
from .scrollback import Scrollback

__all__ = [
    "NO_ORIGIN",
    "SENT_LATE_DETAIL",
    "MessagePath",
    "Submitted",
]

log = logging.getLogger("wschat")

#: The envelope head of a message a store publishes for the manager: no origin,
#: so every process delivers it from its subscription, the sender's included.
NO_ORIGIN: Final = envelope(KIND_MESSAGE, b"", "")

#: The resync members get when a message in doubt was stored after all.
SENT_LATE_DETAIL: Final = (
    "a message was stored after the history store stopped answering for a while; "
    "messages may have been missed: load history after your last offset"
)


class MessagePath:
    """Numbers, keeps and delivers a manager's chat messages.

    Args:
        node_id: The manager's node id (message ids are ``m<node>-<n>``).
        delivery: Where frames go until :meth:`use` says otherwise.
        history: The scrollback in use (None: history off).
        resync_local: Puts a frame into every local member's outbox of a room
            (``ConnectionManager.broadcast_local``): the ``resync`` of a message
            stored after its sender was told it may not be.
    """

    __slots__ = (
        "_clustered",
        "_delivery",
        "_history",
        "_ids",
        "_resync_local",
        "_tasks",
        "count",
    )

    def __init__(
        self,
        node_id: str,
        delivery: Delivery,
        history: Scrollback | None,
        resync_local: Callable[[ChatId, str], object],
    ) -> None:
        self._ids = IdSource("m" + node_id)
        self._delivery = delivery
        self._history = history
        self._clustered = False
        self._tasks: anyio.abc.TaskGroup | None = None
        self._resync_local = resync_local
        #: Messages published (the manager's ``stats().messages``).
        self.count = 0

    def use(
        self,
        delivery: Delivery,
        history: Scrollback | None,
        *,
        clustered: bool,
    ) -> None:
        """The manager started or stopped running with a shared backplane."""
        self._delivery = delivery
        self._history = history
        self._clustered = clustered

    def run_tasks(self, tasks: anyio.abc.TaskGroup | None) -> None:
        """Where appends in doubt are settled (None while the manager is stopped)."""
        self._tasks = tasks

    def message_frame(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> str:
        """``ConnectionManager.message_frame``."""
        return encode_message(
            id=self._ids.next(),
            chat_id=sender.chat_id,
            user=sender.user_id,
            body=body,
            ts=int(time.time() * 1000),
            client_id=client_id,
        )

    def publish_nowait(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> int:
        """``ConnectionManager.publish_nowait``."""
        history = self._history
        if history is None:
            self.count += 1
            return self._delivery.publish(
                sender, self.message_frame(sender, body, client_id)
            )
        if not history.sync:
            raise _awaited_store(history.name)
        _, _, template = self._template(sender, body, client_id)
        stored = history.append_nowait(sender.chat_id, template)
        self.count += 1
        return self._delivery.publish(sender, stored.frame)

    def _template(
        self, sender: Connection, body: JSON, client_id: str | None
    ) -> tuple[str, int, FrameTemplate]:
        id = self._ids.next()
        ts = int(time.time() * 1000)
        template = encode_message_template(
            id=id,
            chat_id=sender.chat_id,
            user=sender.user_id,
            body=body,
            ts=ts,
            client_id=client_id,
        )
        return id, ts, template

    def publish_message_nowait(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Published:
        """``ConnectionManager.publish_message_nowait``."""
        history = self._history
        chat_id = sender.chat_id
        if history is None:
            id = self._ids.next()
            ts = int(time.time() * 1000)
            frame = encode_message(
                id=id,
                chat_id=chat_id,
                user=sender.user_id,
                body=body,
                ts=ts,
                client_id=client_id,
            )
            self.count += 1
            self._delivery.publish(sender, frame)
            return Published(
                id, chat_id, sender.user_id, body, ts, client_id, None, None, frame
            )
        if not history.sync:
            raise _awaited_store(history.name)
        id, ts, template = self._template(sender, body, client_id)
        offset, epoch, frame = history.append_nowait(chat_id, template)
        self.count += 1
        self._delivery.publish(sender, frame)
        return Published(
            id, chat_id, sender.user_id, body, ts, client_id, offset, epoch, frame
        )

    async def publish(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Published:
        """``ConnectionManager.publish``."""
        history = self._history
        if history is None or history.sync:
            return self.publish_message_nowait(sender, body, client_id)
        chat_id = sender.chat_id
        id, ts, template = self._template(sender, body, client_id)
        # With a shared backplane and a store that publishes in its append, the
        # store publishes the message with no origin: every process, this one
        # included, delivers it from its subscription, so every member gets the
        # room's messages in offset order (our own call's answer may come after
        # the next message published by another process).
        publishes = self._clustered and history.publishes
        try:
            if publishes:
                stored = await history.append_and_publish(
                    chat_id, template, room_channel(chat_id), NO_ORIGIN
                )
            else:
                stored = await history.append(chat_id, template)
        except PublishInDoubt as doubt:
            # Received but unanswered: maybe stored (and published), maybe not.
            # Wait a little for the answer. Stored later: a publishing store's
            # message reaches every member from the subscription, in order; an
            # append alone reached nobody: our members get a resync.
            late = None if publishes else partial(self._sent_late, chat_id)
            stored = await history.settle(doubt, id, late, self._tasks)
        except Exception as exc:
            history.failed("append", exc)
            raise NotSent() from None
        self.count += 1
        if not publishes:
            self._delivery.publish(sender, stored.frame)
        return Published(
            id,
            chat_id,
            sender.user_id,
            body,
            ts,
            client_id,
            stored.offset,
            stored.epoch,
            stored.frame,
        )

    @property
    def pipelined(self) -> bool:
        """``ConnectionManager.history_pipelined``: whether :meth:`submit` can be
        used."""
        history = self._history
        return history is not None and history.submits and self._clustered

    def submit(
        self, sender: Connection, body: JSON, client_id: str | None = None
    ) -> Submitted:
        """``ConnectionManager.submit``."""
        history = self._history
        if history is None or not history.submits or not self._clustered:
            raise ConfigurationError(
                "submit() needs a shared backplane and a history store with "
                "submit_and_publish (RedisHistoryStore): use `await publish(...)`"
            )
        chat_id = sender.chat_id
        id, ts, template = self._template(sender, body, client_id)
        submitted = Submitted(self._submitted, history, sender, id, ts, body, client_id)
        try:
            submitted.pending = history.submit_and_publish(
                chat_id, template, room_channel(chat_id), NO_ORIGIN
            )
        except Exception as exc:
            # Not queued (an earlier append is unanswered): told in its turn.
            history.failed("append", exc)
        return submitted

    async def _submitted(self, submitted: Submitted) -> Published:
        """The answer to a :meth:`submit`: as :meth:`publish` after its append."""
        pending = submitted.pending
        if pending is None:
            raise NotSent()
        history = submitted.history
        try:
            stored = await pending.result()
        except PublishInDoubt as doubt:
            stored = await history.settle(doubt, submitted.id, None, self._tasks)
        except Exception as exc:
            history.failed("append", exc)
            raise NotSent() from None
        self.count += 1
        sender = submitted.sender
        return Published(
            submitted.id,
            sender.chat_id,
            sender.user_id,
            submitted.body,
            submitted.ts,
            submitted.client_id,
            stored.offset,
            stored.epoch,
            stored.frame,
        )

    def _sent_late(self, chat_id: ChatId, stored: Stored) -> None:
        """A message in doubt was stored (not sent) after its sender was told it
        may not be: it reached nobody live; this process's members resync."""
        log.warning(
            "wschat: a message the history store did not answer in time was stored "
            "later (%s, offset %d); this server's members of the room get a resync",
            chat_id,
            stored.offset,
        )
        self._resync_local(chat_id, encode_resync(chat_id, SENT_LATE_DETAIL))


class Submitted:
    """A message ``ConnectionManager.submit`` handed to the history store.

    Its outcome is read once, with :meth:`result`; or :meth:`cancel` says nobody
    will read it.
    """

    __slots__ = (
        "body",
        "client_id",
        "finish",
        "history",
        "id",
        "pending",
        "sender",
        "ts",
    )

    def __init__(
        self,
        finish: Callable[[Submitted], Awaitable[Published]],
        history: Scrollback,
        sender: Connection,
        id: str,
        ts: int,
        body: JSON,
        client_id: str | None,
    ) -> None:
        self.finish = finish
        self.history = history
        self.sender = sender
        self.id = id
        self.ts = ts
        self.body = body
        self.client_id = client_id
        #: The store's pending append; None if the store refused it at once.
        self.pending: PendingAppend | None = None

    async def result(self) -> Published:
        """Wait for the store: the message as it was sent.

        Raises:
            NotSent: The store did not store the message: nobody got it.
            DeliveryInDoubt: The store did not say in time whether it stored it.
        """
        return await self.finish(self)

    def cancel(self) -> None:
        """Nobody will read the outcome: if not sent to the store yet, it never is;
        if sent, it is published as usual."""
        if self.pending is not None:
            self.pending.cancel()


def _awaited_store(name: str) -> ConfigurationError:
    """The error of a ``*_nowait`` publish with a store that awaits."""
    return ConfigurationError(
        f"the {name} history store awaits: use `await manager.publish(...)`, "
        "not publish_nowait()"
    )
