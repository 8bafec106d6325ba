r"""A family's latent values sampled with the variances; b and every u integrated out exactly.

Where a family has an observation-level effect (the Poisson family's overdispersion,
MCMCglmm's ``units``), each record has a latent value

.. math::

    l_i = x_i^\top b + \sum_k z_{ik}^\top u_k + e_i,\qquad e_i \sim N(0, \sigma_e^2),

and its count depends on :math:`l_i` alone: :math:`\log p(y_i \mid l_i) = y_i l_i - e^{l_i}
- \log y_i!`. Given θ the latent values are the records of a Gaussian animal model,
:math:`l \sim N(Xb, V)` with :math:`V = \sum_k \sigma_k^2 Z_k K_k Z_k^\top + \sigma_e^2 I`,
so b (flat prior) and every u integrate out exactly, as for a Gaussian trait:

.. math::

    \log p(x, l \mid y) = \log p(\theta(x)) + \log\Big|\frac{\partial\theta}{\partial x}\Big|
        + \ell_R(\theta; l) + \sum_i \log p(y_i \mid l_i) + \text{const},

with :math:`\ell_R(\theta; l)` the restricted log-likelihood of the sparse mixed-model
equations with l in the place of y (:math:`\exp \ell_R` is :math:`\int N(l; Xb, V)\,db` up to
a constant of X). Its score in θ is the Gaussian model's (one factorisation and its selected
inverse), and :math:`\partial\ell_R/\partial l = -Pl = -R^{-1}\hat e`, :math:`\hat e = l -
W\hat w` from the same solve; :math:`\partial \log p(y_i \mid l_i)/\partial l_i = y_i -
e^{l_i}`. NUTS moves in (x, l), k + n dimensions; b and every u are drawn afterwards from
:math:`N(\hat w(l), C(\theta)^{-1})` at each draw (perturb and solve), exactly.

**Where it serves.** Where the records pin their latent values (counts in the tens), the
posterior of (θ, l) is close to a Gaussian animal model's with l nearly known, which the
marginal model samples well; the non-centred joint there trades the additive and the
observation-level variances through every z and mixes slowly. On large simulated counts on
the gryphon pedigree (mean count about 19, σ²units 0.05) this density gave R-hat 1.004, 1.007
and 1.006 (seeds 1–3) where the non-centred joint had 1.041, 1.048 and 1.028 with its chains
doubled (``python benchmarks/run.py family_latent``). Where records say less about their
latent values the non-centred joint costs up to 2.2 times less per effective draw;
:func:`~bayes_animal.choice.choose_family_engine` chooses. Where REML puts the
observation-level variance at 0 the latent values are pinned to b and u as it shrinks and
NUTS crawls: ``AnimalModel`` refuses this model there.

**Centred, on purpose.** Each latent value is sampled as itself. Moving it to
:math:`l_i = c_i + s_i(\sigma_e^2)\,\zeta_i`, :math:`s_i = (w_i + 1/\sigma_e^2)^{-1/2}` at
the records' weights at REML (its conditional scale), with :math:`c_i` fixed at the latent
mode or moving with :math:`\sigma_e^2` as the conditional mean does, made it worse on the
large counts (seed 1): R-hat 1.12 and 1.09 with the chains doubled, 0.6 ESS(h²)/s against
20 — there the records and the observation-level prior say about as much of each latent
value, and NUTS moves :math:`\sigma_e^2` best through the latent values themselves.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

from .density import MarginalDensity, _SparseThetaLikelihood

__all__ = ["LatentDensity", "latent_obstacle"]


def latent_obstacle(design) -> str | None:
    """Why the latent values cannot be sampled with b and u integrated out (None where they
    can): a family without an observation-level effect has no Gaussian latent residual to
    integrate them with."""
    family = design.family
    if family.gaussian:
        return (
            "a Gaussian trait's latent values are its records: the marginal model "
            "(parameterisation='marginal') integrates b and every u out exactly"
        )
    if not family.observation_effect:
        return (
            f"the {family.label} family has no observation-level effect, so its latent values "
            "are not Gaussian given b and u (only the Poisson family with overdispersion has "
            "one)"
        )
    return None


class LatentDensity:
    r""":math:`\log p(x, l \mid y)` and its gradient (see the module docstring): the first
    ``k`` coordinates are the marginal model's free variables x, the other n each record's
    latent value l.

    Parameters
    ----------
    marginal
        The variance parameters' prior and transforms (its likelihood is not used: the
        restricted likelihood here is of l, which changes with every point).
    mme
        The analysed mixed-model equations of the design (one trait).
    family
        The records' family: Poisson, the one with an observation-level effect
        (:func:`latent_obstacle`).
    y, trials
        The records and the binomial trials (ones where there are none).
    """

    def __init__(
        self, marginal: MarginalDensity, mme, family, y: np.ndarray, trials: np.ndarray
    ) -> None:
        self.marginal = marginal
        self.equations = _SparseThetaLikelihood(mme)
        if family.name != "poisson":
            raise ValueError(
                f"The latent values' density is for Poisson records (the family with an "
                f"observation-level effect); this one is {family.label}."
            )
        self.family = family
        self.y = np.asarray(y, dtype=float)
        self.trials = np.asarray(trials, dtype=float)
        self.k = marginal.size
        self._log_factorials = float(np.sum(special.gammaln(self.y + 1.0)))  # Σ log yᵢ!

    @property
    def mme(self):
        return self.equations.mme

    @property
    def parameters(self):
        return self.marginal.parameters

    @property
    def variables(self):
        return self.marginal.variables

    @property
    def size(self) -> int:
        """k free variables and n latent values."""
        return self.k + len(self.y)

    def _restricted(self, theta: np.ndarray, latent: np.ndarray, *, score: bool):
        """The equations with l as the records at θ, and :math:`-Pl` (None outside the
        space)."""
        evaluation = self.equations._evaluation(theta, score=score, y=latent)
        if evaluation is None:
            return None, None
        return evaluation, -evaluation.scaled_residuals

    def _records(self, latent: np.ndarray) -> tuple[float, np.ndarray]:
        """:math:`\\sum_i \\log p(y_i \\mid l_i) = y^\\top l - \\sum_i e^{l_i} - \\sum_i \\log y_i!`
        and its gradient in l, :math:`y - e^{l}` (one exponential per record; the log
        factorials summed once)."""
        with np.errstate(over="ignore"):  # e^l past double range: log p = -inf there
            mean = np.exp(latent)
        value = float(self.y @ latent) - float(np.sum(mean)) - self._log_factorials
        return value, self.y - mean

    def __call__(self, x: np.ndarray, *, jacobian: bool = True) -> tuple[float, np.ndarray]:
        """``(log p(x, l | y), its gradient)``; −∞ and zeros outside the parameter space."""
        x = np.asarray(x, dtype=float)
        latent = x[self.k :]
        kept: dict[str, np.ndarray] = {}

        def likelihood(theta):
            evaluation, slope = self._restricted(theta, latent, score=True)
            if evaluation is None:
                return -np.inf, np.zeros_like(theta)
            kept["latent"] = slope
            return evaluation.loglik, evaluation.score

        value, gradient = self.marginal.evaluate(x[: self.k], likelihood, jacobian=jacobian)
        if not np.isfinite(value):
            return -np.inf, np.zeros(self.size)
        records, slope = self._records(latent)
        if not np.isfinite(records):
            return -np.inf, np.zeros(self.size)
        return value + records, np.concatenate([gradient, kept["latent"] + slope])

    def without_draws(self) -> LatentDensity:
        """Itself: what its value and gradient need is all it holds."""
        return self

    def theta(self, x: np.ndarray) -> np.ndarray:
        """θ at x (the first k coordinates)."""
        return self.marginal.theta(np.asarray(x)[: self.k])

    def constrained(self, x: np.ndarray) -> dict[str, float]:
        """The free variables' values at x."""
        return self.marginal.constrained(np.asarray(x)[: self.k])

    def draws(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """For draws x (S × (k + n)): each free variable's values and each parameter θ by
        name (:meth:`~bayes_animal.bayes.density.MarginalDensity.draws`)."""
        return self.marginal.draws(np.atleast_2d(x)[:, : self.k])

    def latent_draws(self, x: np.ndarray) -> np.ndarray:
        """The latent values of draws x (… × n)."""
        return np.asarray(x)[..., self.k :]

    def latent_mode(self, theta: np.ndarray) -> np.ndarray:
        r"""The latent values' mode at θ: :math:`\arg\max_l\, \ell_R(\theta; l) + \sum_i \log
        p(y_i \mid l_i)` by L-BFGS from :math:`\log(y_i + \tfrac12)` (each step one
        factorisation, no selected inverse) — the sampler's start."""
        start = np.log(self.y / self.trials + 0.5)

        def objective(latent):
            evaluation, slope = self._restricted(theta, latent, score=False)
            records, score = self._records(latent)
            if evaluation is None or not np.isfinite(records):
                return 1e300, np.zeros_like(latent)
            return -(evaluation.loglik + records), -(slope + score)

        best = optimize.minimize(objective, start, jac=True, method="L-BFGS-B")
        return best.x if np.isfinite(best.fun) and best.fun < 1e300 else start

    def start(self, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""The sampler's start from the marginal model's (``x0``, the REML estimate): the
        latent values at their mode given θ(x0), and their variances
        :math:`1/(w_i + 1/\sigma_e^2)` (the records' Fisher weights :math:`w_i` there and the
        observation-level variance) to whiten them by, which nutpie's adaptation then
        refines."""
        theta = self.marginal.theta(x0)
        latent = self.latent_mode(theta)
        residual = float(self.mme.parameters.g0(theta, self.parameters.residual)[0, 0])
        weights = self.family.derivatives(self.y, self.trials, latent, expected=True)[1]
        return np.concatenate([x0, latent]), 1.0 / (weights + 1.0 / residual)
