"""A live status panel: standard ipywidgets drawing a session's ``Status`` snapshots.

The panel follows a :class:`Feed`: a snapshot on demand, a notice when the
session's state changes, and the wake-up action. It draws the same rows as the
status text (``ui/status.py``) with HTML, Button, HBox and VBox, so it works in
JupyterLab, classic Notebook and VS Code with no custom frontend; ipywidgets is
imported only when a panel is built. Tests feed it snapshots built by hand.

It redraws when the state changes (observers run on whatever thread made the
change: ipykernel sends widget updates from any thread), when its own warm-up
finishes, and after every cell (IPython's ``post_run_cell``), which catches new
pings and query statistics. Closing the widget stops all three.

A session's feed (:class:`SessionFeed`) holds the session weakly: displaying a
session must not keep it alive, or re-running a ``session = nn.connect()`` cell
would never free the old one and its connections. Once the session is gone, the
panel says so and, after the next cell, stops listening.
"""

from __future__ import annotations

import functools
import html
import threading
import weakref
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import NeonError
from .._state import ComputeState
from .._status import Status
from ._env import in_notebook, shell
from .status import GONE_ROWS, Row, rows_text, status_rows, status_text

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


class Feed(Protocol):
    """What a panel follows."""

    def status(self) -> Status | None:
        """The current snapshot, or None once the session is gone."""

    def observe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` on every state change, from any thread; returns an unsubscribe."""

    def wake(self) -> Future:
        """Start warming the compute up in the background."""

    def mask(self, text: str) -> str:
        """``text`` with the session's secrets masked (a failed warm-up's message)."""


class SessionFeed:
    """A session's feed, holding it weakly: nothing here keeps the session alive."""

    def __init__(self, session: Session) -> None:
        self._session = weakref.ref(session)

    @property
    def session(self) -> Session | None:
        """The session followed, or None once it has been garbage-collected."""
        return self._session()

    def status(self) -> Status | None:
        session = self._session()
        return None if session is None else session.status()

    def observe(self, listener: Callable[[], None]) -> Callable[[], None]:
        session = self._session()
        if session is None:
            return lambda: None
        return session.observe(lambda change: listener())  # holds the listener, not the session

    def wake(self) -> Future:
        session = self._session()
        if session is None:
            raise NeonError("this panel's session is gone; display a live session to wake it")
        return session.warm_up(background=True)

    def mask(self, text: str) -> str:
        session = self._session()
        return text if session is None else session._redact(text)


def _state_html(state: ComputeState, rows: list[Row]) -> str:
    colour = STATE_COLOURS[state]
    return f'<span style="color:{colour};font-weight:bold">&#9679; {html.escape(rows[0][1])}</span>'


def _details_html(rows: list[Row]) -> str:
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
        """Live view of a feed; ``close()`` stops listening to it."""

        def __init__(self, feed: Feed) -> None:
            self.feed = feed
            self.state_html = w.HTML()
            self.wake_button = w.Button(description="Wake up", icon="power-off",
                                        tooltip="Wake the compute in the background")
            self.details_html = w.HTML()
            self._top = w.HBox([self.state_html, self.wake_button])
            super().__init__([self._top, self.details_html])
            self._lock = threading.Lock()
            self._warming: Future | None = None
            self._note: str | None = None  # a failed warm-up's message, until the next wake-up
            self.wake_button.on_click(lambda _button: self.wake())
            self._stop: list[Callable[[], None]] = [feed.observe(self.refresh)]
            ipython = shell()
            if ipython is not None:
                ipython.events.register("post_run_cell", self._after_cell)
                self._stop.append(lambda: ipython.events.unregister("post_run_cell", self._after_cell))
            self.refresh()

        def _after_cell(self, result: Any) -> None:
            if self._draw() is None:  # the session is gone: nothing left to follow
                self._unhook()

        def _unhook(self) -> None:
            while self._stop:
                self._stop.pop()()

        def wake(self) -> Future:
            """Warm the compute up in the background (the button's action)."""
            with self._lock:  # the warm-up thread's first redraw waits for _warming
                start = self._warming is None or self._warming.done()
                if start:
                    self._note = None
                    self._warming = self.feed.wake()
                warming = self._warming
            if start:
                warming.add_done_callback(self._warmed)  # may run at once: outside the lock
            self.refresh()
            return warming

        def _warmed(self, future: Future) -> None:
            exc = future.exception()
            status = self.feed.status()
            if exc is not None and status is not None and status.last_error is None:
                self._note = self.feed.mask(f"wake-up failed: {exc}")
            self.refresh()

        def _rows(self, status: Status | None) -> list[Row]:
            if status is None:
                return list(GONE_ROWS)
            rows = status_rows(status)
            if self._note:
                rows.append(("last error", self._note))
            return rows

        def refresh(self) -> None:
            """Redraw from a new snapshot (any thread)."""
            self._draw()

        def _draw(self) -> Status | None:
            """Take one snapshot, draw it, and return it (None: the session is gone)."""
            status = self.feed.status()
            rows = self._rows(status)
            with self._lock:
                self.wake_button.disabled = status is None or status.closed or (
                    self._warming is not None and not self._warming.done())
                self.state_html.value = _state_html(status.state if status else ComputeState.UNKNOWN, rows)
                self.details_html.value = _details_html(rows)
            return status

        def close(self) -> None:
            self._unhook()
            for child in (self.state_html, self.wake_button, self._top, self.details_html):
                child.close()
            super().close()

        def __repr__(self) -> str:
            return rows_text(self._rows(self.feed.status()))

        def _repr_mimebundle_(self, **kwargs: Any) -> dict | None:
            bundle = super()._repr_mimebundle_(**kwargs)
            if bundle is not None:
                bundle["text/plain"] = repr(self)  # whole, not cut at 110 chars
            return bundle

    return StatusPanel


def status_panel(feed: Feed) -> ipywidgets.VBox:
    """A live panel (an ``ipywidgets.VBox``) following ``feed``; ``close()`` it when done."""
    return _panel_class()(feed)


def status_widget(session: Session) -> ipywidgets.VBox:
    """A live status panel for ``session``, which it holds weakly; ``close()`` it when done."""
    return status_panel(SessionFeed(session))


_panels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a session -> its shared panel


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
        return {"text/plain": status_text(session.status())}
    return shared_panel(session)._repr_mimebundle_()
