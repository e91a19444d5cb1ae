"""The notebooks run top to bottom (code cells executed in order, plots off-screen): the bug
(position_embeddings), the demo run with its curves and reconstructions (demo_run: a few training
steps in the notebook's own process) and video (video). Their temporary folders go under the test's."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert {"position_embeddings.ipynb", "demo_run.ipynb", "video.ipynb"} <= {p.name for p in NOTEBOOKS}


@pytest.fixture
def one_thread():
    """The notebooks' models are tiny: one thread is as fast, and immune to the stalls of
    multi-threaded kernels when the machine's few cores are busy (as tests/test_training.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path, one_thread):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile.mkdtemp() of the notebook
    cells = json.loads(path.read_text())["cells"]
    scope: dict = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"{path.name}[{i}]", "exec"), scope)
    matplotlib.pyplot.close("all")
