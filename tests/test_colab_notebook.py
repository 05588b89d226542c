"""examples/colab.ipynb: its cells that are not tagged `colab` (install, Drive, TensorBoard magics) run top to
bottom as tests/test_notebook.py runs the quickstart (VQA_CACHE_QUICK=1); the Colab cells say what the page
promises (install from git, VQA_CACHE_HOME and the runs on Drive, TensorBoard), and the attention warning is
there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebook import kernel_manager

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "colab.ipynb"
pytestmark = pytest.mark.slow  # a notebook kernel: not in `make test-fast`


def colab(cell) -> bool:
    return "colab" in cell.get("metadata", {}).get("tags", [])


def test_the_local_cells_run(tmp_path, monkeypatch):
    monkeypatch.setenv("VQA_CACHE_QUICK", "1")
    monkeypatch.setenv("VQA_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    skipped = [c for c in nb.cells if colab(c)]
    nb.cells = [c for c in nb.cells if not colab(c)]
    assert len(skipped) == 3 and all(c.cell_type == "code" for c in skipped)
    NotebookClient(
        nb, km=kernel_manager(tmp_path), timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)
    for head in ("concat", "attention"):
        metrics = json.loads((tmp_path / "runs" / f"colab-{head}" / "metrics.json").read_text())
        assert len(metrics["epochs"]) == 2
    asked = "".join(o.get("text", "") for o in code[-1].outputs if o.get("output_type") == "stream")
    assert "  concat: " in asked and "  attention: " in asked


def test_the_colab_cells_install_from_git_and_keep_the_cache_on_drive():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = "\n".join(c.source for c in nb.cells if colab(c))
    assert '!pip install -q "vqa-cache[tensorboard] @ git+{REPO}"' in text
    assert 'drive.mount("/content/drive")' in text and 'os.environ["VQA_CACHE_HOME"]' in text
    assert 'RUNS = f"{BASE}/runs"' in text and "%tensorboard --logdir {RUNS}" in text
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "The attention head costs 4-5x concat per epoch" in prose
    assert "T4" in prose and "minutes" not in prose  # no guessed Colab times
