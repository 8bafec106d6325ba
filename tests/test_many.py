"""Many traits on one relationship matrix: the batch equals one-at-a-time fits, groups by
missing-value pattern, writes and resumes traits.csv, reports what it cannot fit, and runs
in local processes or on a Dask cluster (a worker killed mid-run does not lose the batch)."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_animal import reml, simulate_reference
from bayes_animal.errors import BayesAnimalError
from bayes_animal.many import (
    _RENAMED,
    MANY_COLUMNS,
    fit_many,
    group_traits,
    reml_many,
    select_traits,
)


@pytest.fixture(scope="module")
def traits():
    """Twelve traits of varied heritability on one simulated population, two of them with
    missing records (two patterns), one with no genetic variance."""
    sim = simulate_reference(n=150, n_snps=300, seed=8)
    rng = np.random.default_rng(3)
    signal = sim.data["response"].to_numpy() - sim.data["response"].mean()
    columns = {
        f"t{k}": 10 + signal * rng.uniform(0.2, 1.5) + rng.normal(size=150) * rng.uniform(0.5, 2)
        for k in range(10)
    }
    columns["t_noise"] = rng.normal(size=150)  # REML at the boundary σu² = 0 (or near)
    data = pd.concat([sim.data, pd.DataFrame(columns, index=sim.data.index)], axis=1)
    data.loc[::5, "t3"] = np.nan
    data.loc[::5, "t4"] = np.nan  # same pattern as t3
    data.loc[::7, "t5"] = np.nan
    return data, sim.relmat


def _one(data, relmat, trait, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return reml(f"{trait} ~ 1 + fix", data.dropna(subset=[trait]), relmat=relmat, **options)


def test_batch_equals_one_trait_at_a_time(traits):
    data, relmat = traits
    result = reml_many("~ 1 + fix", data, "t*", relmat=relmat, workers=1, progress=False)
    table = result.table.set_index("trait")
    assert list(table.index) == [f"t{k}" for k in range(10)] + ["t_noise"]
    assert (table["status"] == "ok").all()
    for trait in table.index:
        one = _one(data, relmat, trait)
        row = table.loc[trait]
        assert row["n_records"] == one.n_records
        for key, value in [
            ("sigma2:additive", one.sigma2_u),
            ("sigma2:residual", one.sigma2_e),
            ("h2", one.h2),
            ("loglik", one.loglik),
        ]:
            assert row[key] == pytest.approx(value, rel=1e-8, abs=1e-10), (trait, key)
        for key, alias in [("sigma2:additive", "sigma2_u"), ("sigma2:residual", "sigma2_e")]:
            expected = one.se[alias]
            if np.isnan(expected):
                assert np.isnan(row[f"{key}_se"]), (trait, key)
            else:
                assert row[f"{key}_se"] == pytest.approx(expected, rel=1e-8), (trait, key)
        assert row["h2_se"] == pytest.approx(one.se["h2"], rel=1e-8, nan_ok=True), trait
        assert row["boundary"] == ";".join(one.boundary) or (
            pd.isna(row["boundary"]) and not one.boundary
        )
        assert bool(row["converged"]) == one.converged


def test_ml_and_blups_equal_one_trait_at_a_time(traits):
    data, relmat = traits
    result = reml_many(
        "~ 1 + fix", data, ["t0", "t5"], relmat=relmat, method="ml", blups=True, workers=1,
        progress=False,
    )  # fmt: skip
    for trait in ("t0", "t5"):
        one = _one(data, relmat, trait, method="ml")
        row = result.table.set_index("trait").loc[trait]
        assert row["sigma2:additive"] == pytest.approx(one.sigma2_u, rel=1e-8)
        np.testing.assert_allclose(
            result.blups[trait].to_numpy(), one.blup["blup"].to_numpy(), rtol=1e-7, atol=1e-10
        )
    assert list(result.blups.index) == list(relmat.ids)


def test_traits_grouped_by_missing_pattern(traits):
    data, relmat = traits
    groups = group_traits(data, ["t0", "t3", "t4", "t5", "t1"])
    assert [g.traits for g in groups] == [("t0", "t1"), ("t3", "t4"), ("t5",)]
    assert [g.n_records for g in groups] == [150, 120, 128]
    result = reml_many("~ 1 + fix", data, "t*", relmat=relmat, workers=1, progress=False)
    assert len(result.groups) == 3  # one eigendecomposition per pattern, reported
    assert result.groups["traits"].sum() == 11


def test_local_processes_give_the_same_table(traits):
    data, relmat = traits
    serial = reml_many("~ 1 + fix", data, "t*", relmat=relmat, workers=1, progress=False)
    parallel = reml_many("~ 1 + fix", data, "t*", relmat=relmat, workers=2, chunk=2, progress=False)
    numeric = ["sigma2:additive", "sigma2:residual", "h2", "sigma2:additive_se", "loglik"]
    pd.testing.assert_frame_equal(serial.table[numeric], parallel.table[numeric], rtol=1e-12)


def test_trait_selection_and_its_errors(traits):
    data, _ = traits
    assert select_traits(data, "t1, t0") == ["t1", "t0"]
    assert select_traits(data, "t_*") == ["t_noise"]
    assert select_traits(data, ["t2", "t2"]) == ["t2"]
    with pytest.raises(BayesAnimalError, match=r"'t99'.*columns: animal"):
        select_traits(data, "t0,t99")
    with pytest.raises(BayesAnimalError, match=r"'Biochem\.\*'"):
        select_traits(data, "Biochem.*")
    with pytest.raises(BayesAnimalError, match="No traits given"):
        select_traits(data, " , ")


def test_unfittable_traits_get_a_row_with_the_reason(traits, tmp_path):
    data, relmat = traits
    data = data.assign(
        text=["x"] * 150, constant=1.0, sparse_trait=[1.0, 2.0] + [np.nan] * 148, flag=True
    )
    result = reml_many(
        "~ 1 + fix", data, "t0,text,constant,sparse_trait,flag,animal", relmat=relmat,
        out=tmp_path, workers=1, progress=False,
    )  # fmt: skip
    status = result.table.set_index("trait")["status"]
    assert status["t0"] == "ok"
    assert status["text"].startswith("not numeric") and "'x'" in status["text"]
    assert status["constant"].startswith("constant")
    assert status["sparse_trait"].startswith("too few records (2")
    assert status["flag"].startswith("not numeric")
    assert status["animal"] == "the animal id column is not a trait"
    written = pd.read_csv(tmp_path / "traits.csv")
    assert list(written.columns) == list(MANY_COLUMNS)
    assert set(written["trait"]) == set(status.index)


def test_formula_errors(traits):
    data, relmat = traits
    with pytest.raises(BayesAnimalError, match="no left-hand side"):
        reml_many("t0 ~ 1 + fix", data, "t1", relmat=relmat, progress=False)
    with pytest.raises(BayesAnimalError, match=r"one-component animal model.*\(1 \| fix\)"):
        reml_many("~ 1 + (1 | fix)", data, "t1", relmat=relmat, workers=1, progress=False)
    with pytest.raises(BayesAnimalError, match="need the relationship"):
        reml_many("~ 1 + fix", data, "t1", progress=False)
    with pytest.raises(BayesAnimalError, match="give out="):
        fit_many("~ 1 + fix", data, "t1", relmat=relmat, posteriors=True, progress=False)


@pytest.mark.parametrize("batch", [reml_many, fit_many])
def test_an_indefinite_matrix_left_unchecked_stops_the_batch_before_any_trait(traits, batch):
    from bayes_animal import RelationshipError, as_relationship
    from bayes_animal.structures.inputs import RelationshipSource

    data, relmat = traits
    values = relmat.matrix - 3.0 * np.eye(relmat.size) * relmat.matrix.diagonal().max()
    unchecked = as_relationship(values, ids=relmat.ids, check_definite=False)
    source = RelationshipSource(unchecked, "matrix")
    with pytest.raises(RelationshipError, match="not positive semi-definite"):
        batch("~ 1 + fix", data, "t0,t1", source=source, progress=False)


def test_rows_are_written_as_they_finish_and_resume_skips_them(traits, tmp_path):
    data, relmat = traits
    reml_many("~ 1 + fix", data, "t0,t1", relmat=relmat, out=tmp_path, workers=1, progress=False)
    done = pd.read_csv(tmp_path / "traits.csv")
    assert list(done["trait"]) == ["t0", "t1"]
    # mark a finished row: a resumed run must keep it, not fit t0 again
    done.loc[0, "sigma2:additive"] = 999.0
    done.to_csv(tmp_path / "traits.csv", index=False)
    result = reml_many(
        "~ 1 + fix", data, "t0,t1,t2", relmat=relmat, out=tmp_path, resume=True, workers=1,
        progress=False,
    )  # fmt: skip
    table = result.table.set_index("trait")
    assert list(table.index) == ["t0", "t1", "t2"]
    assert table.loc["t0", "sigma2:additive"] == 999.0
    assert table.loc["t2", "status"] == "ok"
    assert list(pd.read_csv(tmp_path / "traits.csv")["trait"]) == ["t0", "t1", "t2"]
    # without --resume the file starts again
    fresh = reml_many(
        "~ 1 + fix", data, "t0", relmat=relmat, out=tmp_path, workers=1, progress=False
    )
    assert fresh.table.loc[0, "sigma2:additive"] != 999.0


def test_resume_reads_a_file_written_under_the_old_names(traits, tmp_path):
    """A traits.csv of the first version (sigma2_u, se_h2 …) resumes under the names of
    docs/outputs.md, and the file is written anew with them."""
    data, relmat = traits
    reml_many("~ 1 + fix", data, "t0", relmat=relmat, out=tmp_path, workers=1, progress=False)
    done = pd.read_csv(tmp_path / "traits.csv")
    old = {new: old for old, new in _RENAMED.items()}
    done.rename(columns=old).to_csv(tmp_path / "traits.csv", index=False)
    assert "sigma2_u" in pd.read_csv(tmp_path / "traits.csv").columns
    result = reml_many(
        "~ 1 + fix", data, "t0,t1", relmat=relmat, out=tmp_path, resume=True, workers=1,
        progress=False,
    )  # fmt: skip
    written = pd.read_csv(tmp_path / "traits.csv")
    assert list(written.columns) == list(MANY_COLUMNS)
    assert list(written["trait"]) == ["t0", "t1"]
    assert written.loc[0, "sigma2:additive"] == pytest.approx(done.loc[0, "sigma2:additive"])
    assert result.table.loc[0, "h2_se"] == pytest.approx(done.loc[0, "h2_se"])


def _with_batches(data):
    """The traits plus a 0/1 covariate ``batch`` and two traits recorded only in batch 1 (one
    missing-value pattern): on their records ``batch`` is the intercept, so their group's
    fixed-effect design is rank deficient."""
    batch = np.arange(len(data)) % 2
    only_one = np.where(batch == 1, data["t0"].to_numpy(), np.nan)
    return data.assign(batch=batch, t_batch1=only_one, t_batch1_twice=2 * only_one)


def test_a_group_whose_design_fails_gets_rows_with_the_reason_and_the_batch_goes_on(
    traits, tmp_path
):
    """A missing-value group whose records give no design (a covariate constant on them):
    each of its traits gets a row with NaN estimates and the reason, the other traits' rows
    equal those of a batch without it, and groups.csv names the failed group."""
    data, relmat = traits
    data = _with_batches(data)
    formula, others = "~ 1 + fix + batch", ["t0", "t3", "t5", "t_noise"]
    names = ["t0", "t_batch1", "t3", "t5", "t_batch1_twice", "t_noise"]
    result = reml_many(formula, data, names, relmat=relmat, out=tmp_path, workers=1, progress=False)
    alone = reml_many(formula, data, others, relmat=relmat, workers=1, progress=False)
    table = result.table.set_index("trait")
    assert list(table.index) == names
    pd.testing.assert_frame_equal(table.loc[others], alone.table.set_index("trait"))
    failed = table.loc[["t_batch1", "t_batch1_twice"]]
    estimates = [c for c in MANY_COLUMNS if c.startswith(("sigma2", "h2", "se_", "loglik"))]
    assert failed[estimates].isna().all().all()
    assert (failed["n_records"] == 75).all() and not failed["converged"].any()
    for status in failed["status"]:
        assert status.startswith("failed: the 75 records of its missing-value pattern")
        assert "rank deficient" in status and "'batch'" in status
    groups = result.groups.set_index("engine")
    assert groups.loc["failed", "traits"] == 2 and "rank deficient" in groups.loc["failed", "why"]
    written = pd.read_csv(tmp_path / "traits.csv", keep_default_na=False)
    assert sorted(written["trait"]) == sorted(names)
    assert written.set_index("trait").loc["t_batch1", "status"] == table.loc["t_batch1", "status"]
    assert (pd.read_csv(tmp_path / "groups.csv")["engine"] == "failed").sum() == 1


def test_a_group_whose_decomposition_fails_gets_rows_with_the_reason(traits, monkeypatch):
    """An eigendecomposition that does not converge on one group's records fails that group's
    traits (rows with the reason), not the batch."""
    import bayes_animal.linalg.spectral as spectral

    data, relmat = traits
    decompose = spectral.decompose

    def failing_on_120_records(design, matrix, *args, **kwargs):
        if design.n_records == 120:  # the group of t3 and t4
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return decompose(design, matrix, *args, **kwargs)

    monkeypatch.setattr(spectral, "decompose", failing_on_120_records)
    result = reml_many("~ 1 + fix", data, "t0,t3,t4,t5", relmat=relmat, workers=1, progress=False)
    status = result.table.set_index("trait")["status"]
    assert status["t0"] == "ok" and status["t5"] == "ok"
    for trait in ("t3", "t4"):
        assert status[trait].startswith("failed: the 120 records") and "converge" in status[trait]


def test_a_formula_wrong_for_every_trait_stops_the_batch_before_any_group(traits, tmp_path):
    """An unknown column or a missing animal column would fail every group alike: the batch
    stops with the error (traits.csv holds only its header), not a file of failed rows."""
    from bayes_animal.errors import DataError, FormulaError

    data, relmat = traits
    with pytest.raises(FormulaError, match="fixx"):
        reml_many("~ 1 + fixx", data, "t0,t3", relmat=relmat, out=tmp_path, progress=False)
    assert list(pd.read_csv(tmp_path / "traits.csv")["trait"]) == []
    with pytest.raises(DataError, match="animal column 'id'"):
        reml_many("~ 1 + fix", data, "t0", relmat=relmat, animal="id", progress=False)


def test_resume_reads_the_rows_back_with_their_types(traits, tmp_path):
    """A resumed table equals the table of the run that wrote traits.csv, dtypes included:
    numbers are numbers, a failed trait's estimates NaN, an empty boundary '' and traits
    named like missing values ('NA', 'null') stay those names."""
    data, relmat = traits
    data = data.assign(NA=data["t1"], null=data["t2"], constant=1.0)
    names = ["t0", "NA", "null", "t_noise", "constant", "t3"]
    first = reml_many(
        "~ 1 + fix", data, names, relmat=relmat, out=tmp_path, workers=1, progress=False
    )
    assert first.table["boundary"].eq("").any()  # a trait inside the parameter space
    assert first.table["sigma2:additive"].isna().sum() == 1  # the constant trait
    resumed = reml_many(
        "~ 1 + fix", data, names, relmat=relmat, out=tmp_path, resume=True, workers=1,
        progress=False,
    )  # fmt: skip
    assert resumed.groups.empty  # nothing fitted again: every row came from the file
    assert list(resumed.table["trait"]) == names
    assert dict(resumed.table.dtypes) == dict(first.table.dtypes)
    assert resumed.table["sigma2:additive"].dtype == np.float64
    assert resumed.table["n_records"].dtype == np.int64
    assert resumed.table["converged"].dtype == bool
    # values to the ten significant digits written
    pd.testing.assert_frame_equal(resumed.table, first.table, rtol=1e-9)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [("sigma2:additive", "lots", "a number"), ("converged", "maybe", "True or False")],
)
def test_resume_names_a_cell_that_is_not_of_its_columns_type(
    traits, tmp_path, column, value, expected
):
    data, relmat = traits
    reml_many("~ 1 + fix", data, "t0,t1", relmat=relmat, out=tmp_path, workers=1, progress=False)
    path = tmp_path / "traits.csv"
    done = pd.read_csv(path, dtype=str, keep_default_na=False)
    done.loc[1, column] = value
    done.to_csv(path, index=False)
    message = rf"trait 't1' holds '{value}' in column '{column}', not {expected}"
    with pytest.raises(BayesAnimalError, match=message):
        reml_many(
            "~ 1 + fix", data, "t0,t1", relmat=relmat, out=tmp_path, resume=True,
            progress=False,
        )  # fmt: skip


def test_resume_refuses_a_file_of_another_kind_of_run(traits, tmp_path):
    data, relmat = traits
    reml_many("~ 1 + fix", data, "t0", relmat=relmat, out=tmp_path, workers=1, progress=False)
    with pytest.raises(BayesAnimalError, match="written by another kind of run"):
        fit_many("~ 1 + fix", data, "t0", relmat=relmat, out=tmp_path, resume=True)


def test_fit_many_gives_the_single_fits_draws_bit_for_bit(traits, tmp_path):
    """The same seed, data and model give the same draws: a trait's posterior in the batch is
    its single fit's, every variable identical (not only within Monte Carlo error)."""
    import arviz as az

    from bayes_animal.bayes.model import AnimalModel

    data, relmat = traits
    options = {"draws": 200, "tune": 200, "chains": 2, "random_seed": 5}
    result = fit_many(
        "~ 1 + fix", data, "t0,t5", relmat=relmat, out=tmp_path, posteriors=True, workers=1,
        progress=False, **options,
    )  # fmt: skip
    table = result.table.set_index("trait")
    for trait in ("t0", "t5"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AnimalModel(f"{trait} ~ 1 + fix", data.dropna(subset=[trait]), relmat=relmat)
            single = model.fit(progressbar=False, warn=False, **options)
        batch = az.from_netcdf(tmp_path / "posteriors" / trait / "posterior.nc").posterior
        for name in ("h2", "sigma2:additive", "sigma2:residual"):  # kept exact in the file
            np.testing.assert_array_equal(batch[name].values, single.idata.posterior[name].values)
        for name in ("beta", "u"):  # kept as 4-byte floats in the file
            expected = single.idata.posterior[name].values.astype(np.float32)
            np.testing.assert_array_equal(batch[name].values, expected)
        row = table.loc[trait]
        assert row["h2_mean"] == single.summary().loc["h2", "mean"]
        assert row["h2_hdi_low"] < row["h2_reml"] < row["h2_hdi_high"]


# -- Dask -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(local)
    yield client
    client.close()
    local.close()


def test_dask_batch_equals_the_local_one(traits, cluster):
    data, relmat = traits
    local = reml_many("~ 1 + fix", data, "t*", relmat=relmat, workers=1, progress=False)
    remote = reml_many(
        "~ 1 + fix", data, "t*", relmat=relmat, scheduler=cluster, chunk=3, progress=False
    )
    numeric = ["sigma2:additive", "sigma2:residual", "h2", "loglik"]
    pd.testing.assert_frame_equal(local.table[numeric], remote.table[numeric], rtol=1e-12)


def test_dask_batch_survives_a_worker_killed_mid_run(traits, cluster, tmp_path):
    """Bayesian fits as tasks on two workers; one worker process is killed as soon as the
    first row is written. Its running task is rescheduled; every trait gets its row."""
    import os

    data, relmat = traits
    names = ["t0", "t1", "t2", "t5"]
    victim = sorted(cluster.scheduler_info()["workers"])[0]

    rows_when_killed = []

    def kill_after_first_row():
        path = tmp_path / "traits.csv"
        deadline = time.time() + 300
        while time.time() < deadline:
            if path.is_file() and len(path.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        rows_when_killed.append(len(path.read_text().splitlines()) - 1)
        try:
            cluster.run(os._exit, 1, workers=[victim])
        except Exception:  # the worker dies before it can answer
            pass

    killer = threading.Thread(target=kill_after_first_row, daemon=True)
    killer.start()
    result = fit_many(
        "~ 1 + fix", data, names, relmat=relmat, scheduler=cluster, out=tmp_path,
        progress=False, draws=100, tune=100, chains=1, random_seed=1,
    )  # fmt: skip
    killer.join(timeout=30)
    assert rows_when_killed and rows_when_killed[0] < len(names)  # killed mid-run
    table = result.table.set_index("trait")
    assert list(table.index) == names
    assert table["h2_mean"].between(0, 1).all()
    assert sorted(pd.read_csv(tmp_path / "traits.csv")["trait"]) == sorted(names)


def test_the_chooser_picks_each_groups_engine_and_the_sparse_rows_equal_single_fits(
    traits, monkeypatch
):
    """A group asks choice.choose_many: one eigendecomposition for all its traits (the dense
    matrix here), or — where it costs more, as for a few traits on a large sparse matrix — the
    sparse equations trait by trait, whose rows equal reml(engine='sparse') one at a time."""
    import bayes_animal.many as many
    from bayes_animal.choice import Choice

    data, relmat = traits
    subset = ["t0", "t1", "t3", "t_noise"]
    spectral = reml_many("~ 1 + fix", data, subset, relmat=relmat, workers=1, progress=False)
    assert set(spectral.groups["engine"]) == {"spectral"}
    assert spectral.groups["why"].str.contains("one eigendecomposition").all()
    # the choice itself is tested in test_choice; here, what the batch does with it
    monkeypatch.setattr(
        many, "choose_many", lambda inputs, traits, method: Choice("sparse", "forced.")
    )
    result = reml_many(
        "~ 1 + fix", data, subset, relmat=relmat, workers=1, progress=False, blups=True
    )
    assert set(result.groups["engine"]) == {"sparse"}
    assert (result.groups["eigh_seconds"] == 0).all()
    table = result.table.set_index("trait")
    for trait in subset:
        one = _one(data, relmat, trait, engine="sparse")
        row = table.loc[trait]
        assert row["n_records"] == one.n_records
        for key, value in [
            ("sigma2:additive", one.sigma2_u),
            ("h2", one.h2),
            ("loglik", one.loglik),
        ]:
            assert row[key] == pytest.approx(value, rel=1e-10, abs=1e-12), (trait, key)
        assert row["h2_se"] == pytest.approx(one.se["h2"], rel=1e-10, nan_ok=True)
        np.testing.assert_allclose(
            result.blups[trait].loc[one.blup.index].to_numpy(), one.blup["blup"].to_numpy()
        )
        # and the spectral batch agrees with it to the engines' tolerance
        other = spectral.table.set_index("trait").loc[trait]
        assert other["loglik"] == pytest.approx(row["loglik"], abs=1e-6)


def test_fit_many_keeps_each_traits_warnings_in_its_row(traits, tmp_path):
    """Nothing is dropped silently in a batch: a trait whose records repeat animals (without a
    permanent environment) gets that warning in its row's notes; the others have none."""
    data, relmat = traits
    repeated = pd.concat([data, data.iloc[:20].assign(t0=data["t0"].iloc[:20] + 0.1)])
    repeated.loc[repeated.index[-20:], "t5"] = np.nan  # t5 keeps one record per animal
    result = fit_many(
        "~ 1 + fix", repeated.reset_index(drop=True), "t0,t5", relmat=relmat, workers=1,
        progress=False, draws=100, tune=100, chains=1, random_seed=1,
    )  # fmt: skip
    notes = result.table.set_index("trait")["notes"]
    assert "more than one record" in notes["t0"]
    assert notes["t5"] == ""
