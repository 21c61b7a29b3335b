"""The HTTP sender: keep-alive connections to one ``/sql`` URL, and the ride through a cold start.

One request is one round trip on a kept-alive connection (the first also pays
TCP and TLS). A request that provably did not run -- the connection refused or
reset before it was sent, or the proxy answering that the compute is not
reachable yet -- is sent again with backoff until ``wake_timeout``; one that may
have run is never re-sent here (the caller decides, knowing what the text does).
Stdlib only, so it runs where psycopg cannot.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._protocol import ServerError
from ._errors import is_transient

__all__ = ["Answer", "GaveUp", "HttpClient", "LostAnswer", "NotSent"]

#: Drop a kept-alive connection idle for longer: the server may be closing it as it is
#: reused, and a request lost that way could not be told from one that ran.
_MAX_IDLE = 4.0
_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


class NotSent(OSError):
    """The request never left: no connection could be made (or the proxy refused it before running it)."""


class LostAnswer(OSError):
    """The request was sent but its answer was lost: it may or may not have run."""


class GaveUp(Exception):
    """The compute stayed unreachable until the deadline; nothing ran."""

    def __init__(self, attempts: int, reason: str) -> None:
        super().__init__(reason)
        self.attempts, self.reason = attempts, reason


@dataclass
class Answer:
    status: int
    body: bytes
    seconds: float  # from the request's first byte to the answer's last
    attempts: int


class HttpClient:
    """POSTs to one ``/sql`` URL over a few kept-alive connections, thread-safe."""

    def __init__(self, url: str, *, connect_timeout: float | None, max_idle: float = _MAX_IDLE) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"http_url must be an http:// or https:// URL with a host, got {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path or "/sql"
        self._timeout = connect_timeout
        self._max_idle = max_idle
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- connections ---------------------------------------------------------------
    def _new(self) -> http.client.HTTPConnection:
        if self._https:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise NotSent(f"could not connect to {self._host}: {exc}") from exc
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _take(self) -> http.client.HTTPConnection:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                since, conn = self._idle.pop()
                if now - since <= self._max_idle and not _dropped(conn):
                    return conn
                conn.close()
        return self._new()

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._closed or len(self._idle) >= 4:
                conn.close()
            else:
                self._idle.append((time.monotonic(), conn))

    # -- requests ------------------------------------------------------------------
    def post(self, body: bytes, headers: dict[str, str], *, timeout: float | None = None) -> Answer:
        """One request; ``NotSent`` if it never left, ``LostAnswer`` if its answer was lost."""
        conn = self._take()
        started = time.perf_counter()
        try:
            conn.sock.settimeout(timeout)
            conn.request("POST", self._path, body=body, headers=headers)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LostAnswer(f"the connection to {self._host} was lost while sending: {exc}") from exc
        try:
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LostAnswer(f"the connection to {self._host} was lost before the answer came: "
                             f"{exc or type(exc).__name__}") from exc
        except BaseException:  # Ctrl-C: the socket is mid-answer, unusable; closing it cancels the query
            conn.close()
            raise
        seconds = time.perf_counter() - started
        if response.length is None and not response.chunked and response.status != 204:
            # No Content-Length, not chunked: http.client takes EOF anywhere (even inside the
            # headers) for the end; Neon's proxy always frames its answers, so this one was cut.
            conn.close()
            raise LostAnswer(f"the answer from {self._host} was cut off (no framing)")
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        return Answer(response.status, data, seconds, 1)

    def post_through_wake(self, body: bytes, headers: dict[str, str], *, deadline: float,
                          timeout: float | None = None,
                          on_retry: Callable[[int, str, float], None] | None = None) -> Answer:
        """``post``, re-sent while the compute is not reachable yet (nothing ran), until ``deadline``."""
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = self.post(body, headers, timeout=timeout)
            except NotSent as exc:
                reason = str(exc)
            else:
                if answer.status < 500:
                    answer.attempts = attempt
                    return answer
                from ._protocol import parse

                try:
                    parse(answer.status, answer.body)
                except ServerError as err:
                    if not is_transient(err):
                        answer.attempts = attempt
                        return answer
                    reason = err.message
            delay = _BACKOFF[min(attempt - 1, len(_BACKOFF) - 1)]
            if time.monotonic() + delay > deadline:
                raise GaveUp(attempt, reason)
            if on_retry is not None:
                on_retry(attempt, reason, delay)
            time.sleep(delay)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _, conn in idle:
            conn.close()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether the server closed an idle kept-alive connection (readable now means EOF, or garbage)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
