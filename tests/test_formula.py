"""Reading formulas: sides, terms, random terms, backticked and dotted column names."""

from __future__ import annotations

import pytest

from bayes_animal import FormulaError
from bayes_animal.spec.formula import column_references, split_formula, split_terms, unknown_names

COLUMNS = ["Obesity.BMI", "GENDER", "age", "s.x", "animal", "byear"]


def test_split_formula_separates_fixed_and_random_terms():
    parts = split_formula("`Obesity.BMI` ~ 1 + C(GENDER) + (1 | byear) + (1|`s.x`)")
    assert parts.response == "`Obesity.BMI`"
    assert parts.fixed == "1 + C(GENDER)"
    assert parts.random == ("(1 | byear)", "(1|`s.x`)")
    assert split_formula("y ~ (1 | animal)").fixed == "1"


def test_split_terms_respects_parentheses_backticks_and_quotes():
    assert split_terms("a + C(b, Treatment('x+y')) + `c+d`") == [
        "a",
        "C(b, Treatment('x+y'))",
        "`c+d`",
    ]


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ (x", "unbalanced"),
        ("y ~ `x", "unbalanced"),
        ("y + x", "exactly one '~'"),
        ("y ~ x | g", "outside a random term"),
        ("", "non-empty string"),
    ],
)
def test_malformed_formulas_are_errors(formula, message):
    with pytest.raises(FormulaError, match=message):
        split_formula(formula)


def test_column_references_read_backticked_and_dotted_names_and_skip_functions():
    text = "np.log(`Obesity.BMI`) + C(GENDER) + age:`s.x` + I(age ** 2)"
    assert column_references(text, COLUMNS) == ["Obesity.BMI", "GENDER", "age", "s.x"]
    assert column_references("Obesity.BMI + 1", COLUMNS) == ["Obesity.BMI"]


def test_unknown_dotted_names_suggest_backticks():
    with pytest.raises(FormulaError, match=r"'Obesity\.bmi'.*quoted in backticks.*`Obesity\.BMI`"):
        unknown_names("Obesity.bmi ~ 1", COLUMNS, formula="Obesity.bmi ~ 1")
    with pytest.raises(FormulaError, match=r"'weight'.*Available columns") as info:
        unknown_names("y ~ weight", [*COLUMNS, "y"], formula="y ~ weight")
    assert "backticks" not in str(info.value)
    unknown_names("`Obesity.BMI` ~ np.log(age) + C(GENDER, Treatment('1'))", COLUMNS, formula="")


def test_a_column_name_with_spaces_suggests_backticks():
    columns = ["animal", "litter size", "y"]
    with pytest.raises(
        FormulaError, match=r"with spaces must be quoted in backticks: `litter size`"
    ):
        unknown_names("y ~ 1 + litter size", columns, formula="y ~ 1 + litter size")
    unknown_names("y ~ 1 + `litter size`", columns, formula="")


def test_a_keyword_argument_is_not_read_as_a_column():
    """C(sex, levels=['M', 'F']) refers to sex only (levels= was reported as a missing
    column); a comparison == still reads both sides."""
    assert column_references("C(sex, levels=['M', 'F'])", ["sex", "levels"]) == ["sex"]
    assert column_references("I(age == 2)", ["age"]) == ["age"]
