"""The package's front: ``import bayes_animal`` imports the REML path only, and the names kept
for first use (the Bayesian model, the likelihood-ratio test, the simulation) still resolve."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, python_stdout

import bayes_animal


def test_importing_the_package_leaves_the_names_for_first_use_unimported():
    code = (
        "import sys, bayes_animal; "
        "print(sorted(m for m in ('bayes_animal.simulate', 'bayes_animal.estimation.compare', "
        "'bayes_animal.bayes.model', 'pymc', 'pandas') if m in sys.modules))"
    )
    assert python_stdout(code).strip() == "[]"


@pytest.mark.parametrize(
    "name, module",
    [
        ("compare", "bayes_animal.estimation.compare"),
        ("simulate_reference", "bayes_animal.simulate"),
        ("SimulatedData", "bayes_animal.simulate"),
        ("Truth", "bayes_animal.simulate"),
        ("AnimalModel", "bayes_animal.bayes.model"),
    ],
)
def test_names_for_first_use_are_those_of_their_modules(name, module):
    assert getattr(bayes_animal, name) is getattr(sys.modules[module], name)
    assert name in bayes_animal.__all__


def test_the_api_still_hands_out_the_likelihood_ratio_test():
    from bayes_animal.api import LikelihoodRatio, compare
    from bayes_animal.estimation import compare as module

    assert compare is module.compare and LikelihoodRatio is module.LikelihoodRatio


def test_the_package_modules_are_attributes_of_the_package():
    code = (
        "import bayes_animal; "
        "print(bayes_animal.simulate.simulate_reference.__module__, "
        "'simulate_reference' in dir(bayes_animal), 'AnimalModel' in dir(bayes_animal))"
    )
    assert python_stdout(code).split() == ["bayes_animal.simulate", "True", "True"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bayes_animal.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bayes_animal.api.nope  # noqa: B018


_REML_ONLY = """
import sys
import numpy as np
import pandas as pd
import bayes_animal

rng = np.random.default_rng(4)
n = 80
ids = [f"a{i}" for i in range(n)]
sires = [None] * 10 + [ids[i] for i in rng.integers(0, 5, n - 10)]
dams = [None] * 10 + [ids[i] for i in rng.integers(5, 10, n - 10)]
pedigree = pd.DataFrame({"id": ids, "sire": sires, "dam": dams})
records = pd.DataFrame({
    "animal": np.repeat(ids[10:], 2),
    "x": rng.normal(size=2 * (n - 10)),
    "herd": np.tile(["h1", "h2", "h3", "h4"], (n - 10) // 2),
    "y": rng.normal(size=2 * (n - 10)),
})
codes = rng.integers(0, 3, size=(n - 10, 200)).astype(float)
codes -= codes.mean(axis=0)
dense = bayes_animal.RelationshipMatrix(
    ids=np.array(ids[10:], dtype=object), matrix=codes @ codes.T / 200 + 0.05 * np.eye(n - 10)
)
fits = [
    bayes_animal.reml("y ~ 1 + x", records, pedigree=pedigree, warn=False),
    bayes_animal.reml("y ~ 1 + x + (1 | herd) + ide(animal)", records, pedigree=pedigree),
    bayes_animal.reml("y ~ 1 + x", records, relmat=dense, warn=False),
]
print("ENGINES", sorted({fit.engine for fit in fits}))
print("LOADED", sorted(m for m in ("pymc", "pytensor", "nutpie", "arviz", "arviz_stats",
                                  "xarray") if m in sys.modules))
"""


def test_reml_imports_neither_pymc_nor_pytensor():
    """REML needs none of the Bayesian stack (README, "Installing"): REML on a pedigree (the
    sparse engine, one and several effects) and on a dense matrix (the spectral engine) in a
    fresh process leaves PyMC, PyTensor, nutpie, ArviZ and xarray unimported."""
    printed = python_stdout(_REML_ONLY)
    assert "ENGINES ['sparse', 'spectral']" in printed, printed
    assert "LOADED []" in printed, printed


_IMPORT_NAMES = {"arviz_stats": "arviz-stats"}
"""Modules whose distribution has another name."""


def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_third_party_import_is_declared():
    """Each module the package imports (at the top or lazily) that is neither the standard
    library's nor the package's own is a core dependency or in an extra of pyproject.toml."""
    project = _pyproject()["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_requirement_name(r) for r in extra}
    imported: dict[str, str] = {}
    for path in sorted((REPO / "bayes_animal").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "bayes_animal":
                    imported.setdefault(top, str(path.relative_to(REPO)))
    missing = {
        module: where
        for module, where in imported.items()
        if _requirement_name(_IMPORT_NAMES.get(module, module)) not in declared
    }
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_every_extra_the_code_and_readme_name_exists():
    """An install hint ``pip install 'bayes_animal[x]'`` in an error message, a docstring or
    the README names an extra of pyproject.toml."""
    extras = set(_pyproject()["project"]["optional-dependencies"])
    files = [REPO / "README.md", *sorted((REPO / "bayes_animal").rglob("*.py"))]
    named: dict[str, str] = {}
    for path in files:
        for extra in re.findall(r"bayes_animal\[([A-Za-z0-9_,-]+)\]", path.read_text("utf-8")):
            for name in extra.split(","):
                named.setdefault(name, str(path.relative_to(REPO)))
    assert named, "no install hint found: the pattern no longer matches"
    unknown = {name: where for name, where in named.items() if name not in extras}
    assert not unknown, f"extras named but not in pyproject.toml: {unknown}"


def _lock_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_lock", REPO / ".ci" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ci_lock_pins_versions_pyproject_allows():
    """requirements-ci.lock (what `make test` installs) pins every core and test dependency
    to a version inside pyproject.toml's range: a range changed without `make lock` fails
    here, not in CI's resolver."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = (REPO / "requirements-ci.lock").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    project = _pyproject()["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements-ci.lock: run `make lock`"
        assert requirement.specifier.contains(pins[name]), (
            f"requirements-ci.lock pins {name}=={pins[name]}, outside {text!r}: run `make lock`"
        )


def test_the_lock_script_names_a_dependency_that_is_not_installed():
    from packaging.requirements import Requirement

    lock = _lock_module()
    with pytest.raises(SystemExit, match="surely-absent-distribution.*make test"):
        lock.closure([Requirement("surely-absent-distribution>=1")])
    assert lock.closure([Requirement("pytest")])["pluggy"]  # its dependencies followed


def test_every_subprocess_a_test_starts_has_a_timeout():
    """A child that deadlocks must fail its test, not hang CI: every subprocess.run (and
    check_output, call) in the tests passes timeout=, and pytest-timeout bounds every test."""
    import ast
    import tomllib

    missing = []
    for path in sorted(Path(__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "subprocess"
                and node.func.attr in ("run", "check_output", "check_call", "call")
                and not any(keyword.arg == "timeout" for keyword in node.keywords)
            ):
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, missing
    options = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert options["tool"]["pytest"]["ini_options"]["timeout"] > 0
