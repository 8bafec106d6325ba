"""The hand-derived posterior density of the marginal models (bayes/density, bayes/sampling)
against the PyMC model it replaces on the default path: the same value (to 1e-10, after PyMC's
own float32 constant) and gradient at random points, for every prior and both engines; the
spectral likelihood against the dense formula; the same posterior within Monte Carlo error."""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pandas as pd
import pytest

from bayes_animal import AnimalModel, simulate_reference
from bayes_animal.bayes.density import quantity_values
from bayes_animal.bayes.priors import (
    HalfStudentT,
    InverseGamma,
    InverseWishart,
    LKJCorrelation,
    Priors,
    initial_values,
)

# PyMC's half-t log density adds pt.log(2), a float32 constant (PyTensor types the literal 2
# as int8): every half-t variable of the PyMC model is off by this much from log 2.
PYMC_HALF_T_OFFSET = float(np.float32(math.log(2.0))) - math.log(2.0)


@pytest.fixture(scope="module")
def reference():
    return simulate_reference(n=150, n_snps=300, seed=12)


@pytest.fixture(scope="module")
def herd():
    from conftest import herd_records

    return herd_records(n_animals=250, n_herds=5, groups=10, seed=5)


@pytest.fixture(scope="module")
def maternal_data():
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    return pd.read_csv(folder / "gryphon.csv"), folder / "gryphonped.csv"


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def _compare_with_pymc(model: AnimalModel, engine: str, points: int = 6) -> None:
    pm_model = model.build("marginal")
    density = model.density(engine)
    names = [v.name for v in pm_model.value_vars]
    assert names == density.value_names
    half_t = sum(v.kind in ("sd", "total_sd") for v in density.variables)
    offset = half_t * PYMC_HALF_T_OFFSET
    x0 = density.unconstrained(
        initial_values(model.priors, model.parameters, model.reml_theta(), floor=1e-3)
    )
    rng = np.random.default_rng(1)
    for jacobian in (True, False):
        logp = pm_model.compile_logp(jacobian=jacobian)
        dlogp = pm_model.compile_dlogp(jacobian=jacobian)
        for _ in range(points):
            x = x0 + rng.normal(scale=0.4, size=len(x0))
            point = dict(zip(names, x, strict=True))
            value, gradient = density(x, jacobian=jacobian)
            assert value == pytest.approx(float(logp(point)) - offset, abs=1e-10, rel=0)
            np.testing.assert_allclose(gradient, dlogp(point), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("priors", ["default", "inverse_gamma", "flat", "beta_h2"])
def test_spectral_density_equals_the_pymc_model(reference, priors):
    model = AnimalModel(
        "response ~ 1 + fix", reference.data, relmat=reference.relmat, priors=priors
    )
    _compare_with_pymc(model, "spectral")
    _check_log_prior(model, "spectral")  # and its prior part alone, for every prior


@pytest.mark.parametrize(
    "priors",
    ["default", "inverse_gamma", "flat", Priors(components={"pe": InverseGamma(V=0.5, nu=2)})],
)
def test_sparse_density_equals_the_pymc_model(herd, priors):
    data, pedigree = herd
    model = _quiet(
        AnimalModel, "y ~ 1 + x + (1 | hy) + ide(animal)", data, pedigree=pedigree, priors=priors
    )
    _compare_with_pymc(model, "sparse", points=3)


@pytest.mark.parametrize(
    "priors",
    [
        Priors(),
        Priors(default=InverseGamma(), correlation=InverseWishart()),
        Priors(
            correlation=LKJCorrelation(eta=3.0),
            components={"residual": InverseGamma(V=2.0, nu=1.0), "maternal": HalfStudentT(5, 0.5)},
        ),
    ],
    ids=["lkj", "inverse_wishart", "mixed"],
)
def test_correlated_pair_density_equals_the_pymc_model(maternal_data, priors):
    data, pedigree = maternal_data
    model = AnimalModel(
        "bwt ~ 1 + C(sex)",
        data,
        pedigree=pedigree,
        maternal="mother",
        maternal_covariance=True,
        priors=priors,
    )
    _compare_with_pymc(model, "sparse", points=3)


def test_quantities_are_the_pymc_deterministics(herd):
    """The draws' reported quantities (h², proportions, repeatability) by the one function."""
    data, pedigree = herd
    model = _quiet(AnimalModel, "y ~ 1 + x + (1 | hy) + ide(animal)", data, pedigree=pedigree)
    theta = {"additive": 2.0, "hy": 0.5, "pe": 1.0, "residual": 1.5}
    values = quantity_values(model.parameters, theta)
    assert values["h2"] == pytest.approx(2.0 / 5.0)
    assert values["repeatability"] == pytest.approx(3.0 / 5.0)
    assert values["prop:hy"] == pytest.approx(0.5 / 5.0)
    pm_model = model.build("marginal")
    point = {f"sd_{n}_log__": 0.5 * np.log(v) for n, v in theta.items()}
    outputs = pm_model.replace_rvs_by_values([pm_model[k] for k in values])
    evaluate = pm_model.compile_fn(outputs, inputs=pm_model.value_vars, on_unused_input="ignore")
    np.testing.assert_allclose(evaluate(point), list(values.values()), rtol=1e-12)


def test_density_is_minus_infinity_where_a_transform_saturates(reference):
    model = AnimalModel(
        "response ~ 1 + fix", reference.data, relmat=reference.relmat, priors="beta_h2"
    )
    density = model.density("spectral")
    for x in ([-800.0, 0.0], [800.0, 0.0], [0.0, 800.0]):
        value, gradient = density(np.array(x))
        assert value == -np.inf and not gradient.any()


def test_spectral_likelihood_is_thread_safe(reference):
    """nutpie's chains call one density from several threads: no shared scratch state."""
    model = AnimalModel("response ~ 1 + fix", reference.data, relmat=reference.relmat)
    density = model.density("spectral")
    points = np.random.default_rng(3).normal(scale=0.3, size=(400, 2)) + density.unconstrained(
        {"sd_additive": 1.0, "sd_residual": 1.0}
    )
    expected = [density(x) for x in points]
    results: dict[int, list] = {}

    def work(k):
        results[k] = [density(x) for x in points]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k in range(4):
        for (value, gradient), (v, g) in zip(expected, results[k], strict=True):
            assert value == v and np.array_equal(gradient, g)


def test_an_error_in_the_density_is_raised_after_sampling(reference):
    """An exception inside the density must not abort nutpie's threads: it is raised once
    sampling stops."""
    from bayes_animal.bayes.sampling import sample_density

    model = AnimalModel("response ~ 1 + fix", reference.data, relmat=reference.relmat)
    density = model.density("spectral")
    calls = {"n": 0}
    inner = density.likelihood

    def failing(theta):
        calls["n"] += 1
        if calls["n"] == 30:
            raise RuntimeError("boom in the likelihood")
        return inner(theta)

    density.likelihood = failing
    x0 = density.unconstrained({"sd_additive": 1.0, "sd_residual": 1.0})
    with pytest.raises(RuntimeError, match="boom in the likelihood"):
        sample_density(
            density, x0, None, draws=20, tune=20, chains=1, cores=1, seed=1,
            progressbar=False, target_accept=0.8,
        )  # fmt: skip


def test_nutpie_on_the_density_and_pymc_give_the_same_posterior(reference):
    """The default (nutpie on the hand-derived density) and PyMC's NUTS on the PyMC graph:
    every variance and h² agree within Monte Carlo error (4 MC standard errors of the
    difference, from each fit's ESS)."""
    model = AnimalModel("response ~ 1 + fix", reference.data, relmat=reference.relmat)
    fits = {
        s: _quiet(model.fit, sampler=s, random_seed=5, progressbar=False, warn=False)
        for s in ("nutpie", "pymc")
    }
    assert fits["nutpie"].sampler == "nutpie" and fits["pymc"].sampler == "pymc"
    for key in ("sigma2:additive", "sigma2:residual", "h2"):
        rows = [fits[s].summary().loc[key] for s in fits]
        mc_se = math.sqrt(sum(r["sd"] ** 2 / r["ess_bulk"] for r in rows))
        assert abs(rows[0]["mean"] - rows[1]["mean"]) < 4 * mc_se, (key, rows)
        assert rows[0]["sd"] == pytest.approx(rows[1]["sd"], rel=0.1)
    posterior = fits["nutpie"].idata.posterior
    for name in ("sd_additive", "sd_residual", "sigma2:additive", "h2", "u", "beta"):
        assert name in posterior
    np.testing.assert_allclose(
        posterior["sigma2:additive"].values, posterior["sd_additive"].values ** 2, rtol=1e-12
    )


def test_vectorised_draws_equal_the_pointwise_map(maternal_data):
    """The draws' free variables and θ, formed at once after sampling, equal the per-point
    values the density uses (covariance pair included)."""
    data, pedigree = maternal_data
    model = AnimalModel(
        "bwt ~ 1 + C(sex)", data, pedigree=pedigree, maternal="mother", maternal_covariance=True
    )
    density = model.density("sparse")
    x = np.random.default_rng(4).normal(scale=0.5, size=(25, density.size))
    draws = density.draws(x)
    for s, point in enumerate(x):
        for name, value in density.constrained(point).items():
            assert draws[name][s] == pytest.approx(value, rel=1e-13)
        theta = density.theta(point)
        for i, name in enumerate(model.parameters.names):
            assert draws[name][s] == pytest.approx(theta[i], rel=1e-12)


def test_chain_groups_give_the_same_draws_in_two_processes_or_one(tmp_path):
    """The two chain groups run at once, the second in a worker process (a free core), or one
    after the other here (one core): the draws and sample statistics are identical, and a
    worker can be used again after sampling here (nothing of this process is inherited)."""
    import subprocess
    import sys

    script = tmp_path / "groups.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from bayes_animal import AnimalModel, simulate_reference\n"
        "from bayes_animal.bayes import sampling\n"
        "sim = simulate_reference(n=120, n_snps=200, seed=8)\n"
        "model = AnimalModel('response ~ 1 + fix', sim.data, relmat=sim.relmat)\n"
        "density = model.density('spectral')\n"
        "x0 = density.unconstrained(model._initial_values())\n"
        "cov = model._reml_covariance(density.theta_jacobian(x0))\n"
        "options = dict(draws=150, tune=150, chains=4, seed=11, progressbar=False,"
        " target_accept=0.8)\n"
        "a = sampling.sample_density(density, x0, cov, cores=2, **options)\n"
        "b = sampling.sample_density(density, x0, cov, cores=1, **options)\n"
        "c = sampling.sample_density(density, x0, cov, cores=2, **options)\n"
        "assert a.attrs['chain_processes'] == 2 and b.attrs['chain_processes'] == 1\n"
        "assert c.attrs['chain_processes'] == 2\n"
        "assert 'arviz' not in sys.modules\n"
        "for group in ('posterior', 'sample_stats'):\n"
        "    for name in a[group].data_vars:\n"
        "        assert np.array_equal(a[group][name].values, b[group][name].values), name\n"
        "        assert np.array_equal(a[group][name].values, c[group][name].values), name\n"
        "assert a['posterior'].sizes['chain'] == 4\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_sparse_density_samples_the_same_in_a_worker_process(tmp_path):
    """The sparse engine's density (the mixed-model equations, pickled to a worker) gives the
    same draws with its second chain group in a worker as with both groups here."""
    import subprocess
    import sys

    from conftest import shared_folder

    folder = shared_folder("gryphon")
    script = tmp_path / "sparse_groups.py"
    script.write_text(
        "import warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import numpy as np, pandas as pd\n"
        "from bayes_animal import AnimalModel\n"
        "from bayes_animal.bayes import sampling\n"
        f"folder = {str(folder)!r}\n"
        "model = AnimalModel('bwt ~ 1 + (1 | byear)', pd.read_csv(folder + '/gryphon.csv'),\n"
        "                    pedigree=folder + '/gryphonped.csv', priors='inverse_gamma')\n"
        "density = model.density('sparse')\n"
        "x0 = density.unconstrained(model._initial_values())\n"
        "cov = model._reml_covariance(density.theta_jacobian(x0))\n"
        "options = dict(draws=40, tune=40, chains=2, seed=3, progressbar=False,"
        " target_accept=0.8)\n"
        "a = sampling.sample_density(density, x0, cov, cores=2, **options)\n"
        "b = sampling.sample_density(density, x0, cov, cores=1, **options)\n"
        "assert a.attrs['chain_processes'] == 2 and b.attrs['chain_processes'] == 1\n"
        "for name in a['posterior'].data_vars:\n"
        "    assert np.array_equal(a['posterior'][name].values, b['posterior'][name].values)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize(("d", "eta"), [(3, 1.0), (3, 2.0), (4, 1.5)])
def test_the_partial_correlations_beta_densities_are_lkj(d, eta):
    """Independent Beta(b, b) partial correlations at level j, b = η + (d − 2 − j)/2, give
    LKJ(η): every correlation's marginal is Beta(η − 1 + d/2) on (−1, 1), of variance
    1 / (2η + d − 1) (Lewandowski et al. 2009)."""
    from bayes_animal.spec.vine import vine_correlation

    rng = np.random.default_rng(0)
    n = 200_000
    z = {
        (j, i): 2.0 * rng.beta(eta + (d - 2 - j) / 2, eta + (d - 2 - j) / 2, n) - 1.0
        for i in range(1, d)
        for j in range(i)
    }
    R = vine_correlation(z, d)
    expected = 1.0 / (2 * eta + d - 1)
    for i in range(d):
        for j in range(i):
            assert np.var(R[i][j]) == pytest.approx(expected, rel=0.02), (i, j)
            assert abs(np.mean(R[i][j])) < 0.01


def _multi_trait_density(priors, traits=("y1", "y2", "y3")):
    from bayes_animal.bayes.density import MarginalDensity
    from bayes_animal.spec.parameters import Parameters
    from bayes_animal.spec.terms import specify

    spec = specify(f"cbind({', '.join(traits)}) ~ 1 + (1|g)")
    parameters = Parameters.from_spec(spec)
    scales = {name: 1.3 for name in parameters.variances}
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(parameters.size)

    def likelihood(theta):  # a smooth stand-in for ℓ_R: any θ-function tests the chain rule
        return float(weights @ np.log1p(theta**2)), weights * 2 * theta / (1 + theta**2)

    from bayes_animal.bayes.priors import as_priors

    return MarginalDensity(as_priors(priors), parameters, scales, likelihood)


@pytest.mark.parametrize("priors", ["default", "inverse_gamma", "flat"])
def test_the_density_of_several_traits_has_the_gradient_of_its_value(priors):
    """Every G0 and R0 of three traits (LKJ, or inverse-Wishart with V = I, nu = 2.002):
    the gradient in the unconstrained coordinates equals finite differences of the value."""
    density = _multi_trait_density(priors)
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.normal(0, 0.5, density.size)
        value, gradient = density(x)
        assert np.isfinite(value)
        for k in range(density.size):
            step = np.zeros(density.size)
            step[k] = 1e-6
            numeric = (density(x + step)[0] - density(x - step)[0]) / 2e-6
            assert gradient[k] == pytest.approx(numeric, rel=1e-5, abs=1e-6), k
    theta = density.theta(x)
    assert density.parameters.valid(theta)  # every block positive definite by construction


def _check_log_prior(model: AnimalModel, engine: str | None = None) -> None:
    """``log_prior`` at draws of the free variables (a 2 × 3 array of each) equals the
    density without its Jacobian less the likelihood, point by point: the prior's every term
    (each variable's density, the inverse-Wishart potential), and no other."""
    from bayes_animal.bayes.density import MarginalDensity

    density = model.density(engine)
    x0 = _quiet(model._initial_x, density)
    rng = np.random.default_rng(3)
    xs = x0 + rng.normal(scale=0.3, size=(6, len(x0)))
    expected = [density(x, jacobian=False)[0] - density.likelihood(density.theta(x))[0] for x in xs]
    draws = [density.constrained(x) for x in xs]
    values = {name: np.array([d[name] for d in draws]).reshape(2, 3) for name in draws[0]}
    alone = MarginalDensity(model.priors, model.parameters, model.scales, None,
                            model.fixed_parameters)  # fmt: skip
    np.testing.assert_allclose(alone.log_prior(values).ravel(), expected, rtol=0, atol=1e-9)
    values.pop(density.variables[0].name)
    assert alone.log_prior(values) is None


@pytest.mark.parametrize(
    "priors", [Priors(), Priors(default=InverseGamma(), correlation=InverseWishart())],
    ids=["lkj", "inverse_wishart"],
)  # fmt: skip
def test_the_log_prior_of_a_correlated_pair_and_of_several_traits(maternal_data, priors):
    data, pedigree = maternal_data
    pair = AnimalModel(
        "bwt ~ 1 + C(sex)", data, pedigree=pedigree, maternal="mother",
        maternal_covariance=True, priors=priors,
    )  # fmt: skip
    _check_log_prior(pair, "sparse")
    several = _quiet(
        AnimalModel, "cbind(bwt, tarsus) ~ 1 + C(sex)", data, pedigree=pedigree, priors=priors
    )
    _check_log_prior(several)
