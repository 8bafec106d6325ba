"""The model specification: random terms from the formula and the options, and their errors."""

from __future__ import annotations

import pytest

from bayes_animal import FormulaError
from bayes_animal.spec.parameters import Parameters
from bayes_animal.spec.terms import specify


def _names(spec):
    return [(t.name, t.column, t.genetic) for t in spec.terms]


def test_relationship_implies_the_additive_term_and_animal_term_is_the_same():
    spec = specify("bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)")
    assert _names(spec) == [
        ("additive", "animal", True),
        ("byear", "byear", False),
        ("mother", "mother", False),
    ]
    assert spec.fixed_formula == "bwt ~ 1 + C(sex)"
    assert _names(specify("y ~ x + (1 | animal)")) == [("additive", "animal", True)]
    assert spec.names == ("additive", "byear", "mother", "residual")


@pytest.mark.parametrize("written", ["ide(animal)", "(1 | ide(animal))", "(1|ide( animal ))"])
def test_permanent_environment_spellings(written):
    spec = specify(f"laydate ~ 1 + C(age) + {written}")
    assert _names(spec) == [("additive", "animal", True), ("pe", "animal", False)]
    assert spec.has_permanent_environment
    assert spec.fixed_formula == "laydate ~ 1 + C(age)"
    assert _names(specify("y ~ 1 + ide(dam)", animal="calf"))[1] == ("pe_dam", "dam", False)


def test_without_a_relationship_every_term_is_independent():
    spec = specify("laydate ~ 1 + (1 | animal)", genetic=False)
    assert _names(spec) == [("animal", "animal", False)]
    assert specify("y ~ 1 + (1 | `a.b`)", genetic=False).terms[0].column == "a.b"


def test_maternal_options_and_the_direct_maternal_block():
    spec = specify("bw ~ 1 + (1 | dam)", animal="calf", maternal="dam", maternal_covariance=True)
    assert _names(spec) == [
        ("additive", "calf", True),
        ("maternal", "dam", True),
        ("dam", "dam", False),
    ]
    assert spec.covariances == (("additive", "maternal"),)
    params = Parameters.from_spec(spec)
    assert params.names == ("additive", "maternal", "additive:maternal", "dam", "residual")
    assert [b.terms for b in params.blocks] == [("additive", "maternal"), ("dam",)]
    without = Parameters.from_spec(specify("bw ~ 1", animal="calf", maternal="dam"))
    assert without.names == ("additive", "maternal", "residual")


@pytest.mark.parametrize(
    ("formula", "options", "message"),
    [
        ("y ~ 1 + (x | g)", {}, r"'\(x \| g\)' of .* has 'x' before '\|'.*no random slopes"),
        ("y ~ 1 + (1 | g) + (1 | g)", {}, r"repeats the effect 'g'"),
        ("y ~ 1 + ide(animal) + (1 | ide(animal))", {}, r"repeats the effect 'pe'"),
        ("y ~ 1 + (1 | residual)", {}, r"called 'residual'.*rename the column"),
        ("y ~ 1", {"genetic": False}, "has no random effect"),
        ("y ~ 1", {"genetic": False, "maternal": "dam"}, "needs a pedigree"),
        ("y ~ 1", {"maternal": "animal"}, "names the animal column itself"),
        ("y ~ 1", {"maternal_covariance": True}, "needs a maternal effect"),
    ],
)
def test_specification_errors_name_the_term(formula, options, message):
    with pytest.raises(FormulaError, match=message):
        specify(formula, **options)
