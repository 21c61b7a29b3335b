"""The progress bar: counts, rates, throttling, and how it ends; no database, no session."""

from __future__ import annotations

import io

import pytest

from neon_notebook.ui import progress
from neon_notebook.ui.progress import ProgressBar, TextView, WidgetView, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[int, float | None, str | None]] = []

    def render(self, bar: ProgressBar) -> None:
        self.frames.append((bar.rows, bar.fraction, bar.outcome))


def test_redraws_are_delayed_and_throttled():
    clock, view = Clock(), Recorder()
    bar = ProgressBar(view, delay=0.5, clock=clock)
    for i in range(1, 301):  # 3 s of callbacks, every 10 ms
        clock.now += 0.01
        bar(i * 1000, i * 50_000, None)
    assert view.frames[0][0] >= 50_000  # nothing before the delay
    assert 20 <= len(view.frames) <= 26  # 2.5 s at most 10 redraws/s
    bar.close()
    assert view.frames[-1] == (300_000, 1.0, "done")


def test_quick_reads_draw_nothing():
    view = Recorder()
    with ProgressBar(view, clock=Clock()) as bar:
        bar(10, 100, 10)
    assert view.frames == [] and bar.outcome == "done"


def test_estimate_fills_the_bar_and_caps_at_full():
    clock = Clock()
    bar = ProgressBar(Recorder(), clock=clock, delay=0)
    bar(0, 0, None)
    assert bar.fraction is None  # indeterminate
    clock.now += 1
    bar(250, 25_000, 1000)
    assert bar.fraction == 0.25
    assert "250 rows" in bar.summary() and "25% of ~1,000 estimated" in bar.summary()
    bar(1500, 150_000, None)  # the planner under-estimated: full, not 150 %
    assert bar.fraction == 1.0
    hinted = ProgressBar(None, total_hint=400, clock=clock)
    hinted(100, 0, None)  # no estimate: the caller's hint is the total
    assert hinted.fraction == 0.25


def test_summary_has_rates_in_rows_and_megabytes():
    clock = Clock()
    bar = ProgressBar(None, clock=clock)
    clock.now += 2
    bar(20_000, 4_000_000, None)
    text = bar.summary()
    assert "20,000 rows" in text and "4.0 MB" in text
    assert "10,000 rows/s, 2.0 MB/s" in text


def test_text_bar_redraws_one_line_and_ends_it():
    clock, stream = Clock(), io.StringIO()
    bar = ProgressBar(TextView(stream), delay=0, clock=clock)
    clock.now += 1
    bar(500, 1_000_000, 1000)
    clock.now += 1
    bar(1000, 2_000_000, 1000)
    bar.close()
    out = stream.getvalue()
    frames = out.split("\r")[1:]
    assert frames[0].startswith("[##########----------] 500 rows")
    assert frames[-1].startswith("[####################] done: 1,000 rows")
    assert out.endswith("\n") and out.count("\n") == 1


@pytest.mark.parametrize("error, outcome", [(RuntimeError("boom"), "failed"),
                                            (KeyboardInterrupt(), "interrupted")])
def test_errors_end_the_bar_and_propagate(error, outcome):
    clock, stream = Clock(), io.StringIO()
    with pytest.raises(type(error)):
        with ProgressBar(TextView(stream), delay=0, clock=clock) as bar:
            bar(10, 100, None)
            raise error
    assert bar.outcome == outcome
    assert stream.getvalue().rstrip("\n").rsplit("\r", 1)[-1].startswith(f"{outcome}: 10 rows")
    bar(20, 200, None)  # late calls are ignored
    assert bar.rows == 10


def test_widget_view_fills_then_turns_green(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    clock, view = Clock(), WidgetView("trips")
    bar = ProgressBar(view, delay=0, clock=clock)
    bar(0, 0, None)
    box = view.box
    assert shown == [box]
    assert box.label.value == "trips"
    assert (box.gauge.value, box.gauge.bar_style) == (1.0, "info")  # indeterminate
    clock.now += 1
    bar(300, 3_000_000, 1200)
    assert (box.gauge.value, box.gauge.bar_style) == (0.25, "")
    assert "300 rows" in box.text.value and "3.0 MB" in box.text.value
    bar.close()
    assert (box.gauge.value, box.gauge.bar_style) == (1.0, "success")
    bundle = box._repr_mimebundle_()
    assert bundle["text/plain"].startswith("done: 300 rows")
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert shown == [box]  # displayed once


@pytest.mark.parametrize("error, outcome", [(ValueError(), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_widget_turns_red_on_errors(monkeypatch, error, outcome):
    monkeypatch.setattr("IPython.display.display", lambda obj: None)
    view = WidgetView()
    with pytest.raises(type(error)):
        with ProgressBar(view, delay=0) as bar:
            bar(5, 50, 100)
            raise error
    assert view.box.gauge.bar_style == "danger"
    assert view.box.text.value.startswith(outcome)


def test_progress_bar_picks_its_view(monkeypatch):
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    assert progress_bar(False).view is None
    assert progress_bar("auto").view is None  # pytest's stderr is not a terminal
    assert isinstance(progress_bar(True).view, TextView)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(progress_bar("auto").view, TextView)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert isinstance(progress_bar("auto").view, WidgetView)
    assert progress_bar(False).view is None
    assert progress_bar(total_hint=50).total == 50


def test_the_bar_needs_neither_the_panel_nor_a_session():
    import subprocess
    import sys

    code = ("import sys, neon_notebook.ui.progress\n"
            "print(','.join(m for m in ('neon_notebook.ui.widgets', 'neon_notebook.session', 'ipywidgets')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


# -- a write's bar: the total is exact -------------------------------------------------


def test_a_write_fills_towards_its_exact_total_and_says_written():
    clock, stream = Clock(), io.StringIO()
    bar = ProgressBar(TextView(stream), kind="write", delay=0, clock=clock)
    clock.now += 1
    bar(250, 5_500_000, 1000)
    assert bar.fraction == 0.25
    text = bar.summary()
    assert text.startswith("250 of 1,000 rows · 5.5 MB · 250 rows/s, 5.5 MB/s · 25% · 1.0 s")
    assert "estimated" not in text and "~" not in text
    clock.now += 1
    bar(1000, 22_000_000, 1000)
    bar.close()
    frames = stream.getvalue().split("\r")[1:]
    assert frames[0].startswith("[#####---------------] 250 of 1,000 rows")
    assert frames[-1].rstrip() == "[####################] written: 1,000 rows · 22.0 MB · 500 rows/s, 11.0 MB/s · 2.0 s"


def test_a_write_of_unknown_length_is_indeterminate():
    bar = ProgressBar(None, kind="write", clock=Clock())
    bar(300, 3_000, None)  # an iterable of batches: no total before the end
    assert bar.fraction is None and bar.summary().startswith("300 rows · 0.0 MB")
    bar.close()
    assert bar.fraction == 1.0 and bar.summary().startswith("written: 300 rows")


@pytest.mark.parametrize("error, outcome", [(RuntimeError("boom"), "failed"),
                                            (KeyboardInterrupt(), "interrupted")])
def test_a_failed_write_says_how_many_rows_were_sent_in_red(monkeypatch, error, outcome):
    monkeypatch.setattr("IPython.display.display", lambda obj: None)
    view = WidgetView("public.t")
    with pytest.raises(type(error)):
        with ProgressBar(view, kind="write", delay=0, clock=Clock()) as bar:
            bar(40, 4_000, 100)
            raise error
    assert (view.box.gauge.value, view.box.gauge.bar_style) == (0.4, "danger")
    assert view.box.text.value.startswith(f"{outcome}: 40 of 100 rows sent · ")
    assert "written" not in view.box.text.value


def test_a_write_widget_turns_green_and_escapes_its_label(monkeypatch):
    monkeypatch.setattr("IPython.display.display", lambda obj: None)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    assert progress_bar(kind="write").view.label == "writing"
    assert progress_bar().view.label == "reading"  # a read's bar is unchanged
    bar = progress_bar(label="<b>odd</b>.t", kind="write", delay=0)
    bar(5, 50, 10)
    box = bar.view.box
    assert box.label.value == "&lt;b&gt;odd&lt;/b&gt;.t"
    assert (box.gauge.value, box.gauge.bar_style) == (0.5, "")
    bar.close()
    assert (box.gauge.value, box.gauge.bar_style) == (1.0, "success")
    assert repr(box).startswith("written: 5 rows")


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="'read' or 'write'"):
        ProgressBar(None, kind="delete")


@pytest.mark.db
def test_session_write_draws_a_write_bar_and_a_read_after_it_a_read_bar(make_session, monkeypatch, capsys):
    import pyarrow as pa

    real = progress.progress_bar
    monkeypatch.setattr(progress, "progress_bar", lambda *a, **k: real(*a, **k, delay=0))
    session = make_session()
    assert session.write(pa.table({"n": list(range(3000))}), "progress_write_bar", mode="replace",
                         progress=True) == 3000
    err = capsys.readouterr().err
    assert "written: 3,000 rows" in err and "estimated" not in err
    session.read_arrow("select * from progress_write_bar", progress=True)
    err = capsys.readouterr().err
    assert "done: 3,000 rows" in err and "written" not in err
