"""Formula → (y, X, Z): the formulaic path, the plain fast path, and every validation error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayes_animal import (
    DataError,
    DroppedRecordsWarning,
    FormulaError,
    RelationshipError,
    RelationshipMatrix,
    build_design,
)
from bayes_animal.design import _plain_terms
from bayes_animal.spec.formula import split_formula
from bayes_animal.tables import as_records

IDS = np.array(["a", "b", "c", "d"], dtype=object)
RELMAT = RelationshipMatrix(ids=IDS, matrix=np.eye(4))


def _data(**overrides):
    frame = pd.DataFrame(
        {
            "animal": ["a", "b", "c", "a", "b", "d"],
            "x": [0.1, -0.3, 0.7, 1.2, 0.0, -1.0],
            "w": [3, 1, 4, 1, 5, 9],
            "sex": ["F", "M", "F", "M", "M", "F"],
            "y": [1.0, 2.0, 1.5, 2.5, 3.0, 0.5],
        }
    )
    for key, value in overrides.items():
        frame[key] = value
    return frame


@pytest.mark.parametrize(
    "formula",
    ["y ~ 1 + x", "y ~ x", "y ~ x + w", "y ~ w + 1 + x", "y ~ 1", "y~x+w"],
)
def test_plain_fast_path_equals_formulaic(formula):
    import formulaic

    data = _data()
    assert _plain_terms(split_formula(formula), as_records(data)) is not None
    design = build_design(formula, data, relationship=RELMAT)
    reference = formulaic.model_matrix(formulaic.Formula(formula).rhs, data)
    assert design.fixed_names == tuple(reference.columns)
    np.testing.assert_array_equal(design.X, np.asarray(reference, dtype=float))


@pytest.mark.parametrize("formula", ["y ~ C(sex)", "y ~ x:w", "np.log(y) ~ x", "y ~ 0 + x"])
def test_non_plain_formulas_go_through_formulaic(formula):
    assert _plain_terms(split_formula(formula), as_records(_data())) is None


def test_factor_contrast_names_and_values():
    design = build_design("y ~ 1 + C(sex) + x", _data(), relationship=RELMAT)
    assert design.fixed_names == ("Intercept", "C(sex)[T.M]", "x")
    np.testing.assert_array_equal(design.X[:, 1], [0, 1, 0, 1, 1, 0])


def test_transformed_response():
    design = build_design("np.log(y) ~ x", _data(), relationship=RELMAT)
    np.testing.assert_allclose(design.y, np.log(_data()["y"]))


def test_repeated_records_map_to_animal_rows():
    design = build_design("y ~ x", _data(), relationship=RELMAT)
    np.testing.assert_array_equal(design.effects[0].index, [0, 1, 2, 0, 1, 3])
    Z = design.effects[0].incidence().toarray()
    assert Z.shape == (6, 4)
    np.testing.assert_array_equal(Z.sum(axis=0), [2, 2, 1, 1])


def test_lme4_random_term_is_accepted():
    plain = build_design("y ~ x", _data(), relationship=RELMAT)
    lme4 = build_design("y ~ x + (1 | animal)", _data(), relationship=RELMAT)
    np.testing.assert_array_equal(plain.X, lme4.X)
    assert lme4.formula == "y ~ x"


def test_random_slopes_are_refused_naming_the_term():
    with pytest.raises(FormulaError, match=r"'\(x \| animal\)'.*only random intercepts"):
        build_design("y ~ x + (x | animal)", _data(), relationship=RELMAT)


def test_missing_response_is_dropped_with_a_counted_notice():
    data = _data(y=[1.0, np.nan, 1.5, np.nan, 3.0, 0.5])
    with pytest.warns(DroppedRecordsWarning, match=r"2 of 6 records.*data row\(s\) 2, 4"):
        design = build_design("y ~ x", data, relationship=RELMAT)
    assert design.n_records == 4
    np.testing.assert_array_equal(design.dropped_labels, [1, 3])
    assert "2 of 6 records" in design.notices[0]
    np.testing.assert_array_equal(design.record_labels, [0, 2, 4, 5])


def test_missing_response_through_formulaic_path_too():
    data = _data(y=[1.0, np.nan, 1.5, 2.5, 3.0, 0.5])
    with pytest.warns(DroppedRecordsWarning):
        design = build_design("y ~ C(sex)", data, relationship=RELMAT)
    assert design.n_records == 5


def test_missing_covariate_is_an_error_naming_rows_and_column():
    data = _data(x=[0.1, np.nan, 0.7, 1.2, np.nan, -1.0])
    with pytest.raises(DataError, match=r"column\(s\) 'x' in data row\(s\) 2, 5"):
        build_design("y ~ x", data, relationship=RELMAT)


def test_missing_factor_level_is_an_error():
    data = _data(sex=["F", None, "F", "M", "M", "F"])
    with pytest.raises(DataError, match=r"data row\(s\) 2"):
        build_design("y ~ C(sex)", data, relationship=RELMAT)


def test_infinite_values_are_errors():
    with pytest.raises(DataError, match=r"response 'y' is infinite in data row\(s\) 3"):
        build_design("y ~ x", _data(y=[1, 2, np.inf, 1, 1, 1.0]), relationship=RELMAT)
    with pytest.raises(DataError, match="missing or infinite.*'x'"):
        build_design("y ~ x", _data(x=[1, 2, np.inf, 1, 1, 1.0]), relationship=RELMAT)


def test_unknown_column_is_named_with_the_available_ones():
    with pytest.raises(FormulaError, match=r"column\(s\) 'weight'.*Available columns: 'animal'"):
        build_design("y ~ weight", _data(), relationship=RELMAT)
    with pytest.raises(FormulaError, match=r"'height'"):
        build_design("height ~ 1", _data(), relationship=RELMAT)


def test_unparsable_formula_and_missing_response():
    with pytest.raises(FormulaError, match="unbalanced parentheses"):
        build_design("y ~ (x", _data(), relationship=RELMAT)
    with pytest.raises(FormulaError, match="Could not parse"):
        build_design("y ~ x +* w", _data(), relationship=RELMAT)
    with pytest.raises(FormulaError, match="no response"):
        build_design("~ x", _data(), relationship=RELMAT)


def test_missing_animal_column():
    with pytest.raises(DataError, match="animal column 'id' is not in the data"):
        build_design("y ~ x", _data(), animal="id", relationship=RELMAT)


def test_empty_animal_id_names_rows():
    data = _data(animal=["a", None, "c", "a", "b", "d"])
    with pytest.raises(
        DataError, match=r"no level in data row\(s\) 2 \(column 'animal' is empty\)"
    ):
        build_design("y ~ x", data, relationship=RELMAT)


def test_animals_not_in_relationship_matrix_are_listed():
    data = _data(animal=["a", "zz", "c", "yy", "b", "zz"])
    with pytest.raises(RelationshipError, match=r"2 animal id\(s\).*'zz', 'yy'"):
        build_design("y ~ x", data, relationship=RELMAT)


def test_collinear_columns_are_named():
    data = _data()
    data["x2"] = 2 * data["x"]
    with pytest.raises(FormulaError, match=r"rank deficient: column\(s\) 'x2'"):
        build_design("y ~ x + x2", data, relationship=RELMAT)


def test_n_not_greater_than_p():
    data = _data().iloc[:3]
    data = data.assign(w=[1.0, 5.0, 2.0])
    with pytest.raises(FormulaError, match="3 records for 3 fixed-effect columns"):
        build_design("y ~ x + w", data, relationship=RELMAT)


def test_data_must_be_a_frame():
    with pytest.raises(DataError, match="DataFrame"):
        build_design("y ~ x", {"y": [1]}, relationship=RELMAT)


def test_integer_animal_ids_match_string_matrix_ids():
    rel = RelationshipMatrix(ids=np.array(["1", "2", "3"], dtype=object), matrix=np.eye(3))
    data = pd.DataFrame({"animal": [3, 1, 2, 1], "y": [1.0, 2.0, 3.0, 4.0]})
    design = build_design("y ~ 1", data, relationship=rel)
    np.testing.assert_array_equal(design.effects[0].index, [2, 0, 1, 0])


@pytest.mark.parametrize(
    "formula",
    [
        "`Obesity.BMI` ~ 1 + GENDER",
        "Obesity.BMI ~ 1 + GENDER",
        "`Obesity.BMI` ~ 1 + `GENDER`",
        "`Obesity.BMI` ~ 1 + C(GENDER)",
        "`Obesity.BMI` ~ 1 + `body.x` + (1 | animal)",
    ],
)
def test_dotted_column_names_work_quoted_or_not_on_both_paths(formula):
    """Real data exported from R has dotted names; formulaic reads `a.b` but mis-reports its
    columns, and the plain path must read backticks too."""
    data = _data().rename(columns={"y": "Obesity.BMI"})
    data["GENDER"] = [0, 1, 0, 1, 1, 0]
    data["body.x"] = data["x"] * 2
    design = build_design(formula, data, relationship=RELMAT)
    assert design.response == "Obesity.BMI"
    np.testing.assert_array_equal(design.y, data["Obesity.BMI"].to_numpy())
    assert design.n_fixed == 2


def test_misspelt_dotted_name_says_to_quote_it():
    data = _data().rename(columns={"y": "Obesity.BMI"})
    with pytest.raises(FormulaError, match=r"'Obesity\.bmi'.*backticks, e\.g\. `Obesity\.BMI`"):
        build_design("Obesity.bmi ~ 1", data, relationship=RELMAT)


def test_repeated_records_without_permanent_environment_give_a_notice():
    from bayes_animal.design import RepeatedRecordsWarning

    with pytest.warns(RepeatedRecordsWarning, match=r"2 of 4 animals have more than one record"):
        design = build_design("y ~ x", _data(), relationship=RELMAT)
    assert any("permanent-environment" in n for n in design.notices)
    single = _data().iloc[[0, 1, 2, 5]]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedRecordsWarning)
        assert not build_design("y ~ x", single, relationship=RELMAT).notices


# -- random effects -------------------------------------------------------------------------

PEDIGREE = pd.DataFrame(
    {"id": ["s1", "d1", "d2", "a", "b", "c", "d"], "sire": ["0", "0", "0", "s1", "s1", "s1", "s1"],
     "dam": ["0", "0", "0", "d1", "d1", "d2", "0"]}
)  # fmt: skip


def _source():
    from bayes_animal.structures.inputs import resolve_relationship

    return resolve_relationship(pedigree=PEDIGREE, warn=False)


def test_effects_have_their_levels_and_indices():
    data = _data(g=["u", "v", "u", "w", "v", "u"], dam=["d1", "d1", "d2", "d1", "d1", "0"])
    design = build_design(
        "y ~ x + (1 | g) + ide(animal)", data, relationship=_source(), maternal="dam", warn=False
    )
    assert [e.name for e in design.effects] == ["additive", "maternal", "g", "pe"]
    additive = design.effect("additive")
    assert list(additive.levels) == ["s1", "d1", "d2", "a", "b", "c", "d"]  # every animal
    np.testing.assert_array_equal(additive.index, [3, 4, 5, 3, 4, 6])
    maternal = design.effect("maternal")
    np.testing.assert_array_equal(maternal.index, [1, 1, 2, 1, 1, -1])  # dam '0' unknown
    assert maternal.incidence().toarray()[5].sum() == 0
    g = design.effect("g")
    assert list(g.levels) == ["u", "v", "w"] and list(g.counts()) == [3, 2, 1]
    assert list(design.effect("pe").levels) == ["a", "b", "c", "d"]
    assert any("1 of 6 records have an unknown dam" in n for n in design.notices)
    with pytest.raises(KeyError, match="No random effect 'cage'"):
        design.effect("cage")


def test_unknown_dams_are_counted_in_a_warning():
    from bayes_animal.design import UnknownDamWarning

    data = _data(dam=["d1", None, "d2", ".", "d1", "0"])
    with pytest.warns(UnknownDamWarning, match="3 of 6 records have an unknown dam"):
        build_design("y ~ x + ide(animal)", data, relationship=_source(), maternal="dam")


def test_dams_missing_from_the_pedigree_are_named():
    from bayes_animal.structures.pedigree import PedigreeError

    data = _data(dam=["d1", "zz", "d2", "d1", "yy", "d1"])
    with pytest.raises(PedigreeError, match=r"'zz', 'yy'"):
        build_design("y ~ x", data, relationship=_source(), maternal="dam", warn=False)


@pytest.mark.parametrize(
    ("formula", "column", "message"),
    [
        ("y ~ x + (1 | cage)", None, r"column 'cage' of the random effect '\(1 \| cage\)'"),
        ("y ~ x + (1 | g)", ["u"] * 6, r"'\(1 \| g\)' has a single level.*'u'"),
        ("y ~ x + (1 | g)", list("pqrstu"), r"exactly one record.*cannot be separated"),
        ("y ~ x + (1 | g)", ["u", None, "v", "u", "v", "u"], r"no level in data row\(s\) 2"),
    ],
)
def test_random_effects_that_cannot_be_estimated_are_errors(formula, column, message):
    data = _data() if column is None else _data(g=column)
    with pytest.raises(DataError, match=message):
        build_design(formula, data, relationship=_source(), warn=False)


def test_repeated_records_notice_is_silent_with_a_permanent_environment():
    import warnings

    from bayes_animal.design import RepeatedRecordsWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedRecordsWarning)
        design = build_design("y ~ x + ide(animal)", _data(), relationship=_source())
    assert not any("permanent" in n for n in design.notices)
    with pytest.warns(RepeatedRecordsWarning, match=r"Add one with ide\(animal\)"):
        build_design("y ~ x", _data(), relationship=_source())


# -- records read without pandas ------------------------------------------------------------


def _read_both_ways(tmp_path, frame):
    """The same records as a DataFrame read by pandas and as the fast reader's columns."""
    from bayes_animal.readers import read_records_csv

    path = tmp_path / "records.csv"
    frame.to_csv(path, index=False)
    records = read_records_csv(path)
    assert records is not None
    return pd.read_csv(path), records


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x + (1 | g) + ide(animal)",  # plain fixed part
        "y ~ sex + x:w + (1 | g)",  # formulaic: a factor and an interaction
    ],
)
def test_records_read_without_pandas_give_the_same_design(tmp_path, formula):
    """build_design reads a DataFrame and the fast reader's columns through one interface:
    every array, level, label and notice agrees, with a missing response, an unknown dam and
    a grouping factor in the data."""
    data = _data(
        g=["u", "v", "u", "w", "v", "u"],
        dam=["d1", "d1", "d2", "d1", "d1", "0"],
        y=[1.0, np.nan, 1.5, 2.5, 3.0, 0.5],
    )
    frame, records = _read_both_ways(tmp_path, data)
    options = {"relationship": _source(), "maternal": "dam", "warn": False}
    if "animal" not in formula:
        options = {"warn": False}
    expected = build_design(formula, frame, **options)
    got = build_design(formula, records, **options)
    np.testing.assert_array_equal(got.y, expected.y)
    np.testing.assert_array_equal(got.X, expected.X)
    assert got.fixed_names == expected.fixed_names
    assert list(got.record_labels) == list(expected.record_labels) == [0, 2, 3, 4, 5]
    assert list(got.dropped_labels) == list(expected.dropped_labels) == [1]
    assert got.notices == expected.notices
    assert [e.name for e in got.effects] == [e.name for e in expected.effects]
    for mine, theirs in zip(got.effects, expected.effects, strict=True):
        np.testing.assert_array_equal(mine.index, theirs.index)
        assert list(mine.levels) == list(theirs.levels)


def test_records_read_without_pandas_report_the_same_errors(tmp_path):
    data = _data(x=[0.1, np.nan, 0.7, 1.2, 0.0, -1.0], g=["u", "v", None, "w", "v", "u"])
    frame, records = _read_both_ways(tmp_path, data)
    for source in (frame, records):
        with pytest.raises(DataError, match=r"column\(s\) 'x' in data row\(s\) 2"):
            build_design("y ~ x", source, relationship=RELMAT, warn=False)
        with pytest.raises(DataError, match=r"'\(1 \| g\)' has no level in data row\(s\) 3"):
            build_design("y ~ w + (1 | g)", source, warn=False)


def test_a_dataframe_with_an_index_of_its_own_is_named_by_its_labels():
    """Rows are 1-based data rows where the index is the default 0, 1, …; a DataFrame indexed
    by its own labels is named by them, marked as index labels."""
    data = _data(x=[1.0, np.nan, 3.0, 4.0, 5.0, 6.0]).set_index(pd.Index(list("abcdef")))
    with pytest.raises(DataError, match=r"data row\(s\) index 'b'\. Fill"):
        build_design("y ~ x", data, relationship=RELMAT)
