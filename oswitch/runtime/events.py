"""A switcher's event feed: every audit event, to the log and to live subscribers.

Subscribers (the control channel's ``subscribe``, a dashboard) each get a small
bounded channel. Emitting never waits: a subscriber whose buffer is full is
dropped (its channel closed) rather than allowed to slow routing down. String
fields are clipped (model names and request ids are the callers' choice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from oswitch.audit import audit, audit_log
from oswitch.core.clip import MAX_TEXT_CHARS, clip

# The default number of events a subscriber may fall behind before it is dropped.
SUBSCRIBER_BUFFER = 256


@attrs.frozen(kw_only=True)
class Event:
    """One audit event: its name, the trio time it happened and its fields."""

    name: str
    at: float
    fields: dict[str, Any]


@attrs.define
class _Subscriber:
    send: trio.MemorySendChannel[Event]
    topics: frozenset[str] | None
    dropped: bool = False


# Which subscription topic each event belongs to.
TOPIC_OF_EVENT = {
    "attempt": "audit",
    "fallback": "audit",
    "hedge": "audit",
    "request_failed": "audit",
    "request_cancelled": "audit",
    "overloaded": "audit",
    "backpressure": "audit",
    "backpressure_cleared": "audit",
    "config_reloaded": "targets",
    "breaker": "targets",
    "target_state": "targets",
    "target_condition": "targets",
}
TOPICS = frozenset(TOPIC_OF_EVENT.values())


class EventHub:
    """Fans events out to the audit log and to every live subscriber."""

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Call ``listener(name, fields)`` synchronously for every event (metrics).

        Listeners must be quick and must not raise; they run inside routing.
        """
        self._listeners.append(listener)

    @property
    def heard(self) -> bool:
        """Whether an event emitted now reaches anyone: a listener (metrics), a
        subscriber, or the audit log (enabled for INFO). A caller may skip building
        the fields of an event nobody hears; emitting it would change nothing."""
        return bool(self._listeners or self._subscribers) or audit_log.isEnabledFor(logging.INFO)

    def emit(self, name: str, **fields: Any) -> None:
        """Log ``name`` to ``oswitch.audit`` and hand it to subscribers; never blocks.

        A string field longer than ``MAX_TEXT_CHARS`` is clipped first."""
        for key, value in fields.items():
            if type(value) is str and len(value) > MAX_TEXT_CHARS:
                fields[key] = clip(value, MAX_TEXT_CHARS)
        if audit_log.isEnabledFor(logging.INFO):  # else audit() would copy the fields first
            audit(name, **fields)
        for listener in self._listeners:
            listener(name, fields)
        if not self._subscribers:
            return
        topic = TOPIC_OF_EVENT.get(name, "audit")
        event = Event(name=name, at=trio.current_time(), fields=fields)
        for subscriber in list(self._subscribers):
            if subscriber.topics is not None and topic not in subscriber.topics:
                continue
            try:
                subscriber.send.send_nowait(event)
            except trio.WouldBlock:
                # Too slow: drop it rather than slow the engine or buffer without bound.
                subscriber.dropped = True
                subscriber.send.close()
                self._subscribers.remove(subscriber)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The subscriber closed its end: it is gone.
                self._subscribers.remove(subscriber)

    @contextmanager
    def subscribe(
        self, topics: frozenset[str] | None = None, *, buffer: int = SUBSCRIBER_BUFFER
    ) -> Iterator[trio.MemoryReceiveChannel[Event]]:
        """Receive events (of ``topics``, or all) while the ``with`` block runs.

        The channel ends (``EndOfChannel``) if the subscriber falls more than
        ``buffer`` events behind; the block's exit unsubscribes.
        """
        send, receive = trio.open_memory_channel[Event](buffer)
        subscriber = _Subscriber(send=send, topics=topics)
        self._subscribers.append(subscriber)
        try:
            yield receive
        finally:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            send.close()
            receive.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)
