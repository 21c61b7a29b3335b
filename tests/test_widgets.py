"""The status text and panel, drawn from snapshots built by hand: no database, no session.

A hand-driven feed stands where a session would be: the test sets the snapshot,
says when the state changed, and settles the wake-up's future. A live session
feeding the same views is tested in ``test_widgets_session.py``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from concurrent.futures import Future

import pytest

from neon_notebook import ComputeState, Endpoint
from neon_notebook._status import Endpoints, EndpointSummary, PoolStats, QueryStats, Status
from neon_notebook.ui import widgets
from neon_notebook.ui.status import status_rows, status_text
from neon_notebook.ui.widgets import STATE_COLOURS, status_panel

POOLED = EndpointSummary.of(Endpoint("ep-x-pooler.eu.aws.neon.tech", user="alex", database="app", pooled=True))
DIRECT = EndpointSummary.of(Endpoint("ep-x.eu.aws.neon.tech", user="alex", database="app"))
BASE = Status(ComputeState.UNKNOWN, Endpoints(POOLED, DIRECT),
              pools=(PoolStats("pooled", 5, 0, 0), PoolStats("direct", 5, 0, 0)))


def snapshot(**changes) -> Status:
    return dataclasses.replace(BASE, **changes)


class Feed:
    """What a session would give a panel, driven by the test."""

    def __init__(self, status: Status | None = BASE) -> None:
        self.current = status
        self.listeners: list = []
        self.wakes: list[Future] = []

    def status(self) -> Status | None:
        return self.current

    def observe(self, listener):
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def wake(self) -> Future:
        self.wakes.append(Future())
        return self.wakes[-1]

    def mask(self, text: str) -> str:
        return text.replace("s3cret", "****")

    def push(self, status: Status | None) -> None:
        """A state change: the new snapshot, then the notice."""
        self.current = status
        for listener in list(self.listeners):
            listener()


@pytest.fixture
def panel_of():
    """Panels on hand-driven feeds, closed after the test."""
    made = []

    def make(feed: Feed):
        made.append(status_panel(feed))
        return made[-1]

    yield make
    for panel in made:
        panel.close()


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    return InteractiveShell.instance()


# -- the text ---------------------------------------------------------------------


def test_text_names_both_endpoints_and_the_pools():
    assert status_text(BASE).splitlines() == [
        "Neon compute",
        "  state   unknown",
        "  pooled  alex@ep-x-pooler.eu.aws.neon.tech:5432/app (pooled)",
        "  direct  alex@ep-x.eu.aws.neon.tech:5432/app (direct)",
        "  pools   pooled 0 in use, 0 idle (max 5); direct 0 in use, 0 idle (max 5)",
    ]


def test_one_endpoint_is_shown_once():
    status = snapshot(endpoints=Endpoints(DIRECT, DIRECT), pools=())
    assert status.endpoints.same and str(status.endpoints) == str(DIRECT)
    assert status_rows(status) == [("state", "unknown"), ("endpoint", str(DIRECT))]
    assert not BASE.endpoints.same and str(BASE.endpoints) == f"{POOLED}, {DIRECT}"


def test_ping_and_last_query_rows():
    rows = dict(status_rows(snapshot(ping=0.0123, last_query=QueryStats(2_000, 3_000_000, 0.5))))
    assert rows["ping"] == "12.3 ms"
    assert rows["last query"] == "2,000 rows, 3.0 MB in 0.50 s (4,000 rows/s)"
    one = dict(status_rows(snapshot(last_query=QueryStats(1, 10, 0.0))))
    assert one["last query"] == "1 row, 0.0 MB in 0.00 s (instant)"


def test_a_write_is_shown_as_the_last_write():
    write = QueryStats(1_000_000, 22_000_000, 0.9, write="append into public.t")
    rows = dict(status_rows(snapshot(last_query=write)))
    assert rows["last write"] == "append into public.t: 1,000,000 rows, 22.0 MB in 0.90 s (1,111,111 rows/s)"
    assert "last query" not in rows
    assert "  last write  append into public.t: 1,000,000 rows" in status_text(snapshot(last_query=write))


def test_the_detail_follows_the_state_but_an_error_has_its_own_row():
    waking = snapshot(state=ComputeState.WAKING, detail="connecting to ep-x")
    assert status_rows(waking)[0] == ("state", "waking (connecting to ep-x)")
    error = snapshot(state=ComputeState.ERROR, detail="wrong password", last_error="wrong password")
    rows = status_rows(error)
    assert rows[0] == ("state", "error") and rows[-1] == ("last error", "wrong password")


# -- the panel ---------------------------------------------------------------------


def test_panel_draws_the_snapshot(panel_of):
    panel = panel_of(Feed(snapshot(ping=0.0123)))
    assert STATE_COLOURS[ComputeState.UNKNOWN] in panel.state_html.value
    assert "&#9679; unknown" in panel.state_html.value
    details = panel.details_html.value
    assert "<td" in details and "ping</td>" in details and "12.3 ms" in details
    assert "state</td>" not in details  # the state is the headline, not a detail
    assert not panel.wake_button.disabled
    assert repr(panel) == status_text(snapshot(ping=0.0123))


def test_panel_escapes_what_it_shows(panel_of):
    panel = panel_of(Feed(snapshot(state=ComputeState.ERROR, last_error="<b>no</b> & more")))
    assert "&lt;b&gt;no&lt;/b&gt; &amp; more" in panel.details_html.value
    assert "<b>" not in panel.details_html.value


def test_panel_redraws_on_a_state_change_from_any_thread(panel_of):
    feed = Feed()
    panel = panel_of(feed)
    thread = threading.Thread(target=feed.push, args=(snapshot(state=ComputeState.ACTIVE),))
    thread.start()
    thread.join()
    assert "&#9679; active" in panel.state_html.value
    assert STATE_COLOURS[ComputeState.ACTIVE] in panel.state_html.value
    feed.push(snapshot(state=ComputeState.SUSPENDED, detail="idle longer than the suspend window"))
    assert "suspended (idle longer than the suspend window)" in panel.state_html.value


def test_panel_refreshes_after_each_cell(panel_of, shell):
    feed = Feed()
    panel = panel_of(feed)
    feed.current = snapshot(last_query=QueryStats(2_000, 3_000_000, 0.5))  # no state change: no notice
    assert "last query" not in panel.details_html.value
    shell.run_cell("pass")
    assert "2,000 rows, 3.0 MB in 0.50 s (4,000 rows/s)" in panel.details_html.value


def test_panel_shows_a_write_then_the_next_read(panel_of, shell):
    feed = Feed(snapshot(last_query=QueryStats(3, 120, 0.01, write="replace into s.<t>")))
    panel = panel_of(feed)
    assert "last write</td>" in panel.details_html.value
    assert "replace into s.&lt;t&gt;: 3 rows, 0.0 MB in 0.01 s (300 rows/s)" in panel.details_html.value
    feed.current = snapshot(last_query=QueryStats(2, 10, 0.5))
    shell.run_cell("pass")
    assert "last query</td>" in panel.details_html.value and "last write" not in panel.details_html.value


def test_wake_button_starts_one_warm_up_at_a_time(panel_of):
    feed = Feed()
    panel = panel_of(feed)
    panel.wake_button.click()
    assert len(feed.wakes) == 1 and panel.wake_button.disabled
    panel.wake_button.click()  # still waking: the same warm-up
    assert panel.wake() is feed.wakes[0] and len(feed.wakes) == 1
    feed.current = snapshot(state=ComputeState.ACTIVE, ping=0.002)
    feed.wakes[0].set_result(None)
    assert not panel.wake_button.disabled and "2.0 ms" in panel.details_html.value
    panel.wake_button.click()
    assert len(feed.wakes) == 2


def test_a_failed_wake_up_is_shown_masked_until_the_next(panel_of):
    feed = Feed()
    panel = panel_of(feed)
    panel.wake().set_exception(OSError("pool closed for user alex:s3cret"))
    assert "wake-up failed: pool closed for user alex:****" in panel.details_html.value
    assert "s3cret" not in panel.details_html.value + repr(panel)
    panel.wake()  # a new attempt clears the note
    assert "wake-up failed" not in panel.details_html.value
    feed.current = snapshot(state=ComputeState.ERROR, last_error="the server rejected the password")
    feed.wakes[-1].set_exception(OSError("rejected"))
    assert "wake-up failed" not in panel.details_html.value  # the session's own error says it
    assert "the server rejected the password" in panel.details_html.value


def test_a_closed_session_cannot_be_woken(panel_of):
    panel = panel_of(Feed(snapshot(closed=True, detail="session closed")))
    assert "unknown (session closed)" in panel.state_html.value and panel.wake_button.disabled


def test_a_gone_session_is_said_and_the_panel_unhooks(panel_of, shell):
    feed = Feed()
    panel = panel_of(feed)
    feed.push(None)
    assert "session gone" in panel.state_html.value and panel.wake_button.disabled
    assert "session gone" in repr(panel)
    assert panel._after_cell in shell.events.callbacks["post_run_cell"]
    shell.run_cell("pass")
    assert panel._after_cell not in shell.events.callbacks["post_run_cell"] and not feed.listeners


def test_close_stops_listening(shell):
    feed = Feed()
    panel = status_panel(feed)
    panel.close()
    before = (panel.state_html.value, panel.details_html.value)
    assert not feed.listeners and panel._after_cell not in shell.events.callbacks["post_run_cell"]
    feed.current = snapshot(state=ComputeState.ACTIVE, ping=0.5)
    shell.run_cell("pass")
    assert (panel.state_html.value, panel.details_html.value) == before
    assert panel.comm is None and panel.state_html.comm is None


def test_the_mimebundle_has_the_whole_text(panel_of):
    panel = panel_of(Feed(snapshot(last_error="x" * 200)))
    bundle = panel._repr_mimebundle_()
    assert bundle["text/plain"] == status_text(snapshot(last_error="x" * 200))  # not cut at 110
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.model_id


def test_the_views_need_no_session():
    code = ("import sys\n"
            "from neon_notebook.ui import progress, status, widgets\n"
            "print(','.join(m for m in ('neon_notebook.session', 'ipywidgets', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
    assert widgets.in_notebook() is False  # no kernel here
