"""The notebooks run from top to bottom with small settings (BAYES_ANIMAL_FAST=1), so that
they cannot rot, and every plotting cell embeds its figure (both in the committed notebook and
when executed). They need ../shared/data (skipped with the reason otherwise)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# a cell that draws: one of our plot_* functions or matplotlib's plt.subplots
DRAWS = re.compile(r"\bplot_[a-z_]+\(|plt\.subplots\(")


def _read(path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _cells_without_figures(notebook) -> list[int]:
    """Indices of the code cells that draw but have no embedded PNG among their outputs."""
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not DRAWS.search(cell.source):
            continue
        outputs = cell.get("outputs", [])
        if not any("image/png" in output.get("data", {}) for output in outputs):
            missing.append(index)
    return missing


def test_the_six_notebooks_exist():
    assert [path.stem for path in NOTEBOOKS] == [
        "01_reference_simulation",
        "02_gryphon",
        "03_ranking",
        "04_random_effects",
        "05_several_traits",
        "06_binary_and_count_traits",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_notebook_embeds_every_figure(path):
    notebook = _read(path)
    drawing = [c for c in notebook.cells if c.cell_type == "code" and DRAWS.search(c.source)]
    assert drawing, f"{path.name} draws nothing: the pattern no longer finds its plots"
    assert _cells_without_figures(notebook) == [], f"{path.name}: plotting cells without a figure"
    executed = [c for c in notebook.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(executed) == sum(c.cell_type == "code" for c in notebook.cells), (
        f"{path.name} is committed with cells that were never run"
    )


def test_figure_check_fails_on_a_plotting_cell_without_image():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    drawn = new_code_cell("plot_h2(fit)\nplt.show()")
    drawn.outputs = [new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
    headless = new_code_cell("ax = plot_trace(fit)\nplt.show()")
    headless.outputs = [new_output("stream", name="stdout", text="")]
    notebook = new_notebook(cells=[new_code_cell("x = 1"), drawn, headless])
    assert _cells_without_figures(notebook) == [2]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path, monkeypatch):
    from nbclient import NotebookClient

    if not (SHARED_DATA / "gryphon").is_dir() or not (SHARED_DATA / "seed_sim").is_dir():
        pytest.skip(f"the notebooks read {SHARED_DATA}, which is not present")
    monkeypatch.setenv("BAYES_ANIMAL_FAST", "1")
    monkeypatch.setenv("BAYES_ANIMAL_SHARED_DATA", str(SHARED_DATA))
    # the kernel's own inline backend, as in Jupyter: a headless backend would embed nothing
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = _read(path)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
    assert _cells_without_figures(notebook) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_notebook_without_the_reference_data_says_how_to_point_at_it(path, monkeypatch, tmp_path):
    """Run from a clone of its own (no shared/data beside it), each notebook's first cell
    stops with the folder it looked in and the variable to set, not a later file error."""
    import nbformat

    monkeypatch.setenv("BAYES_ANIMAL_SHARED_DATA", str(tmp_path / "nowhere"))
    setup = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    with pytest.raises(FileNotFoundError, match="BAYES_ANIMAL_SHARED_DATA"):
        exec(compile(setup.source, str(path), "exec"), {})
