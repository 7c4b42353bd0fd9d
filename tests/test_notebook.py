"""The walkthrough notebook: it runs headless without errors, and the committed copy is what its generator
writes, outputs cleared."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
GENERATOR = ROOT / "notebooks" / "make_walkthrough.py"


def _generator():
    spec = importlib.util.spec_from_file_location("make_walkthrough", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebook_is_generated_and_cleared(tmp_path) -> None:
    committed = nbformat.read(NOTEBOOK, as_version=4)
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    target = tmp_path / "walkthrough.ipynb"
    assert _generator().main(["make_walkthrough.py", str(target)]) == 0
    assert target.read_text() == NOTEBOOK.read_text(), "run `python notebooks/make_walkthrough.py`"


@pytest.mark.slow
def test_notebook_executes_headless(monkeypatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel imports this checkout's ttplan, whatever else is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]
    assert len(images) >= 4  # sweep, two plan drawings, ADMM curves
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "holds input AND output modes" in text
    assert "after ADMM" in text
    # the generated-code cell ran the emitted layer: its counted FLOPs are twice the planned MACs
    counted = re.search(r"FlopCounterMode: ([\d,]+) FLOPs; planned: 2 x ([\d,]+) MACs", text)
    assert counted, text
    flops, macs = (int(group.replace(",", "")) for group in counted.groups())
    assert macs > 0 and flops == 2 * macs
