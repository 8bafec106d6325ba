"""The output schema (docs/outputs.md) is what the package writes: every output is checked
against the tables of that page, and every quantity has one name in all of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import REPO, shared_folder

from bayes_animal import reml
from bayes_animal.cli import main
from bayes_animal.many import _RENAMED, FIT_MANY_COLUMNS, MANY_COLUMNS
from bayes_animal.spec.parameters import (
    OBSERVED_H2,
    correlation_name,
    covariance_name,
    proportion_name,
    variance_name,
)

OUTPUTS = REPO / "docs" / "outputs.md"


def documented(section: str) -> list[list[str]]:
    """The first column of each table under the ``## `` heading that starts with ``section``,
    backticks removed: the keys or columns the page promises, table by table."""
    text = OUTPUTS.read_text()
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    matches = [p for p in parts if p.startswith(section)]
    assert len(matches) == 1, f"docs/outputs.md has no single section {section!r}"
    tables, current = [], None
    for line in matches[0].splitlines():
        if line.startswith("|"):
            cell = line.split("|")[1].strip()
            if current is None:
                current = []  # the header row
            elif not set(cell) <= {"-", " "}:
                current.append(cell.strip("`"))
        elif current is not None:
            tables.append(current)
            current = None
    if current is not None:
        tables.append(current)
    return tables


def expected_quantities(components, pairs, *, repeatability=False) -> dict[str, list[str]]:
    """The quantity names the page's grammar gives a model's components and pairs."""
    variances = [variance_name(c) for c in components]
    covariances = [covariance_name(p) for p in pairs]
    ratios = [proportion_name(c) for c in components]
    ratios += ["repeatability"] * repeatability + [correlation_name(p) for p in pairs]
    return {"variances": variances, "covariances": covariances, "ratios": ratios}


def test_the_grammar_gives_the_documented_names():
    assert variance_name("additive") == "sigma2:additive"
    assert covariance_name("additive:maternal") == "cov:additive:maternal"
    assert proportion_name("additive") == "h2" and proportion_name("byear") == "prop:byear"
    assert correlation_name("additive:maternal") == "corr:additive:maternal"
    names = documented("Names")[1]
    assert names == [
        "sigma2:<component>",
        "cov:<a>:<b>",
        "h2",
        "prop:<component>",
        "repeatability",
        "corr:<a>:<b>",
        OBSERVED_H2,
    ]


@pytest.fixture(scope="module")
def gryphon() -> Path:
    return shared_folder("gryphon")


def _check_reml_payload(payload, components, pairs, *, repeatability=False):
    top, component_keys, pair_keys, ratio_keys = documented("REML: ")
    assert list(payload) == top
    assert list(payload["components"]) == components
    for entry in payload["components"].values():
        assert list(entry) == component_keys
    assert list(payload["covariances"]) == pairs
    for entry in payload["covariances"].values():
        assert list(entry) == pair_keys
    names = expected_quantities(components, pairs, repeatability=repeatability)
    assert list(payload["ratios"]) == names["ratios"]
    for entry in payload["ratios"].values():
        assert list(entry) == ratio_keys
    # a component's proportion is the ratio of its name, the same number
    for component, entry in payload["components"].items():
        assert entry["proportion"] == payload["ratios"][proportion_name(component)]["estimate"]
    for pair, entry in payload["covariances"].items():
        assert entry["correlation"] == payload["ratios"][correlation_name(pair)]["estimate"]


def test_reml_json_blup_files_and_tables_follow_the_page(gryphon, tmp_path, capsys):
    """A direct–maternal pair with a group effect (covariances and correlations), written by
    the command line and returned by the API."""
    formula = "bwt ~ 1 + C(sex) + (1|byear)"
    args = ["--data", str(gryphon / "gryphon.csv"), "--pedigree", str(gryphon / "gryphonped.csv")]
    args += ["--formula", formula, "--maternal", "mother", "--maternal-covariance"]
    assert main(["reml", *args, "--out", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    payload = json.loads((tmp_path / "reml.json").read_text())
    components = ["additive", "maternal", "byear", "residual"]
    _check_reml_payload(payload, components, ["additive:maternal"])
    assert main(["reml", *args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ratios"] == payload["ratios"]
    (columns,) = documented("REML predictions")
    written = sorted(p.name for p in tmp_path.glob("blup*.csv"))
    assert written == ["blup.csv", "blup_byear.csv", "blup_maternal.csv"]
    for name in written:
        assert list(pd.read_csv(tmp_path / name, nrows=1).columns) == columns

    data = pd.read_csv(gryphon / "gryphon.csv")
    pedigree = pd.read_csv(gryphon / "gryphonped.csv")
    with pytest.warns(UserWarning):
        fit = reml(formula, data, pedigree=pedigree, maternal="mother", maternal_covariance=True)
    names = expected_quantities(components, ["additive:maternal"])
    assert list(fit.components.columns) == documented("REML: ")[1]
    assert list(fit.covariances.columns) == documented("REML: ")[2]
    assert list(fit.ratios.index) == names["ratios"]
    summary = fit.summary()
    assert list(summary.index) == (
        names["variances"]
        + names["covariances"]
        + names["ratios"]
        + [f"beta[{c}]" for c in fit.beta.index]
    )
    assert summary.index.name == "parameter"
    assert "RemlResult.summary()" in documented("Python tables")[0]
    report = str(fit)
    for component in components:
        assert component in report


def test_repeatability_has_its_name_in_reml_and_the_posterior(gryphon):
    data = pd.read_csv(gryphon / "gryphonRM.csv")
    pedigree = pd.read_csv(gryphon / "gryphonped.csv")
    fit = reml("laydate ~ 1 + (1|byear) + ide(animal)", data, pedigree=pedigree)
    components = list(fit.components.index)
    assert components[-1] == "residual" and "additive" in components
    _check_reml_payload(json.loads(json.dumps(fit.to_dict())), components, [], repeatability=True)


def test_fit_files_follow_the_page(gryphon, tmp_path, capsys):
    """summary.json, ebv*.csv, ranking.csv, posterior.nc and the Python tables of a fit with a
    direct–maternal pair: every key the page lists, and no other."""
    args = ["fit", "--data", str(gryphon / "gryphon.csv")]
    args += ["--pedigree", str(gryphon / "gryphonped.csv")]
    args += ["--formula", "bwt ~ 1 + C(sex)", "--maternal", "mother", "--maternal-covariance"]
    args += ["--draws", "60", "--tune", "100", "--chains", "2", "--seed", "4"]
    args += ["--out", str(tmp_path), "--no-progress", "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "summary.json").read_text())
    top, statistics, check_columns = documented("Bayesian: ")
    assert list(summary) == top
    components, pairs = ["additive", "maternal", "residual"], ["additive:maternal"]
    names = expected_quantities(components, pairs)
    assert list(summary["components"]) == components
    assert list(summary["covariances"]) == pairs
    assert list(summary["ratios"]) == names["ratios"]
    for group in ("components", "covariances", "ratios"):
        for entry in summary[group].values():
            assert list(entry) == statistics
    assert summary["sigma2_u"] == summary["components"]["additive"]
    assert summary["h2"] == summary["ratios"]["h2"]
    assert summary["random_seed"] == 4
    assert [row["parameter"] for row in summary["reml_check"]] == (
        names["variances"] + names["covariances"] + names["ratios"]
    )
    assert list(summary["reml_check"][0]) == check_columns
    _check_reml_payload(summary["reml"], components, pairs)

    (ebv_columns,) = documented("Breeding values")
    for name in ("ebv.csv", "ebv_maternal.csv"):
        assert list(pd.read_csv(tmp_path / name, nrows=1).columns) == ebv_columns
    (ranking_columns,) = documented("Ranking")
    written = list(pd.read_csv(tmp_path / "ranking.csv", nrows=1).columns)
    assert written == [c for c in ranking_columns if c != "p_above"]

    tree = xr.open_datatree(tmp_path / "posterior.nc")
    variables = set(tree["posterior"].data_vars)
    quantities = names["variances"] + names["covariances"] + names["ratios"]
    assert set(quantities) <= variables
    assert {"beta", "u", "u_maternal"} <= variables
    assert {"blup_additive", "reliability_maternal"} <= set(tree["reml"].data_vars)
    tree.close()


def test_many_traits_columns_are_the_pages():
    from bayes_animal.pairs import PAIR_COLUMNS

    reml_columns, fit_columns, pair_columns = documented("Many traits")
    assert list(MANY_COLUMNS) == reml_columns
    assert list(FIT_MANY_COLUMNS) == fit_columns
    assert list(PAIR_COLUMNS) == pair_columns


def test_the_pages_names_are_the_only_names_in_the_code():
    """The names before one vocabulary are not written anywhere but the readers that
    translate them (the aliases excepted)."""
    package = REPO / "bayes_animal"
    old = re.compile(r"""["'](?:prop_|corr_|cov_|sigma2_(?!u\b|e\b))""")
    offenders = []
    for path in package.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            translated = any(f'"{name}":' in line for name in _RENAMED)  # read back
            if old.search(line) and "before one vocabulary" not in line and not translated:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("shape", ["normal", "skewed", "bimodal", "few"])
def test_the_binned_posterior_mode_is_the_kernel_density_estimates(shape):
    """The summary's mode (a binned Gaussian KDE, Scott's bandwidth) is the mode of scipy's
    exact ``gaussian_kde`` on a fine grid, within 0.3 % of the draws' range: normal, skewed
    (a variance's posterior), two-humped and 40 draws; identical draws give their value."""
    from scipy.stats import gaussian_kde

    from bayes_animal.results.posterior import posterior_mode

    rng = np.random.default_rng(4)
    draws = {
        "normal": rng.normal(0.4, 0.1, 12_000),
        "skewed": rng.gamma(2.0, 0.3, 12_000),
        "bimodal": np.concatenate([rng.normal(0, 1, 8_000), rng.normal(5, 1, 4_000)]),
        "few": rng.gamma(3.0, 1.0, 40),
    }[shape]
    grid = np.linspace(draws.min(), draws.max(), 20_001)
    exact = grid[np.argmax(gaussian_kde(draws)(grid))]
    assert abs(posterior_mode(draws) - exact) <= 3e-3 * np.ptp(draws)
    assert posterior_mode(np.full(5, 0.25)) == 0.25
