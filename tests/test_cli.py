"""The command line: reml (table, --json, --out), simulate, demo, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    for word in ["additive", "residual", "proportion", "Intercept", "fix", "converged"]:
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
    assert list(blup.columns) == [
        "id", "blup", "pev", "sep", "reliability", "accuracy", "n_records"
    ]  # fmt: skip
    assert set(payload["components"]) == {"additive", "residual"}
    assert set(payload["timings"]) >= {"read", "relationship", "fit", "total"}
    assert len(blup) == 150
    np.testing.assert_allclose(blup["blup"], api.blup["blup"].to_numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(blup["pev"], api.blup["pev"].to_numpy(), rtol=1e-8)


def test_reml_prints_the_same_json_whether_or_not_it_writes_the_predictions(
    sim_dir, tmp_path, capsys
):
    # without --out the predictions' PEVs are not computed: they appear only in the files
    assert main(_reml_args(sim_dir, "--json")) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(_reml_args(sim_dir, "--json", "--out", str(tmp_path))) == 0
    with_files = json.loads(capsys.readouterr().out)
    assert pd.read_csv(tmp_path / "blup.csv")["pev"].notna().all()
    del alone["timings"], with_files["timings"]
    assert alone == with_files


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
    cases["missing covariate"] = ("missing_cov.csv", "A.csv", "response ~ 1 + fix", "data row(s) 6")
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


def _indefinite_case(sim_dir, tmp_path, case):
    """reml arguments for an indefinite matrix, and its smallest eigenvalue."""
    A = pd.read_csv(sim_dir / "A.csv", index_col=0)
    values = A.to_numpy() - 3 * np.eye(len(A)) * A.to_numpy().diagonal().max()
    pd.DataFrame(values, index=A.index, columns=A.columns).to_csv(tmp_path / "indefinite.csv")
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    if case == "an animal without records":
        pheno = pheno.iloc[1:]
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    extra = ["--engine", "sparse"] if case == "sparse engine" else []
    args = [
        "reml", "--data", str(tmp_path / "pheno.csv"), "--relmat", str(tmp_path / "indefinite.csv"),
        "--formula", "response ~ 1 + fix", "--json", *extra,
    ]  # fmt: skip
    return args, np.linalg.eigvalsh(values)[0]


@pytest.mark.parametrize(
    "case", ["every animal one record", "an animal without records", "sparse engine"]
)
def test_reml_refuses_an_indefinite_matrix_whichever_step_checks_it(
    sim_dir, tmp_path, capsys, case
):
    # reml leaves the check of a given matrix to its first use: the spectral path's eigenvalues
    # when they are A's, a Cholesky factorisation otherwise; the error is the reader's
    args, smallest = _indefinite_case(sim_dir, tmp_path, case)
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.replace("\n", " ")
    assert "not positive semi-definite: its smallest eigenvalue is" in message
    assert f"is {smallest:.6g}." in message and "--nearest-pd" in message


def test_reml_checks_a_given_matrix_once_and_by_cholesky_only_when_it_must(
    sim_dir, tmp_path, monkeypatch, capsys
):
    from bayes_animal.structures import relationship

    calls = []
    check = relationship._smallest_eigenvalue_if_needed
    monkeypatch.setattr(
        relationship, "_smallest_eigenvalue_if_needed", lambda m: calls.append(1) or check(m)
    )
    assert main(_reml_args(sim_dir, "--json", "--out", str(tmp_path / "a"))) == 0
    assert calls == []  # every animal has one record: the eigenvalues of Z A Zᵀ are A's
    pheno = pd.read_csv(sim_dir / "pheno.csv").iloc[1:]
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    args = _reml_args(sim_dir, "--json", "--out", str(tmp_path / "b"))
    args[2] = str(tmp_path / "pheno.csv")
    assert main(args) == 0
    assert calls == [1]  # an animal without records: Cholesky, once
    capsys.readouterr()


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
        "sigma2:additive",
        "sigma2:residual",
        "top 5 breeding values",
        "REML check",
        "diagnostics: max R-hat",
        "prior sensitivity ≤",
        "posterior-mean EBVs",
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


def test_cli_does_not_import_pymc_scipy_or_pandas_for_reml(sim_dir, tmp_path):
    """`reml` on a ready matrix, writing its files, imports only what its path needs (issue
    11, goal 3): pandas alone takes 0.4 s to import, half of the whole command before it was
    left out."""
    code = (
        "import sys; from bayes_animal.cli import main; "
        f"main(['reml', '--data', r'{sim_dir / 'pheno.csv'}', '--relmat', r'{sim_dir / 'A.csv'}',"
        f" '--formula', 'response ~ 1 + fix', '--json', '--out', r'{tmp_path}']); "
        "print('HEAVY', sorted(m for m in ('pymc', 'pytensor', 'scipy', 'arviz', 'pandas', "
        "'bayes_animal.simulate', 'bayes_animal.estimation.compare') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "HEAVY []" in completed.stdout, completed.stdout + completed.stderr


def test_default_fit_of_the_spectral_model_compiles_nothing(sim_dir, tmp_path):
    """The everyday fit (spectral marginal model, default sampler) runs nutpie on the
    hand-derived density: PyMC and PyTensor are never imported, so a machine with an empty
    compile cache pays nothing extra on its first fit (issue 11, goal 2)."""
    code = (
        "import sys; from bayes_animal.cli import main; "
        f"main(['fit', '--data', r'{sim_dir / 'pheno.csv'}', '--relmat', r'{sim_dir / 'A.csv'}',"
        f" '--formula', 'response ~ 1 + fix', '--out', r'{tmp_path}', '--draws', '100',"
        " '--tune', '100', '--chains', '2', '--quiet', '--json']); "
        "print('COMPILERS', sorted(m for m in ('pymc', 'pytensor') if m in sys.modules))"
    )
    # one thread: the figures are drawn in this process too, so its imports are all seen
    env = {**os.environ, "BAYES_ANIMAL_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert "COMPILERS []" in completed.stdout, completed.stdout + completed.stderr
    assert json.loads(completed.stdout.splitlines()[0])["sampler"] == "nutpie"


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "bayes_animal.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_reml_with_pedigree_through_the_cli(tmp_path):
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    completed = _run(
        "reml",
        "--data",
        folder / "gryphon.csv",
        "--pedigree",
        folder / "gryphonped.csv",
        "--pedigree-columns",
        "id,father,mother",
        "--formula",
        "bwt ~ 1",
        "--json",
        "--out",
        tmp_path,
    )
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    assert payload["sigma2_u"] == pytest.approx(3.395398, rel=1e-3)
    assert payload["n_animals"] == 1309
    assert "230 of 1084 records" in completed.stderr.replace("\n", " ")
    assert len(pd.read_csv(tmp_path / "blup.csv")) == 1309


def _pedigree_file(tmp_path, rows):
    path = tmp_path / "ped.csv"
    pd.DataFrame(rows, columns=["id", "sire", "dam"]).to_csv(path, index=False)
    data = tmp_path / "data.csv"
    pd.DataFrame({"animal": ["c", "d", "e"], "y": [1.0, 2.0, 0.5]}).to_csv(data, index=False)
    return path, data


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        (
            [
                ["a", "0", "0"],
                ["b", "0", "0"],
                ["c", "a", "b"],
                ["c", "b", "a"],
                ["d", "a", "b"],
                ["e", "a", "b"],
            ],
            "conflicting parents: 'c'",
        ),
        (
            [["a", "e", "0"], ["b", "0", "0"], ["c", "a", "b"], ["d", "c", "b"], ["e", "d", "b"]],
            "cycle",
        ),
        (
            [["a", "0", "0"], ["b", "0", "0"], ["c", "a", "b"], ["d", "b", "a"], ["e", "a", "b"]],
            "both as sire and as dam: 'a', 'b'",
        ),
        (
            [["a", "0", "0"], ["b", "0", "0"], ["c", "a", "b"], ["d", "a", "b"]],
            "in the data are not in the pedigree: 'e'",
        ),
    ],
    ids=["conflicting-duplicate", "cycle", "sire-as-dam", "not-in-pedigree"],
)
def test_pedigree_errors_through_the_cli(tmp_path, rows, needle):
    pedigree, data = _pedigree_file(tmp_path, rows)
    completed = _run("reml", "--data", data, "--pedigree", pedigree, "--formula", "y ~ 1")
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert needle in completed.stderr.replace("\n", " "), completed.stderr


def test_relmat_command_writes_a_and_inverse(tmp_path, capsys):
    from conftest import shared_folder

    folder = shared_folder("mrode")
    out = tmp_path / "A.csv"
    assert (
        main(["relmat", "--pedigree", str(folder / "ex04_1_pedigree.csv"), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "inbreeding mean 0.00000" in printed and "0 inbred animals" in printed
    A = pd.read_csv(out, index_col=0)
    assert A.loc[8, "5"] == pytest.approx(0.375)
    inverse = tmp_path / "Ainv.csv"
    assert (
        main(
            [
                "relmat",
                "--pedigree",
                str(folder / "ex04_1_pedigree.csv"),
                "--out",
                str(inverse),
                "--inverse",
                "--format",
                "triplets",
            ]
        )
        == 0
    )
    triplets = pd.read_csv(inverse)
    assert list(triplets.columns) == ["row", "col", "value"]
    dense = np.zeros((8, 8))
    for row in triplets.itertuples():
        dense[row.row - 1, row.col - 1] = dense[row.col - 1, row.row - 1] = row.value
    np.testing.assert_allclose(dense, np.linalg.inv(A.to_numpy()), atol=1e-12)


def test_relmat_genotypes_needs_a_ridge_and_then_writes_g(tmp_path, capsys):
    rng = np.random.default_rng(1)
    geno = pd.DataFrame(rng.binomial(2, 0.4, size=(20, 50)), columns=[f"m{j}" for j in range(50)])
    geno.insert(0, "id", [f"x{i}" for i in range(20)])
    geno.to_csv(tmp_path / "geno.csv", index=False)
    args = ["relmat", "--genotypes", str(tmp_path / "geno.csv"), "--out", str(tmp_path / "G.csv")]
    assert main(args) == 2
    assert "--ridge" in capsys.readouterr().err
    assert main([*args, "--ridge", "0.05"]) == 0
    assert "20 animals" in capsys.readouterr().out
    G = pd.read_csv(tmp_path / "G.csv", index_col=0)
    assert G.shape == (20, 20)


def test_bad_pedigree_columns_flag(tmp_path, capsys):
    pedigree, data = _pedigree_file(tmp_path, [["a", "0", "0"]])
    assert (
        main(
            [
                "reml",
                "--data",
                str(data),
                "--pedigree",
                str(pedigree),
                "--formula",
                "y ~ 1",
                "--pedigree-columns",
                "id,sire",
            ]
        )
        == 2
    )
    assert "three names" in capsys.readouterr().err


def test_fit_command_writes_outputs_and_json(sim_dir, tmp_path):
    out = tmp_path / "fit"
    completed = _run(
        "fit",
        "--data",
        sim_dir / "pheno.csv",
        "--relmat",
        sim_dir / "A.csv",
        "--formula",
        "response ~ 1 + fix",
        "--out",
        out,
        "--draws",
        "300",
        "--tune",
        "300",
        "--chains",
        "2",
        "--seed",
        "5",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr
    summary = json.loads(completed.stdout)
    for key in (
        "sigma2_u",
        "sigma2_e",
        "h2",
        "beta",
        "reml",
        "reml_check",
        "diagnostics",
        "timings",
        "sampler",
        "parameterisation",
    ):
        assert key in summary
    assert summary["h2"]["hdi_low"] < summary["h2"]["mean"] < summary["h2"]["hdi_high"]
    assert set(summary["timings"]) >= {"eigh", "compile", "sampling", "total"}
    assert summary["sampler"] == "nutpie" and summary["parameterisation"] == "marginal"
    for name in ("summary.json", "ebv.csv", "posterior.nc", "h2.png", "trace.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "h2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(out / "ebv.csv")) == 150
    assert any("chose 'marginal'" in note for note in summary["notes"])  # auto says what it chose


def test_fit_command_unknown_prior_is_a_clean_error(sim_dir, tmp_path):
    completed = _run(
        "fit",
        "--data",
        sim_dir / "pheno.csv",
        "--relmat",
        sim_dir / "A.csv",
        "--formula",
        "response ~ 1 + fix",
        "--out",
        tmp_path,
        "--prior",
        "gamma",
    )
    assert completed.returncode == 2
    assert "Unknown prior 'gamma'" in completed.stderr and "Traceback" not in completed.stderr


def test_rank_command_from_a_fit(sim_dir, tmp_path):
    fit_dir = tmp_path / "fit"
    completed = _run(
        "fit",
        "--data",
        sim_dir / "pheno.csv",
        "--relmat",
        sim_dir / "A.csv",
        "--formula",
        "response ~ 1 + fix",
        "--out",
        fit_dir,
        "--draws",
        "200",
        "--tune",
        "200",
        "--chains",
        "2",
        "--seed",
        "3",
        "--no-progress",
    )
    assert completed.returncode == 0, completed.stderr
    written = pd.read_csv(fit_dir / "ranking.csv")
    expected = [
        "id",
        "ebv_mean",
        "ebv_sd",
        "reliability",
        "hdi_low",
        "hdi_high",
        "rank_mean",
        "rank_low",
        "rank_high",
        "p_top",
        "k",
        "reml_blup",
        "reml_rank",
    ]
    assert list(written.columns[: len(expected)]) == expected
    assert len(written) == 150
    assert (written["k"] == 15).all()  # fit's default: 10 % of the 150 candidates
    # candidates from a file: ranks within the subset only
    candidates = tmp_path / "candidates.csv"
    pd.DataFrame({"id": written["id"].iloc[::10]}).to_csv(candidates, index=False)
    out = tmp_path / "rank"
    completed = _run(
        "rank",
        "--posterior",
        fit_dir / "posterior.nc",
        "--candidates",
        candidates,
        "--top",
        "3",
        "--out",
        out,
    )
    assert completed.returncode == 0, completed.stderr
    ranking = pd.read_csv(out / "ranking.csv")
    assert len(ranking) == 15
    assert ranking["p_top"].sum() == pytest.approx(3)
    assert (ranking["k"] == 3).all() and "k = 3" in completed.stdout
    assert ranking["rank_mean"].sum() == pytest.approx(15 * 16 / 2)
    # candidates as a boolean column of the data
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    pheno["young"] = pheno.index % 5 == 0
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    completed = _run(
        "rank",
        "--posterior",
        fit_dir / "posterior.nc",
        "--candidates",
        "young",
        "--data",
        tmp_path / "pheno.csv",
        "--top-fraction",
        "0.2",
        "--out",
        out,
    )
    assert completed.returncode == 0, completed.stderr
    assert len(pd.read_csv(out / "ranking.csv")) == 30
    completed = _run(
        "rank",
        "--posterior",
        fit_dir / "posterior.nc",
        "--candidates",
        "old",
        "--top",
        "3",
        "--out",
        out,
    )
    assert completed.returncode == 2 and "neither a file" in completed.stderr


def test_backticked_dotted_names_through_reml_and_fit_commands(sim_dir, tmp_path, capsys):
    """`Obesity.BMI` ~ 1 + GENDER works on the command line (plain path, formulaic path, fit)."""
    data = pd.read_csv(sim_dir / "pheno.csv").rename(columns={"response": "Obesity.BMI"})
    data["GENDER"] = np.arange(len(data)) % 2
    path = tmp_path / "dotted.csv"
    data.to_csv(path, index=False)
    base = ["--data", str(path), "--relmat", str(sim_dir / "A.csv")]
    for formula in ("`Obesity.BMI` ~ 1 + GENDER", "`Obesity.BMI` ~ 1 + C(GENDER)"):
        assert main(["reml", *base, "--formula", formula, "--json"]) == 0
        payload = json.loads(capsys.readouterr().out)
        assert payload["converged"] and len(payload["beta"]) == 2
    code = main(
        [
            "fit",
            *base,
            "--formula",
            "`Obesity.BMI` ~ 1 + GENDER",
            "--out",
            str(tmp_path / "f"),
            "--draws",
            "50",
            "--tune",
            "50",
            "--chains",
            "1",
            "--no-progress",
            "--json",
        ]
    )
    assert code == 0
    assert set(json.loads(capsys.readouterr().out)["beta"]) == {"Intercept", "GENDER"}


def test_reml_with_several_random_effects_through_the_cli(tmp_path):
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    completed = _run(
        "reml", "--data", folder / "gryphon.csv", "--pedigree", folder / "gryphonped.csv",
        "--formula", "bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)", "--json",
        "--out", tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    assert set(payload["components"]) == {"additive", "byear", "mother", "residual"}
    for component in payload["components"].values():
        assert set(component) >= {"variance", "se", "proportion", "proportion_se"}
    assert payload["components"]["mother"]["variance"] == pytest.approx(1.1184698, rel=1e-4)
    assert payload["sigma2_u"] == pytest.approx(2.2985320, rel=1e-4)  # the first version's key
    assert set(payload["timings"]) >= {"read", "relationship", "fit", "total"}
    assert payload["engine"] == "sparse"
    assert len(pd.read_csv(tmp_path / "blup.csv")) == 1309
    assert len(pd.read_csv(tmp_path / "blup_byear.csv")) == 34
    assert len(pd.read_csv(tmp_path / "blup_mother.csv")) == 394
    table = _run(
        "reml", "--data", folder / "gryphon.csv", "--pedigree", folder / "gryphonped.csv",
        "--formula", "bwt ~ 1 + C(sex) + (1 | byear)",
    )  # fmt: skip
    assert table.returncode == 0 and "byear" in table.stdout and "proportion" in table.stdout


def test_maternal_flags_through_the_cli(mrode, tmp_path):
    data = pd.read_csv(mrode / "ex08_1_birthweight.csv")
    pedigree = mrode / "ex08_1_pedigree.csv"
    path = tmp_path / "bw.csv"
    data.to_csv(path, index=False)
    completed = _run(
        "reml", "--data", path, "--pedigree", pedigree, "--animal", "calf",
        "--formula", "birth_weight ~ 1 + C(herd) + (1 | dam)", "--maternal", "dam",
        "--maternal-covariance", "--json", "--out", tmp_path / "out",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    assert set(payload["components"]) == {"additive", "maternal", "dam", "residual"}
    assert set(payload["covariances"]) == {"additive:maternal"}
    assert set(payload["covariances"]["additive:maternal"]) >= {"covariance", "se", "correlation"}
    assert (tmp_path / "out" / "blup_maternal.csv").is_file()
    assert (tmp_path / "out" / "blup_dam.csv").is_file()
    # a dam that is not in the pedigree: one paragraph naming it, exit 2
    data.loc[0, "dam"] = 99
    data.to_csv(path, index=False)
    bad = _run(
        "reml", "--data", path, "--pedigree", pedigree, "--animal", "calf",
        "--formula", "birth_weight ~ 1", "--maternal", "dam",
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "'99'" in bad.stderr
    needs = _run(
        "reml", "--data", path, "--pedigree", pedigree, "--animal", "calf",
        "--formula", "birth_weight ~ 1", "--maternal-covariance",
    )  # fmt: skip
    assert needs.returncode == 2 and "needs a maternal effect" in needs.stderr


def test_reml_without_a_relationship_is_a_linear_mixed_model(tmp_path):
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    completed = _run(
        "reml", "--data", folder / "gryphonRM.csv", "--formula", "laydate ~ 1 + (1 | animal)",
        "--json",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    payload = json.loads(completed.stdout)
    assert payload["components"]["animal"]["variance"] == pytest.approx(11.08634, rel=1e-4)


def test_fit_and_rank_with_several_random_effects(mrode, tmp_path):
    """`fit` takes the formula and --maternal flags of `reml`: summary.json keeps the first
    version's keys and adds `components` (keyed as in `reml --json`) and `covariances`;
    ebv.csv is the additive effect, ebv_<component>.csv every other; `rank --effect maternal`
    ranks the maternal breeding values and a missing effect is a clean error."""
    data = pd.read_csv(mrode / "ex08_1_birthweight.csv")
    path = tmp_path / "bw.csv"
    data.to_csv(path, index=False)
    out = tmp_path / "fit"
    completed = _run(
        "fit", "--data", path, "--pedigree", mrode / "ex08_1_pedigree.csv", "--animal", "calf",
        "--formula", "birth_weight ~ 1 + C(herd) + (1 | dam)", "--maternal", "dam",
        "--maternal-covariance", "--prior", "inverse_gamma", "--draws", "150", "--tune", "150",
        "--chains", "2", "--seed", "2", "--no-progress", "--out", out,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert {"sigma2_u", "sigma2_e", "h2"} <= set(summary)
    assert set(summary["components"]) == {"additive", "maternal", "dam", "residual"}
    for component in summary["components"].values():
        assert {"mean", "sd", "hdi_low", "hdi_high", "ess_bulk", "r_hat"} <= set(component)
    pair = summary["covariances"]["additive:maternal"]
    assert pair["hdi_low"] <= pair["mean"] <= pair["hdi_high"]
    assert -1 <= summary["ratios"]["corr:additive:maternal"]["mean"] <= 1
    assert summary["sigma2_u"] == summary["components"]["additive"]
    assert "inverse-Wishart" in completed.stderr or "InverseWishart" in json.dumps(summary)
    pedigree_size = len(pd.read_csv(mrode / "ex08_1_pedigree.csv"))
    assert len(pd.read_csv(out / "ebv.csv")) == pedigree_size
    assert len(pd.read_csv(out / "ebv_maternal.csv")) == pedigree_size
    assert len(pd.read_csv(out / "ebv_dam.csv")) == data["dam"].nunique()
    ranked = _run(
        "rank", "--posterior", out / "posterior.nc", "--effect", "maternal", "--top", "3",
        "--out", tmp_path / "rank",
    )  # fmt: skip
    assert ranked.returncode == 0, ranked.stderr
    table = pd.read_csv(tmp_path / "rank" / "ranking.csv")
    maternal = pd.read_csv(out / "ebv_maternal.csv")
    assert len(table) == len(maternal)
    # the best maternal breeding value by posterior mean ranks first
    assert str(table.iloc[0, 0]) == str(maternal.sort_values("mean").iloc[-1, 0])
    missing = _run(
        "rank", "--posterior", out / "posterior.nc", "--effect", "cage", "--out", tmp_path / "r2"
    )
    assert missing.returncode == 2 and "no effect 'cage'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_reml_and_fit_with_many_traits(tmp_path):
    """`reml --traits` on the wheat lines (four environments as four traits) writes
    traits.csv equal to one `reml` per trait, groups.csv and the BLUP matrix; --resume keeps
    the rows there; `fit --traits` writes one posterior row per trait; --traits needs --out."""
    from conftest import shared_folder

    folder = shared_folder("wheat")
    common = ("--data", folder / "wheat_Y.csv", "--relmat", folder / "wheat_A.csv",
              "--animal", "line")  # fmt: skip
    out = tmp_path / "many"
    completed = _run(
        "reml", *common, "--formula", "~ 1", "--traits", "env*", "--out", out, "--blups",
        "--no-progress",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "4 traits: 4 ok" in completed.stdout and "1 pattern(s)" in completed.stdout
    table = pd.read_csv(out / "traits.csv").set_index("trait")
    assert list(table.index) == ["env1", "env2", "env4", "env5"]
    one = _run("reml", *common, "--formula", "env4 ~ 1", "--json")
    payload = json.loads(one.stdout)
    assert table.loc["env4", "sigma2:additive"] == pytest.approx(payload["sigma2_u"], rel=1e-8)
    assert table.loc["env4", "h2"] == pytest.approx(payload["h2"], rel=1e-8)
    blups = pd.read_csv(out / "blups.csv")
    assert list(blups.columns) == ["id", "env1", "env2", "env4", "env5"] and len(blups) == 599
    resumed = _run(
        "reml", *common, "--formula", "~ 1", "--traits", "env1,env2", "--out", out,
        "--resume", "--no-progress",
    )  # fmt: skip
    assert resumed.returncode == 0 and len(pd.read_csv(out / "traits.csv")) == 4
    bayes = _run(
        "fit", *common, "--formula", "~ 1", "--traits", "env1,env5", "--out", tmp_path / "post",
        "--draws", "150", "--tune", "150", "--chains", "2", "--seed", "1", "--workers", "1",
    )  # fmt: skip
    assert bayes.returncode == 0, bayes.stderr
    posterior = pd.read_csv(tmp_path / "post" / "traits.csv").set_index("trait")
    assert list(posterior.index) == ["env1", "env5"]
    assert posterior["h2_mean"].between(0.1, 0.7).all()
    needs_out = _run("reml", *common, "--formula", "~ 1", "--traits", "env*")
    assert needs_out.returncode == 2 and "--out" in needs_out.stderr
    unknown = _run(
        "reml", *common, "--formula", "~ 1", "--traits", "yield*", "--out", tmp_path / "x"
    )
    assert unknown.returncode == 2 and "'yield*'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


def test_reml_many_traits_reports_a_group_whose_design_failed(sim_dir, tmp_path, capsys):
    """`reml --traits` with a missing-value group whose design fails (a covariate constant on
    its records): exit 0, its trait's row carries the reason and the summary counts it."""
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    batch = np.arange(len(pheno)) % 2
    pheno = pheno.assign(batch=batch, y_batch1=np.where(batch == 1, pheno["response"], np.nan))
    pheno.to_csv(tmp_path / "pheno.csv", index=False)
    out = tmp_path / "many"
    status = main([
        "reml", "--data", str(tmp_path / "pheno.csv"), "--relmat", str(sim_dir / "A.csv"),
        "--formula", "~ 1 + fix + batch", "--traits", "response,y_batch1", "--out", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "2 traits: 1 ok, 1 with a note in 'status'" in printed
    assert "2 pattern(s) of missing records: 1 with one eigendecomposition each" in printed
    assert "1 whose design failed (the reason in 'status')" in printed
    table = pd.read_csv(out / "traits.csv").set_index("trait")
    assert "rank deficient" in table.loc["y_batch1", "status"]


def test_fit_quiet_prints_no_progress_and_no_sampler_messages(sim_dir, tmp_path):
    """--quiet: the result table and nothing of the sampler's on stderr (the progress bar, the
    "note: parameterisation 'auto' chose" lines and PyMC's logging); --sampler pymc too."""
    for sampler in ("nutpie", "pymc"):
        out = tmp_path / sampler
        args = ["--data", sim_dir / "pheno.csv", "--relmat", sim_dir / "A.csv"]
        completed = _run(
            "fit", *args, "--formula", "response ~ 1 + fix", "--out", out, "--draws", "100",
            "--tune", "100", "--chains", "2", "--seed", "2", "--sampler", sampler, "--quiet",
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr
        assert "posterior (" in completed.stdout
        for chatter in ("Sampling", "NUTS", "chose 'marginal'", "Progress", "%"):
            assert chatter not in completed.stderr, (sampler, completed.stderr)
        assert (out / "trace.png").stat().st_size > 0


def test_only_a_process_of_its_own_tunes_the_collector(sim_dir):
    """The console script (argv from the command line) collects the youngest generation less
    often and freezes the objects left at the end, so that Python's finalisation skips the
    cycle collector; a caller that passes argv (a test, a notebook) keeps Python's settings
    and every object collectable — also after an error."""
    from bayes_animal.cli.process import YOUNG_GENERATION_THRESHOLD

    reml = ["reml", "--data", str(sim_dir / "pheno.csv"), "--relmat", str(sim_dir / "A.csv"),
            "--formula", "response ~ 1 + fix", "--json"]  # fmt: skip
    code = (
        "import gc, sys; from bayes_animal.cli import main\n"
        "how, sys.argv[1:] = sys.argv[1], sys.argv[2:]\n"
        "before, threshold = gc.get_freeze_count(), gc.get_threshold()\n"
        "status = main(sys.argv[1:]) if how == 'caller' else main()\n"
        "now = gc.get_threshold()\n"
        "print('STATUS', status, 'FROZEN', gc.get_freeze_count() > before,\n"
        "      'YOUNG', 'kept' if now[0] == threshold[0] else now[0],\n"
        "      'OLDER KEPT', now[1:] == threshold[1:])\n"
    )
    broken = [*reml[:-2], "response ~ 1 + nosuchcolumn", "--json"]
    tuned = f"YOUNG {YOUNG_GENERATION_THRESHOLD} OLDER KEPT True"
    for how, args, expected in [
        ("own", reml, f"STATUS 0 FROZEN True {tuned}"),
        ("own", broken, f"STATUS 2 FROZEN True {tuned}"),
        ("caller", reml, "STATUS 0 FROZEN False YOUNG kept OLDER KEPT True"),
        ("caller", broken, "STATUS 2 FROZEN False YOUNG kept OLDER KEPT True"),
    ]:
        completed = subprocess.run(
            [sys.executable, "-c", code, how, *args], capture_output=True, text=True, timeout=120
        )
        assert expected in completed.stdout, (how, completed.stdout + completed.stderr)


def test_without_dask_keeps_xarray_from_importing_it():
    """The fit command marks dask absent before xarray is imported: building a DataArray and
    writing netCDF then import neither dask.array nor dask.distributed."""
    code = (
        "import sys, importlib.util, tempfile, os\n"
        "from bayes_animal.cli.process import _without_dask\n"
        "_without_dask()\n"
        "import xarray as xr\n"
        "assert importlib.util.find_spec('dask') is None\n"
        "ds = xr.Dataset({'a': ('x', [1.0, 2.0])})\n"
        "ds.to_netcdf(os.path.join(tempfile.mkdtemp(), 'a.nc'), engine='h5netcdf')\n"
        "loaded = [m for m in sys.modules if m.startswith(('dask.', 'distributed'))]\n"
        "assert not loaded, loaded\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    import os

    keep = {**os.environ, "BAYES_ANIMAL_KEEP_DASK": "1"}
    kept = subprocess.run(
        [sys.executable, "-c", "from bayes_animal.cli.process import _without_dask\n"
         "_without_dask()\nimport sys\nassert sys.modules.get('dask', 0) is not None"],
        capture_output=True, text=True, timeout=120, env=keep,
    )  # fmt: skip
    assert kept.returncode == 0, kept.stderr


def test_fit_reports_every_warning_but_known_library_noise(capsys):
    """Ours print as notes; another library's warning prints with its category and place; a
    library's DeprecationWarning is the one kind left out (nothing else is dropped)."""
    import warnings

    from bayes_animal.cli.words import _report_warnings
    from bayes_animal.design import DroppedRecordsWarning

    def caught(message, category, filename):
        return warnings.WarningMessage(message, category, filename, 7)

    here = str(Path(__file__).resolve().parents[1] / "bayes_animal" / "api.py")
    _report_warnings(
        [
            caught(DroppedRecordsWarning("3 records left out"), DroppedRecordsWarning, here),
            caught(RuntimeWarning("overflow in exp"), RuntimeWarning, "/x/numpy/core.py"),
            caught(UserWarning("too few samples"), UserWarning, "/x/pymc/stats.py"),
            caught(DeprecationWarning("old API"), DeprecationWarning, "/x/xarray/core.py"),
            caught(DeprecationWarning("ours"), DeprecationWarning, here),
        ]
    )
    err = capsys.readouterr().err
    assert "note: 3 records left out" in err
    assert "RuntimeWarning from core.py:7: overflow in exp" in err
    assert "UserWarning from stats.py:7: too few samples" in err
    assert "old API" not in err
    assert "DeprecationWarning from api.py:7: ours" in err


def test_hints_are_given_in_the_command_lines_syntax():
    from bayes_animal.cli.words import in_command_line_words

    assert (
        in_command_line_words("try parameterisation='noncentred' or more tuning")
        == "try --parameterisation noncentred or more tuning"
    )
    assert in_command_line_words("Use nearest_pd=True.") == "Use --nearest-pd."
    assert in_command_line_words("Pass animal=<column>.") == "Pass --animal <column>."
    assert (
        in_command_line_words("Choose one with effect=<name>.")
        == "Choose one with --effect <name>."
    )
    assert in_command_line_words("priors='flat' gives REML") == "--prior flat gives REML"
    assert in_command_line_words("pass allow_selfing=True (--allow-selfing)") == (
        "pass --allow-selfing"
    )
    assert in_command_line_words("a frozen=True dataclass") == "a frozen=True dataclass"


def test_a_semicolon_file_is_named_and_read_with_sep(sim_dir, tmp_path):
    """A file written with ';' reads as one column: an error that names the separator and
    --sep; with --sep ';' it gives the same REML as the comma file."""
    pheno = pd.read_csv(sim_dir / "pheno.csv")
    pheno.to_csv(tmp_path / "semi.csv", sep=";", index=False)
    common = ["--relmat", sim_dir / "A.csv", "--formula", "response ~ 1 + fix", "--json"]
    refused = _run("reml", "--data", tmp_path / "semi.csv", *common)
    assert refused.returncode == 2
    assert "seems to use ';'" in refused.stderr and "--sep ';'" in refused.stderr
    semi = _run("reml", "--data", tmp_path / "semi.csv", "--sep", ";", *common)
    comma = _run("reml", "--data", sim_dir / "pheno.csv", *common)
    assert semi.returncode == 0, semi.stderr
    assert json.loads(semi.stdout)["h2"] == json.loads(comma.stdout)["h2"]


def test_simulate_a_herd_pedigree_with_known_truth_and_recover_it(tmp_path):
    """`simulate --pedigree herd` writes the pedigree, records and truth; REML of the formula
    it prints recovers every variance within 3 SE; bad --effects/--variances are errors."""
    out = tmp_path / "herd"
    done = _run(
        "simulate", "--pedigree", "herd", "--animals", "2500", "--records", "1,3",
        "--effects", "pe,herd_year:50", "--variances", "additive=1,pe=0.4,residual=2",
        "--seed", "5", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert names >= {"ped.csv", "pheno.csv", "truth.json", "true_additive.csv", "true_pe.csv"}
    truth = json.loads((out / "truth.json").read_text())
    assert truth["variances"] == {"additive": 1.0, "residual": 2.0, "pe": 0.4, "herd_year": 0.5}
    fit = _run(
        "reml", "--data", out / "pheno.csv", "--pedigree", out / "ped.csv",
        "--formula", truth["formula"], "--json",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    components = json.loads(fit.stdout)["components"]
    for name, value in truth["variances"].items():
        estimate = components[name]
        assert abs(estimate["variance"] - value) < 3 * estimate["se"], name
    bad = _run("simulate", "--pedigree", "herd", "--effects", "herd_year", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "needs its number of levels" in bad.stderr
    bad = _run(
        "simulate", "--pedigree", "random", "--animals", "300", "--variances", "dominance=1",
        "--out", tmp_path / "y",
    )  # fmt: skip
    assert bad.returncode == 2 and "'dominance'" in bad.stderr
