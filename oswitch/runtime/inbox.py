"""A target actor's inbox: the orders and commands sent to it, in the order sent, and how
many of them it has not taken yet (the load pickers read)."""

from __future__ import annotations

import trio

from oswitch.runtime.messages import AttemptOrder, Command

Message = AttemptOrder | Command


class Inbox:
    """A bounded memory channel with a count of the messages sent and not yet taken.

    The count includes a message handed straight to an actor waiting to receive, which
    the channel's own statistics do not show as buffered: two requests picking in the
    same tick see each other's order either way. Only the actor takes; any task puts.
    """

    __slots__ = ("_receive", "_send", "waiting")

    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel[Message](size)
        self.waiting = 0

    async def put(self, message: Message) -> bool:
        """Put ``message`` in (blocks only while the inbox is full); False once the actor
        takes no more. A cancel point, and a schedule point only when the inbox is full:
        every sender waits for the actor's answer next, and that wait is the schedule
        point (one per round trip, not two). A cancelled sender puts nothing in."""
        await trio.lowlevel.checkpoint_if_cancelled()
        # Counted before it goes in: the actor may take it before this task runs again.
        self.waiting += 1
        try:
            try:
                self._send.send_nowait(message)
            except trio.WouldBlock:
                await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.waiting -= 1
            await trio.lowlevel.checkpoint()  # it may have been refused without waiting
            return False
        except BaseException:
            self.waiting -= 1  # cancelled while the inbox was full: nothing went in
            raise
        return True

    async def take(self) -> Message | None:
        """The next message, waiting for one; None once the inbox is closed and empty."""
        try:
            message = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            await trio.lowlevel.checkpoint()  # the end may come without a wait
            return None
        self.waiting -= 1
        return message

    def take_nowait(self) -> Message | None:
        """The next message if one is in, else None (never waits)."""
        try:
            message = self._receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return None
        self.waiting -= 1
        return message

    def close(self) -> None:
        """Let nothing new in; what is in can still be taken."""
        self._send.close()

    def close_taking(self) -> None:
        """The actor takes no more: senders are refused from now (``put`` is False), and
        whatever is still in is dropped (as the channel drops it)."""
        self._receive.close()
        self.waiting = 0
