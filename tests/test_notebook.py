"""examples/quickstart.ipynb runs top to bottom with the API (VQA_CACHE_QUICK=1: a subset, a tiny encoder,
two epochs, the CPU), so it cannot rot: extract, load_features, train two heads, compare, ask."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
pytestmark = pytest.mark.slow  # a notebook kernel: not in `make test-fast`


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel of this interpreter (the project's venv), from a kernel spec made here: CI has no
    `ipykernel install`."""
    spec = tmp_path / "kernels" / "vqa-cache-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "vqa-cache (tests)",
                "language": "python",
            }
        )
    )
    return KernelManager(
        kernel_name="vqa-cache-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    )


def printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def test_the_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("VQA_CACHE_QUICK", "1")
    monkeypatch.setenv("VQA_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # runs in tmp_path (runs/ lands there); a failing cell raises CellExecutionError naming it
    NotebookClient(
        nb, km=kernel_manager(tmp_path), timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code)

    # stage one wrote one image and one question entry, in the cache the kernel was given
    assert len(list((tmp_path / "cache" / "image").iterdir())) == 1
    assert len(list((tmp_path / "cache" / "question").iterdir())) == 1
    # two runs of two epochs each; the table of runs shows both, with their best accuracies
    table = next(c for c in code if "vqa_cache.runs" in c.source)
    shown = table.outputs[0]["data"]["text/plain"]
    for head in ("concat", "attention"):
        metrics = json.loads((tmp_path / "runs" / f"quickstart-{head}" / "metrics.json").read_text())
        assert len(metrics["epochs"]) == 2
        row = next(line for line in shown.splitlines() if f"quickstart-{head} " in line)
        assert f" {head} " in row and f"{metrics['best']['val_accuracy']:.6f}"[:5] in row
    # the curves are drawn, and each head answers with three answers of its vocabulary
    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    asked = printed(next(c for c in code if "vqa_cache.ask" in c.source)).splitlines()
    answers = [line.split(None, 1) for line in asked if line.startswith("  ")]
    assert [head for head, _ in answers] == ["concat", "attention"] * 2
    for head, text in answers:
        vocab = json.loads((tmp_path / "runs" / f"quickstart-{head}" / "config.json").read_text())["vocabulary"]
        assert len(text.split(", ")) == min(3, vocab["size"])


def test_the_notebook_as_shipped_uses_the_real_defaults(monkeypatch):
    """Without VQA_CACHE_QUICK, the first cell asks for the whole dataset and the default encoders."""
    monkeypatch.delenv("VQA_CACHE_QUICK", raising=False)
    first = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code")
    names = {}
    exec(first.source, names)
    assert names["FEATURES"] == {"dataset": "easyvqa", "image_size": 64, "features": "pooled+grid"}
    assert names["EPOCHS"] == 20 and names["EXTRACT"] == {}
