"""The quickstart notebook runs end to end in a real kernel, on the local compute."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
#: The derived table written back and read back (16 carriers flew from NYC in 2013).
WRITTEN_BACK = "16 carriers written; read back equal: True"
URL_WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^/\s@:]+:(?!\*\*\*\*@)[^/\s@]+@")


def execute(tmp_path: Path) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def all_output_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(json.dumps(output))
    return "\n".join(parts)


def outputs_of(nb, needle: str) -> str:
    cell = next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)
    return "\n".join(json.dumps(o) for o in cell.outputs)


@pytest.mark.db  # the notebook starts its own local compute
def test_quickstart_on_its_own_local_compute(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DIRECT_URL", raising=False)
    nb = execute(tmp_path)
    text = all_output_text(nb)
    assert "336,776 flights, 8,255 never departed" in text
    warm = outputs_of(nb, "warm_up()")
    assert "compute: suspended" in warm and "answered after" in warm
    assert "compute: active (woken 2 times so far)" in warm
    assert "image/png" in outputs_of(nb, "matplotlib")
    assert WRITTEN_BACK in outputs_of(nb, "session.write(")
    assert '"output_type": "error"' not in text
    assert not URL_WITH_PASSWORD.search(text)


def test_quickstart_on_a_database_url_never_shows_the_password(tmp_path, monkeypatch, compute, pgbouncer):
    env = compute.env()
    monkeypatch.setenv("DATABASE_URL", env["DATABASE_URL"])
    monkeypatch.setenv("DIRECT_URL", env["DIRECT_URL"])
    password = compute.direct_url.split(":")[2].split("@")[0]
    nb = execute(tmp_path)
    text = all_output_text(nb)
    assert "336,776 flights" in text
    assert WRITTEN_BACK in text
    assert password not in text
    assert not URL_WITH_PASSWORD.search(text)


def test_committed_notebook_has_outputs_and_no_secrets():
    text = NOTEBOOK.read_text()
    nb = json.loads(text)
    outputs = json.dumps([c.get("outputs", []) for c in nb["cells"] if c["cell_type"] == "code"])
    assert "336,776 flights, 8,255 never departed" in outputs, "commit the notebook with its outputs"
    assert "image/png" in outputs
    assert WRITTEN_BACK in outputs
    assert not URL_WITH_PASSWORD.search(text)
