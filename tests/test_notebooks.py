"""The notebooks run from top to bottom with small settings (BAYES_ANIMAL_FAST=1), so that
they cannot rot. They need ../shared/data (skipped with the reason otherwise)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SHARED_DATA

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert [path.stem for path in NOTEBOOKS] == [
        "01_reference_simulation",
        "02_gryphon",
        "03_ranking",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_executes(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    if not (SHARED_DATA / "gryphon").is_dir() or not (SHARED_DATA / "seed_sim").is_dir():
        pytest.skip(f"the notebooks read {SHARED_DATA}, which is not present")
    monkeypatch.setenv("BAYES_ANIMAL_FAST", "1")
    monkeypatch.setenv("BAYES_ANIMAL_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
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
    assert os.environ["BAYES_ANIMAL_FAST"] == "1"
