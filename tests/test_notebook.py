"""examples/tutorial.ipynb: committed without outputs, and runs end to end (nbclient) from a
temporary working directory, drawing its figures and leaving no files behind."""
import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
MODELS = ROOT / "keycld_gym" / "models"
CELL_TIMEOUT_S = 300
MIN_FIGURES = 6  # sections 1–5 each draw at least one; section 2's strip and section 4's frames add more


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    cells = _code_cells(nb)
    assert cells, f"{NOTEBOOK} has no code cells"
    with_outputs = [i for i, c in enumerate(cells) if c["outputs"] or c["execution_count"] is not None]
    assert not with_outputs, f"code cells {with_outputs} of {NOTEBOOK.name} carry outputs; clear them before committing"
    first = "".join(cells[0]["source"])
    assert 'os.environ.setdefault("MUJOCO_GL", "egl")' in first, "the first code cell must set MUJOCO_GL"


def test_notebook_runs_end_to_end(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs nbformat (pip install -e '.[test]')")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs nbclient (pip install -e '.[test]')")
    pytest.importorskip("ipykernel", reason="the notebook test needs ipykernel (pip install -e '.[test]')")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    models_before = _snapshot(MODELS)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that fails
    seconds = time.perf_counter() - t0
    print(f"{NOTEBOOK.name}: executed in {seconds:.1f} s")

    outputs = [o for c in _code_cells(nb) for o in c["outputs"]]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"cells raised: {[e['ename'] + ': ' + e['evalue'] for e in errors]}"
    figures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert figures >= MIN_FIGURES, f"the notebook drew {figures} figures; expected at least {MIN_FIGURES}"
    assert os.listdir(cwd) == [], f"the notebook left files in its working directory: {os.listdir(cwd)}"
    assert _snapshot(MODELS) == models_before, "the notebook changed files under keycld_gym/models"
