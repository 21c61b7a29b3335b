"""Byte relay between a client socket and a server socket.

On Linux the bytes never enter Python: ``os.splice`` moves them through a
kernel pipe, in a thread per direction that holds no interpreter lock while it
waits. Elsewhere a ``recv_into``/``sendall`` loop with a large buffer does it.
"""

from __future__ import annotations

import os
import socket
import threading

_CHUNK = 1 << 20
_F_SETPIPE_SZ = 1031


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


def _one_way(src: socket.socket, dst: socket.socket, done: threading.Event, other_done: threading.Event) -> None:
    try:
        _pump(src, dst)
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


def relay(client: socket.socket, server: socket.socket, name: str = "relay") -> None:
    """Relay both directions in daemon threads; both sockets close when both ends are done."""
    up, down = threading.Event(), threading.Event()
    threading.Thread(target=_one_way, args=(client, server, up, down), name=f"{name}-up", daemon=True).start()
    threading.Thread(target=_one_way, args=(server, client, down, up), name=f"{name}-down", daemon=True).start()
