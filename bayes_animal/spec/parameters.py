r"""The variance parameters of a model: names, blocks, validity, proportions and their SEs.

The random effects are grouped into **blocks** that share a structure: a block is one term
(:math:`u_k \sim N(0, \sigma_k^2 K)`), one term on t traits (:math:`u \sim N(0, G_0 \otimes
K)` with :math:`G_0` t × t, names ``<term>:<trait>`` and ``<term>:<trait1>:<trait2>``; the
residual is then a block too, :math:`R_0`, restricted to each record's traits) or a correlated
pair such as direct and maternal genetic effects,
:math:`\begin{pmatrix} a \\ m\end{pmatrix} \sim N(0, G_0 \otimes A)`,
:math:`G_0 = \begin{pmatrix} \sigma_A^2 & \sigma_{AM} \\ \sigma_{AM} & \sigma_M^2\end{pmatrix}`.
The parameter vector :math:`\theta` holds every variance and covariance, then the residual
variance, so that :math:`V = \sum_i \theta_i V_i` is linear in :math:`\theta` (what the
average-information algorithm works with). Names: the term names (``additive``, ``maternal``,
``pe``, ``byear`` …), ``additive:maternal`` for the covariance, ``residual``.

**Proportions** of the phenotypic variance
:math:`\sigma_P^2 = \sum_k \sigma_k^2 + \sigma_{AM} + \sigma^2` (Willham's: an animal's own
direct effect and its dam's maternal effect covary by :math:`\tfrac12 \cdot 2\sigma_{AM}`):
:math:`h^2 = \sigma_A^2/\sigma_P^2`, each :math:`\sigma_k^2/\sigma_P^2`, the repeatability
:math:`(\sigma_A^2 + \sigma_{PE}^2)/\sigma_P^2` when a permanent environment is fitted, and the
direct–maternal correlation :math:`\sigma_{AM}/\sqrt{\sigma_A^2\sigma_M^2}`. Their standard
errors come from the covariance of :math:`\hat\theta` (the inverse average information) by the
delta method; a parameter at its boundary contributes none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .terms import ModelSpec

__all__ = [
    "OBSERVED_H2",
    "Block",
    "Parameters",
    "Quantity",
    "component_name",
    "correlation_name",
    "covariance_name",
    "identifier",
    "proportion_name",
    "variance_name",
]


# -- the one vocabulary ---------------------------------------------------------------------
# Every output (printed tables, reml.json, summary.json, the CSVs, the posterior's variables,
# the Python tables) names a quantity by these functions; docs/outputs.md writes them down.
def variance_name(component: str) -> str:
    """The variance of a component: ``sigma2:<component>`` (``sigma2:additive``)."""
    return f"sigma2:{component}"


def covariance_name(pair: str) -> str:
    """The covariance of a pair ``a:b``: ``cov:a:b`` (``cov:additive:maternal``)."""
    return f"cov:{pair}"


def proportion_name(component: str) -> str:
    """A component's proportion of :math:`\\sigma_P^2`: ``h2`` for the additive genetic
    component, ``prop:<component>`` for any other (``prop:byear``, ``prop:residual``); with
    several traits ``h2:<trait>`` and ``prop:<effect>:<trait>``."""
    if component == "additive":
        return "h2"
    if component.startswith("additive:"):
        return f"h2:{component.removeprefix('additive:')}"
    return f"prop:{component}"


#: A non-Gaussian trait's heritability on the observed data scale (:mod:`.family`).
OBSERVED_H2 = "h2_observed"


def correlation_name(pair: str) -> str:
    """The correlation of a pair ``a:b``: ``corr:a:b`` (``corr:additive:maternal``)."""
    return f"corr:{pair}"


def identifier(name: str) -> str:
    """A component name as part of a variable name: ``a:b`` → ``a_b``, other characters that
    are not letters, digits or ``_`` → ``_``."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


@dataclass(frozen=True)
class Quantity:
    """A derived quantity reported by REML and by the posterior alike.

    Attributes
    ----------
    key
        Its one name in tables, JSON, CSVs and the posterior: ``sigma2:<component>``,
        ``cov:<a>:<b>``, ``h2``, ``prop:<component>``, ``repeatability``, ``corr:<a>:<b>``.
    kind
        ``"variance"``, ``"covariance"`` or ``"ratio"``.
    source
        The component, covariance (``a:b``) or ratio (``repeatability``) it is of.
    """

    key: str
    kind: str
    source: str


@dataclass(frozen=True)
class Block:
    """Terms sharing one structure and one :math:`G_0` (any order: 1×1 for an independent
    effect, 2×2 for the direct–maternal pair, t×t for one effect on t traits), or the
    residual's :math:`R_0`.

    Attributes
    ----------
    terms
        The terms' names, in the order of :math:`G_0`'s rows.
    covariances
        The names of the off-diagonal elements, ``(i, j, name)`` for :math:`i < j`.
    traits
        The trait of each term (None with one trait).
    """

    terms: tuple[str, ...]
    covariances: tuple[tuple[int, int, str], ...] = ()
    traits: tuple[str | None, ...] | None = None

    @property
    def size(self) -> int:
        """Order of :math:`G_0`."""
        return len(self.terms)

    def covariance(self, i: int, j: int) -> str:
        """The name of element ``(i, j)`` off the diagonal."""
        i, j = min(i, j), max(i, j)
        return next(name for a, b, name in self.covariances if (a, b) == (i, j))


def component_name(effect: str, trait: str | None) -> str:
    """A component: the effect's name with one trait, ``<effect>:<trait>`` with several."""
    return effect if trait is None else f"{effect}:{trait}"


def _trait_block(effect: str, traits: tuple[str, ...] | None, *, structured: bool) -> list:
    """The blocks of one effect: one block with several traits unless ``structured`` is
    false (``diag``: a block per trait)."""
    if traits is None:
        return [Block((effect,))]
    terms = tuple(component_name(effect, t) for t in traits)
    if not structured:
        return [Block((term,), (), (t,)) for term, t in zip(terms, traits, strict=True)]
    pairs = tuple(
        (i, j, f"{effect}:{traits[i]}:{traits[j]}")
        for i in range(len(traits))
        for j in range(i + 1, len(traits))
    )
    return [Block(terms, pairs, tuple(traits))]


@dataclass(frozen=True)
class Parameters:
    """The parameter layout of a model (see the module docstring).

    Attributes
    ----------
    blocks
        The blocks of random effects, in the order of the model's terms.
    names
        Parameter names, in the order of :math:`\\theta`: each block's variances then its
        covariances, the residual's last.
    repeatability
        The terms summed for the repeatability (``("additive", "pe")``), if a permanent
        environment is fitted beside an additive effect.
    residual
        The residual's block: ``residual`` with one trait; ``residual:<trait>`` and their
        covariances (:math:`R_0`, unstructured) with several.
    traits
        The traits (one, or those of ``cbind``).
    """

    blocks: tuple[Block, ...]
    names: tuple[str, ...]
    repeatability: tuple[str, ...] = ()
    residual: Block = Block(("residual",))
    traits: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Parameters:
        """The layout of a model specification."""
        traits = spec.traits if spec.multi_trait else None
        paired = {name for pair in spec.covariances for name in pair}
        blocks: list[Block] = []
        for term in spec.terms:
            if term.name in paired:
                if any(term.name in b.terms for b in blocks):
                    continue
                pair = next(p for p in spec.covariances if term.name in p)
                blocks.append(Block(pair, ((0, 1, f"{pair[0]}:{pair[1]}"),)))
            else:
                blocks += _trait_block(term.name, traits, structured=not term.independent_traits)
        residual = _trait_block("residual", traits, structured=True)[0]
        names: list[str] = []
        for block in (*blocks, residual):
            names += [*block.terms, *(name for _, _, name in block.covariances)]
        pe = [t.name for t in spec.terms if not t.genetic and t.column == spec.animal]
        repeat = ("additive", pe[0]) if pe and "additive" in [t.name for t in spec.terms] else ()
        # a binomial cbind(successes, failures) is one trait, named by its successes column
        named = spec.traits if spec.multi_trait else spec.traits[:1]
        return cls(tuple(blocks), tuple(names), repeat, residual, tuple(named))

    @property
    def size(self) -> int:
        """Number of parameters."""
        return len(self.names)

    @property
    def multi_trait(self) -> bool:
        """Several traits."""
        return len(self.traits) > 1

    @property
    def all_blocks(self) -> tuple[Block, ...]:
        """The random effects' blocks and the residual's."""
        return (*self.blocks, self.residual)

    @cached_property
    def _positions(self) -> dict[str, int]:
        """Each name's position in θ (looked up at every gradient: a dict, built once)."""
        return {name: k for k, name in enumerate(self.names)}

    @cached_property
    def _term_positions(self) -> dict[Block, np.ndarray]:
        """The positions in θ of each block's variances, in the order of its rows."""
        return {
            block: np.array([self.index(t) for t in block.terms], dtype=np.int64)
            for block in self.all_blocks
        }

    @cached_property
    def _variance_positions(self) -> np.ndarray:
        """The positions in θ of :attr:`variances`."""
        return np.array([self.index(n) for n in self.variances], dtype=np.int64)

    def index(self, name: str) -> int:
        """Position of a parameter in :math:`\\theta`."""
        try:
            return self._positions[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a parameter of this model") from None

    def is_covariance(self, name: str) -> bool:
        """Whether the parameter is a covariance (an off-diagonal element of a block)."""
        return any(name == n for block in self.all_blocks for _, _, n in block.covariances)

    @cached_property
    def variances(self) -> tuple[str, ...]:
        """The variance parameters (random terms and residual)."""
        return tuple(n for n in self.names if not self.is_covariance(n))

    def trait_of(self, name: str) -> str | None:
        """The trait of a variance (None with one trait)."""
        for block in self.all_blocks:
            if block.traits is not None and name in block.terms:
                return block.traits[block.terms.index(name)]
        return None

    def g0(self, theta: np.ndarray, block: Block) -> np.ndarray:
        """:math:`G_0` (or :math:`R_0`) of a block at :math:`\\theta`."""
        positions = self._term_positions.get(block)
        if positions is None:  # a block of another layout with these names
            positions = np.array([self.index(t) for t in block.terms], dtype=np.int64)
        g = np.zeros((block.size, block.size))
        g.flat[:: block.size + 1] = np.asarray(theta, dtype=float)[positions]
        for i, j, name in block.covariances:
            g[i, j] = g[j, i] = theta[self.index(name)]
        return g

    def derivative(self, name: str, block: Block) -> np.ndarray | None:
        """:math:`\\partial G_0 / \\partial\\theta_{name}` for a parameter of ``block``, or None."""
        E = np.zeros((block.size, block.size))
        if name in block.terms:
            k = block.terms.index(name)
            E[k, k] = 1.0
            return E
        for i, j, covariance in block.covariances:
            if covariance == name:
                E[i, j] = E[j, i] = 1.0
                return E
        return None

    def block_of(self, name: str) -> Block:
        """The block (random or residual) holding a parameter."""
        for block in self.all_blocks:
            if name in block.terms or any(name == n for _, _, n in block.covariances):
                return block
        raise KeyError(name)

    def valid(self, theta: np.ndarray, *, margin: float = 0.0) -> bool:
        """Every variance > 0 and every :math:`G_0` and :math:`R_0` positive definite (with a
        relative margin: the smallest eigenvalue of each correlation matrix at least
        ``margin``; for a pair, :math:`|r| \\le 1 - \\text{margin}`)."""
        if not np.all(np.isfinite(theta)):
            return False
        if not np.all(np.asarray(theta)[self._variance_positions] > 0):
            return False
        for block in self.all_blocks:
            if block.size > 1 and block.covariances:
                g = self.g0(theta, block)
                scale = 1.0 / np.sqrt(np.diag(g))
                correlation = g * scale[:, None] * scale[None, :]
                if np.linalg.eigvalsh(correlation)[0] <= margin:
                    return False
        return True

    def start(self, phenotypic_variance) -> np.ndarray:
        """Starting values: each trait's phenotypic variance (one number, or one per trait)
        shared equally by its variances, covariances 0."""
        scales = np.broadcast_to(
            np.asarray(phenotypic_variance, dtype=float), (max(len(self.traits), 1),)
        )
        counts: dict[str | None, int] = {}
        for name in self.variances:
            counts[self.trait_of(name)] = counts.get(self.trait_of(name), 0) + 1
        out = np.zeros(self.size)
        for k, name in enumerate(self.names):
            if self.is_covariance(name):
                continue
            trait = self.trait_of(name)
            scale = scales[0] if trait is None else scales[self.traits.index(trait)]
            out[k] = scale / counts[trait]
        return out

    # -- derived quantities ------------------------------------------------------------------
    def _covariance_names(self) -> list[str]:
        return [n for n in self.names if self.is_covariance(n)]

    def quantities(self) -> tuple[Quantity, ...]:
        """Every reported quantity: the variances, the covariances, every proportion (h² the
        additive one, the residual's too), the repeatability, the correlations."""
        out = [Quantity(variance_name(n), "variance", n) for n in self.variances]
        covariances = self._covariance_names()
        out += [Quantity(covariance_name(n), "covariance", n) for n in covariances]
        out += [Quantity(proportion_name(n), "ratio", n) for n in self.variances]
        out += [Quantity(key, "ratio", key) for key in self._repeatability_keys()]
        out += [Quantity(correlation_name(n), "ratio", n) for n in covariances]
        return tuple(out)

    def _repeatability_keys(self) -> list[str]:
        if not self.repeatability:
            return []
        if not self.multi_trait:
            return ["repeatability"]
        return [f"repeatability:{t}" for t in self.traits]

    def phenotypic_gradient(self, trait: str | None = None) -> np.ndarray:
        """:math:`\\partial\\sigma_P^2/\\partial\\theta` (of ``trait`` with several traits): 1
        for every variance (of that trait) and for the direct–maternal covariance (Willham),
        0 for other covariances."""
        out = np.zeros(self.size)
        for k, name in enumerate(self.names):
            if self.is_covariance(name):
                out[k] = 1.0 if name == "additive:maternal" else 0.0
            elif self.trait_of(name) == trait:
                out[k] = 1.0
        return out

    def phenotypic(self, theta: np.ndarray, trait: str | None = None) -> float:
        """:math:`\\sigma_P^2` (of ``trait``; see the module docstring)."""
        return float(self.phenotypic_gradient(trait) @ theta)

    def ratios(
        self, theta: np.ndarray, covariance: np.ndarray | None
    ) -> dict[str, tuple[float, float]]:
        """Proportions of :math:`\\sigma_P^2` (each trait's) for every variance, the
        repeatability and the correlations, each ``(estimate, se)`` (SE NaN when
        ``covariance`` is None), keyed by their names (:func:`proportion_name`,
        ``repeatability``, :func:`correlation_name`)."""
        out: dict[str, tuple[float, float]] = {}

        def with_se(value: float, gradient: np.ndarray) -> tuple[float, float]:
            if covariance is None:
                return value, float("nan")
            return value, float(np.sqrt(max(gradient @ covariance @ gradient, 0.0)))

        def share(indices: list[int], trait: str | None) -> tuple[float, float]:
            dp = self.phenotypic_gradient(trait)
            total = float(dp @ theta)
            part = float(theta[indices].sum())
            if total <= 0.0:  # every latent variance at zero (a family's): no proportion
                return float("nan"), float("nan")
            gradient = -part * dp / total**2
            gradient[indices] += 1.0 / total
            return with_se(part / total, gradient)

        for name in self.variances:
            out[proportion_name(name)] = share([self.index(name)], self.trait_of(name))
        if self.repeatability:
            for key, trait in zip(
                self._repeatability_keys(), self.traits if self.multi_trait else [None],
                strict=True,
            ):  # fmt: skip
                terms = [component_name(t, trait) for t in self.repeatability]
                out[key] = share([self.index(t) for t in terms], trait)
        for block in self.all_blocks:
            for i, j, name in block.covariances:
                ia, im = self.index(block.terms[i]), self.index(block.terms[j])
                ic = self.index(name)
                va, vm, c = theta[ia], theta[im], theta[ic]
                root = np.sqrt(va * vm)
                gradient = np.zeros(self.size)
                gradient[ic] = 1.0 / root
                gradient[ia] = -0.5 * c / (va * root)
                gradient[im] = -0.5 * c / (vm * root)
                out[correlation_name(name)] = with_se(c / root, gradient)
        return out
