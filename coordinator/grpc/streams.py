"""Upload streams that give their session up: when the client stops sending, or its organization starts over.

A ``WriteChunks`` stream holds its session's lock while it lives (one writer at a time). A client that stops
sending without closing its connection (Ctrl-C'd mid-call, frozen, on a dead link) would hold it until the
call's deadline and lock its organization out of its own upload. So each read waits at most
``upload_read_timeout_s`` (then ``UPLOAD_STALLED``), and a new stream of the same organization on a session a
stream holds asks that holder to give it up: the holder ends with ``SESSION_TAKEN_OVER`` once what it received
is durable, and the new stream continues from the durable offsets. Only the session's owner gets this far (the
lock is tried after the ownership check), and a commit is never taken over. Everything here runs on the
server's event loop, so no lock guards it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from protocol.errors import BarFedError
from protocol.v1 import barfed_pb2 as pb


class Holder:
    """One stream's claim: told when another stream takes the session over, and tells when it has let go."""

    def __init__(self) -> None:
        self.taken_over = asyncio.Event()
        self.released = asyncio.Event()


class Holders:
    def __init__(self, read_timeout_s: float) -> None:
        self.read_timeout_s = read_timeout_s
        self._holding: dict[str, Holder] = {}

    async def next_chunk(self, chunks: AsyncIterator[pb.Chunk], holder: Holder) -> pb.Chunk | None:
        """The stream's next chunk (None at its end), unless it stays silent too long or is taken over."""
        reading = asyncio.ensure_future(anext(chunks))
        stopping = asyncio.ensure_future(holder.taken_over.wait())
        try:
            await asyncio.wait((reading, stopping), timeout=self.read_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (reading, stopping):
                waiting.cancel()
        if holder.taken_over.is_set():
            if reading.done() and not reading.cancelled():
                reading.exception()  # a chunk or an error that no longer matters
            raise BarFedError(
                "SESSION_TAKEN_OVER",
                "another upload stream of your organization took this session over; this one ended and what it "
                "sent is kept. Run one `barfed node submit` per package at a time.",
            )
        if not reading.done():
            raise BarFedError(
                "UPLOAD_STALLED",
                f"no chunk arrived for {self.read_timeout_s:g}s, so the stream was ended and its session freed; "
                "ask for the upload's progress and resume from there.",
            )
        try:
            return reading.result()
        except StopAsyncIteration:
            return None

    def hold(self, session_id: str, holder: Holder) -> None:
        self._holding[session_id] = holder

    def release(self, session_id: str, holder: Holder) -> None:
        """``holder``'s stream let the session go (its writer closed: everything received is durable)."""
        if self._holding.get(session_id) is holder:
            del self._holding[session_id]
        holder.released.set()

    async def take_over(self, session_id: str) -> bool:
        """Ask the stream holding ``session_id`` to end; whether it let the session go in time."""
        holder = self._holding.get(str(uuid.UUID(session_id)))
        if holder is None:  # a commit or the expiry sweep holds it, briefly
            return False
        holder.taken_over.set()
        try:
            await asyncio.wait_for(holder.released.wait(), timeout=self.read_timeout_s)
        except TimeoutError:
            return False
        return True
