"""Bayesian fits of non-Gaussian families: the Laplace marginal density, the exact non-centred
joint, the chooser's check, the posterior's outputs, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayes_animal import AnimalModel
from bayes_animal.bayes.model import ModelError
from bayes_animal.cli.main import main
from bayes_animal.errors import BayesAnimalError
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def binary():
    """A threshold trait on a small herd pedigree (one record per animal)."""
    pedigree = simulate_herd_pedigree(n_animals=600, n_generations=3, n_herds=6, seed=2)
    sim = simulate_records(
        pedigree, variances={"additive": 0.6, "herd": 0.3}, groups={"herd": 6}, mean=-0.4,
        seed=2, family="threshold",
    )  # fmt: skip
    return sim


def _counts_frame(seed: int = 0) -> pd.DataFrame:
    """Counts with large means in 30 groups of 20: a near-Gaussian conditional."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(30), 20)
    effect = rng.normal(0.0, 0.4, 30)
    x = rng.normal(size=len(group))
    y = rng.poisson(np.exp(3.0 + 0.2 * x + effect[group]))
    return pd.DataFrame({"g": [f"g{k}" for k in group], "x": x, "y": y})


def test_laplace_density_holds_the_residual_and_is_the_approximation_plus_priors(binary):
    """The density's free variables leave the probit's residual out; its value is the
    Laplace approximation plus the priors (and the transforms' Jacobian), its gradient the
    value's."""
    model = AnimalModel(
        "y ~ x + (1|herd)", binary.data, pedigree=binary.pedigree, family="threshold"
    )
    density = model.density("laplace")
    assert density.value_names == ["sd_additive_log__", "sd_herd_log__"]
    x = np.log([0.7, 0.5])
    value, gradient = density(x, jacobian=False)
    theta = density.theta(x)
    assert theta[model.parameters.index("residual")] == 1.0
    laplace = model.laplace.log_marginal(theta)
    half_t = stats.t(df=3, scale=1.0 / np.sqrt(model.structures["additive"].diagonal().mean()))
    prior = np.log(2 * half_t.pdf(0.7)) + np.log(2 * stats.t(df=3, scale=1.0).pdf(0.5))
    assert value == pytest.approx(laplace + prior, rel=1e-10)
    for k in range(2):
        step = np.zeros(2)
        step[k] = 1e-5
        numeric = (
            density(x + step, jacobian=False)[0] - density(x - step, jacobian=False)[0]
        ) / 2e-5
        assert gradient[k] == pytest.approx(numeric, rel=1e-4, abs=1e-5)


def _evaluate(pymc_model, outputs: list, point: dict):
    """Values of model expressions at a point of the free variables' values."""
    replaced = pymc_model.replace_rvs_by_values(outputs)
    function = pymc_model.compile_fn(
        replaced, inputs=pymc_model.value_vars, on_unused_input="ignore"
    )
    return function(point)


def _random_point(pymc_model, rng, scale: float) -> dict[str, np.ndarray]:
    """Normal values for every free variable of a PyMC model (its flat ones included)."""
    shapes = pymc_model.eval_rv_shapes()
    return {v.name: rng.normal(size=shapes[v.name]) * scale for v in pymc_model.value_vars}


@pytest.mark.parametrize(
    ("family", "link", "trials"),
    [("threshold", None, False), ("binomial", "logit", False), ("binomial", "probit", True),
     ("binomial", "logit", True)],
)  # fmt: skip
def test_exact_model_adds_the_family_likelihood(binary, family, link, trials):
    """The non-centred PyMC model's records term equals the family's log-density at η
    (scipy's log Φ or the logistic's): 0/1 records, taken one tail each, and successes out
    of trials, with the binomial coefficient."""
    data = binary.data.copy()
    formula = "y ~ x + (1|herd)"
    if trials:
        rng = np.random.default_rng(1)
        data["n"] = rng.integers(1, 5, len(data))
        data["s"] = rng.binomial(data["n"], 0.3)
        data["f"] = data["n"] - data["s"]
        formula = "cbind(s, f) ~ x + (1|herd)"
    model = AnimalModel(formula, data, pedigree=binary.pedigree, family=family, link=link)
    pymc_model = model.build("noncentred")
    rng = np.random.default_rng(0)
    point = _random_point(pymc_model, rng, 0.5)
    names = ["records_loglik", "u", "u_herd", "beta"]
    potential, u, u_herd, beta = _evaluate(pymc_model, [pymc_model[n] for n in names], point)
    design = model.design
    eta = design.X @ beta + u[design.effect("additive").index] + u_herd[design.effect("herd").index]
    n = np.ones(len(eta)) if design.trials is None else np.asarray(design.trials, dtype=float)
    expected = model.design.family.log_density(np.asarray(design.y, dtype=float), n, eta).sum()
    if not trials and family == "threshold":
        assert expected == pytest.approx(
            stats.norm.logcdf(np.where(design.y == 1, eta, -eta)).sum(), rel=1e-12
        )
    assert float(potential) == pytest.approx(expected, rel=1e-10)
    assert "var_residual" not in point and "sd_residual_log__" not in point


def test_successes_out_of_trials_are_one_trait_under_the_exact_model(binary):
    """``cbind(successes, failures)`` of a binomial is one trait (named by its successes): its
    exact model used to fail building h² (KeyError: None), the layout taking the two columns
    for two traits."""
    data = binary.data.copy()
    rng = np.random.default_rng(1)
    data["n"] = rng.integers(1, 5, len(data))
    data["s"] = rng.binomial(data["n"], 0.3)
    data["f"] = data["n"] - data["s"]
    model = AnimalModel("cbind(s, f) ~ x + (1|herd)", data, pedigree=binary.pedigree,
                        family="binomial")  # fmt: skip
    assert model.parameters.traits == ("s",) and not model.parameters.multi_trait
    fit = model.fit(parameterisation="noncentred", draws=150, tune=200, random_seed=1,
                    progressbar=False)  # fmt: skip
    assert {"h2", "h2_observed", "sigma2:additive"} <= set(fit.summary().index)


def test_the_exact_model_of_a_family_keeps_3000_draws_a_chain_by_default(binary):
    """Unless asked otherwise, the exact model of a family keeps 3 000 draws a chain (its
    4 × 2 000 gave R-hat up to 1.017), a Gaussian trait 1 000; an explicit ``draws`` is kept
    as given."""
    model = AnimalModel("y ~ x", binary.data, pedigree=binary.pedigree, family="threshold")
    options = {"chains": 1, "tune": 100, "random_seed": 1, "progressbar": False, "warn": False}
    exact = model.fit(parameterisation="noncentred", **options)
    assert exact.idata.posterior.sizes["draw"] == 3000
    asked = model.fit(parameterisation="noncentred", draws=300, **options)
    assert asked.idata.posterior.sizes["draw"] == 300
    data = binary.data.assign(z=np.random.default_rng(0).normal(size=len(binary.data)))
    gaussian = AnimalModel("z ~ x", data, pedigree=binary.pedigree).fit(**options)
    assert gaussian.idata.posterior.sizes["draw"] == 1000


def test_auto_chooses_the_laplace_model_only_where_its_check_passes(binary):
    """Without the joint density (PyMC's NUTS here) the Laplace check decides. Near-Gaussian
    counts (30 groups of 20 large counts) pass: k̂ small and the approximation's error in
    log p(y | θ) flat across the variances. One binary record per animal does not — its error
    grows with the variances (the Laplace marginal is tilted towards small ones) — and the
    exact non-centred model is sampled."""
    counts = AnimalModel("y ~ x + (1|g)", _counts_frame(), family="poisson", overdispersion="none")
    check = counts.laplace_check()
    assert check.passes and check.khat <= 0.7 and check.tilt < 0.1
    assert counts._resolve("auto", "auto", sampler="pymc")[1] == "laplace"
    assert counts._resolve("auto", "auto", sampler="numpyro")[1] == "laplace"
    animal = AnimalModel(
        "y ~ x + (1|herd)", binary.data, pedigree=binary.pedigree, family="threshold"
    )
    check = animal.laplace_check()
    assert not check.passes and check.errors[2] > check.errors[1] > check.errors[0]
    _, engine, fixed, notes = animal._resolve("auto", "auto", sampler="pymc")
    assert engine == "noncentred" and fixed == "sample"
    assert any("fails its check" in note for note in notes)
    assert animal._resolve("marginal", "auto")[1] == "laplace"
    with pytest.raises(ModelError, match="not 'partial'"):
        animal._resolve("partial", "auto")


def test_auto_samples_the_exact_model_on_its_joint_density_without_the_check(monkeypatch):
    """Under nutpie (the default sampler) the exact model's hand-derived joint density serves,
    so ``auto`` samples the exact model and never runs the Laplace check — even on counts where
    the check passes (it is exact, and cheaper: benchmarks/family_engines)."""
    counts = AnimalModel("y ~ x + (1|g)", _counts_frame(), family="poisson", overdispersion="none")

    def refuse(*args, **kwargs):
        raise AssertionError("the Laplace check ran")

    monkeypatch.setattr(AnimalModel, "laplace_check", refuse)
    for sampler in (None, "nutpie"):
        _, engine, fixed, notes = counts._resolve("auto", "auto", sampler=sampler)
        assert engine == "noncentred" and fixed == "sample"
        assert any("hand-derived density" in note for note in notes)


def test_exact_fit_reports_both_scales_and_the_fixed_residual(binary, tmp_path):
    model = AnimalModel(
        "y ~ x + (1|herd)", binary.data, pedigree=binary.pedigree, family="threshold"
    )
    fit = model.fit(
        parameterisation="noncentred", draws=150, chains=2, random_seed=4, progressbar=False,
        warn=False,
    )  # fmt: skip
    options = json.loads(fit.idata.attrs["model_options"])
    assert options["tune"] == 500 and options["target_accept"] == 0.8  # the measured defaults
    posterior = fit.idata.posterior
    assert np.all(posterior["sigma2:residual"].values == 1.0)
    h2 = posterior["h2"].values
    observed = posterior["h2_observed"].values
    assert np.all((observed > 0) & (observed < h2))  # binary: the observed scale is lower
    summary = fit.summary()
    assert "sigma2:residual" not in summary.index and "h2_observed" in summary.index
    saved = fit.to_summary_dict()
    assert saved["family"] == "binomial(probit)"
    assert saved["components"]["residual"]["mean"] == 1.0
    assert saved["components"]["residual"]["r_hat"] is None
    assert "h2_observed" in saved["ratios"]
    json.dumps(saved, allow_nan=False)
    assert len(fit.ebv()) == len(model.structures["additive"].ids)
    fit.save(tmp_path)


def test_laplace_fit_draws_b_and_u_and_reports_its_check():
    model = AnimalModel("y ~ x + (1|g)", _counts_frame(1), family="poisson", overdispersion="none")
    fit = model.fit(
        parameterisation="marginal", draws=150, tune=150, chains=2, random_seed=2,
        progressbar=False, warn=False,
    )  # fmt: skip
    assert fit.idata.attrs["laplace_khat"] <= 0.7
    assert any("Pareto k̂" in note for note in fit.notes)
    beta = fit.idata.posterior["beta"].values
    assert abs(beta[..., 0].mean() - 3.0) < 0.3
    assert "prop:g" in fit.summary().index


def test_beta_h2_prior_is_refused_for_a_family(binary):
    with pytest.raises(ModelError, match="Gaussian traits"):
        AnimalModel(
            "y ~ x", binary.data, pedigree=binary.pedigree, family="threshold", priors="beta_h2"
        )


# -- the command line ----------------------------------------------------------------------
def test_reml_command_fits_a_family(capsys):
    code = main(
        ["reml", "--data", str(DATA / "glmm_binary.csv"), "--formula", "y ~ x + (1|group)",
         "--family", "binomial", "--link", "logit", "--method", "ml", "--json"]
    )  # fmt: skip
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["family"] == "binomial(logit)" and payload["engine"] == "laplace"
    assert payload["components"]["residual"]["variance"] == pytest.approx(np.pi**2 / 3)


def test_fit_command_fits_groups_without_a_relationship(tmp_path, capsys):
    """`fit` takes a model of independent effects without --pedigree (as `reml` does): here
    a Poisson model without overdispersion, whose one effect's proportion is 1 in every draw —
    h2.png draws it as a line, the trace leaves it out, and no warning reaches the user."""
    data = tmp_path / "counts.csv"
    _counts_frame().to_csv(data, index=False)
    out = tmp_path / "fit"
    code = main(
        ["fit", "--data", str(data), "--formula", "y ~ x + (1|g)", "--family", "poisson",
         "--overdispersion", "none", "--draws", "100", "--tune", "100", "--seed", "1",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "RuntimeWarning" not in err and "of the 30 levels of 'g'" in err
    assert {"summary.json", "h2.png", "trace.png", "ebv.csv"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ratios"]["prop:g"]["mean"] == 1.0 and summary["ratios"]["prop:g"]["sd"] == 0


def test_reml_command_counts_without_overdispersion(capsys):
    code = main(
        ["reml", "--data", str(DATA / "glmm_counts.csv"), "--formula", "y ~ x + (1|group)",
         "--family", "poisson", "--overdispersion", "none"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "family poisson(log)" in out and "fixed by the family" in out


def test_the_command_line_words_a_family_error(capsys):
    code = main(
        ["reml", "--data", str(DATA / "glmm_counts.csv"), "--formula", "y ~ x + (1|group)",
         "--family", "binomial"]
    )  # fmt: skip
    assert code != 0
    assert "must be 0 or 1" in capsys.readouterr().err


def test_traits_batch_is_for_gaussian_traits(tmp_path, capsys):
    code = main(
        ["reml", "--data", str(DATA / "glmm_counts.csv"), "--formula", "~ x + (1|group)",
         "--traits", "y", "--family", "poisson", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code != 0
    assert "fits Gaussian traits" in capsys.readouterr().err


def test_a_gaussian_only_option_with_a_family_is_an_error():
    data = pd.read_csv(DATA / "glmm_binary.csv")
    ids = [f"a{k}" for k in data.index]
    with pytest.raises(BayesAnimalError, match="maternal"):
        AnimalModel(
            "y ~ x", data.assign(animal=ids, dam="0"), family="binomial",
            pedigree=pd.DataFrame({"id": ids, "sire": "0", "dam": "0"}), maternal="dam",
        )  # fmt: skip


def test_exact_ordinal_model_adds_the_cumulative_probit():
    """The ordinal model's records term equals the family's log-density at η and the
    cut-points; the Laplace marginal model is refused for it."""
    rng = np.random.default_rng(3)
    group = np.repeat(np.arange(12), 10)
    liability = rng.normal(0, 0.6, 12)[group] + rng.normal(size=len(group))
    data = pd.DataFrame(
        {"g": [f"g{k}" for k in group], "score": np.digitize(liability, [-0.3, 0.5, 1.2]) + 1}
    )
    model = AnimalModel("score ~ 1 + (1|g)", data, family="ordinal")
    with pytest.raises(ModelError, match="sampled exactly"):
        model._resolve("marginal", "auto")
    assert model._resolve("auto", "auto")[1] == "noncentred"
    pymc_model = model.build("noncentred")
    point = _random_point(pymc_model, rng, 0.3)
    names = ["records_loglik", "cutpoints", "u_g", "beta"]
    loglik, cut, u, beta = _evaluate(pymc_model, [pymc_model[n] for n in names], point)
    eta = model.design.X @ beta + u[model.design.effect("g").index]
    expected = model.design.family.log_density(
        model.design.y, np.ones(len(eta)), eta, np.asarray(cut)
    ).sum()
    assert float(loglik) == pytest.approx(expected, rel=1e-9)
    assert cut[0] == 0.0 and np.all(np.diff(cut) > 0)


# -- recovery (slow) -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("h2", "mean"),
    [(0.1, -1.65), (0.5, -1.65), (0.1, 0.0), (0.5, 0.0)],
    ids=["h2=0.1,5%", "h2=0.5,5%", "h2=0.1,50%", "h2=0.5,50%"],
)
def test_exact_posterior_of_a_threshold_trait_covers_the_truth(h2, mean):
    """A threshold trait on 3 000 animals at liability h² 0.1 and 0.5 and about 5 % and 50 %
    prevalence: the exact posterior's 95 % HDI of h² holds the truth, R-hat ≤ 1.05."""
    additive = h2 / (1.0 - h2)  # with the residual fixed at 1 and no other effect
    pedigree = simulate_herd_pedigree(n_animals=3_000, n_generations=5, n_herds=20, seed=11)
    sim = simulate_records(
        pedigree, variances={"additive": additive}, mean=mean, seed=12, family="threshold"
    )
    model = AnimalModel("y ~ x", sim.data, pedigree=sim.pedigree, family="threshold")
    fit = model.fit(random_seed=3, progressbar=False, warn=False)
    row = fit.summary().loc["h2"]
    assert row["hdi_low"] <= h2 <= row["hdi_high"]
    assert fit.diagnostics.max_r_hat <= 1.05


@pytest.mark.slow
def test_exact_posterior_of_an_overdispersed_count_covers_the_truth():
    pedigree = simulate_herd_pedigree(n_animals=3_000, n_generations=5, n_herds=20, seed=13)
    truth = {"additive": 0.3, "herd": 0.1, "residual": 0.2}
    sim = simulate_records(
        pedigree, variances=truth, groups={"herd": 40}, mean=0.5, seed=14, family="poisson"
    )
    model = AnimalModel("y ~ x + (1|herd)", sim.data, pedigree=sim.pedigree, family="poisson")
    fit = model.fit(random_seed=3, progressbar=False, warn=False)
    summary = fit.summary()
    for name, value in truth.items():
        row = summary.loc[f"sigma2:{name}"]
        assert row["hdi_low"] <= value <= row["hdi_high"], name


def test_the_exact_fit_says_where_the_prior_moves_a_posterior():
    """Twenty unrelated animals' 0/1 records hold almost nothing about the liability-scale
    variance: its posterior follows the half-t prior, and power-scaling that prior moves it
    (sensitivity far above 0.05). The fit keeps the log prior, reports the sensitivity of
    every variance and ratio, and says so; without the ``log_prior`` group there is none."""
    import warnings

    from bayes_animal import AnimalModel
    from bayes_animal.results.posterior import prior_sensitivity

    rng = np.random.default_rng(4)
    ids = [f"a{i}" for i in range(20)]
    pedigree = pd.DataFrame({"id": ids, "sire": "0", "dam": "0"})
    data = pd.DataFrame({"animal": ids, "y": rng.integers(0, 2, 20)})
    data.loc[:3, "y"] = [0, 1, 0, 1]  # both outcomes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel("y ~ 1", data, pedigree=pedigree, family="threshold")
        fit = model.fit(
            parameterisation="noncentred", draws=300, tune=300, chains=2, random_seed=1,
            progressbar=False, warn=False,
        )  # fmt: skip
    sensitivity = fit.diagnostics.sensitivity
    assert set(sensitivity.index) >= {"sigma2:additive", "h2"}
    assert sensitivity["sigma2:additive"] > 0.05, sensitivity
    assert any(
        "The prior moves the posterior of sigma2:additive" in m for m in fit.diagnostics.messages
    )
    assert "prior_sensitivity" in fit.diagnostics.to_dict()
    tree = fit.idata.copy()
    del tree["log_prior"]
    assert prior_sensitivity(tree, ["h2"]) is None
