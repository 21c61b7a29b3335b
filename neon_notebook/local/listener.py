"""One loopback TCP listener of the local compute's proxy: accept, a thread per connection, close.

The PostgreSQL endpoints (``daemon.Endpoint``) and the HTTP/WebSocket one
(``httpd.HttpEndpoint``) differ only in what they do with a connection (``_handle``).
"""

from __future__ import annotations

import socket
import threading

__all__ = ["Listener"]


class Listener:
    """Listens on 127.0.0.1 (an ephemeral port) and hands each connection to ``_handle`` in a thread."""

    name = "listener"

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self.sock.getsockname()[1]

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return  # listener closed
            threading.Thread(target=self._handle, args=(client,), daemon=True,
                             name=f"{self.name}-conn").start()

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
