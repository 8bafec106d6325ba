"""Independence Metropolis–Hastings on a marginal model's density (bayes.independence), the
sampler chosen where NUTS's gradients are too dear, and the Pareto k̂ it is checked by."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared_folder
from scipy import stats
from test_multitrait import assert_agrees_with_mcmcglmm

from bayes_animal import AnimalModel
from bayes_animal.bayes.independence import Proposal, fit_proposal, sample_independence
from bayes_animal.bayes.model import ModelError
from bayes_animal.choice import choose_sampler
from bayes_animal.results.posterior import diagnose, pareto_khat


def test_pareto_khat_reads_the_upper_tail_of_the_weights():
    """Weights of known tail shape: Pareto with k = 0.5 and k = 1, and bounded (uniform,
    k = −1). ArviZ's psislw takes log ratios in the sign of LOO (weights e^−x); reading them
    the other way round gave k̂ ≈ 1 for the uniform and < 0 for the Pareto ones."""
    rng = np.random.default_rng(0)
    uniform = rng.uniform(size=4000)
    assert 0.3 < pareto_khat(0.5 * np.log(1.0 / uniform)) < 0.7
    assert pareto_khat(np.log(1.0 / rng.uniform(size=4000))) > 0.7
    assert pareto_khat(np.log(rng.uniform(size=4000))) < 0.0
    assert np.isnan(pareto_khat(np.r_[np.zeros(99), np.nan]))  # too few finite weights


@pytest.fixture(scope="module")
def gryphon():
    folder = shared_folder("gryphon")
    return pd.read_csv(folder / "gryphon.csv"), pd.read_csv(folder / "gryphonped.csv")


def test_the_t_proposal_has_the_density_it_draws_from():
    rng = np.random.default_rng(1)
    shape = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]])
    proposal = Proposal(np.array([1.0, -2.0, 0.5]), np.linalg.cholesky(shape), 10.0, "hessian")
    reference = stats.multivariate_t(loc=proposal.centre, shape=shape, df=10.0)
    points = reference.rvs(5, random_state=rng)
    for x in points:
        assert proposal.log_density(x) == pytest.approx(reference.logpdf(x), rel=1e-12)
    draws = np.array([proposal.draw(rng) for _ in range(20_000)])
    assert np.allclose(draws.mean(axis=0), proposal.centre, atol=0.05)
    assert np.allclose(np.cov(draws.T), shape * 10.0 / 8.0, atol=0.08)


class _LogGammaDensity:
    """log p(x) = Σ aᵢ xᵢ − bᵢ e^{xᵢ} (+ a correlation through a linear map): each x = log v
    with v ~ Gamma(a, b), so E x = ψ(a) − log b while the mode is log(a / b): a posterior
    skewed on the sampler's log scale, with its mean known exactly. ``outside`` makes the
    density −∞ beyond a bound (the parameter space's edge)."""

    def __init__(self, a, b, mix, outside=np.inf):
        self.a, self.b, self.mix, self.outside = np.asarray(a), np.asarray(b), mix, outside

    def __call__(self, x):
        z = np.linalg.solve(self.mix, x)
        if np.any(np.abs(x) > self.outside):
            return -np.inf, np.full_like(x, np.nan)
        value = float(np.sum(self.a * z - self.b * np.exp(z)))
        return value, np.linalg.solve(self.mix.T, self.a - self.b * np.exp(z))

    def mean(self):
        from scipy.special import digamma

        return self.mix @ (digamma(self.a) - np.log(self.b))


def test_the_proposal_moves_from_the_mode_to_the_posterior_mean():
    """Three skewed coordinates mixed by a linear map (a = 3, 6, 12): the second-order
    Laplace correction must put the centre within a fifth of the mode's distance from the
    exact mean, and the Hessian there must give a proposal whose importance weights vary
    less than the mode's (checked on 4 000 draws of each)."""
    mix = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [-0.3, 0.4, 1.0]])
    density = _LogGammaDensity([3.0, 6.0, 12.0], [1.0, 2.0, 0.5], mix)
    proposal = fit_proposal(density, np.zeros(3), None)
    mode = mix @ np.log(density.a / density.b)
    exact = density.mean()
    assert np.linalg.norm(proposal.centre - exact) < 0.2 * np.linalg.norm(mode - exact)
    assert proposal.source == "hessian at the mean"
    whitened = np.linalg.solve(proposal.factor, proposal.centre - mode)
    assert proposal.shift == pytest.approx(np.linalg.norm(np.linalg.solve(
        np.linalg.cholesky(np.linalg.inv(-_numerical_hessian(density, mode))), proposal.centre
        - mode)), rel=1e-3)  # fmt: skip
    assert 0.1 < np.linalg.norm(whitened) < 1.0
    at_mode = Proposal(
        mode, np.linalg.cholesky(np.linalg.inv(-_numerical_hessian(density, mode))), 10.0, "m"
    )

    def efficiency(q):
        rng = np.random.default_rng(4)
        draws = [q.draw(rng) for _ in range(4000)]
        log_w = np.array([density(x)[0] - q.log_density(x) for x in draws])
        w = np.exp(log_w - log_w.max())
        return w.sum() ** 2 / np.sum(w**2) / len(w)

    assert efficiency(proposal) > efficiency(at_mode) + 0.02


def _numerical_hessian(density, x, step=1e-5):
    columns = []
    for j in range(len(x)):
        e = np.zeros(len(x))
        e[j] = step
        columns.append((density(x + e)[1] - density(x - e)[1]) / (2 * step))
    h = np.array(columns).T
    return 0.5 * (h + h.T)


def test_the_shift_is_not_kept_where_its_gradients_leave_the_space():
    """The same density cut off just beyond the mode's neighbourhood: the gradients one SD
    out are not finite, so the proposal stays at the mode with the mode's Hessian."""
    density = _LogGammaDensity([3.0, 6.0], [1.0, 2.0], np.eye(2), outside=1.4)
    proposal = fit_proposal(density, np.zeros(2), None)
    assert proposal.shift == 0.0 and proposal.source == "hessian"
    assert np.allclose(proposal.centre, np.log([3.0, 3.0]), atol=1e-4)


def test_the_shift_is_about_the_modes_own_curvature_only():
    """A scale taken from REML's covariance (the Hessian at the mode not negative definite)
    is not the Σ of the expansion: the proposal is left where it is."""
    from bayes_animal.bayes.independence import _towards_the_mean

    density = _LogGammaDensity([3.0, 6.0], [1.0, 2.0], np.eye(2))
    fallback = Proposal(np.log([3.0, 3.0]), 0.3 * np.eye(2), 10.0, "reml")
    assert _towards_the_mean(density, fallback) is fallback
    moved = _towards_the_mean(density, Proposal(fallback.centre, fallback.factor, 10.0, "hessian"))
    assert moved.shift > 0.0


@pytest.fixture(scope="module")
def bivariate_independence(gryphon):
    data, pedigree = gryphon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AnimalModel(
            "cbind(bwt, tarsus) ~ 1", data, pedigree=pedigree, priors="inverse_gamma"
        )
    return model, model.fit(sampler="independence", random_seed=3, progressbar=False)


def test_the_independence_sampler_agrees_with_reml_and_mcmcglmm(bivariate_independence):
    """The gryphon bivariate model under MCMCglmm's priors: a good proposal (acceptance, k̂),
    R-hat ≤ 1.01, REML inside every 95 % HDI, every posterior mean within Monte Carlo error of
    MCMCglmm's pooled one (as for NUTS in test_multitrait)."""
    _, fit = bivariate_independence
    attrs = fit.idata.attrs
    assert fit.sampler == "independence" and attrs["proposal_scale"] == "hessian at the mean"
    assert 0.0 < attrs["proposal_shift"] < 1.0
    assert attrs["acceptance_rate"] > 0.4 and attrs["proposal_khat"] <= 0.7
    # the proposal's fitting is the fit's "compile" stage, the chains its "sampling"
    assert fit.timings["compile"] >= attrs["proposal_seconds"] > 0.0
    assert 0.0 < fit.timings["sampling"] == attrs["sampling_time"]
    assert fit.diagnostics.ok and fit.diagnostics.max_r_hat <= 1.01
    assert_agrees_with_mcmcglmm(fit)


def test_the_chains_carry_the_breeding_values_of_their_states(bivariate_independence):
    """Each draw's b and u come from the factorisation of its own θ and stay with it: repeated
    exactly where the chain stayed, new where it moved; their means are REML's BLUPs."""
    model, fit = bivariate_independence
    posterior = fit.idata.posterior
    u = posterior["u_additive_tarsus"].values
    moved = fit.idata.sample_stats["accepted"].values
    same = np.all(u[:, 1:] == u[:, :-1], axis=-1)
    assert np.array_equal(same, ~moved[:, 1:])
    blup = model.reml.predictions["additive:tarsus"]["blup"].to_numpy()
    assert np.corrcoef(u.mean(axis=(0, 1)), blup)[0, 1] > 0.99


def test_the_draws_do_not_depend_on_how_the_chains_are_spread(gryphon):
    data, pedigree = gryphon
    model = AnimalModel("bwt ~ 1 + (1|byear)", data.dropna(subset=["bwt"]), pedigree=pedigree)
    density = model.density("sparse")
    x0 = model._initial_x(density)
    proposal = fit_proposal(density, x0, None)
    options = {"draws": 30, "tune": 5, "chains": 3, "seed": 11, "progressbar": False}
    one, w_one = sample_independence(density, proposal, cores=1, keep_unknowns=True, **options)
    two, w_two = sample_independence(density, proposal, cores=2, keep_unknowns=True, **options)
    for name in one.posterior.data_vars:
        np.testing.assert_array_equal(one.posterior[name].values, two.posterior[name].values)
    np.testing.assert_array_equal(w_one, w_two)
    assert w_one.shape == (3, 30, model.mme.size)
    assert (one.attrs["chain_processes"], two.attrs["chain_processes"]) == (1, 2)


def test_each_step_evaluates_the_density_nuts_samples(bivariate_independence):
    """The value the sampler accepts by is the density's own (the inverse-Wishart potential
    included), and its draw of the unknowns is centred on the BLUP at that θ."""
    model, _ = bivariate_independence
    density = model.density()
    rng = np.random.default_rng(2)
    x0 = model._initial_x(density)
    for x in (x0, x0 + 0.1 * rng.standard_normal(len(x0))):
        value, unknowns = density.value_and_draw(x, np.random.default_rng(0))
        assert value == pytest.approx(density(x)[0], rel=1e-12)
        solutions = model.mme.evaluate(density.theta(x), score=False).solutions
        assert unknowns.shape == solutions.shape and not np.array_equal(unknowns, solutions)
    assert density.value_and_draw(np.full(len(x0), 800.0))[0] == -np.inf


def test_the_sampler_is_chosen_by_the_cost_of_a_gradient(gryphon, monkeypatch):
    """From the analysed factor's flop count, the same on any machine: gryphon's bivariate
    model keeps NUTS, three traits on 20 000 animals (3.5e9, 98 178 unknowns) do not."""
    assert choose_sampler(6.5e5, 2620, 4, 1000, 500) is None
    choice = choose_sampler(3.5e9, 98_178, 4, 1000, 500)
    assert choice.engine == "independence" and "NUTS would take about" in choice.reason
    monkeypatch.setattr("bayes_animal.choice.INDEPENDENCE_ABOVE_SECONDS", 0.0)
    data, pedigree = gryphon
    model = AnimalModel("bwt ~ 1 + (1|byear)", data.dropna(subset=["bwt"]), pedigree=pedigree)
    fit = model.fit(
        parameterisation="marginal", draws=200, chains=2, random_seed=1, progressbar=False,
        warn=False,
    )  # fmt: skip
    assert fit.sampler == "independence"
    assert any(note.startswith("sampler: one gradient") for note in fit.notes)
    assert fit.idata.posterior["u"].shape == (2, 200, 1309)


def test_a_reml_boundary_runs_the_independence_chains_longer(monkeypatch):
    """Where REML has a component at its boundary the posterior is far from Gaussian: where
    NUTS would be too dear the fit still takes the independence sampler, but each chain runs
    BOUNDARY_THIN × draws iterations and keeps every BOUNDARY_THIN-th, and says so."""
    from bayes_animal.choice import BOUNDARY_THIN
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    monkeypatch.setattr("bayes_animal.choice.INDEPENDENCE_ABOVE_SECONDS", 0.0)
    pedigree = simulate_herd_pedigree(n_animals=600, seed=3)
    data = simulate_records(
        pedigree, variances={"additive": 0.4, "pen": 1e-9, "residual": 1.0},
        groups={"pen": 40}, seed=3,
    ).data  # fmt: skip
    model = AnimalModel("y ~ 1 + (1|pen)", data, pedigree=pedigree)
    assert model.reml.boundary
    fit = model.fit(draws=100, chains=2, random_seed=1, progressbar=False, warn=False)
    assert fit.sampler == "independence" and fit.idata.attrs["thin"] == BOUNDARY_THIN
    assert fit.idata.posterior.sizes["draw"] == 100
    assert fit.idata.sample_stats["log_weight"].shape == (2, 100)
    assert any("keeps every" in note for note in fit.notes)


class _ToyDensity:
    """A density with ``value_and_draw`` (the value, and an 'unknown' that is a function of
    the state), for the chains alone."""

    def value_and_draw(self, x, rng):
        return float(-0.5 * np.sum((x - 0.3) ** 2 / 1.5)), np.array([x.sum(), rng.normal()])


def test_thinned_chains_keep_every_thin_th_state_with_its_unknowns():
    """The same seed with thin = 3 and thin = 1: the same chains, the thinned one keeping
    iterations 3, 6, 9 …, each with the unknowns of the state it kept; ``accepted`` says
    whether the chain moved since the draw before; every iteration's proposal weight is kept
    for k̂."""
    from bayes_animal.bayes.independence import _chains

    proposal = Proposal(np.zeros(2), np.eye(2), 10.0, "hessian")
    full = _chains(_ToyDensity(), proposal, (0, 1), 150, 5, 7, True, False, 1)
    thin = _chains(_ToyDensity(), proposal, (0, 1), 50, 5, 7, True, False, 3)
    np.testing.assert_array_equal(thin["x"], full["x"][:, 2::3])
    np.testing.assert_array_equal(thin["log_weight"], full["log_weight"])
    assert thin["moves"] == full["moves"]
    for c in range(2):
        kept = [thin["states"][c][j] for j in thin["index"][c]]
        every = [full["states"][c][j] for j in full["index"][c]]
        for d in range(50):
            np.testing.assert_array_equal(kept[d], every[3 * d + 2])
        # moved in any of the three iterations since the draw before (the first: since tuning)
        moved = full["accepted"][c].reshape(50, 3).any(axis=1)
        np.testing.assert_array_equal(thin["accepted"][c], moved)
    assert 0 < len(thin["states"][0]) <= 50  # the unknowns of kept states only


def test_one_random_effect_takes_its_effects_from_the_eigenbasis_afterwards(gryphon):
    """The spectral density gives no draw of the effects with its value: they are drawn
    afterwards, as for NUTS."""
    data, pedigree = gryphon
    model = AnimalModel("bwt ~ 1", data.dropna(subset=["bwt"]), pedigree=pedigree)
    fit = model.fit(
        parameterisation="marginal", sampler="independence", draws=200, chains=2,
        random_seed=1, progressbar=False, warn=False,
    )  # fmt: skip
    assert fit.idata.attrs["acceptance_rate"] > 0.5
    assert fit.idata.posterior["u"].shape == (2, 200, 1309)


def test_the_independence_sampler_refuses_what_it_cannot_sample(gryphon):
    data, pedigree = gryphon
    model = AnimalModel("bwt ~ 1", data.dropna(subset=["bwt"]), pedigree=pedigree)
    with pytest.raises(ModelError, match="samples a marginal model's variance parameters"):
        model.fit(parameterisation="noncentred", sampler="independence", progressbar=False)


def test_a_poor_proposal_is_reported_with_the_way_out():
    import xarray as xr

    from bayes_animal.results.posterior import component_summary

    rng = np.random.default_rng(0)
    posterior = xr.Dataset({"h2": (("chain", "draw"), rng.uniform(size=(2, 500)))})
    stats_ = xr.Dataset({"accepted": (("chain", "draw"), rng.uniform(size=(2, 500)) < 0.1)})
    tree = xr.DataTree.from_dict({"posterior": posterior, "sample_stats": stats_})
    tree.attrs["proposal_khat"] = 1.3
    summary = component_summary(tree, ["h2"])
    with pytest.warns(UserWarning, match="sampler='nutpie'"):
        diagnostics = diagnose(tree, summary, parameterisation="marginal")
    assert any("accepted 1" in m and "k̂ of their weights 1.30" in m for m in diagnostics.messages)


def test_the_command_line_samples_several_traits_by_independence(gryphon, tmp_path):
    """``fit --sampler independence`` on the gryphon bivariate model: its summary.json says
    which sampler ran, and every trait's breeding values are written."""
    import json

    from bayes_animal.cli import main

    folder = shared_folder("gryphon")
    args = ["fit", "--data", str(folder / "gryphon.csv"), "--pedigree"]
    args += [str(folder / "gryphonped.csv"), "--formula", "cbind(bwt, tarsus) ~ 1"]
    args += ["--sampler", "independence", "--draws", "300", "--chains", "2", "--seed", "4"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--out", str(tmp_path), "--quiet"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["sampler"] == "independence"
    assert summary["ratios"]["corr:additive:bwt:tarsus"]["ess_bulk"] > 100
    assert (tmp_path / "ebv_additive_tarsus.csv").stat().st_size > 0
