"""The hand-derived exact joint density of a non-Gaussian family (bayes/joint.py, its kernels in
bayes/kernels.py): equal to the PyMC model's log density and gradient for every family, link,
prior and covariance structure it serves; its posterior tree's u, cut-points and quantities
equal the PyMC model's Deterministics; nutpie's C callback gives the same numbers; the same
seed gives the same draws on one core or two."""

from __future__ import annotations

import ctypes

import numpy as np
import pandas as pd
import pytest

from bayes_animal import AnimalModel
from bayes_animal.bayes.engines import engine_for
from bayes_animal.bayes.joint import JointDensity, joint_obstacle
from bayes_animal.bayes.kernels import callbacks
from bayes_animal.bayes.priors import FlatVariance, HalfStudentT, InverseGamma, NormalFixed, Priors
from bayes_animal.bayes.sampling import sample_joint
from bayes_animal.simulate import simulate_herd_pedigree, simulate_records
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree


@pytest.fixture(scope="module")
def herd():
    """A small herd pedigree with a threshold trait and an overdispersed count on it."""
    pedigree = simulate_herd_pedigree(n_animals=150, n_generations=3, n_herds=5, seed=4)
    binary = simulate_records(
        pedigree, variances={"additive": 0.5, "herd": 0.2}, groups={"herd": 5}, mean=-0.3,
        seed=4, family="threshold",
    ).data  # fmt: skip
    counts = simulate_records(
        pedigree, variances={"additive": 0.3, "herd": 0.1, "residual": 0.2},
        groups={"herd": 5}, mean=0.8, seed=5, family="poisson",
    ).data  # fmt: skip
    return pedigree, binary, counts


def _with_trials(data: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    out = data.copy()
    out["n"] = rng.integers(1, 6, len(out))
    out["s"] = rng.binomial(out["n"], 0.35)
    out["f"] = out["n"] - out["s"]
    return out


def _ordinal(data: pd.DataFrame) -> pd.DataFrame:
    out = data.copy()
    rng = np.random.default_rng(2)
    out["score"] = np.digitize(rng.normal(size=len(out)) + 0.5 * out["x"], [-0.6, 0.1, 0.9])
    return out


def _model(case: str, herd) -> AnimalModel:
    pedigree, binary, counts = herd
    if case == "threshold":
        return AnimalModel("y ~ x + (1|herd)", binary, pedigree=pedigree, family="threshold")
    if case == "logit":
        return AnimalModel(
            "y ~ x + (1|herd)", binary, pedigree=pedigree, family="binomial", link="logit"
        )
    if case in ("trials probit", "trials logit"):
        return AnimalModel(
            "cbind(s, f) ~ x + (1|herd)", _with_trials(binary), pedigree=pedigree,
            family="binomial", link=case.split()[1],
        )  # fmt: skip
    if case == "poisson":
        return AnimalModel("y ~ x + (1|herd)", counts, pedigree=pedigree, family="poisson")
    if case == "poisson, pedigree offspring first":  # levels' order ≠ the pedigree's order
        reversed_pedigree = pedigree.iloc[::-1].reset_index(drop=True)
        model = AnimalModel(
            "y ~ x + (1|herd)", counts, pedigree=reversed_pedigree, family="poisson"
        )
        positions = engine_for(model, "noncentred").joint_density().effects[0].positions
        assert np.count_nonzero(positions != np.arange(len(positions))) > 100
        return model
    if case == "poisson, every level partly centred":  # the observation-level effect too
        model = AnimalModel("y ~ x + (1|herd)", counts, pedigree=pedigree, family="poisson")
        model._centring = {"herd": np.linspace(0.2, 1.0, 5),
                           "residual": np.linspace(0.0, 1.0, len(counts))}  # fmt: skip
        return model
    if case == "poisson, no overdispersion":
        return AnimalModel(
            "y ~ x + (1|herd)", counts, pedigree=pedigree, family="poisson",
            overdispersion=False,
        )  # fmt: skip
    if case == "ordinal":
        return AnimalModel("score ~ x + (1|herd)", _ordinal(binary), pedigree=pedigree,
                           family="ordinal")  # fmt: skip
    if case == "given matrix, other priors":  # A given as a matrix: its dense factor
        relationship = dense_relationship(read_pedigree(pedigree, warn=False))
        priors = Priors(
            default=HalfStudentT(nu=3.0, scale=0.8),
            components={"herd": InverseGamma(V=1.0, nu=0.5), "residual": FlatVariance()},
            fixed=NormalFixed(scale=2.0),
        )
        return AnimalModel("y ~ x + (1|herd)", counts, relmat=relationship, family="poisson",
                           priors=priors)  # fmt: skip
    raise AssertionError(case)


CASES = [
    "threshold", "logit", "trials probit", "trials logit", "poisson",
    "poisson, pedigree offspring first",
    "poisson, every level partly centred", "poisson, no overdispersion", "ordinal",
    "given matrix, other priors",
]  # fmt: skip


def _pymc_point(density: JointDensity, x: np.ndarray) -> dict[str, np.ndarray]:
    """The PyMC model's free variables (by value name) at the density's coordinates x."""
    point = {v.value_name: np.array(x[j]) for j, v in enumerate(density.variables)}
    point["beta"] = x[density.m : density.start_z]
    for effect in density.effects:  # level k's unit normal at its coordinate (a pedigree's
        point[effect.z_name] = x[density.start_z + effect.offset + effect.positions]  # order)
    if density.cutpoints > 1:
        point["cutpoint_log_increments"] = x[density.start_z + density.packed_size :]
    return point


def _flat_gradient(pymc_model, gradient: np.ndarray, point: dict) -> dict[str, np.ndarray]:
    out, at = {}, 0
    for variable in pymc_model.value_vars:
        size = int(np.size(point[variable.name]))
        out[variable.name] = gradient[at : at + size]
        at += size
    return out


@pytest.mark.parametrize("case", CASES)
def test_the_joint_density_is_the_pymc_models(case, herd):
    """Value (to 1e-10, relative) and gradient (to 1e-8) of the density equal the PyMC
    model's ``logp`` and ``dlogp`` (both with the model's centring weights) at three random
    points (the last far out, where η reaches
    the tails), every free variable matched by name; the posterior tree of a draw holds the
    PyMC model's u, cut-points and quantities there."""
    model = _model(case, herd)
    density = engine_for(model, "noncentred").joint_density()
    assert density is not None
    pymc_model = model.build("noncentred")
    logp = pymc_model.compile_logp(mode="FAST_COMPILE")
    dlogp = pymc_model.compile_dlogp(mode="FAST_COMPILE")
    rng = np.random.default_rng(7)
    for scale in (0.4, 0.4, 1.5):
        x = rng.normal(size=density.size) * scale
        point = _pymc_point(density, x)
        assert set(point) == {v.name for v in pymc_model.value_vars}
        value, gradient = density(x)
        assert value == pytest.approx(float(logp(point)), rel=1e-10)
        expected = _flat_gradient(pymc_model, np.asarray(dlogp(point)), point)
        mine = _flat_gradient(pymc_model, gradient[_order(density, pymc_model, point)], point)
        for name, values in expected.items():
            np.testing.assert_allclose(mine[name], values, rtol=1e-8, atol=1e-8, err_msg=name)
    tree = density.posterior_tree(density.expand(x.reshape(1, 1, -1)), {})
    reported = [n for n in tree["posterior"].data_vars if n in pymc_model.named_vars]
    assert {"u", "u_herd", "beta", "h2"} <= set(reported)
    values = pymc_model.compile_fn(
        pymc_model.replace_rvs_by_values([pymc_model[n] for n in reported]),
        inputs=pymc_model.value_vars, on_unused_input="ignore", mode="FAST_COMPILE",
    )(point)  # fmt: skip
    for name, value in zip(reported, values, strict=True):
        np.testing.assert_allclose(
            tree["posterior"][name].values[0, 0], value, rtol=1e-10, atol=1e-12, err_msg=name
        )


def test_centring_weights_are_each_levels_share_of_its_posterior_precision(herd):
    """λ_j = σ̂²d_j / (1 + σ̂²d_j), d_j the sum of the level's records' Fisher weights at REML's
    conditional mode (Poisson: μ_i), where it reaches CENTRE_FROM (0 below): large counts
    (mean e³) in five herds of 30 records pin every herd down; the binary records do not
    (a probit record's weight is below 0.64), so no level is centred; the pedigree effect and
    the observation-level effect have none."""
    from bayes_animal.bayes.model import CENTRE_FROM

    pedigree = herd[0]
    large = simulate_records(
        pedigree, variances={"additive": 0.3, "herd": 0.2, "residual": 0.1},
        groups={"herd": 5}, mean=3.0, seed=6, family="poisson",
    ).data  # fmt: skip
    model = AnimalModel("y ~ x + (1|herd)", large, pedigree=pedigree, family="poisson")
    centring = model.centring()
    assert set(centring) == {"herd"}
    theta = dict(zip(model.parameters.names, model.reml_theta(), strict=True))
    mode = model.laplace.mode(model._floored_reml_theta()[0], expected=True)
    np.testing.assert_allclose(mode.weights, np.exp(mode.eta))
    d = np.bincount(model.design.effect("herd").index, mode.weights)
    share = theta["herd"] * d / (1 + theta["herd"] * d)
    assert np.all(share >= CENTRE_FROM)
    np.testing.assert_allclose(centring["herd"], share)
    fit = model.fit(draws=20, tune=20, chains=2, random_seed=1, progressbar=False, warn=False)
    assert "5 of the 5 levels of 'herd' are sampled partly centred" in " ".join(fit.notes)
    assert fit.idata.posterior["u_herd"].shape == (2, 20, 5)
    threshold = _model("threshold", herd)
    assert threshold.centring() == {}
    d = np.bincount(
        threshold.design.effect("herd").index,
        threshold.laplace.mode(threshold._floored_reml_theta()[0], expected=True).weights,
    )
    assert np.all(d < 0.64 * np.bincount(threshold.design.effect("herd").index))  # φ²/Φ(1-Φ)


def test_partly_centred_levels_are_the_same_u_and_posterior(herd):
    """The density with the model's weights λ equals the non-centred one (λ = 0) at the same
    u, less the Jacobian Σ λ_j log σ: ũ_j = σ^λ_j z_j maps one onto the other, and the posterior
    tree reports the same u. Weights outside [0, 1], of the wrong length or for an effect with
    a relationship are refused."""
    model = _model("poisson", herd)
    arguments = (model.priors, model.parameters, model.scales, model.design, model.structures,
                 model.coords())  # fmt: skip
    weights = {"herd": np.linspace(0.2, 1.0, 5), "residual": np.linspace(0, 1, len(model.design.y))}
    centred = JointDensity(*arguments, weights)
    plain = JointDensity(*arguments)
    x = np.random.default_rng(5).normal(size=plain.size) * 0.4
    tree = plain.posterior_tree(plain.expand(x.reshape(1, 1, -1)), {})["posterior"]
    moved, jacobian = x.copy(), 0.0
    for effect in plain.effects:
        if effect.name not in centred.centring:
            continue
        weights = centred.centring[effect.name]
        sigma = np.sqrt(float(tree[f"sigma2:{effect.name}"].values.ravel()[0]))
        at = slice(plain.start_z + effect.offset, plain.start_z + effect.offset + effect.size)
        moved[at] = x[at] * sigma**weights
        jacobian += float(np.sum(weights)) * np.log(sigma)
    assert centred(moved)[0] == pytest.approx(plain(x)[0] - jacobian, rel=1e-12)
    again = centred.posterior_tree(centred.expand(moved.reshape(1, 1, -1)), {})["posterior"]
    for name in ("u", "u_herd", "beta", "h2"):
        np.testing.assert_allclose(again[name].values, tree[name].values, rtol=1e-12)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        JointDensity(*arguments, {"herd": np.full(5, 1.5)})
    with pytest.raises(ValueError, match="must be 5 numbers"):
        JointDensity(*arguments, {"herd": np.zeros(4)})
    with pytest.raises(ValueError, match="with a relationship: \\['additive'\\]"):
        JointDensity(*arguments, {"additive": np.zeros(150)})


def _order(density: JointDensity, pymc_model, point: dict) -> np.ndarray:
    """Positions of the density's gradient in the order of the PyMC model's value variables."""
    where = {v.value_name: [j] for j, v in enumerate(density.variables)}
    where["beta"] = list(range(density.m, density.start_z))
    for effect in density.effects:
        where[effect.z_name] = list(density.start_z + effect.offset + effect.positions)
    where["cutpoint_log_increments"] = list(
        range(density.start_z + density.packed_size, density.size)
    )
    return np.concatenate([where[v.name] for v in pymc_model.value_vars]).astype(int)


def test_the_callback_nutpie_calls_gives_the_same_numbers(herd):
    """The C callback reads the density's buffers through its user data and writes the
    value and gradient of the kernel; it answers 4 where the value is not finite and −1 for a
    dimension that is not the density's."""
    density = engine_for(_model("threshold", herd), "noncentred").joint_density()
    x = np.random.default_rng(3).normal(size=density.size) * 0.3
    value, gradient = density(x)
    out, logp = np.zeros(density.size), np.zeros(1)

    def call(point: np.ndarray, dim: int) -> int:
        pointer = ctypes.POINTER(ctypes.c_double)
        return callbacks()[0].ctypes(
            dim, point.ctypes.data_as(pointer), out.ctypes.data_as(pointer),
            logp.ctypes.data_as(pointer), density.user_data.ctypes.data_as(ctypes.c_void_p),
        )  # fmt: skip

    assert call(x, density.size) == 0
    assert logp[0] == value
    np.testing.assert_array_equal(out, gradient)
    far = x.copy()
    far[0] = 800.0  # exp(800) overflows: the SD is infinite
    assert call(far, density.size) in (3, 4)
    assert call(x, density.size - 1) == -1


def test_nutpies_expansion_of_a_draw_is_the_reported_draw(herd):
    """The C callback nutpie calls for each kept draw writes what ``expand`` gives — the free
    variables, b, every reported u and no observation-level unit normals, so a Poisson
    trait's reported draw is one value a record shorter (an ordinal's keeps its cut-points'
    increments last) — and refuses sizes that are not the density's; ``posterior_tree``
    refuses draws that were not expanded."""
    pointer = ctypes.POINTER(ctypes.c_double)
    for case, dropped in (("poisson", 1), ("ordinal", 0)):
        model = _model(case, herd)
        density = engine_for(model, "noncentred").joint_density()
        assert density.expanded_size == density.size - dropped * len(model.design.y)
        x = np.random.default_rng(3).normal(size=density.size) * 0.4
        expected = density.expand(x)
        out = np.zeros(density.expanded_size)

        def call(dim: int, expanded: int, point=x, density=density, out=out) -> int:
            return callbacks()[1].ctypes(
                dim, expanded, point.ctypes.data_as(pointer), out.ctypes.data_as(pointer),
                density.user_data.ctypes.data_as(ctypes.c_void_p),
            )  # fmt: skip

        assert call(density.size, density.expanded_size) == 0
        np.testing.assert_array_equal(out, expected)
        tail = density.size - density.start_z - density.packed_size
        np.testing.assert_array_equal(expected[len(expected) - tail :], x[len(x) - tail :])
        assert tail == (2 if case == "ordinal" else 0)
        assert call(density.size, density.size + 1) == -1
        assert call(density.size - 1, density.expanded_size) == -1
        if dropped:
            with pytest.raises(ValueError, match="has .* values, not"):
                density.posterior_tree(x.reshape(1, 1, -1), {})


def test_the_same_seed_gives_the_same_draws_on_one_core_or_two(herd):
    density = engine_for(_model("threshold", herd), "noncentred").joint_density()
    start = np.zeros(density.size)
    options = {"draws": 30, "tune": 40, "chains": 2, "seed": 5, "progressbar": False,
               "target_accept": 0.8}  # fmt: skip
    one = sample_joint(density, start, cores=1, **options)
    two = sample_joint(density, start, cores=2, **options)
    for name in ("sd_additive", "u", "beta"):
        np.testing.assert_array_equal(one["posterior"][name].values, two["posterior"][name].values)
    assert one["posterior"]["u"].shape == (2, 30, density.effects[0].size)


def test_a_family_fit_samples_the_joint_density(herd):
    """The exact model of a family under nutpie samples the hand-derived density (and says
    so); REML and the summary are as for the PyMC model."""
    model = _model("threshold", herd)
    fit = model.fit(parameterisation="noncentred", draws=100, tune=150, random_seed=2,
                    progressbar=False, warn=False)  # fmt: skip
    assert any("hand-derived joint density" in note for note in fit.notes)
    assert "z_additive" not in fit.idata.posterior  # the unit normals are not kept
    assert fit.timings["compile"] == 0.0 and fit.timings["conditional"] > 0.0
    summary = fit.summary()
    assert {"h2", "h2_observed", "sigma2:additive", "sigma2:herd"} <= set(summary.index)
    assert fit.idata.posterior["u"].shape[-1] == len(model.design.effect("additive").levels)


def test_a_gaussian_trait_keeps_the_pymc_model():
    """The joint density is for non-Gaussian families: a Gaussian trait's exact model is the
    PyMC one (joint_obstacle says why; building the density for it is an error)."""
    pedigree = simulate_herd_pedigree(n_animals=60, n_generations=2, n_herds=3, seed=1)
    data = simulate_records(pedigree, variances={"additive": 1.0, "residual": 1.0}, seed=1).data
    model = AnimalModel("y ~ x", data, pedigree=pedigree)
    assert "Gaussian" in joint_obstacle(model.design, model.parameters, model.priors,
                                        model.scales)  # fmt: skip
    assert engine_for(model, "noncentred").joint_density() is None
    with pytest.raises(ValueError, match="Gaussian"):
        JointDensity(model.priors, model.parameters, model.scales, model.design,
                     model.structures, model.coords())  # fmt: skip


def test_pymc_nuts_on_a_family_samples_the_pymc_model(herd):
    """Asked for PyMC's NUTS, the exact model of a family is the PyMC model (its unit normals
    in the posterior), not the hand-derived density."""
    fit = _model("threshold", herd).fit(
        parameterisation="noncentred", sampler="pymc", draws=40, tune=60, chains=1,
        random_seed=2, progressbar=False, warn=False,
    )  # fmt: skip
    assert not any("hand-derived joint density" in note for note in fit.notes)
    assert "z_additive" in fit.idata.posterior and "u" in fit.idata.posterior
