"""The package's front: ``import bayes_animal`` imports the REML path only, and the names kept
for first use (the Bayesian model, the likelihood-ratio test, the simulation) still resolve."""

from __future__ import annotations

import sys

import pytest
from conftest import python_stdout

import bayes_animal


def test_importing_the_package_leaves_the_names_for_first_use_unimported():
    code = (
        "import sys, bayes_animal; "
        "print(sorted(m for m in ('bayes_animal.simulate', 'bayes_animal.estimation.compare', "
        "'bayes_animal.bayes.model', 'pymc', 'pandas') if m in sys.modules))"
    )
    assert python_stdout(code).strip() == "[]"


@pytest.mark.parametrize(
    "name, module",
    [
        ("compare", "bayes_animal.estimation.compare"),
        ("simulate_reference", "bayes_animal.simulate"),
        ("SimulatedData", "bayes_animal.simulate"),
        ("Truth", "bayes_animal.simulate"),
        ("AnimalModel", "bayes_animal.bayes.model"),
    ],
)
def test_names_for_first_use_are_those_of_their_modules(name, module):
    assert getattr(bayes_animal, name) is getattr(sys.modules[module], name)
    assert name in bayes_animal.__all__


def test_the_api_still_hands_out_the_likelihood_ratio_test():
    from bayes_animal.api import LikelihoodRatio, compare
    from bayes_animal.estimation import compare as module

    assert compare is module.compare and LikelihoodRatio is module.LikelihoodRatio


def test_the_package_modules_are_attributes_of_the_package():
    code = (
        "import bayes_animal; "
        "print(bayes_animal.simulate.simulate_reference.__module__, "
        "'simulate_reference' in dir(bayes_animal), 'AnimalModel' in dir(bayes_animal))"
    )
    assert python_stdout(code).split() == ["bayes_animal.simulate", "True", "True"]


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bayes_animal.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        bayes_animal.api.nope  # noqa: B018
