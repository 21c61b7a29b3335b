"""``COPY … FROM STDIN (FORMAT binary)``, encoding the next block while the last one is sent.

The calling thread encodes (the C encoder releases the GIL); a sender thread hands
each block to psycopg's ``copy.write``, which waits on the socket. Between them a
queue of at most ``QUEUE_BLOCKS`` blocks bounds the memory to a few blocks
whatever the input's size (psycopg's own ``QueuedLibpqWriter`` queues up to
1024 pieces, 128 MB, unbounded for our purpose). Any error on either side stops
both (the blocks still queued are dropped, not sent); leaving the ``copy`` block
with it makes psycopg abort the COPY, and the transaction rolls back.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

import psycopg

from ._encode import HEADER, TRAILER, Encoder

#: Blocks queued between the encoder and the sender (each at most ``Encoder.block_bytes``).
QUEUE_BLOCKS = 2
_DONE = object()  # the end of the blocks (never a block: an empty one must not stop the sender)


class _Sender:
    """A thread writing queued blocks into a psycopg ``Copy``; its first error is kept."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._queue: queue.Queue[bytes | object] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self.error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="neon-write-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            block = self._queue.get()
            if block is _DONE:
                return
            if self.error is None and not self._abandoned:
                try:
                    self._copy.write(memoryview(block))  # sliced by psycopg without copies
                except BaseException as exc:  # kept for the encoding thread to raise
                    self.error = exc

    def put(self, block: bytes) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(block)

    def close(self, *, abandon: bool = False) -> None:
        """Wait for every queued block to be sent, or dropped after an error or when ``abandon``
        (the COPY fails anyway: the blocks not yet sent are not worth the wait)."""
        if abandon:
            self._abandoned = True
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
        self._queue.put(_DONE)
        self._thread.join()


def copy_in(cursor: psycopg.Cursor, statement: psycopg.sql.Composable, encoder: Encoder,
            batches: Iterable, progress: Callable[[int, int], None] | None = None) -> int:
    """Stream ``batches`` through ``encoder`` into the COPY ``statement``; returns the bytes sent."""
    sent = 0
    with cursor.copy(statement) as copy:
        sender = _Sender(copy)
        try:
            sender.put(HEADER)
            for batch in batches:
                for block in encoder.blocks(batch):
                    sender.put(block)
                    sent += len(block)
                    if progress is not None:
                        progress(encoder.rows, sent)
            sender.put(TRAILER)
        except BaseException:
            sender.close(abandon=True)
            raise
        sender.close()
        if sender.error is not None:
            raise sender.error
    return sent + len(HEADER) + len(TRAILER)
