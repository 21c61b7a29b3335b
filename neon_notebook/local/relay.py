"""Byte relay between a client socket and a server socket.

On Linux the bytes never enter Python: ``os.splice`` moves them through a
kernel pipe, in a thread per direction that holds no interpreter lock while it
waits. Elsewhere a ``recv_into``/``sendall`` loop with a large buffer does it.

A connection under fault injection (``LocalCompute.cut_after``/``latency``)
goes through ``relay_faulty`` instead: a Python loop per direction that holds
each chunk back for the current latency, in order, and whose client socket is a
``TappedSocket`` counting what the client receives and cutting at the limit.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import threading
import time
from typing import Callable

_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031
# Bytes a delayed direction holds at most (a TCP window): reading stops when it
# is full, so a slow reader applies back-pressure and memory stays bounded.
_WINDOW = 4 << 20


def _pump_splice(src: socket.socket, dst: socket.socket) -> None:
    read_end, write_end = os.pipe()
    try:
        try:
            import fcntl
            fcntl.fcntl(write_end, _F_SETPIPE_SZ, _CHUNK)
        except OSError:
            pass
        s, d = src.fileno(), dst.fileno()
        while True:
            n = os.splice(s, write_end, _CHUNK)
            if n == 0:
                return
            while n:
                n -= os.splice(read_end, d, n)
    finally:
        os.close(read_end)
        os.close(write_end)


def _pump_copy(src: socket.socket, dst: socket.socket) -> None:
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while True:
        n = src.recv_into(buf)
        if n == 0:
            return
        dst.sendall(view[:n])


_pump = _pump_splice if hasattr(os, "splice") else _pump_copy


def _waiter(sock: socket.socket) -> Callable[[float | None], bool]:
    """``wait(timeout)``: whether ``sock`` has data or EOF within ``timeout`` s (poll where the
    OS has it: no FD_SETSIZE limit); made once per direction, not per chunk."""
    if not hasattr(select, "poll"):
        return lambda timeout: bool(select.select([sock], [], [], timeout)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return lambda timeout: bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))


def _pump_delayed(src: socket.socket, dst: socket.socket, latency: Callable[[], float]) -> None:
    """Forward each chunk ``latency()`` seconds after it arrived, in order."""
    pending: collections.deque[tuple[float, bytes]] = collections.deque()
    readable = _waiter(src)
    held = 0
    eof = False
    while pending or not eof:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, data = pending.popleft()
            held -= len(data)
            dst.sendall(data)
        wait = pending[0][0] - now if pending else None
        if eof or held >= _WINDOW:
            if wait is not None and wait > 0:
                time.sleep(wait)
            continue
        if readable(wait):
            data = src.recv(_CHUNK)
            if data:
                pending.append((time.monotonic() + latency(), data))
                held += len(data)
            else:
                eof = True


def _one_way(pump: Callable[[], None], src: socket.socket, dst: socket.socket,
             done: threading.Event, other_done: threading.Event) -> None:
    try:
        pump()
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the EOF on, as TCP would
        except OSError:
            pass
        done.set()
        if other_done.is_set():
            src.close()
            dst.close()


def _start(up: Callable[[], None], down: Callable[[], None], client: socket.socket,
           server: socket.socket, name: str) -> None:
    up_done, down_done = threading.Event(), threading.Event()
    threading.Thread(target=_one_way, args=(up, client, server, up_done, down_done),
                     name=f"{name}-up", daemon=True).start()
    threading.Thread(target=_one_way, args=(down, server, client, down_done, up_done),
                     name=f"{name}-down", daemon=True).start()


def relay(client: socket.socket, server: socket.socket, name: str = "relay") -> None:
    """Relay both directions in daemon threads; both sockets close when both ends are done."""
    _start(lambda: _pump(client, server), lambda: _pump(server, client), client, server, name)


def relay_faulty(client: TappedSocket, server: socket.socket, latency: Callable[[], float],
                 name: str = "relay") -> None:
    """``relay`` through Python, each direction delayed by ``latency()``; the tap may cut."""
    client.tap.server = server
    _start(lambda: _pump_delayed(client, server, latency),
           lambda: _pump_delayed(server, client, latency), client, server, name)


class Cut(ConnectionResetError):
    """The connection was cut by fault injection."""


class Tap:
    """What one client connection has received, and where it is cut.

    ``limit`` is the byte count at which to cut (None: never); ``take_cut()``,
    asked when the limit is reached, says whether the cut still applies (a later
    setting, or a spent ``times``, lifts it); ``count(kind, n)`` adds to the
    compute's counters (``tapped_bytes``, ``cuts``).
    """

    def __init__(self, limit: int | None, take_cut: Callable[[], bool],
                 count: Callable[[str, int], None]) -> None:
        self.limit, self.take_cut, self.count = limit, take_cut, count
        self.sent = 0
        self.server: socket.socket | None = None
        self.cut = False
        self._lock = threading.Lock()

    def send(self, sock: socket.socket, data: bytes) -> None:
        """Send ``data`` to the client, or the part that fits under the limit and then cut."""
        with self._lock:
            if self.cut:
                raise Cut("cut by fault injection")
            view = memoryview(data).cast("B")
            cut = False
            if self.limit is not None and self.limit - self.sent <= len(view):
                cut = self.take_cut()
                if cut:
                    view = view[:self.limit - self.sent]
                else:
                    self.limit = None  # disarmed for good: a later setting, or the cuts were spent
            self.sent += len(view)
            self.count("tapped_bytes", len(view))  # before the client can see them
            socket.socket.sendall(sock, view)
            if cut:
                self._cut(sock)
                raise Cut("cut by fault injection")

    def _cut(self, client: socket.socket) -> None:
        """Close both ways at once, as a network cut: the client reads EOF."""
        self.cut = True
        self.count("cuts", 1)  # before the client can see the EOF
        for sock in (client, self.server):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class TappedSocket(socket.socket):
    """A client socket whose every ``sendall`` (the proxy's own messages too) goes through a ``Tap``."""

    tap: Tap

    @classmethod
    def adopt(cls, sock: socket.socket, tap: Tap) -> TappedSocket:
        tapped = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        tapped.tap = tap
        return tapped

    def sendall(self, data, flags: int = 0) -> None:  # type: ignore[override]
        self.tap.send(self, data)
