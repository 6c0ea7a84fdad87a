"""A target actor's inbox counts what was sent and not yet taken, whichever way it went
in, and a sender that was cancelled or refused leaves nothing counted."""

from __future__ import annotations

import trio
import trio.testing

from oswitch.runtime.inbox import Inbox
from oswitch.runtime.messages import Command, CommandKind


def command() -> Command:
    return Command(kind=CommandKind.PAUSE)


async def test_a_message_handed_to_a_waiting_taker_counts_until_it_is_taken() -> None:
    """A message that goes straight to an actor waiting to take (the channel buffers
    nothing) is counted from the put until the actor has it."""
    inbox = Inbox(4)
    taken: list[object] = []
    counted: list[int] = []

    async def actor() -> None:
        taken.append(await inbox.take())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor)
        await trio.testing.wait_all_tasks_blocked()
        message = command()
        assert await inbox.put(message)
        counted.append(inbox.waiting)  # the actor has not run since
    assert counted == [1]
    assert taken == [message]
    assert inbox.waiting == 0


async def test_messages_are_counted_until_taken_in_the_order_sent() -> None:
    """Buffered messages count until ``take_nowait`` takes them, first in, first out;
    an empty inbox gives None."""
    inbox = Inbox(4)
    first, second = command(), command()
    assert await inbox.put(first)
    assert await inbox.put(second)
    assert inbox.waiting == 2
    assert inbox.take_nowait() is first
    assert inbox.waiting == 1
    assert inbox.take_nowait() is second
    assert inbox.take_nowait() is None
    assert inbox.waiting == 0


async def test_a_sender_cancelled_while_the_inbox_is_full_leaves_nothing_counted(
    autojump_clock: object,
) -> None:
    """A put that waits for room and is cancelled puts nothing in and counts nothing."""
    inbox = Inbox(1)
    assert await inbox.put(command())
    with trio.move_on_after(0.01) as waited:
        await inbox.put(command())
    assert waited.cancelled_caught
    assert inbox.waiting == 1
    assert inbox.take_nowait() is not None
    assert inbox.take_nowait() is None


async def test_a_cancelled_sender_puts_nothing_in() -> None:
    """A put in a scope already cancelled raises Cancelled before anything goes in."""
    inbox = Inbox(4)
    with trio.CancelScope() as scope:
        scope.cancel()
        await inbox.put(command())
    assert scope.cancelled_caught
    assert (inbox.waiting, inbox.take_nowait()) == (0, None)


async def test_once_the_actor_takes_no_more_senders_are_refused() -> None:
    """After ``close_taking`` a put is refused (False) and nothing stays counted; after
    ``close`` what is in can still be taken, then ``take`` gives None."""
    inbox = Inbox(4)
    assert await inbox.put(command())
    inbox.close()
    assert not await inbox.put(command())
    assert await inbox.take() is not None
    assert await inbox.take() is None
    inbox.close_taking()
    assert not await inbox.put(command())
    assert inbox.waiting == 0
