"""A real session's ``status()`` feeds the panel and the text: against a real local compute.

The views themselves are tested on snapshots built by hand, without a server,
in ``test_widgets.py``; these check that a live session's snapshots, state
changes, warm-ups and garbage collection reach them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import neon_notebook as nn
from neon_notebook.ui import widgets
from neon_notebook._status import QueryStats
from neon_notebook.ui.status import status_text
from neon_notebook.ui.widgets import STATE_COLOURS, repr_mimebundle, status_widget


def password_of(url: str) -> str:
    return urlsplit(url).password


def session_for(compute, **kwargs):
    kwargs.setdefault("suspend_after", None)
    return nn.connect(compute.env()["DATABASE_URL"], direct_url=compute.direct_url, **kwargs)


@pytest.fixture
def closing():
    """Close what a test registers, panels first."""
    things = []
    yield things.append
    for thing in reversed(things):
        thing.close()


def widget_strings(widget) -> str:
    """Every synced value of a widget tree (value, description, tooltip...), as JSON."""
    state = json.dumps(widget.get_state(), default=str)
    children = getattr(widget, "children", ())
    return state + "".join(widget_strings(child) for child in children)


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_text_names_endpoints_and_pools_never_the_password(compute, closing):
    session = session_for(compute)
    closing(session)
    text = status_text(session.status())
    host = urlsplit(compute.direct_url).hostname
    assert text.splitlines()[1].split() == ["state", "unknown"]
    assert re.search(rf"pooled +postgres@{host}:\d+/postgres \(pooled\)", text)
    assert re.search(rf"direct +postgres@{host}:\d+/postgres \(direct\)", text)
    assert "pooled 0 in use, 0 idle (max" in text
    assert "ping" not in text and "last query" not in text  # nothing measured yet
    assert password_of(compute.direct_url) not in text


def test_wake_button_shows_waking_then_active(make_compute, closing):
    c = make_compute(suspend_after=None, activation_delay=1.0)
    session = session_for(c)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    seen, threads = [], set()

    def record(change):
        seen.append((change.new, panel.wake_button.disabled))
        threads.add(threading.current_thread().name)

    panel.state_html.observe(record, "value")
    assert "unknown" in panel.state_html.value
    panel.wake_button.click()
    wait_for(lambda: "active" in panel.state_html.value and "ping" in panel.details_html.value)
    states = [re.search(r"&#9679; (\w+)", value).group(1) for value, _ in seen]
    assert states.index("waking") < states.index("active")
    assert seen[states.index("waking")][1] is True  # the button is off while waking
    assert "neon-warm-up" in threads  # updates arrived from the warm-up thread
    assert STATE_COLOURS[nn.ComputeState.ACTIVE] in panel.state_html.value
    assert re.search(r"ping</td><td[^>]*>\d+\.\d ms", panel.details_html.value)
    assert "pooled 0 in use, 1 idle (max" in panel.details_html.value
    wait_for(lambda: not panel.wake_button.disabled)


def test_panel_follows_suspension_and_errors(make_compute, closing):
    c = make_compute(suspend_after=None, start_active=True)
    session = session_for(c)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    session.warm_up()
    assert "active" in panel.state_html.value
    with pytest.raises(psycopg.OperationalError):
        with session.direct() as conn:
            c.suspend()
            conn.execute("select 1")
    assert "suspended" in panel.state_html.value
    assert STATE_COLOURS[nn.ComputeState.SUSPENDED] in panel.state_html.value


def test_error_state_shows_plain_words_and_no_password(compute, closing):
    parts = urlsplit(compute.direct_url)
    wrong = "not-the-Passw0rd"
    url = urlunsplit(parts._replace(netloc=f"postgres:{wrong}@{parts.hostname}:{parts.port}"))
    session = nn.connect(url, suspend_after=None)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    with pytest.raises(nn.PermanentConnectError):
        session.warm_up()
    assert "error" in panel.state_html.value
    assert STATE_COLOURS[nn.ComputeState.ERROR] in panel.state_html.value
    assert "rejected the user name or password" in panel.details_html.value
    everything = (widget_strings(panel) + status_text(session.status()) + repr(session.status())
                  + json.dumps(repr_mimebundle(session)))
    assert wrong not in everything
    assert "rejected the user name or password" in status_text(session.status())


def test_no_password_anywhere_in_a_live_panel(compute, closing):
    session = session_for(compute)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    panel.wake().result(timeout=20)
    session.read_arrow("select 1")
    panel.refresh()
    assert "1 row, " in panel.details_html.value
    everything = widget_strings(panel) + repr(panel) + status_text(session.status()) + repr(session.status())
    for url in (compute.direct_url, compute.pooled_url):
        assert password_of(url) not in everything


def test_last_query_and_ping_refresh_after_each_cell(compute, closing):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    session = session_for(compute)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    session.last_ping = 0.0123
    session.last_query = QueryStats(2_000, 3_000_000, 0.5)
    shell.run_cell("pass")
    assert "12.3 ms" in panel.details_html.value
    assert "2,000 rows, 3.0 MB in 0.50 s (4,000 rows/s)" in panel.details_html.value


def test_a_write_shows_in_the_panel_after_its_cell_until_the_next_read(compute, closing):
    import uuid

    import pyarrow as pa
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    name = f"w_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(compute.direct_url, autocommit=True) as conn:
        conn.execute(f"create table {name} (id int4, label text)")
    session = session_for(compute)
    closing(session)
    panel = status_widget(session)
    closing(panel)
    try:
        assert session.write(pa.table({"id": pa.array([1, 2, 3], pa.int32()), "label": ["a", None, "c"]}),
                             name, progress=False) == 3
        shell.run_cell("pass")
        details = panel.details_html.value
        assert "last write</td>" in details and f"append into public.{name}: 3 rows, " in details
        assert f"last write  append into public.{name}: 3 rows, " in status_text(session.status())
        with psycopg.connect(compute.direct_url) as conn:
            assert conn.execute(f"select id, label from {name} order by id").fetchall() == [
                (1, "a"), (2, None), (3, "c")]
        session.read_arrow(f"select * from {name}", progress=False)
        shell.run_cell("pass")
        assert "last query</td>" in panel.details_html.value and "last write" not in panel.details_html.value
    finally:
        with psycopg.connect(compute.direct_url, autocommit=True) as conn:
            conn.execute(f"drop table {name}")


def test_close_stops_listening(compute, closing):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    session = session_for(compute)
    closing(session)
    panel = status_widget(session)
    panel.close()
    before = (panel.state_html.value, panel.details_html.value)
    session.warm_up()  # unknown -> waking -> active: no observer may redraw
    session.last_ping = 0.5
    shell.run_cell("pass")
    assert (panel.state_html.value, panel.details_html.value) == before
    assert panel.comm is None and panel.state_html.comm is None


def test_mimebundle_has_text_and_reuses_one_panel(compute, closing, monkeypatch):
    session = session_for(compute)
    closing(session)
    assert repr_mimebundle(session) == {"text/plain": status_text(session.status())}
    monkeypatch.setattr(widgets, "in_notebook", lambda: True)
    first, second = repr_mimebundle(session), repr_mimebundle(session)
    assert first["text/plain"] == status_text(session.status())  # whole, not cut at 110 characters
    view = first["application/vnd.jupyter.widget-view+json"]
    assert view == second["application/vnd.jupyter.widget-view+json"]
    panel = widgets._panels[session]
    closing(panel)
    assert view["model_id"] == panel.model_id


@pytest.mark.skipif(not hasattr(nn.Session, "_repr_mimebundle_"), reason="Session display not wired yet")
def test_displaying_a_session_gives_the_panel_and_text(compute, closing, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    session = session_for(compute)
    closing(session)
    formatter = InteractiveShell.instance().display_formatter
    data, _ = formatter.format(session)
    assert data["text/plain"] == status_text(session.status())
    assert "application/vnd.jupyter.widget-view+json" not in data  # no kernel: text only
    monkeypatch.setattr(widgets, "in_notebook", lambda: True)
    data, _ = formatter.format(session)
    closing(widgets._panels[session])
    assert data["text/plain"] == status_text(session.status())
    assert "application/vnd.jupyter.widget-view+json" in data
    panel = session.widget()
    closing(panel)
    assert "unknown" in panel.state_html.value


def test_panel_shows_a_closed_session(compute):
    session = nn.connect(compute.direct_url, suspend_after=None)
    session.warm_up()
    panel = status_widget(session)
    session.close()
    assert "session closed" in panel.state_html.value
    assert panel.wake_button.disabled
    assert "session closed" in status_text(session.status())
    panel.close()


# -- regressions of issue #9 ---------------------------------------------------------


def test_a_panel_adds_no_strong_reference_to_its_session(compute, closing, monkeypatch):
    """Panel, observer, post_run_cell hook and the shared-panel table hold the session weakly."""
    import sys

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    session = session_for(compute)
    closing(session)
    session.warm_up()
    before = sys.getrefcount(session)
    panel = status_widget(session)
    closing(panel)
    monkeypatch.setattr(widgets, "in_notebook", lambda: True)
    repr_mimebundle(session)  # how a notebook displays a session: the shared panel
    closing(widgets._panels[session])
    panel.wake().result(timeout=20)
    shell.run_cell("pass")
    wait_for(lambda: sys.getrefcount(session) == before, timeout=5)  # the warm-up thread has ended
    assert "active" in panel.state_html.value and panel.feed.session is session


def test_a_dropped_session_with_a_displayed_panel_is_collected(compute, monkeypatch):
    """Re-running ``session = nn.connect()`` frees the old session, whose panel then unhooks."""
    import gc
    import weakref

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    monkeypatch.setattr(widgets, "in_notebook", lambda: True)
    session = session_for(compute)
    session.warm_up()
    repr_mimebundle(session)
    panel = widgets._panels[session]
    shell.run_cell("pass")
    gone = weakref.ref(session)
    del session
    gc.collect()
    try:
        assert gone() is None, "the session is still referenced after gc.collect()"
        shell.run_cell("pass")  # the first cell after: the panel sees its session is gone
        assert panel._after_cell not in shell.events.callbacks["post_run_cell"]
        assert "session gone" in panel.state_html.value and panel.wake_button.disabled
        assert "session gone" in repr(panel) and panel.feed.session is None
    finally:
        if gone() is not None:
            gone().close()
        panel.close()


# -- the snapshot of a live session ---------------------------------------------------


def test_status_is_a_frozen_masked_snapshot_of_the_session(compute, pooled_url, closing):
    import dataclasses

    session = nn.connect(pooled_url, direct_url=compute.direct_url, suspend_after=None)
    closing(session)
    session.warm_up()
    session.read_arrow("select generate_series(1, 3) as n")
    status = session.status()
    assert status.state is nn.ComputeState.ACTIVE and status.ping == session.last_ping > 0
    assert status.last_query == session.last_query and status.last_query.rows == 3
    assert {p.role: p.idle for p in status.pools} == {"pooled": 1, "direct": 0}
    assert not status.endpoints.same
    assert (status.endpoints.pooled.role, status.endpoints.direct.role) == ("pooled", "direct")
    assert status.endpoints.pooled.port == urlsplit(pooled_url).port
    assert status.endpoints.direct.port == urlsplit(compute.direct_url).port
    assert str(status.endpoints) in repr(session)
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.state = nn.ComputeState.ERROR
    session.close()
    assert status.state is nn.ComputeState.ACTIVE and not status.closed  # taken before the close
    closed = session.status()
    assert closed.closed and closed.detail == "session closed"
    for url in (compute.direct_url, pooled_url):
        assert password_of(url) not in repr(status) + repr(closed)


def test_one_url_is_one_endpoint_everywhere(compute, closing):
    session = nn.connect(compute.direct_url, suspend_after=None)
    closing(session)
    status = session.status()
    assert status.endpoints.same and status.endpoints.pooled == status.endpoints.direct
    assert re.search(r"^  endpoint +postgres@", status_text(status), re.M)
    assert repr(session) == f"<Session {status.endpoints} state=unknown>"
    assert ", " not in str(status.endpoints)
