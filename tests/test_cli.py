"""The command line: reml (table, --json, --out), simulate, demo, and errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bayes_animal.cli import main


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert (
        main(["simulate", "--out", str(out), "--n", "150", "--n-snps", "200", "--seed", "3"]) == 0
    )
    return out


def _reml_args(folder, *extra):
    return [
        "reml",
        "--data",
        str(folder / "pheno.csv"),
        "--relmat",
        str(folder / "A.csv"),
        "--formula",
        "response ~ 1 + fix",
        *extra,
    ]


def test_simulate_writes_the_documented_files(sim_dir):
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    assert list(pheno.columns) == ["animal", "fix", "response"] and len(pheno) == 150
    A = pd.read_csv(sim_dir / "A.csv", index_col=0)
    assert A.shape == (150, 150) and list(A.columns) == list(A.index)
    truth = json.loads((sim_dir / "truth.json").read_text())
    assert truth["h2"] == pytest.approx(0.75)
    assert len(pd.read_csv(sim_dir / "true_u.csv")) == 150


def test_reml_prints_a_table(sim_dir, capsys):
    assert main(_reml_args(sim_dir)) == 0
    out = capsys.readouterr().out
    for word in ["sigma2_u", "sigma2_e", "h2", "beta[Intercept]", "beta[fix]", "converged"]:
        assert word in out


def test_reml_json_and_out(sim_dir, tmp_path, capsys):
    from bayes_animal import reml

    assert main(_reml_args(sim_dir, "--json", "--out", str(tmp_path))) == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    for key in [
        "sigma2_u",
        "sigma2_e",
        "h2",
        "se",
        "beta",
        "loglik",
        "converged",
        "n_records",
        "n_animals",
    ]:
        assert key in payload
    assert set(payload["se"]) >= {"sigma2_u", "sigma2_e", "h2"}
    assert payload["n_records"] == 150 and payload["n_animals"] == 150
    api = reml("response ~ 1 + fix", pd.read_csv(sim_dir / "pheno.csv"), relmat=sim_dir / "A.csv")
    assert payload["sigma2_u"] == pytest.approx(api.sigma2_u, rel=1e-12)
    assert payload["beta"]["fix"] == pytest.approx(api.beta["fix"], rel=1e-12)
    blup = pd.read_csv(tmp_path / "blup.csv")
    assert list(blup.columns[:4]) == ["id", "blup", "pev", "reliability"]
    assert len(blup) == 150
    np.testing.assert_allclose(blup["blup"], api.blup["blup"].to_numpy(), rtol=1e-8, atol=1e-12)


def test_ml_method_flag(sim_dir, capsys):
    assert main(_reml_args(sim_dir, "--json", "--method", "ml")) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "ml"


def test_notices_go_to_stderr_and_stdout_is_only_json(sim_dir, tmp_path, capsys):
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    pheno.loc[[3, 7], "response"] = np.nan
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    args = [
        "reml",
        "--data",
        str(tmp_path / "pheno.csv"),
        "--relmat",
        str(sim_dir / "A.csv"),
        "--formula",
        "response ~ 1 + fix",
        "--json",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["n_records"] == 148
    assert "2 of 150 records" in captured.err


def _broken_inputs(sim_dir, tmp_path):
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    A = pd.read_csv(sim_dir / "A.csv", index_col=0)
    cases = {}
    stranger = pheno.copy()
    stranger.loc[0, "animal"] = "ghost42"
    stranger.to_csv(tmp_path / "stranger.csv", index=False)
    cases["not in the relationship"] = ("stranger.csv", "A.csv", "response ~ 1 + fix", "ghost42")
    asym = A.copy()
    asym.iloc[0, 1] += 0.5
    asym.to_csv(tmp_path / "asym.csv")
    cases["not symmetric"] = ("pheno.csv", "asym.csv", "response ~ 1 + fix", "ind0001")
    indefinite = A.copy()
    indefinite.iloc[:, :] = A.to_numpy() - 3 * np.eye(len(A)) * A.to_numpy().diagonal().max()
    indefinite.to_csv(tmp_path / "indefinite.csv")
    cases["not positive semi-definite"] = (
        "pheno.csv",
        "indefinite.csv",
        "response ~ 1 + fix",
        "--nearest-pd",
    )
    cases["unknown column"] = ("pheno.csv", "A.csv", "response ~ 1 + weight", "'weight'")
    missing_cov = pheno.copy()
    missing_cov.loc[5, "fix"] = np.nan
    missing_cov.to_csv(tmp_path / "missing_cov.csv", index=False)
    cases["missing covariate"] = ("missing_cov.csv", "A.csv", "response ~ 1 + fix", "row(s) 5")
    cases["missing file"] = ("nothing.csv", "A.csv", "response ~ 1 + fix", "not found")
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    return cases


def test_cli_errors_exit_2_with_one_paragraph_and_no_traceback(sim_dir, tmp_path):
    A_path = sim_dir / "A.csv"
    (tmp_path / "A.csv").write_text(A_path.read_text())
    for name, (data, relmat, formula, needle) in _broken_inputs(sim_dir, tmp_path).items():
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "bayes_animal.cli",
                "reml",
                "--data",
                str(tmp_path / data),
                "--relmat",
                str(tmp_path / relmat),
                "--formula",
                formula,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 2, name
        assert completed.stdout == "", name
        assert "Traceback" not in completed.stderr, name
        assert completed.stderr.startswith("error: "), name
        assert needle in completed.stderr.replace("\n", " "), (name, completed.stderr)


def test_nearest_pd_flag_projects_with_a_notice(sim_dir, tmp_path, capsys):
    A = pd.read_csv(sim_dir / "A.csv", index_col=0)
    values = A.to_numpy().copy()
    values[0, 1] = values[1, 0] = 5.0  # breaks positive definiteness
    pd.DataFrame(values, index=A.index, columns=A.columns).to_csv(tmp_path / "A.csv")
    args = [
        "reml",
        "--data",
        str(sim_dir / "pheno.csv"),
        "--relmat",
        str(tmp_path / "A.csv"),
        "--formula",
        "response ~ 1 + fix",
        "--json",
    ]
    assert main(args) == 2
    assert "smallest eigenvalue" in capsys.readouterr().err
    assert main([*args, "--nearest-pd"]) == 0
    captured = capsys.readouterr()
    assert "nearest positive-definite" in captured.err
    assert json.loads(captured.out)["converged"]


def test_demo_runs_the_reference_simulation(capsys):
    assert main(["demo", "--n", "200", "--n-snps", "200", "--top", "5"]) == 0
    out = capsys.readouterr().out
    for word in [
        "truth",
        "REML",
        "h2",
        "sigma2_u",
        "sigma2_e",
        "top 5 breeding values",
        "correlation of the BLUPs",
    ]:
        assert word in out


def test_console_script_is_installed():
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlib.metadata import entry_points; "
            "print([e.value for e in entry_points(group='console_scripts') "
            "if e.name == 'bayes-animal'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "bayes_animal.cli:main" in completed.stdout


def test_cli_does_not_import_pymc_or_scipy_for_reml(sim_dir):
    code = (
        "import sys; from bayes_animal.cli import main; "
        f"main(['reml', '--data', r'{sim_dir / 'pheno.csv'}', '--relmat', r'{sim_dir / 'A.csv'}',"
        " '--formula', 'response ~ 1 + fix', '--json']); "
        "print('HEAVY', sorted(m for m in ('pymc', 'pytensor', 'scipy', 'arviz') "
        "if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "HEAVY []" in completed.stdout, completed.stdout + completed.stderr
