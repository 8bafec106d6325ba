r"""The model specification: which random effects the formula and the options ask for.

One lme4-style formula holds the fixed and the random part,
``bwt ~ 1 + C(sex) + (1 | byear) + (1 | mother)``, and options name the genetic effects:

======================  ============  ===================================================
written                 component     effect
======================  ============  ===================================================
a relationship          ``additive``  the animal column's breeding values,
(``pedigree=``,                       :math:`u \sim N(0, \sigma_A^2 A)`; ``(1 | animal)``
``relmat=``,                          in the formula is the same term
``genotypes=``)
``maternal="mother"``   ``maternal``  maternal genetic effect of each record's dam,
                                      :math:`m \sim N(0, \sigma_M^2 A)`; with
                                      ``maternal_covariance=True`` the pair is
                                      :math:`G_0 \otimes A`, :math:`G_0` unstructured
``(1 | g)``             ``g``         an independent effect of each level of column ``g``
``ide(animal)``,        ``pe``        a second, independent effect of the animals: the
``(1 | ide(animal))``                 permanent environment of repeated records (ASReml's
                                      ``ide``; ``ide(x)`` on another column is ``pe_x``)
(always)                ``residual``  :math:`e \sim N(0, \sigma^2 I)`
======================  ============  ===================================================

Several traits: ``cbind(bwt, tarsus) ~ …`` (MCMCglmm's and brms's spelling) fits each term on
every trait with an unstructured :math:`G_0` across the traits; ``diag(1 | g)`` (glmmTMB's
spelling, ASReml's ``idh``) and ``diag(ide(animal))`` make a term independent across traits.
A copied id column with plain ``(1 | id2)`` is an independent term too (the MCMCglmm / brms
way). Without a relationship, ``(1 | animal)`` is an independent effect like any other: the
model is then a plain linear mixed model, as lme4 fits it. Every error names the term.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import FormulaError, describe_items
from .family import GAUSSIAN, Family, family_of
from .formula import (
    FormulaParts,
    response_columns,
    split_formula,
    split_terms,
    strip_backticks,
    unwrap_diag,
)

__all__ = ["RESERVED", "ModelSpec", "RandomTerm", "specify"]

#: Component names the package uses itself; a grouping column cannot take them.
RESERVED = ("additive", "maternal", "residual")
_IDE = re.compile(r"^ide\s*\((.+)\)$")


@dataclass(frozen=True)
class RandomTerm:
    """One random effect.

    Attributes
    ----------
    name
        Component key (``additive``, ``maternal``, ``pe``, or the grouping column).
    column
        The data column holding each record's level (animal, dam, birth year …).
    genetic
        Covariance from the relationship (A, G) rather than the identity.
    text
        How the user wrote it, for messages.
    independent_traits
        With several traits, the effects of one level on different traits are independent
        (``diag(1 | g)``: a diagonal :math:`G_0`); otherwise :math:`G_0` is unstructured.
    """

    name: str
    column: str
    genetic: bool
    text: str
    independent_traits: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The parsed model: fixed part, random terms, correlated pairs.

    Attributes
    ----------
    formula
        The formula as given.
    parts
        Its pieces (:class:`~bayes_animal.spec.formula.FormulaParts`); ``parts.fixed`` is the
        fixed part without random terms.
    animal
        The animal column.
    terms
        The random effects, genetic ones first.
    covariances
        Pairs of term names whose effects are correlated (``("additive", "maternal")``).
    family
        The response's family and link (:mod:`bayes_animal.spec.family`).
    """

    formula: str
    parts: FormulaParts
    animal: str
    terms: tuple[RandomTerm, ...]
    covariances: tuple[tuple[str, str], ...] = ()
    family: Family = GAUSSIAN

    @property
    def response(self) -> str:
        """The response column (backticks removed); with several traits, the left-hand side
        as written (``cbind(bwt, tarsus)``)."""
        return strip_backticks(self.parts.response)

    @property
    def traits(self) -> tuple[str, ...]:
        """The trait columns: one, or those of ``cbind(…)``."""
        return response_columns(self.parts.response, formula=self.formula)

    @property
    def multi_trait(self) -> bool:
        """Several traits (``cbind(…) ~ …`` of a Gaussian family)."""
        return len(self.traits) > 1 and not self.binomial_trials

    @property
    def binomial_trials(self) -> bool:
        """A binomial response given as ``cbind(successes, failures)``."""
        return self.family.name == "binomial" and len(self.traits) == 2

    @property
    def fixed_formula(self) -> str:
        """``response ~ fixed part``, for formulaic."""
        return self.parts.fixed_formula

    @property
    def names(self) -> tuple[str, ...]:
        """Component names: the random terms, then ``residual``."""
        return (*(t.name for t in self.terms), "residual")

    def term(self, name: str) -> RandomTerm:
        """The term called ``name``."""
        for term in self.terms:
            if term.name == name:
                return term
        raise KeyError(name)

    @property
    def has_permanent_environment(self) -> bool:
        """An independent term on the animal column (permanent environment) is present."""
        return any(not t.genetic and t.column == self.animal for t in self.terms)


def _random_term(text: str, *, animal: str, genetic: bool, formula: str) -> RandomTerm:
    """Read one ``(1 | group)``, ``ide(column)`` or ``diag(1 | group)`` term."""
    inner, diagonal = unwrap_diag(text)
    if diagonal:
        term = _random_term(inner, animal=animal, genetic=genetic, formula=formula)
        return RandomTerm(term.name, term.column, term.genetic, text, True)
    match = _IDE.match(text)
    if match is None and text.startswith("("):
        lhs, rhs = split_terms(text[1:-1], "|")
        if lhs != "1":
            raise FormulaError(
                f"The random term {text!r} of {formula!r} has {lhs!r} before '|': only random "
                "intercepts (1 | group) are supported (no random slopes)."
            )
        inner = _IDE.match(rhs)
        if inner is None:
            column = strip_backticks(rhs)
            if column == animal and genetic:
                return RandomTerm("additive", animal, True, text)
            if column in RESERVED:
                raise FormulaError(
                    f"The grouping column of {text!r} is called {column!r}, a name the package "
                    f"uses for a component ({', '.join(RESERVED)}): rename the column."
                )
            return RandomTerm(column, column, False, text)
        match = inner
    if match is None:  # pragma: no cover - split_formula only hands over terms in parentheses
        raise FormulaError(f"Cannot read the random term {text!r} of {formula!r}.")
    column = strip_backticks(match.group(1))
    name = "pe" if column == animal else f"pe_{column}"
    return RandomTerm(name, column, False, text)


def specify(
    formula: str,
    *,
    animal: str = "animal",
    genetic: bool = True,
    maternal: str | None = None,
    maternal_covariance: bool = False,
    family: str | Family | None = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
) -> ModelSpec:
    """Read the model from the formula and the options.

    Parameters
    ----------
    formula
        ``response ~ fixed + (1 | g) + ide(animal) …``.
    animal
        The animal column.
    genetic
        A relationship (pedigree, matrix or genotypes) is given: the additive genetic effect
        of the animal column is in the model.
    maternal
        The dam column of a maternal genetic effect (needs a relationship).
    maternal_covariance
        Estimate the direct–maternal covariance (needs ``maternal``).
    family, link, overdispersion
        The response's family (:func:`~bayes_animal.spec.family.family_of`).

    Raises
    ------
    FormulaError
        A term is malformed, repeated, collides with a component name, an option needs another,
        or the model has no random effect at all.
    """
    chosen = family_of(family, link, overdispersion)
    parts = split_formula(formula)
    fixed: list[str] = []
    random_texts = list(parts.random)
    for term in split_terms(parts.fixed):
        (random_texts if _IDE.match(term) else fixed).append(term)
    parts = FormulaParts(parts.formula, parts.response, " + ".join(fixed) or "1", parts.random)
    terms: list[RandomTerm] = []
    if genetic:
        terms.append(RandomTerm("additive", animal, True, f"{animal} (relationship)"))
    if maternal is not None:
        if not genetic:
            raise FormulaError(
                f"maternal={maternal!r} is a genetic effect: it needs a pedigree, relationship "
                "matrix or genotypes. Give one, or fit the dam as an independent term "
                f"(1 | {maternal})."
            )
        if maternal == animal:
            raise FormulaError(
                f"maternal={maternal!r} names the animal column itself; name the dam column."
            )
        terms.append(RandomTerm("maternal", maternal, True, f"maternal={maternal}"))
    elif maternal_covariance:
        raise FormulaError(
            "maternal_covariance=True (--maternal-covariance) needs a maternal effect: "
            "maternal='<dam column>' (--maternal <dam column>)."
        )
    for text in random_texts:
        term = _random_term(text, animal=animal, genetic=genetic, formula=formula)
        if term.name == "additive":  # (1 | animal) with a relationship: the implied genetic term
            if term.independent_traits:
                terms[0] = RandomTerm("additive", animal, True, term.text, True)
            continue
        clash = [t for t in terms if t.name == term.name]
        if clash:
            raise FormulaError(
                f"The random term {text!r} repeats the effect {term.name!r} "
                f"(already {clash[0].text!r}); each effect can appear once."
            )
        terms.append(term)
    if not terms:
        raise FormulaError(
            f"The model {formula!r} has no random effect: give a pedigree, relationship matrix or "
            "genotypes for the additive genetic effect, or random terms such as (1 | group)."
        )
    pairs = (("additive", "maternal"),) if maternal_covariance else ()
    traits = response_columns(parts.response, formula=formula)
    diagonal = [t.text for t in terms if t.independent_traits]
    if diagonal and len(traits) < 2:
        raise FormulaError(
            f"{describe_items(diagonal)} in {formula!r} makes an effect independent across "
            "traits, and the model has one trait: write (1 | group), or give several traits "
            "with cbind(trait1, trait2) ~ …."
        )
    if pairs and len(traits) > 1:
        raise FormulaError(
            "maternal_covariance=True (--maternal-covariance) is for one trait; with several "
            "traits fit the maternal effect without its covariance with the direct effect."
        )
    if not chosen.gaussian:
        _check_family_model(chosen, formula, traits, terms, pairs)
    terms.sort(key=lambda t: not t.genetic)
    columns = [t.column for t in terms if t.genetic]
    if len(set(columns)) != len(columns):  # pragma: no cover - guarded above
        raise FormulaError(f"Genetic effects on the same column: {describe_items(columns)}.")
    return ModelSpec(formula, parts, animal, tuple(terms), pairs, chosen)


def _check_family_model(
    family: Family, formula: str, traits: tuple[str, ...], terms: list[RandomTerm], pairs
) -> None:
    """What a non-Gaussian family fits: one trait (a binomial's successes and failures as
    ``cbind``), independent random terms."""
    if len(traits) > 1 and not (family.name == "binomial" and len(traits) == 2):
        what = (
            "a binomial response takes two columns, cbind(successes, failures)"
            if family.name == "binomial"
            else f"the {family.name} family is fitted one trait at a time"
        )
        raise FormulaError(
            f"{formula!r} has {len(traits)} response columns and {what}. Fit each trait on its "
            "own (--traits fits many at once)."
        )
    if pairs or any(t.name == "maternal" for t in terms):
        raise FormulaError(
            f"A maternal genetic effect is fitted for Gaussian traits only, not the {family.label} "
            "family: fit the dam as an independent term, (1 | dam)."
        )
