r"""The variance parameters of a model: names, blocks, validity, proportions and their SEs.

The random effects are grouped into **blocks** that share a structure: a block is one term
(:math:`u_k \sim N(0, \sigma_k^2 K)`) or a correlated pair such as direct and maternal genetic
effects, :math:`\begin{pmatrix} a \\ m\end{pmatrix} \sim N(0, G_0 \otimes A)`,
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

import numpy as np

from .terms import ModelSpec

__all__ = [
    "Block",
    "Parameters",
    "Quantity",
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
    component, ``prop:<component>`` for any other (``prop:byear``, ``prop:residual``)."""
    return "h2" if component == "additive" else f"prop:{component}"


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
    """Terms sharing one structure and one :math:`G_0` (1×1 or 2×2)."""

    terms: tuple[str, ...]

    @property
    def size(self) -> int:
        """Order of :math:`G_0`."""
        return len(self.terms)


@dataclass(frozen=True)
class Parameters:
    """The parameter layout of a model (see the module docstring).

    Attributes
    ----------
    blocks
        The blocks of random effects, in the order of the model's terms.
    names
        Parameter names, in the order of :math:`\\theta`.
    repeatability
        The terms summed for the repeatability (``("additive", "pe")``), if a permanent
        environment is fitted beside an additive effect.
    """

    blocks: tuple[Block, ...]
    names: tuple[str, ...]
    repeatability: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Parameters:
        """The layout of a model specification."""
        paired = {name for pair in spec.covariances for name in pair}
        blocks: list[Block] = []
        names: list[str] = []
        for term in spec.terms:
            if term.name in paired:
                if any(term.name in b.terms for b in blocks):
                    continue
                pair = next(p for p in spec.covariances if term.name in p)
                blocks.append(Block(pair))
                names += [pair[0], pair[1], f"{pair[0]}:{pair[1]}"]
            else:
                blocks.append(Block((term.name,)))
                names.append(term.name)
        names.append("residual")
        pe = [t.name for t in spec.terms if not t.genetic and t.column == spec.animal]
        repeat = ("additive", pe[0]) if pe and "additive" in names else ()
        return cls(tuple(blocks), tuple(names), repeat)

    @property
    def size(self) -> int:
        """Number of parameters."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of a parameter in :math:`\\theta`."""
        return self.names.index(name)

    def is_covariance(self, name: str) -> bool:
        """Whether the parameter is a covariance (``a:b``)."""
        return ":" in name

    @property
    def variances(self) -> tuple[str, ...]:
        """The variance parameters (random terms and residual)."""
        return tuple(n for n in self.names if not self.is_covariance(n))

    def g0(self, theta: np.ndarray, block: Block) -> np.ndarray:
        """:math:`G_0` of a block at :math:`\\theta`."""
        if block.size == 1:
            return np.array([[theta[self.index(block.terms[0])]]])
        a, m = (theta[self.index(t)] for t in block.terms)
        c = theta[self.index(f"{block.terms[0]}:{block.terms[1]}")]
        return np.array([[a, c], [c, m]])

    def derivative(self, name: str, block: Block) -> np.ndarray | None:
        """:math:`\\partial G_0 / \\partial\\theta_{name}` for a parameter of ``block``, or None."""
        if name == "residual":
            return None
        if block.size == 1:
            return np.ones((1, 1)) if name == block.terms[0] else None
        a, m = block.terms
        if name == a:
            return np.array([[1.0, 0.0], [0.0, 0.0]])
        if name == m:
            return np.array([[0.0, 0.0], [0.0, 1.0]])
        if name == f"{a}:{m}":
            return np.array([[0.0, 1.0], [1.0, 0.0]])
        return None

    def valid(self, theta: np.ndarray, *, margin: float = 0.0) -> bool:
        """Every variance > 0 and every :math:`G_0` positive definite (with a relative margin
        on correlations: :math:`|r| \\le 1 - \\text{margin}`)."""
        if not np.all(np.isfinite(theta)):
            return False
        if any(theta[self.index(n)] <= 0 for n in self.variances):
            return False
        for block in self.blocks:
            if block.size == 2:
                g = self.g0(theta, block)
                if g[0, 1] ** 2 >= (1.0 - margin) ** 2 * g[0, 0] * g[1, 1]:
                    return False
        return True

    def start(self, phenotypic_variance: float) -> np.ndarray:
        """Starting values: the phenotypic variance shared equally by the variances,
        covariances 0."""
        share = phenotypic_variance / len(self.variances)
        return np.array([0.0 if self.is_covariance(n) else share for n in self.names])

    # -- derived quantities ------------------------------------------------------------------
    def quantities(self) -> tuple[Quantity, ...]:
        """Every reported quantity: the variances, the covariances, every proportion (h² the
        additive one, the residual's too), the repeatability, the correlations."""
        out = [Quantity(variance_name(n), "variance", n) for n in self.variances]
        covariances = [n for n in self.names if self.is_covariance(n)]
        out += [Quantity(covariance_name(n), "covariance", n) for n in covariances]
        out += [Quantity(proportion_name(n), "ratio", n) for n in self.variances]
        if self.repeatability:
            out.append(Quantity("repeatability", "ratio", "repeatability"))
        out += [Quantity(correlation_name(n), "ratio", n) for n in covariances]
        return tuple(out)

    def phenotypic_gradient(self) -> np.ndarray:
        """:math:`\\partial\\sigma_P^2/\\partial\\theta`: 1 for every variance and for the
        direct–maternal covariance (Willham), 0 for other covariances."""
        return np.array(
            [
                1.0 if (not self.is_covariance(n) or n == "additive:maternal") else 0.0
                for n in self.names
            ]
        )

    def phenotypic(self, theta: np.ndarray) -> float:
        """:math:`\\sigma_P^2` (see the module docstring)."""
        return float(self.phenotypic_gradient() @ theta)

    def ratios(
        self, theta: np.ndarray, covariance: np.ndarray | None
    ) -> dict[str, tuple[float, float]]:
        """Proportions of :math:`\\sigma_P^2` for every variance, the repeatability and the
        correlations, each ``(estimate, se)`` (SE NaN when ``covariance`` is None), keyed by
        their names (:func:`proportion_name`, ``repeatability``, :func:`correlation_name`)."""
        total = self.phenotypic(theta)
        dp = self.phenotypic_gradient()
        out: dict[str, tuple[float, float]] = {}

        def with_se(value: float, gradient: np.ndarray) -> tuple[float, float]:
            if covariance is None:
                return value, float("nan")
            return value, float(np.sqrt(max(gradient @ covariance @ gradient, 0.0)))

        for name in self.variances:
            k = self.index(name)
            gradient = -theta[k] * dp / total**2
            gradient[k] += 1.0 / total
            out[proportion_name(name)] = with_se(theta[k] / total, gradient)
        if self.repeatability:
            ks = [self.index(n) for n in self.repeatability]
            part = float(theta[ks].sum())
            gradient = -part * dp / total**2
            gradient[ks] += 1.0 / total
            out["repeatability"] = with_se(part / total, gradient)
        for block in self.blocks:
            if block.size == 2:
                a, m = block.terms
                ia, im, ic = self.index(a), self.index(m), self.index(f"{a}:{m}")
                va, vm, c = theta[ia], theta[im], theta[ic]
                root = np.sqrt(va * vm)
                gradient = np.zeros(self.size)
                gradient[ic] = 1.0 / root
                gradient[ia] = -0.5 * c / (va * root)
                gradient[im] = -0.5 * c / (vm * root)
                out[correlation_name(f"{a}:{m}")] = with_se(c / root, gradient)
        return out
