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
