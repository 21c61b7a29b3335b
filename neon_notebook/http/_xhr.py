"""The HTTP sender under Pyodide: a synchronous ``XMLHttpRequest`` instead of sockets.

Pyodide has no sockets, and the session's API is synchronous, so a request is a
blocking XHR: allowed in web workers, where JupyterLite's and marimo's WASM
kernels run Python (a page's main thread allows it too, without a timeout).
The browser keeps its own connections alive, so there is no pool here. XHR cannot
tell a refused connection from one lost mid-answer (both are a network error),
so every network error is ``LostAnswer``: the caller re-sends only what is safe.
No ``Content-Type`` is sent, as Neon's driver sends none: a browser would need CORS
leave for ``application/json``, which Neon's preflight does not give.
"""

from __future__ import annotations

import time

from ._client import Answer, HttpClient, LostAnswer

__all__ = ["XhrClient"]


class XhrClient(HttpClient):
    """POSTs to one ``/sql`` URL with a blocking ``XMLHttpRequest`` (``HttpClient``'s retries on top)."""

    def post(self, body: bytes, headers: dict[str, str], *, timeout: float | None = None) -> Answer:
        """One request; ``LostAnswer`` if no answer came (it may have run)."""
        from js import XMLHttpRequest  # Pyodide's view of the JS globals
        from pyodide.ffi import JsException, to_js

        xhr = XMLHttpRequest.new()
        xhr.open("POST", self.url, False)
        if timeout:
            try:
                xhr.timeout = max(1, round(timeout * 1000))
            except JsException:  # a page's main thread refuses timeouts on synchronous requests
                pass
        for name, value in headers.items():
            if name.lower() == "content-type":
                continue
            try:
                xhr.setRequestHeader(name, value)
            except JsException:  # the value (a connection string, for one) stays out of the message
                raise ValueError(f"XMLHttpRequest refused the {name} header of the request to {self._host}") \
                    from None
        started = time.perf_counter()
        try:
            xhr.send(to_js(body))  # a Uint8Array copy, in one step
        except JsException as exc:  # NetworkError, TimeoutError: the request may have been sent
            raise LostAnswer(f"the request to {self._host} got no answer: {exc.name}") from None
        if xhr.status == 0:
            raise LostAnswer(f"the request to {self._host} got no answer (a network error)")
        return Answer(xhr.status, xhr.responseText.encode(), time.perf_counter() - started, 1)
