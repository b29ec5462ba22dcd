"""The teaching notebooks run top to bottom, in time, and draw their figures.

Each notebook in ``notebooks/`` is executed with nbclient in a fresh Python
kernel, under a deadline for the whole notebook. The kernel draws with
matplotlib's inline backend, which renders through Agg; the figures it sends
back are counted. A notebook must also say in its first cell what it
teaches, print nothing to stderr (warnings included), and be stored without
outputs.
"""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(
    (Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")
)

# Seconds for a whole notebook, kernel start included. Each notebook runs in
# 15 seconds or less on two cores that another job keeps busy; the margin of
# two covers a slower CI runner.
NOTEBOOK_DEADLINE = 30


def _read(path):
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def test_there_are_teaching_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = _read(path)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} of {path.name} has outputs"
            assert cell.execution_count is None, f"cell {index} was executed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_says_what_it_teaches(path):
    first = _read(path).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith("# ")
    assert "What this notebook teaches" in first.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_runs(path, tmp_path):
    notebook = _read(path)
    deadline = time.monotonic() + NOTEBOOK_DEADLINE

    def remaining(cell):
        # A per-cell timeout that makes the deadline one for the notebook.
        return max(1, int(deadline - time.monotonic()))

    client = nbclient.NotebookClient(
        notebook,
        timeout_func=remaining,
        startup_timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.monotonic()
    client.execute()
    seconds = time.monotonic() - start
    assert seconds < NOTEBOOK_DEADLINE, f"{path.name} took {seconds:.0f} s"

    n_figures = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                pytest.fail(
                    f"cell {index} of {path.name} wrote to stderr:\n{output.text}"
                )
            if "image/png" in output.get("data", {}):
                n_figures += 1
    assert n_figures >= 2, f"{path.name} drew {n_figures} figure(s)"
