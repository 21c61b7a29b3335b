"""A live status panel for a ``Session``: a thin view over the session's own state.

Everything shown comes from one function, :func:`status_rows`, which reads the
session (state, endpoints, ping, pools, last query, last error) and masks any
secret in one place. :func:`status_text` joins those rows for terminals, logs
and the ``text/plain`` part of the notebook output; :func:`status_widget`
renders the same rows with standard ipywidgets (HTML, Button, HBox, VBox), so it
works in JupyterLab, classic Notebook and VS Code with no custom frontend.

The panel redraws when the session reports a state change (observers run on
whatever thread made the change: ipykernel sends widget updates from any
thread), when its own warm-up finishes, and after every cell (IPython's
``post_run_cell``), which catches new pings and query statistics. Closing the
widget stops all three. ipywidgets is imported only when a panel is built.

A panel holds its session weakly: displaying a session must not keep it
alive, or re-running a ``session = nn.connect()`` cell would never free the old
one and its connections. Once the session is gone, the panel says so and, after
the next cell, stops listening.
"""

from __future__ import annotations

import functools
import html
import sys
import threading
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable

from ..errors import NeonError
from .._config import redact, summary
from .._state import ComputeState, StateChange

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

    from ..session import Session

#: Colour of each state in the panel (text and dot).
STATE_COLOURS: dict[ComputeState, str] = {
    ComputeState.ACTIVE: "#2e7d32",  # green
    ComputeState.WAKING: "#ef6c00",  # orange
    ComputeState.SUSPENDED: "#546e7a",  # blue grey
    ComputeState.ERROR: "#c62828",  # red
    ComputeState.UNKNOWN: "#757575",  # grey
}

#: What a panel shows once its session has been garbage-collected.
_GONE_ROWS: list[tuple[str, str]] = [("state", "unknown (session gone: nothing refers to it any more)")]


def _shell() -> Any:
    """The running IPython shell, if any (without importing IPython)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def in_notebook() -> bool:
    """Whether this code runs in a Jupyter kernel, where widgets can render."""
    return getattr(_shell(), "kernel", None) is not None


def mask(session: Session, text: str) -> str:
    """``text`` with the session's password (and other secrets) replaced by ``****``."""
    return redact(text, *session._secrets())


# -- the one summary -----------------------------------------------------------


def _endpoint_rows(session: Session) -> list[tuple[str, str]]:
    pooled, direct = session.settings.pooled, session.settings.direct
    if pooled is not None and direct is not None and pooled != direct:
        return [("pooled", summary(pooled)), ("direct", summary(direct))]
    endpoint = pooled or direct
    return [("endpoint", summary(endpoint))] if endpoint is not None else []


def _pool_text(stats: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{role} {s['in_use']} in use, {s['idle']} idle (max {s['size']})"
                     for role, s in stats.items())


def _query_text(session: Session) -> str | None:
    q = session.last_query
    if q is None:
        return None
    mb = q.bytes / 1e6
    rate = q.rows_per_second
    rate_text = f"{rate:,.0f} rows/s" if rate != float("inf") else "instant"
    rows = f"{q.rows:,} row" + ("" if q.rows == 1 else "s")
    return f"{rows}, {mb:,.1f} MB in {q.seconds:.2f} s ({rate_text})"


def status_rows(session: Session) -> list[tuple[str, str]]:
    """What the status panel and text show, as ``(label, plain text)`` rows, secrets masked.

    The first row is always ``("state", ...)``; rows without a value are left out.
    """
    state = session.state
    detail = session.state_detail
    rows: list[tuple[str, str | None]] = [
        ("state", f"{state}" + (f" ({detail})" if detail and state is not ComputeState.ERROR else "")),
        *_endpoint_rows(session),
        ("ping", f"{session.last_ping * 1e3:.1f} ms" if session.last_ping is not None else None),
        ("pools", _pool_text(session.pool_stats())),
        ("last query", _query_text(session)),
        ("last error", session.last_error),
    ]
    return [(label, mask(session, value)) for label, value in rows if value]


def status_text(session: Session) -> str:
    """The session's status as plain text (terminals, logs, ``text/plain`` output)."""
    return _rows_text(status_rows(session))


def _rows_text(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "Neon compute\n" + "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


# -- the widget ------------------------------------------------------------------


def _state_html(state: ComputeState, rows: list[tuple[str, str]]) -> str:
    colour = STATE_COLOURS[state]
    return (f'<span style="color:{colour};font-weight:bold">&#9679; {html.escape(rows[0][1])}</span>')


def _details_html(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<tr><td style="padding:0 1em 0 0;color:#757575">{html.escape(label)}</td>'
        f'<td style="text-align:left">{html.escape(value)}</td></tr>'
        for label, value in rows[1:]
    )
    return f"<table>{cells}</table>"


@functools.cache
def _panel_class() -> type:
    """``StatusPanel`` (a ``VBox``), defined on first use so ipywidgets loads only then."""
    import ipywidgets as w

    class StatusPanel(w.VBox):
        """Live view of a session, held weakly; ``close()`` stops listening to it."""

        def __init__(self, session: Session) -> None:
            self._session = weakref.ref(session)
            self.state_html = w.HTML()
            self.wake_button = w.Button(description="Wake up", icon="power-off",
                                        tooltip="Wake the compute in the background")
            self.details_html = w.HTML()
            self._top = w.HBox([self.state_html, self.wake_button])
            super().__init__([self._top, self.details_html])
            self._lock = threading.Lock()
            self._warming: Future | None = None
            self._note: str | None = None  # a failed warm-up's message, until the next success
            self.wake_button.on_click(lambda _button: self.wake())
            self._stop: list[Callable[[], None]] = [session.observe(self._on_change)]
            shell = _shell()
            if shell is not None:
                shell.events.register("post_run_cell", self._after_cell)
                self._stop.append(lambda: shell.events.unregister("post_run_cell", self._after_cell))
            self.refresh()

        @property
        def session(self) -> Session | None:
            """The session shown, or None once it has been garbage-collected."""
            return self._session()

        def _on_change(self, change: StateChange) -> None:
            self.refresh()

        def _after_cell(self, result: Any) -> None:
            if self.session is None:  # nothing left to follow: stop listening
                self._unhook()
            self.refresh()

        def _unhook(self) -> None:
            while self._stop:
                self._stop.pop()()

        def wake(self) -> Future:
            """Warm the compute up in the background (the button's action)."""
            session = self.session
            if session is None:
                raise NeonError("this panel's session is gone; display a live session to wake it")
            with self._lock:  # the warm-up thread's first redraw waits for _warming
                start = self._warming is None or self._warming.done()
                if start:
                    self._note = None
                    self._warming = session.warm_up(background=True)
                warming = self._warming
            if start:
                warming.add_done_callback(self._warmed)  # may run at once: outside the lock
            self.refresh()
            return warming

        def _warmed(self, future: Future) -> None:
            exc = future.exception()
            session = self.session
            if exc is not None and session is not None and session.last_error is None:
                self._note = f"wake-up failed: {exc}"
            self.refresh()

        def _rows(self) -> tuple[ComputeState, list[tuple[str, str]], bool]:
            """State, rows and whether the session is closed (or gone), read once."""
            session = self.session
            if session is None:
                return ComputeState.UNKNOWN, list(_GONE_ROWS), True
            rows = status_rows(session)
            if self._note:
                rows.append(("last error", mask(session, self._note)))
            return session.state, rows, session.closed

        def refresh(self) -> None:
            """Redraw from the session's current state (any thread)."""
            state, rows, closed = self._rows()
            with self._lock:
                self.wake_button.disabled = closed or (
                    self._warming is not None and not self._warming.done())
                self.state_html.value = _state_html(state, rows)
                self.details_html.value = _details_html(rows)

        def close(self) -> None:
            self._unhook()
            for child in (self.state_html, self.wake_button, self._top, self.details_html):
                child.close()
            super().close()

        def __repr__(self) -> str:
            return _rows_text(self._rows()[1])

        def _repr_mimebundle_(self, **kwargs: Any) -> dict | None:
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle is not None:
                bundle["text/plain"] = repr(self)  # whole, not cut at 110 chars
            return bundle

    return StatusPanel


def status_widget(session: Session) -> ipywidgets.VBox:
    """A live status panel (an ``ipywidgets.VBox``) for ``session``; ``close()`` it when done."""
    return _panel_class()(session)


_panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_panel(session: Session) -> ipywidgets.VBox:
    """The session's own panel, made on first use: displaying a session again shows it again
    (one model, several views) instead of adding a listener each time."""
    panel = _panels.get(session)
    if panel is None or panel.comm is None:  # a closed widget has no comm
        panel = _panels[session] = status_widget(session)
    return panel


def repr_mimebundle(session: Session) -> dict[str, Any]:
    """The session's display: its live panel in a notebook, always with ``text/plain``."""
    if not in_notebook():
        return {"text/plain": status_text(session)}
    return shared_panel(session)._repr_mimebundle_()
