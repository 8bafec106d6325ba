"""Henderson's mixed-model equations, sparse, for any number of random effects: the dense oracle
(log-likelihood, score, average information), Mrode's worked examples (4.1, 5.1, 8.1, 17.7)
and the spectral engine as a second oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal import BayesAnimalError, build_design, solve_mme
from bayes_animal.estimation.spectral import predict
from bayes_animal.structures.additive import dense_relationship
from bayes_animal.structures.pedigree import read_pedigree


def test_mrode_example_4_1_against_blupf90_solutions(mrode):
    data = pd.read_csv(mrode / "ex04_1_wwg.csv")
    solution = solve_mme(
        "wwg ~ 0 + C(sex)",
        data,
        pedigree=mrode / "ex04_1_pedigree.csv",
        variances={"additive": 20.0, "residual": 40.0},
    )
    np.testing.assert_allclose(solution.beta.to_numpy(), [3.40443010, 4.35850233], atol=5e-9)
    ebv = [
        0.09844458,
        -0.01877010,
        -0.04108420,
        -0.00866312,
        -0.18573210,
        0.17687209,
        -0.24945855,
        0.18261469,
    ]
    np.testing.assert_allclose(solution.predictions["additive"]["blup"].to_numpy(), ebv, atol=5e-9)
    diagonal = [0.471, 0.492, 0.456, 0.428, 0.428, 0.442, 0.442, 0.422]
    np.testing.assert_allclose(
        solution.predictions["additive"]["pev"].to_numpy() / 40.0, diagonal, atol=5e-4
    )
    np.testing.assert_allclose(
        solution.predictions["additive"]["accuracy"] ** 2,
        solution.predictions["additive"]["reliability"],
    )
    np.testing.assert_allclose(
        solution.predictions["additive"]["sep"] ** 2, solution.predictions["additive"]["pev"]
    )
    assert list(solution.predictions["additive"].index) == [str(i) for i in range(1, 9)]
    assert list(solution.predictions["additive"]["n_records"]) == [0, 0, 0, 1, 1, 1, 1, 1]


def test_mrode_example_17_7_mme_at_start_values(mrode):
    data = pd.read_csv(mrode / "ex17_7_reml.csv")
    solution = solve_mme(
        "y ~ 0 + C(sex)",
        data,
        pedigree=mrode / "ex04_1_pedigree.csv",
        variances={"additive": 0.2, "residual": 0.4},
    )
    np.testing.assert_allclose(solution.beta.to_numpy(), [0.602, 2.144], atol=5e-4)
    printed = [0.117, -0.025, -0.222, 0.254, -0.135, 0.032, 0.219, -0.305]
    np.testing.assert_allclose(
        solution.predictions["additive"]["blup"].to_numpy(), printed, atol=5e-4
    )


def test_sparse_mme_equals_spectral_prediction_on_gryphon():
    from conftest import shared_folder

    folder = shared_folder("gryphon")
    ped = read_pedigree(folder / "gryphonped.csv")
    data = pd.read_csv(folder / "gryphon.csv").dropna(subset=["bwt"])
    sparse_solution = solve_mme(
        "bwt ~ 1 + C(sex)", data, pedigree=ped, variances={"additive": 3.0, "residual": 3.0}
    )
    A = dense_relationship(ped)
    design = build_design("bwt ~ 1 + C(sex)", data, relationship=A)
    dense = predict(design, A, variance=3.0, residual=3.0)
    np.testing.assert_allclose(sparse_solution.beta.to_numpy(), dense.beta.to_numpy(), rtol=1e-9)
    merged = sparse_solution.predictions["additive"].join(dense.blup.add_suffix("_spectral"))
    np.testing.assert_allclose(merged["blup"], merged["blup_spectral"], atol=1e-9)
    np.testing.assert_allclose(merged["pev"], merged["pev_spectral"], rtol=1e-8)
    np.testing.assert_allclose(merged["reliability"], merged["reliability_spectral"], atol=1e-9)


def test_variances_must_be_positive(mrode):
    data = pd.read_csv(mrode / "ex04_1_wwg.csv")
    pedigree = mrode / "ex04_1_pedigree.csv"
    with pytest.raises(BayesAnimalError, match="must be positive"):
        solve_mme("wwg ~ 1", data, pedigree=pedigree, variances={"additive": 0, "residual": 1})
    with pytest.raises(BayesAnimalError, match=r"missing: \['residual'\]"):
        solve_mme("wwg ~ 1", data, pedigree=pedigree, variances={"additive": 1})
    with pytest.raises(BayesAnimalError, match=r"unknown: \['dam'\]"):
        solve_mme(
            "wwg ~ 1", data, pedigree=pedigree, variances={"additive": 1, "residual": 1, "dam": 1}
        )


# -- the dense oracle ------------------------------------------------------------------------


def _small_pedigree_data(seed: int = 0):
    """A small pedigree with inbreeding and unknown dams, and records: repeated measures,
    a dam column (unknown for some), a grouping factor and a covariate."""
    from bayes_animal.simulate import simulate_pedigree

    table = simulate_pedigree(
        n_founders=10, n_generations=3, n_per_generation=20, n_sires=3, unknown_dam=0.15, seed=seed
    )
    rng = np.random.default_rng(seed)
    young = table.iloc[10:].reset_index(drop=True)
    counts = rng.integers(1, 4, size=len(young))
    records = young.loc[np.repeat(np.arange(len(young)), counts)].reset_index(drop=True)
    n = len(records)
    data = pd.DataFrame(
        {
            "animal": records["id"],
            "dam": records["dam"],
            "g": rng.choice(["a", "b", "c", "d", "e"], size=n),
            "x": rng.standard_normal(n),
            "y": rng.standard_normal(n) * 2 + 5,
        }
    )
    return table, data


MODELS = [
    ("y ~ 1 + x + (1 | g)", {}),
    ("y ~ 1 + x + ide(animal)", {}),
    ("y ~ 1 + x + (1 | g) + ide(animal)", {"maternal": "dam"}),
    ("y ~ 1 + x + (1 | dam)", {"maternal": "dam", "maternal_covariance": True}),
]


def _dense_pieces(mme):
    """V_i for every parameter, from the dense structures and incidences."""
    params = mme.parameters
    pieces = {}
    for block in params.blocks:
        K = mme.structures[block.terms[0]].dense().matrix
        Z = {t: mme.design.effect(t).incidence().toarray() for t in block.terms}
        for name in params.names:
            E = params.derivative(name, block)
            if E is None:
                continue
            V = np.zeros((mme.n, mme.n))
            for i, a in enumerate(block.terms):
                for j, b in enumerate(block.terms):
                    if E[i, j]:
                        V += E[i, j] * Z[a] @ K @ Z[b].T
            pieces[name] = V
    pieces["residual"] = np.eye(mme.n)
    return [pieces[n] for n in params.names]


@pytest.mark.parametrize(("formula", "options"), MODELS)
def test_sparse_loglik_score_and_information_equal_dense_formulas(formula, options):
    """At random parameter values, for every model shape: the sparse engine's restricted
    log-likelihood equals −½[(n−p)log 2π + log|V| + log|XᵀV⁻¹X| − log|XᵀX| + yᵀPy] to 1e-8,
    its score −½[tr(PVᵢ) − yᵀPVᵢPy] and its average information ½yᵀPVᵢPVⱼPy likewise."""
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.spec.parameters import Parameters
    from bayes_animal.structures.inputs import resolve_relationship

    table, data = _small_pedigree_data()
    source = resolve_relationship(pedigree=table, warn=False)
    design = build_design(formula, data, relationship=source, warn=False, **options)
    params = Parameters.from_spec(design.spec)
    mme = MixedModelEquations(
        design, {e.name: source.structure for e in design.effects if e.genetic}, params
    )
    pieces = _dense_pieces(mme)
    X, y = design.X, design.y
    n, p = X.shape
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = rng.uniform(0.3, 2.0, size=params.size)
        for name in params.names:
            if params.is_covariance(name):  # a correlation of ±0.5 at most
                a, b = name.split(":")
                theta[params.index(name)] = (
                    0.5
                    * rng.uniform(-1, 1)
                    * np.sqrt(theta[params.index(a)] * theta[params.index(b)])
                )
        V = sum(t * Vi for t, Vi in zip(theta, pieces, strict=True))
        Vi = np.linalg.inv(V)
        XVX = X.T @ Vi @ X
        P = Vi - Vi @ X @ np.linalg.solve(XVX, X.T @ Vi)
        expected = -0.5 * (
            (n - p) * np.log(2 * np.pi)
            + np.linalg.slogdet(V)[1]
            + np.linalg.slogdet(XVX)[1]
            - np.linalg.slogdet(X.T @ X)[1]
            + y @ P @ y
        )
        evaluation = mme.evaluate(theta)
        assert evaluation.loglik == pytest.approx(expected, rel=1e-8)
        # R⁻¹ê = Py, with and without the score (the latent model's gradient in its records)
        np.testing.assert_allclose(evaluation.scaled_residuals, P @ y, rtol=1e-8, atol=1e-10)
        plain = mme.evaluate(theta, score=False, information=False)
        np.testing.assert_allclose(plain.scaled_residuals, P @ y, rtol=1e-8, atol=1e-10)
        score = [-0.5 * (np.trace(P @ Vk) - y @ P @ Vk @ P @ y) for Vk in pieces]
        np.testing.assert_allclose(evaluation.score, score, rtol=1e-7, atol=1e-8)
        # without the average information a model of scalar variances takes the compiled
        # steps (scalar_kernels): the same value, score, solutions and traces
        light = mme.evaluate(theta, information=False)
        assert light.information is None
        assert light.loglik == pytest.approx(expected, rel=1e-8)
        np.testing.assert_allclose(light.score, score, rtol=1e-7, atol=1e-8)
        np.testing.assert_allclose(light.solutions, evaluation.solutions, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(light.scaled_residuals, P @ y, rtol=1e-8, atol=1e-10)
        for a, b in zip(light.traces, evaluation.traces, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10)
        for a, b in zip(light.quadratics, evaluation.quadratics, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10)
        np.testing.assert_allclose(
            light.selected.diagonal(), evaluation.selected.diagonal(), rtol=1e-10
        )
        ai = [[0.5 * y @ P @ A @ P @ B @ P @ y for B in pieces] for A in pieces]
        np.testing.assert_allclose(evaluation.information, ai, rtol=1e-7, atol=1e-9)
        # an EM step never lowers the restricted likelihood
        assert mme.evaluate(mme.em_update(evaluation), score=False).loglik >= evaluation.loglik
    assert mme._scalar == ("maternal_covariance" not in options)  # a pair: the general path


@pytest.mark.parametrize("dense_block", [0, 12, None])
def test_scalar_variances_evaluate_as_the_general_path_at_any_split(dense_block):
    """The compiled evaluation of one trait with scalar variances (an additive effect, a
    permanent environment and a group; records given in place of y, as the latent model
    gives them) equals the general path's in every output, with no dense block, a small one
    and the flop model's."""
    from bayes_animal.linalg.ldl import analyse
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.spec.parameters import Parameters
    from bayes_animal.structures.inputs import resolve_relationship

    table, data = _small_pedigree_data(seed=2)
    source = resolve_relationship(pedigree=table, warn=False)
    design = build_design(
        "y ~ 1 + x + (1 | g) + ide(animal)", data, relationship=source, warn=False
    )
    params = Parameters.from_spec(design.spec)
    mme = MixedModelEquations(
        design, {e.name: source.structure for e in design.effects if e.genetic}, params
    )
    mme._analysis = analyse(mme.pattern, ordering="amd", dense_block=dense_block)
    assert mme._scalar
    if dense_block is not None:
        assert mme.analysis.split == mme.size - dense_block
    rng = np.random.default_rng(4)
    theta = rng.uniform(0.3, 2.0, size=params.size)
    latent = design.y + rng.standard_normal(len(design.y))
    for y in (None, latent):
        general = mme._evaluate(theta, score=True, information=False, y=y)
        fast = mme.evaluate(theta, information=False, y=y)
        assert fast.loglik == pytest.approx(general.loglik, rel=1e-12)
        np.testing.assert_allclose(fast.score, general.score, rtol=1e-10)
        for name in ("solutions", "residuals", "scaled_residuals"):
            np.testing.assert_allclose(getattr(fast, name), getattr(general, name), rtol=1e-12)
        assert fast.factor.logdet == pytest.approx(general.factor.logdet, rel=1e-13)
        np.testing.assert_allclose(
            fast.selected.on_pattern(), general.selected.on_pattern(), rtol=1e-12, atol=1e-15
        )
        without = mme.evaluate(theta, score=False, information=False, y=y)
        assert without.score is None and without.loglik == pytest.approx(general.loglik)


def test_mrode_example_5_1_repeatability_model(mrode):
    """Fat yield, animal + permanent environment, σ²a 20, σ²pe 12, σ²e 28: the EBVs and the PE
    solutions to the printed 3 decimals (the fixed effects depend on the constraint)."""
    data = pd.read_csv(mrode / "ex05_1_fat.csv")
    solution = solve_mme(
        "fat_yield ~ 0 + C(hys) + ide(cow)",  # HYS 1, 2 are first parity, 3, 4 second
        data,
        pedigree=mrode / "ex05_1_pedigree.csv",
        animal="cow",
        variances={"additive": 20.0, "pe": 12.0, "residual": 28.0},
    )
    ebv = [10.148, -3.084, -7.063, 13.581, -18.207, -18.387, 9.328, 24.194]
    np.testing.assert_allclose(solution.predictions["additive"]["blup"], ebv, atol=5e-4)
    pe = solution.predictions["pe"]["blup"].loc[["4", "5", "6", "7", "8"]]
    # printed to 3 decimals; −17.2285 is printed −17.229 (a rounding of 5.03e-4)
    np.testing.assert_allclose(pe, [8.417, -7.146, -17.229, -1.390, 17.347], atol=6e-4)
    # parity is nested in HYS, so the book constrains HYS1 = HYS3 = 0; its solutions give
    # the HYS means parity + HYS: 175.472, 175.472 + 44.065, 241.893, 241.893 + 0.013
    means = [175.472, 219.537, 241.893, 241.906]
    np.testing.assert_allclose(solution.beta.to_numpy(), means, atol=1e-3)


def test_mrode_example_8_1_direct_maternal_with_covariance_and_maternal_pe(mrode):
    """Birth weight with direct and maternal genetic effects (G0 = [[150, −40], [−40, 90]]),
    a maternal permanent environment (σ²pe 40, dams 2, 5, 6, 7) and σ²e 350."""
    data = pd.read_csv(mrode / "ex08_1_birthweight.csv")
    solution = solve_mme(
        "birth_weight ~ 0 + C(pen) + C(herd) + (1 | dam)",
        data,
        pedigree=mrode / "ex08_1_pedigree.csv",
        animal="calf",
        maternal="dam",
        variances={
            "additive": 150.0,
            "maternal": 90.0,
            "additive:maternal": -40.0,
            "dam": 40.0,
            "residual": 350.0,
        },
    )
    direct = [0.564, -1.244, 1.165, -0.484, 0.630, -0.859, -1.156, 1.917, -0.553, -1.055,
              0.385, 0.863, -2.980, 1.751]  # fmt: skip
    maternal = [0.262, -1.583, 0.736, 0.586, -0.507, 0.841, 1.299, -0.158, 0.660, -0.153,
                0.916, 0.442, 0.093, 0.362]  # fmt: skip
    np.testing.assert_allclose(solution.predictions["additive"]["blup"], direct, atol=5e-4)
    np.testing.assert_allclose(solution.predictions["maternal"]["blup"], maternal, atol=5e-4)
    pe = solution.predictions["dam"]["blup"].loc[["2", "5", "6", "7"]]
    np.testing.assert_allclose(pe, [-1.701, 0.415, 0.825, 0.461], atol=5e-4)
    beta = solution.beta
    # herd 1 set to zero in the book: herd 2 and 3 are contrasts with herd 1
    assert beta["C(herd)[T.2]"] == pytest.approx(3.386, abs=5e-4)
    assert beta["C(herd)[T.3]"] == pytest.approx(1.434, abs=5e-4)
    assert beta["C(pen)[1]"] == pytest.approx(34.540, abs=5e-4)
    assert beta["C(pen)[2]"] == pytest.approx(27.691, abs=5e-4)


# -- equations singular at valid variances ----------------------------------------------------


def _grouped_records(seed: int = 0, n: int = 200) -> pd.DataFrame:
    """Records in five groups with a covariate: ``y ~ 1 + x + (1 | g)``."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 5, n)
    data = pd.DataFrame({"g": np.array(list("abcde"))[g], "x": rng.standard_normal(n)})
    data["y"] = rng.standard_normal(n) + g
    return data


def _grouped_equations(data: pd.DataFrame, ordering: str):
    from bayes_animal.linalg.mme import MixedModelEquations
    from bayes_animal.spec.parameters import Parameters

    design = build_design("y ~ 1 + x + (1 | g)", data, warn=False)
    return MixedModelEquations(design, {}, Parameters.from_spec(design.spec), ordering=ordering)


def test_every_unknown_of_the_equations_has_a_name():
    mme = _grouped_equations(_grouped_records(), "amd")
    levels = list(mme.design.effect("g").levels)
    names = [mme.unknown_name(i) for i in range(mme.size)]
    assert names[:2] == ["the fixed-effect column 'Intercept'", "the fixed-effect column 'x'"]
    assert names[2:] == [f"the level {lv!r} of the random effect 'g' (column 'g')" for lv in levels]
    with pytest.raises(IndexError):
        mme.unknown_name(mme.size)


@pytest.mark.parametrize("ordering", ["natural", "amd"])
def test_equations_singular_at_valid_variances_name_the_unknown(ordering):
    """σ²_g = 1e14 σ²: valid, but G⁻¹ is below the round-off of ZᵀZ, so the intercept and the
    sum of the group levels cannot be told apart; the pivot (positive: before the relative
    tolerance log|C| came out finite and wrong) is refused and the user's error names the
    level whose pivot vanished, the variances and the fixes. 1e10 still factors."""
    from bayes_animal.errors import SingularEquationsError
    from bayes_animal.linalg.ldl import NotPositiveDefinite

    mme = _grouped_equations(_grouped_records(), ordering)
    assert mme.parameters.names == ("g", "residual")
    assert np.isfinite(mme.evaluate(np.array([1e10, 1.0])).loglik)
    theta = np.array([1e14, 1.0])
    with pytest.raises(NotPositiveDefinite) as caught:
        mme.evaluate(theta)
    index = caught.value.index
    with pytest.raises(NotPositiveDefinite) as compiled:  # the compiled steps (no AI) too
        mme.evaluate(theta, information=False)
    assert compiled.value.index == index
    assert index >= mme.p  # a level of g: the fixed effects come first (natural) or are dense
    error = mme.singular_error(caught.value, theta)
    assert isinstance(error, SingularEquationsError) and isinstance(error, ValueError)
    message = str(error)
    assert "g=1e+14, residual=1" in message
    assert mme.unknown_name(index) in message
    assert "relationship matrix" in message and "confounded" in message


def test_solve_mme_and_the_conditional_draws_word_a_singular_c():
    from bayes_animal.bayes.conditional import draw_from_mixed_model
    from bayes_animal.errors import SingularEquationsError

    data = _grouped_records()
    with pytest.raises(SingularEquationsError, match=r"level '\w' of the random effect 'g'"):
        solve_mme("y ~ 1 + x + (1 | g)", data, variances={"g": 1e14, "residual": 1.0})
    mme = _grouped_equations(data, "amd")
    thetas = np.array([[1.0, 1.0], [1e14, 1.0]])
    with pytest.raises(SingularEquationsError, match="g=1e\\+14"):
        draw_from_mixed_model(mme, thetas, rng=np.random.default_rng(0))


def test_a_fixed_column_in_the_singular_pivot_is_named_with_its_fixes():
    from bayes_animal.errors import SingularEquationsError
    from bayes_animal.linalg.ldl import NotPositiveDefinite

    mme = _grouped_equations(_grouped_records(), "amd")
    error = mme.singular_error(NotPositiveDefinite("", index=1, ratio=-0.5), np.ones(2))
    assert isinstance(error, SingularEquationsError)
    assert "the fixed-effect column 'x' is not positive" in str(error)
    assert "collinear" in str(error) and "confounded" in str(error)
