"""A default run whose diagnostics fail is extended once by as many chains again
(bayes/extension.py): which quantities fail, how two runs' chains are joined, and, through
AnimalModel.fit, that the first chains are the unextended run's draws, a given draws= is run as
asked and a run whose draws would pass the memory limit is not extended (it says so); a default
run that diverged is drawn again at a higher target acceptance, a given one is not."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from bayes_animal import AnimalModel, simulate_reference
from bayes_animal.bayes import extension


def _tree(chains: int, draws: int, seed: int, *, stuck: bool = False, time: float = 1.0):
    rng = np.random.default_rng(seed)
    mixed = rng.normal(size=(chains, draws))
    if stuck:  # each chain around its own mean: the chains disagree
        mixed = mixed * 0.1 + np.arange(chains)[:, None]
    coords = {"chain": np.arange(chains), "draw": np.arange(draws)}
    posterior = xr.Dataset(
        {"h2": (("chain", "draw"), mixed), "constant": (("chain", "draw"), np.ones_like(mixed))},
        coords=coords,
        attrs={"sampling_time": time},
    )
    stats = xr.Dataset({"diverging": (("chain", "draw"), np.zeros((chains, draws), bool))},
                       coords=coords)  # fmt: skip
    observed = xr.Dataset({"y": ("obs", np.arange(5.0))})
    tree = xr.DataTree.from_dict(
        {"posterior": posterior, "sample_stats": stats, "observed_data": observed}
    )
    tree.attrs["model_options"] = "kept"
    return tree


def test_failing_names_the_quantities_past_the_diagnostics_limits():
    """Chains that disagree fail R-hat, too few draws fail ESS, well-mixed draws pass, and a
    quantity the same in every draw (NaN R-hat and ESS) fails neither."""
    assert extension.failing(_tree(4, 1000, 1), ["h2", "constant", "absent"]) == []
    assert extension.failing(_tree(4, 1000, 1, stuck=True), ["h2", "constant"]) == ["h2"]
    assert extension.failing(_tree(4, 50, 1), ["h2"]) == ["h2"]  # ESS of 200 draws < 400


def test_join_chains_numbers_the_second_runs_chains_after_the_firsts():
    first, second = _tree(4, 30, 1, time=2.0), _tree(4, 30, 2, time=3.0)
    joined = extension.join_chains(first, second)
    posterior = joined.posterior
    assert list(posterior["chain"].values) == list(range(8))
    np.testing.assert_array_equal(posterior["h2"].values[:4], first.posterior["h2"].values)
    np.testing.assert_array_equal(posterior["h2"].values[4:], second.posterior["h2"].values)
    assert joined.sample_stats.sizes["chain"] == 8
    assert posterior.attrs["sampling_time"] == 5.0
    np.testing.assert_array_equal(joined.observed_data["y"].values, np.arange(5.0))
    assert joined.attrs["model_options"] == "kept"
    assert extension.posterior_bytes(joined) == 2 * extension.posterior_bytes(first)


def test_the_extension_seed_is_a_fixed_function_of_the_fits():
    assert extension.extension_seed(7) == extension.extension_seed(7) != 7
    assert extension.extension_seed(7) != extension.extension_seed(8)


@pytest.fixture(scope="module")
def model():
    sim = simulate_reference(n=80, n_snps=100, seed=5)
    return AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)


def test_a_default_run_that_fails_is_extended_and_keeps_its_first_chains(model, monkeypatch):
    """With the ESS limit out of reach every default run fails: it gains 4 chains, says so,
    records 8 chains, and its first 4 are the draws of the same seed run at the default length
    as asked (draws=1000), which is not extended."""
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    options = {"random_seed": 3, "progressbar": False, "warn": False}
    extended = model.fit(**options)
    assert extended.idata.posterior.sizes["chain"] == 8
    assert any("4 more were drawn" in note for note in extended.notes)
    assert '"chains": 8' in extended.idata.attrs["model_options"]
    asked = model.fit(draws=1000, **options)
    assert asked.idata.posterior.sizes["chain"] == 4
    assert not any("more were drawn" in note for note in asked.notes)
    np.testing.assert_array_equal(
        extended.idata.posterior["h2"].values[:4], asked.idata.posterior["h2"].values
    )
    later = extended.idata.posterior["h2"].values[4:]
    assert not np.array_equal(later, asked.idata.posterior["h2"].values)  # new chains


def test_a_run_that_passes_or_would_hold_too_much_is_not_extended(model, monkeypatch):
    options = {"random_seed": 3, "progressbar": False, "warn": False}
    passing = model.fit(**options)  # the reference simulation's h² mixes well
    assert passing.idata.posterior.sizes["chain"] == 4
    assert not any("chains" in note and "drawn" in note for note in passing.notes)
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    monkeypatch.setattr(extension, "EXTENSION_MAX_BYTES", 0)
    held = model.fit(**options)
    assert held.idata.posterior.sizes["chain"] == 4
    assert any("no more were drawn" in note and "draws=" in note for note in held.notes)


def test_the_memory_limit_counts_the_breeding_values_a_marginal_model_draws_afterwards(
    model, monkeypatch
):
    """The reference simulation's model is sampled marginal: its posterior holds the
    variances only, and b and u (80 animals + 2 fixed effects) are drawn after the chains. A
    limit above the variances' bytes but below theirs with those draws holds the extension."""
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    options = {"random_seed": 3, "progressbar": False, "warn": False}
    drawn_afterwards = 8 * (80 + 2) * 4 * 1000
    monkeypatch.setattr(extension, "EXTENSION_MAX_BYTES", drawn_afterwards)
    held = model.fit(**options)
    assert held.idata.posterior.sizes["chain"] == 4
    assert any("no more were drawn" in note for note in held.notes)
    monkeypatch.setattr(extension, "EXTENSION_MAX_BYTES", 3 * drawn_afterwards)
    extended = model.fit(**options)
    assert extended.idata.posterior.sizes["chain"] == 8


def test_divergences_counts_the_kept_draws_flags():
    tree = _tree(2, 50, 1)
    assert extension.divergences(tree) == 0
    tree["sample_stats"]["diverging"].values[1, [3, 7, 9]] = True
    assert extension.divergences(tree) == 3
    bare = xr.DataTree.from_dict({"posterior": tree["posterior"].to_dataset()})
    assert extension.divergences(bare) == 0  # a sampler that reports none


def test_the_redraw_seed_is_a_fixed_function_distinct_from_the_fits_and_the_extensions():
    assert extension.redraw_seed(3) == extension.redraw_seed(3)
    assert extension.redraw_seed(3) not in (3, extension.extension_seed(3))
    assert extension.redraw_seed(3) != extension.redraw_seed(4)


def _diverging_first_run(monkeypatch, run: int = 1):
    """``extension.divergences`` says the ``run``-th run it reads diverged 7 times, the runs
    before it none, and reads any later one's draws: a divergent run on demand (the calls
    are counted)."""
    real, calls = extension.divergences, []

    def fake(idata):
        calls.append(idata)
        return 7 if len(calls) == run else (0 if len(calls) < run else real(idata))

    monkeypatch.setattr(extension, "divergences", fake)
    return calls


def test_a_default_run_that_diverged_is_drawn_again_with_shorter_steps(model, monkeypatch):
    """Every chain drawn again at REDRAW_TARGET_ACCEPT from the redraw seed, the divergent
    draws dropped: the fit's draws are exactly those of a run asked for at that target and
    seed, the notes say so and the provenance records the target the draws were made at."""
    calls = _diverging_first_run(monkeypatch)
    options = {"progressbar": False, "warn": False}
    redrawn = model.fit(random_seed=3, **options)
    assert len(calls) == 1  # once: the redrawn run is not redrawn again
    assert any("7 divergent transitions at target_accept 0.8" in n for n in redrawn.notes)
    assert '"target_accept": 0.95' in redrawn.idata.attrs["model_options"]
    asked = model.fit(
        random_seed=extension.redraw_seed(3), target_accept=extension.REDRAW_TARGET_ACCEPT,
        draws=1000, **options,
    )  # fmt: skip
    np.testing.assert_array_equal(redrawn.idata.posterior["h2"].values,
                                  asked.idata.posterior["h2"].values)  # fmt: skip
    first = model.fit(random_seed=3, draws=1000, **options)  # the run that was dropped
    assert not np.array_equal(first.idata.posterior["h2"].values,
                              redrawn.idata.posterior["h2"].values)  # fmt: skip


def test_an_extension_that_diverged_is_drawn_again_and_joined(model, monkeypatch):
    """The first run passes the divergence check but not the ESS limit; the 4 chains added
    diverge, so they are drawn again at REDRAW_TARGET_ACCEPT from the redraw seed of the
    extension's: the first 4 chains are the run at 0.8, the last 4 a run asked at 0.95."""
    _diverging_first_run(monkeypatch, run=2)
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    options = {"progressbar": False, "warn": False}
    fit = model.fit(random_seed=3, **options)
    assert fit.idata.posterior.sizes["chain"] == 8
    assert any("in the added run's 4 chains" in note for note in fit.notes)
    assert '"target_accept": 0.95' in fit.idata.attrs["model_options"]
    h2 = fit.idata.posterior["h2"].values
    first = model.fit(random_seed=3, draws=1000, target_accept=0.8, **options)
    np.testing.assert_array_equal(h2[:4], first.idata.posterior["h2"].values)
    seed = extension.redraw_seed(extension.extension_seed(3))
    added = model.fit(random_seed=seed, draws=1000, target_accept=0.95, **options)
    np.testing.assert_array_equal(h2[4:], added.idata.posterior["h2"].values)


def test_a_given_target_accept_or_draws_diverges_as_asked(model, monkeypatch):
    options = {"random_seed": 3, "progressbar": False, "warn": False}
    for given in ({"target_accept": 0.8}, {"draws": 1000}):
        _diverging_first_run(monkeypatch)
        fit = model.fit(**given, **options)
        assert not any("drawn again" in note for note in fit.notes), given
        assert '"target_accept": 0.8' in fit.idata.attrs["model_options"]


def test_divergences_advise_a_target_above_the_one_the_draws_were_made_at():
    from bayes_animal.results.posterior import component_summary, diagnose

    tree = _tree(2, 300, 2)
    tree["sample_stats"]["diverging"].values[0, :4] = True
    summary = component_summary(tree, ["h2"])

    def advice(**given):
        messages = diagnose(tree, summary, parameterisation="marginal", warn=False, **given)
        return next(m for m in messages.messages if "divergent" in m)

    assert "4 divergent transitions: raise target_accept (e.g. 0.95) or" in advice()
    assert "(e.g. 0.95) (these draws: 0.8)" in advice(target_accept=0.8)
    assert "(e.g. 0.99) (these draws: 0.95)" in advice(target_accept=0.95)


def test_the_exact_model_of_a_family_extends_with_its_breeding_values(monkeypatch):
    """The joint density's run (nutpie on the hand-derived density, every u formed from the
    draws): extended, its 8 chains carry u, and the first 4 are the unextended run's."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    pedigree = simulate_herd_pedigree(n_animals=150, n_generations=3, n_herds=5, seed=4)
    data = simulate_records(
        pedigree, variances={"additive": 0.5, "herd": 0.2}, groups={"herd": 5}, mean=-0.3,
        seed=4, family="threshold",
    ).data  # fmt: skip
    model = AnimalModel("y ~ x + (1|herd)", data, pedigree=pedigree, family="threshold")
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    # a target given, so that a divergence is not redrawn: the extension alone is tested
    options = {"random_seed": 5, "progressbar": False, "warn": False, "target_accept": 0.8}
    extended = model.fit(**options)
    asked = model.fit(draws=3000, **options)
    assert extended.idata.posterior.sizes["chain"] == 8
    assert asked.idata.posterior.sizes["chain"] == 4
    for name in ("u", "u_herd", "h2"):
        np.testing.assert_array_equal(
            extended.idata.posterior[name].values[:4], asked.idata.posterior[name].values
        )
    assert np.all(np.isfinite(extended.idata.posterior["u"].values[4:]))
    assert extended.ebv().shape[0] == asked.ebv().shape[0]


def test_the_independence_sampler_extends_with_its_carried_breeding_values(monkeypatch):
    """The independence sampler (sparse equations, b and u drawn by each step from the
    factorisation it evaluates): extended from the same fitted proposal, its 8 chains carry
    every u, and the first 4 are the unextended run's."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    pedigree = simulate_herd_pedigree(n_animals=150, n_generations=3, n_herds=5, seed=4)
    data = simulate_records(
        pedigree, variances={"additive": 0.5, "herd": 0.2, "residual": 0.5},
        groups={"herd": 5}, seed=4,
    ).data  # fmt: skip
    model = AnimalModel("y ~ x + (1|herd)", data, pedigree=pedigree)
    monkeypatch.setattr(extension, "ESS_LIMIT", 10**9)
    options = {"random_seed": 5, "progressbar": False, "warn": False, "sampler": "independence"}
    extended = model.fit(**options)
    asked = model.fit(draws=1000, **options)
    assert extended.idata.posterior.sizes["chain"] == 8
    assert any("4 more were drawn" in note for note in extended.notes)
    assert asked.idata.posterior.sizes["chain"] == 4
    for name in ("u", "u_herd", "h2"):
        np.testing.assert_array_equal(
            extended.idata.posterior[name].values[:4], asked.idata.posterior[name].values
        )
    later = extended.idata.posterior["u"].values[4:]
    assert np.all(np.isfinite(later)) and later.std() > 0
    assert not np.array_equal(later, asked.idata.posterior["u"].values)
