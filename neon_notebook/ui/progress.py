"""Progress of a read or a write, as reported: ``progress(rows, nbytes, total)``.

For a read, ``total`` is the planner's estimate (it can be wrong either way);
for a write (``kind="write"``) it is the exact row count of the data, when
known. :class:`ProgressBar` keeps the counts and does the arithmetic (rates,
fraction of the total, throttling, how it ended); a view only draws it, as in
tqdm, whose ``notebook.py`` swaps the display and keeps the logic in ``std.py``:

- in a notebook, an ipywidgets ``HBox(HTML, FloatProgress, HTML)``: the bar fills
  towards the total when there is one, and is a full blue "indeterminate" bar
  otherwise; it turns green when done ("done" for a read, "written" for a
  write) and red with "failed" or "interrupted" when it ends with an error;
- on a terminal (stderr is a TTY), one line on stderr redrawn in place;
- in a plain script or a pipe, nothing, unless asked (``enabled=True``).

Why not tqdm (not a dependency today): a read has two counters (rows and bytes)
and an estimate that can be wrong in either direction; tqdm tracks one counter
against a fixed total, and its ``auto`` mode always draws on stderr, where a
script that redirects stderr to a log wants silence. What we would take from it
(the HBox, red on errors, a delay before drawing) is a few lines here.
"""

from __future__ import annotations

import functools
import html
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Literal, Protocol

from ._env import in_notebook

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

#: At most this many redraws per second.
MAX_REDRAWS_PER_SECOND = 10
#: Reads shorter than this draw nothing (like tqdm's ``delay``): no flicker for quick queries.
DEFAULT_DELAY = 0.5
_TEXT_BAR_WIDTH = 20


class View(Protocol):
    def render(self, bar: ProgressBar) -> None: ...


#: What a bar counts: rows read (towards an estimate) or rows written (towards the exact count).
Kind = Literal["read", "write"]
_KINDS = ("read", "write")


class ProgressBar:
    """A ``progress(rows, nbytes, total)`` callable that draws on a view, throttled.

    Use it as a context manager (or call ``close()`` / ``fail()``) so the bar
    ends green on success and red on an error or KeyboardInterrupt.
    """

    def __init__(self, view: View | None, *, total_hint: int | None = None, kind: Kind = "read",
                 delay: float = DEFAULT_DELAY, interval: float = 1 / MAX_REDRAWS_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind= takes 'read' or 'write', got {kind!r}")
        self.view = view
        self.total_hint = total_hint
        self.kind = kind
        self.delay = delay
        self.interval = interval
        self._clock = clock
        self.started = clock()
        self.rows = 0
        self.nbytes = 0
        self.estimate: int | None = None  # the callback's third argument: exact for a write
        #: None while running, then "done", "failed" or "interrupted".
        self.outcome: str | None = None
        self.shown = False
        self.redraws = 0
        self._last_redraw = float("-inf")
        self._lock = threading.Lock()

    # -- what views read -------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self._clock() - self.started

    @property
    def total(self) -> int | None:
        """The row count the bar fills towards: the reported total (a read's estimate), else the hint."""
        total = self.estimate if self.estimate else self.total_hint
        return total if total and total > 0 else None

    @property
    def fraction(self) -> float | None:
        """How full the bar is (0..1), or None when indeterminate."""
        if self.outcome == "done":
            return 1.0
        total = self.total
        return None if total is None else min(1.0, self.rows / total)

    def summary(self) -> str:
        """One line: rows, MB, rates, progress against the total, and how it ended.

        A read's total is "~N estimated"; a write's is exact ("of N rows"), and
        a failed write says how many rows were sent (not kept: a write is all or nothing).
        """
        elapsed = self.elapsed
        mb = self.nbytes / 1e6
        writing = self.kind == "write"
        parts = [self._rows_text(), f"{mb:,.1f} MB"]
        if elapsed > 0:
            parts.append(f"{self.rows / elapsed:,.0f} rows/s, {mb / elapsed:,.1f} MB/s")
        total = self.total
        if total is not None and self.outcome is None:
            parts.append(f"{self.fraction:.0%}" if writing else f"{self.fraction:.0%} of ~{total:,} estimated")
        parts.append(f"{elapsed:.1f} s")
        text = " · ".join(parts)
        outcome = "written" if writing and self.outcome == "done" else self.outcome
        return f"{outcome}: {text}" if outcome else text

    def _rows_text(self) -> str:
        """"1,000 rows"; for a write under way "400 of 1,000 rows", and "... sent" once it failed."""
        if self.kind == "read" or self.outcome == "done":
            return f"{self.rows:,} rows"
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"{self.rows:,}{of} rows" + (" sent" if self.outcome else "")

    def __str__(self) -> str:
        return self.summary()

    # -- what the reader (or writer) calls -----------------------------------------
    def __call__(self, rows: int, nbytes: int, estimate: int | None = None) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.rows, self.nbytes = rows, nbytes
            if estimate is not None:
                self.estimate = estimate
            now = self._clock()
            if now - self.started >= self.delay and now - self._last_redraw >= self.interval:
                self._redraw(now)

    def close(self) -> None:
        """The read or write completed: final redraw (green), if anything was drawn."""
        self._end("done")

    def fail(self, outcome: Literal["failed", "interrupted"] = "failed") -> None:
        """It ended with an error: final redraw in red, if anything was drawn."""
        self._end(outcome)

    def _end(self, outcome: str) -> None:
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome = outcome
            if self.shown:
                self._redraw(self._clock())

    def _redraw(self, now: float) -> None:
        self._last_redraw = now
        if self.view is not None:
            self.shown = True
            self.redraws += 1
            self.view.render(self)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.fail("interrupted")
        else:
            self.fail("failed")


class TextView:
    """One line on a stream (stderr), redrawn in place with a carriage return."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._width = 0

    def render(self, bar: ProgressBar) -> None:
        fraction = bar.fraction
        if fraction is None:
            gauge = ""
        else:
            filled = round(fraction * _TEXT_BAR_WIDTH)
            gauge = "[" + "#" * filled + "-" * (_TEXT_BAR_WIDTH - filled) + "] "
        line = gauge + bar.summary()
        pad = " " * max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + pad + ("\n" if bar.outcome else ""))
        self.stream.flush()


_BAR_STYLES = {None: "", "done": "success", "failed": "danger", "interrupted": "danger"}


class WidgetView:
    """``HBox(HTML label, FloatProgress, HTML summary)``, displayed on first render."""

    def __init__(self, label: str = "reading") -> None:
        self.label = label
        self.box: Any = None

    def render(self, bar: ProgressBar) -> None:
        if self.box is None:
            from IPython.display import display

            self.box = _box_class()(bar, self.label)
            display(self.box)
        self.box.update()


@functools.cache
def _box_class() -> type:
    """``ProgressBox`` (an ``HBox``), defined on first use so ipywidgets loads only then."""
    import ipywidgets as w

    class ProgressBox(w.HBox):
        """The bar's widgets; ``text/plain`` is the bar's summary line (as tqdm's TqdmHBox)."""

        def __init__(self, bar: ProgressBar, label: str) -> None:
            self.bar = bar
            self.label = w.HTML(html.escape(label))  # a table's name can hold any character
            self.gauge = w.FloatProgress(min=0.0, max=1.0)
            self.text = w.HTML()
            super().__init__([self.label, self.gauge, self.text])

        def update(self) -> None:
            bar = self.bar
            fraction = bar.fraction
            with self.gauge.hold_sync():
                self.gauge.value = 1.0 if fraction is None else fraction
                style = _BAR_STYLES[bar.outcome]
                self.gauge.bar_style = style or ("info" if fraction is None else "")
            self.text.value = bar.summary()

        def __repr__(self) -> str:
            return self.bar.summary()

    return ProgressBox


def progress_bar(enabled: bool | Literal["auto"] = "auto", total_hint: int | None = None, *,
                 label: str | None = None, kind: Kind = "read", delay: float = DEFAULT_DELAY) -> ProgressBar:
    """A ``progress(rows, nbytes, total)`` callable for a read or a write; use it in a ``with``.

    ``enabled="auto"``: a widget in a notebook, a text line when stderr is a
    terminal, nothing otherwise. ``True``: a widget in a notebook, else text on
    stderr. ``False``: nothing. ``total_hint`` is the row count to fill
    towards when the callback gives no total. ``kind="write"``: the total is
    exact and the bar says "written"; ``label`` defaults to "reading" or "writing".
    """
    view: View | None
    if enabled is False:
        view = None
    elif in_notebook():
        view = WidgetView(label or ("writing" if kind == "write" else "reading"))
    elif enabled is True or sys.stderr.isatty():
        view = TextView(sys.stderr)
    else:
        view = None
    return ProgressBar(view, total_hint=total_hint, kind=kind, delay=delay)
