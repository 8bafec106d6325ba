"""Every bivariate model of a list of traits: each pair equals its own cbind() REML fit, the
matrices are symmetric with 1 on the diagonal, a pair that cannot be fitted says why, and the
command line writes the files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_multitrait import _two_traits

from bayes_animal import reml
from bayes_animal.cli import main
from bayes_animal.pairs import PAIR_COLUMNS, reml_pairs
from bayes_animal.results.io import write_matrix


@pytest.fixture(scope="module")
def three_traits():
    data, relmat = _two_traits(5)
    rng = np.random.default_rng(9)
    data = data.assign(y3=0.5 * data["x"] + rng.normal(0, 1.0, len(data)))
    data.loc[data.index[:5], "y3"] = np.nan
    return data, relmat


def test_each_pair_is_its_own_bivariate_fit(three_traits, tmp_path):
    data, relmat = three_traits
    result = reml_pairs("~ 1 + x", data, "y1,y2,y3", relmat=relmat, out=tmp_path, workers=1,
                        progress=False)  # fmt: skip
    table = result.table
    assert list(table.columns) == list(PAIR_COLUMNS)
    assert list(zip(table["trait1"], table["trait2"], strict=True)) == [
        ("y1", "y2"), ("y1", "y3"), ("y2", "y3"),
    ]  # fmt: skip
    for row in table.itertuples():
        with pytest.warns(UserWarning):
            fit = reml(f"cbind({row.trait1}, {row.trait2}) ~ 1 + x", data, relmat=relmat)
        key = f"corr:additive:{row.trait1}:{row.trait2}"
        assert row.rg == pytest.approx(fit.ratios.loc[key, "estimate"], rel=1e-10)
        assert row.re == pytest.approx(
            fit.ratios.loc[f"corr:residual:{row.trait1}:{row.trait2}", "estimate"], rel=1e-10
        )
        assert row.h2_trait2 == pytest.approx(fit.ratios.loc[f"h2:{row.trait2}", "estimate"])
        assert row.loglik == pytest.approx(fit.loglik, rel=1e-12)
    for matrix in (result.rg, result.re):
        np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T)
        np.testing.assert_allclose(np.diag(matrix.to_numpy()), 1.0)
    assert result.rg.loc["y1", "y3"] == table.loc[1, "rg"]
    for name in ("pairs.csv", "rg.csv", "rg_se.csv", "re.csv", "re_se.csv"):
        assert (tmp_path / name).is_file()
    written = pd.read_csv(tmp_path / "rg.csv", index_col="trait")
    np.testing.assert_allclose(written.to_numpy(), result.rg.to_numpy(), rtol=1e-9)


def test_a_pair_that_cannot_be_fitted_says_why_and_the_others_go_on(three_traits):
    data, relmat = three_traits
    data = data.assign(flat=3.0)
    result = reml_pairs("~ 1 + x", data, "y1,y2,flat", relmat=relmat, workers=1, progress=False)
    failed = result.table[result.table["trait2"] == "flat"]
    assert len(failed) == 2 and failed["status"].str.contains("'flat' is constant").all()
    assert failed["rg"].isna().all() and np.isnan(result.rg.loc["y1", "flat"])
    assert result.table.loc[0, "status"] == "ok"


def test_the_command_line_writes_the_matrices_and_refuses_what_pairs_cannot_do(
    three_traits, tmp_path, capsys
):
    data, relmat = three_traits
    data.to_csv(tmp_path / "data.csv", index=False)
    write_matrix(relmat.matrix, relmat.ids, tmp_path / "A.csv")
    common = ["reml", "--data", str(tmp_path / "data.csv"), "--relmat", str(tmp_path / "A.csv")]
    common += ["--formula", "~ 1 + x", "--traits", "y*"]
    assert main([*common, "--pairs", "--out", str(tmp_path / "out"), "--workers", "1",
                 "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "3 pairs: 3 ok" in printed and "genetic correlations" in printed
    assert len(pd.read_csv(tmp_path / "out" / "pairs.csv")) == 3
    assert main([*common, "--pairs", "--out", str(tmp_path / "o2"), "--resume"]) == 2
    assert "--resume and --blups are for --traits" in capsys.readouterr().err
    no_traits = ["reml", "--data", str(tmp_path / "data.csv"), "--relmat", str(tmp_path / "A.csv")]
    assert main([*no_traits, "--formula", "y1 ~ 1", "--pairs"]) == 2
    assert "give --traits LIST" in capsys.readouterr().err


def test_a_pair_whose_optimum_lies_on_the_edge_of_the_cone_converges(three_traits, tmp_path):
    """y3 has no genetic variance: the (y2, y3) genetic matrix is estimated singular. Read
    back from CSV files (as the command line reads them) its AI steps left the cone every
    iteration and the fit stopped at 100 without converging; taken in the Cholesky factors
    it converges, the correlation held at the edge."""
    from pathlib import Path

    from bayes_animal.structures.inputs import resolve_relationship

    data, relmat = three_traits
    data.to_csv(tmp_path / "data.csv", index=False)
    write_matrix(relmat.matrix, relmat.ids, tmp_path / "A.csv")
    source = resolve_relationship(relmat=Path(tmp_path / "A.csv"))
    fit = reml("cbind(y2, y3) ~ 1 + x", pd.read_csv(tmp_path / "data.csv"), source=source,
               warn=False)  # fmt: skip
    assert fit.converged and fit.iterations < 40
    assert fit.boundary == ("additive:y2:y3",)
    assert fit.loglik > -197.5340  # where the steps along the chord stalled
