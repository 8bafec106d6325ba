r"""The response's family: how a record depends on its latent (liability) value.

Every model here has a latent scale :math:`\eta = Xb + \sum_k Z_k u_k` on which the random
effects are Gaussian; the family says how a record :math:`y_i` depends on :math:`\eta_i`:

- ``gaussian`` (identity): :math:`N(\eta_i, \sigma^2)`, the residual :math:`\sigma^2`
  estimated;
- ``binomial`` (``probit``): :math:`y\log\Phi(\eta) + (n-y)\log\Phi(-\eta)`, the latent
  residual fixed at 1 (the threshold model);
- ``binomial`` (``logit``): :math:`y\eta - n\log(1 + e^\eta)`, the latent residual fixed at
  :math:`\pi^2/3`;
- ``ordinal`` (``probit``, the cumulative probit): a record is in category :math:`k` of
  :math:`K` when its liability is between the cut-points :math:`c_{k-1}` and :math:`c_k`,
  :math:`\log(\Phi(c_k - \eta) - \Phi(c_{k-1} - \eta))` with :math:`c_0 = -\infty`,
  :math:`c_K = \infty` and :math:`c_1 = 0` (the intercept takes its place), the latent
  residual fixed at 1;
- ``poisson`` (``log``): :math:`y(\eta + e_i) - e^{\eta + e_i}`, the latent residual the
  variance :math:`\sigma_e^2` of the observation-level effect :math:`e_i`, estimated
  (``overdispersion``; 0 without it)

(binomial coefficients and :math:`\log y!` included: the log-likelihoods equal glmer's).
``family="threshold"`` is the binomial probit, as MCMCglmm spells it: its residual on the
liability scale is fixed at 1, so a record is 1 when the liability
:math:`\eta_i + \varepsilon_i`, :math:`\varepsilon_i \sim N(0, 1)`, is above 0. The logit's
:math:`\pi^2/3` is the variance of the standard logistic distribution: the logit model is the
threshold model with a logistic residual. The Poisson family's observation-level effect
(MCMCglmm's ``units``) is the residual of the latent scale and is estimated; without it
(``overdispersion=False``) the latent residual is 0.

**Scales** of the proportions (de Villemereuil et al. 2016, *Genetics* 204:1281; QGglmm).
On the latent scale :math:`h^2 = \sigma_A^2 / (\sum_k \sigma_k^2 + \sigma_R^2)` with the
latent residual above. On the observed data scale,
:math:`h^2_{obs} = \bar\Psi^2 \sigma_A^2 / V_{obs}`, with :math:`\bar\Psi` the mean over the
records of :math:`E[\partial g^{-1}/\partial \eta]` and :math:`V_{obs}` the variance of the
records, both over the latent distribution :math:`\eta_i \sim N(\mu_i, V_\eta)`,
:math:`\mu_i = x_i^\top b` the fixed-effect prediction and :math:`V_\eta` the sum of the random
variances (the observation-level one included):

- probit: :math:`E[p_i] = \Phi(\mu_i/\sqrt{1 + V_\eta})`,
  :math:`\Psi_i = \phi(\mu_i/\sqrt{1+V_\eta})/\sqrt{1+V_\eta}` — Dempster and Lerner's
  :math:`h^2_{obs} = h^2 \phi(t)^2 / (p(1-p))` for one mean;
- logit: the same expectations by Gauss–Hermite quadrature;
- log: :math:`E[\lambda_i] = \Psi_i = e^{\mu_i + V_\eta/2}`,
  :math:`V(y_i) = E[\lambda_i]^2 (e^{V_\eta} - 1) + E[\lambda_i]`;

and :math:`V_{obs}` the mean of the records' variances plus the variance of their means
(:math:`\bar p (1 - \bar p)` for a binary trait). For a binomial with several trials per
record the observed scale is that of one trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ROWS, DataError, FormulaError, describe_items

__all__ = [
    "FAMILIES",
    "GAUSSIAN",
    "Family",
    "family_of",
    "observed_heritability",
    "observed_heritability_draws",
]

#: The families and the links each takes (the first is the default).
FAMILIES: dict[str, tuple[str, ...]] = {
    "gaussian": ("identity",),
    "binomial": ("probit", "logit"),
    "threshold": ("probit",),
    "ordinal": ("probit",),
    "poisson": ("log",),
}

_HERMITE = np.polynomial.hermite_e.hermegauss(40)


@dataclass(frozen=True)
class Family:
    """A response family and its link (see the module docstring).

    Attributes
    ----------
    name
        ``"gaussian"``, ``"binomial"`` or ``"poisson"`` (``"threshold"`` is read as the
        binomial probit).
    link
        ``"identity"``, ``"probit"``, ``"logit"`` or ``"log"``.
    overdispersion
        Poisson: an observation-level effect (the latent residual) is estimated.
    """

    name: str = "gaussian"
    link: str = "identity"
    overdispersion: bool = False

    @property
    def gaussian(self) -> bool:
        """The Gaussian family (the mixed-model equations' exact likelihood)."""
        return self.name == "gaussian"

    @property
    def label(self) -> str:
        """``binomial(probit)``, ``poisson(log)`` … as printed."""
        extra = ", overdispersion" if self.overdispersion else ""
        return f"{self.name}({self.link}{extra})"

    @property
    def residual_fixed(self) -> float | None:
        """The latent residual variance where the family fixes it (probit 1, logit π²/3,
        Poisson without overdispersion 0); None where it is estimated."""
        if self.name == "binomial":
            return 1.0 if self.link == "probit" else math.pi**2 / 3.0
        if self.name == "ordinal":
            return 1.0
        if self.name == "poisson" and not self.overdispersion:
            return 0.0
        return None

    @property
    def held(self) -> dict[str, float]:
        """The variance parameters the family holds at a value (``{"residual": …}`` where it
        fixes the latent residual, else empty): no prior, no free variable, no SE."""
        value = self.residual_fixed
        return {} if value is None else {"residual": value}

    def latent_terms(self, variances) -> list[str]:
        """The variances whose sum is :math:`V_\\eta`, the latent variance of the observed
        scale: every random term's, and the residual's where it is the observation-level
        effect (not a probit's or logit's fixed residual, which is in the link)."""
        return [n for n in variances if n != "residual" or self.observation_effect]

    @property
    def observation_effect(self) -> bool:
        """The latent residual is an effect of each record integrated out with the others
        (the Poisson family's overdispersion)."""
        return self.name == "poisson" and self.overdispersion

    # -- the response ----------------------------------------------------------------------
    def check_response(
        self, y: np.ndarray, trials: np.ndarray | None, shown: np.ndarray, name: str
    ) -> None:
        """Raise a DataError naming the rows where ``y`` is outside the family's support.

        Parameters
        ----------
        y
            The responses of the records kept (successes for a binomial with trials).
        trials
            The binomial's trials per record (None: one).
        shown
            The rows as the messages call them.
        name
            The response as written.
        """
        if self.gaussian:
            return
        if self.name == "binomial":
            if trials is None:
                bad = (y != 0) & (y != 1)
                if bad.any():
                    values = describe_items(np.unique(y[bad]))
                    raise DataError(
                        f"The response {name!r} of a binomial ({self.link}) model must be 0 or "
                        f"1; it is {values} in {ROWS} {describe_items(shown[bad])}. Recode it "
                        "(e.g. `y = (y == 'case')`), or give successes and failures as "
                        "`cbind(successes, failures) ~ …`."
                    )
            else:
                bad = (y < 0) | (y != np.round(y)) | (trials - y < 0) | (trials != np.round(trials))
                if bad.any():
                    raise DataError(
                        f"The successes and failures of {name!r} must be counts (integers "
                        f"≥ 0); {ROWS} {describe_items(shown[bad])} are not. Fix those records."
                    )
                empty = trials == 0
                if empty.any():
                    raise DataError(
                        f"{ROWS.capitalize()} {describe_items(shown[empty])} of {name!r} have no "
                        "trials "
                        "(0 successes and 0 failures): they carry no information. Remove them."
                    )
            self._check_separation(y, trials, shown, name)
        elif self.name == "ordinal":
            bad = y != np.round(y)
            if bad.any():
                values = describe_items(np.unique(y[bad]))
                raise DataError(
                    f"The response {name!r} of an ordinal model must be integer category codes "
                    f"(1, 2, 3 …); it is {values} in {ROWS} {describe_items(shown[bad])}."
                )
            codes = np.unique(y)
            if len(codes) < 2:
                raise DataError(
                    f"Every record of {name!r} is in one category ({describe_items(codes)}): "
                    "an ordinal model needs at least two."
                )
            empty = sorted(set(range(int(codes.min()), int(codes.max()) + 1)) - set(codes))
            if empty:
                raise DataError(
                    f"The ordinal response {name!r} has no record in the categor(y/ies) "
                    f"{describe_items(empty)} between {int(codes.min())} and "
                    f"{int(codes.max())}: a cut-point beside an empty category is not "
                    "identified. Merge it with a neighbour (recode the categories)."
                )
        elif self.name == "poisson":
            bad = (y < 0) | (y != np.round(y))
            if bad.any():
                values = describe_items(np.unique(y[bad]))
                raise DataError(
                    f"The response {name!r} of a Poisson model must be a count (an integer "
                    f"≥ 0); it is {values} in {ROWS} {describe_items(shown[bad])}. A "
                    "continuous positive trait is better log-transformed and fitted as "
                    "gaussian."
                )

    def _check_separation(
        self, y: np.ndarray, trials: np.ndarray | None, shown: np.ndarray, name: str
    ) -> None:
        """All records the same outcome: nothing separates the liabilities."""
        n = np.ones_like(y) if trials is None else trials
        if np.all(y == 0) or np.all(y == n):
            outcome = "0 (failures)" if np.all(y == 0) else "successes"
            raise DataError(
                f"Every record of {name!r} is {outcome}: a binomial model has no information "
                "about the liabilities' variances or the mean. Check the coding of the "
                f"response ({len(y)} records)."
            )

    # -- log-likelihood and its derivatives in η ------------------------------------------
    def log_density(
        self,
        y: np.ndarray,
        trials: np.ndarray,
        eta: np.ndarray,
        cutpoints: np.ndarray | None = None,
    ) -> np.ndarray:
        """:math:`\\log p(y_i \\mid \\eta_i)` of every record (constants included); an
        ordinal response is its category's code 0 … K − 1, with the K − 1 ``cutpoints``."""
        from scipy import special

        if self.name == "ordinal":
            return _ordinal_terms(y, eta, cutpoints)[0]
        if self.name == "binomial":
            coefficient = (
                special.gammaln(trials + 1.0)
                - special.gammaln(y + 1.0)
                - special.gammaln(trials - y + 1.0)
            )
            if self.link == "probit":
                up, down = special.log_ndtr(eta), special.log_ndtr(-eta)
            else:
                up, down = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
            return coefficient + y * up + (trials - y) * down
        if self.name == "poisson":
            with np.errstate(over="ignore"):  # e^η past double range: log p = -inf there
                mean = np.exp(eta)
            return y * eta - mean - special.gammaln(y + 1.0)
        raise ValueError("log_density is for the non-Gaussian families")

    def derivatives(
        self,
        y: np.ndarray,
        trials: np.ndarray,
        eta: np.ndarray,
        cutpoints: np.ndarray | None = None,
        *,
        expected: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(s, w, w')``: :math:`s = \\partial \\log p/\\partial \\eta`, the weight
        :math:`w = -\\partial^2 \\log p/\\partial\\eta^2` (``expected=True``: its expectation,
        Fisher's, as glmer's Laplace uses) and :math:`w' = \\partial w/\\partial\\eta` (of the
        observed weight)."""
        if self.name == "ordinal":
            _, g1, g2, g3 = _ordinal_terms(y, eta, cutpoints)
            return g1, g1 * g1 - g2, 3.0 * g1 * g2 - 2.0 * g1**3 - g3
        if self.name == "binomial" and self.link == "probit":
            g1u, g2u, g3u = _log_ndtr_derivatives(eta)
            g1d, g2d, g3d = _log_ndtr_derivatives(-eta)
            f = trials - y
            s = y * g1u - f * g1d
            w = -(y * g2u + f * g2d)
            dw = -(y * g3u - f * g3d)
            if expected:
                from scipy import special

                log_phi = -0.5 * eta * eta - 0.5 * math.log(2.0 * math.pi)
                w = trials * np.exp(2.0 * log_phi - special.log_ndtr(eta) - special.log_ndtr(-eta))
            return s, w, dw
        if self.name == "binomial":
            from scipy import special

            p = special.expit(eta)
            q = special.expit(-eta)
            w = trials * p * q
            return y - trials * p, w, w * (q - p)
        if self.name == "poisson":
            mu = np.exp(eta)
            return y - mu, mu, mu
        raise ValueError("derivatives are for the non-Gaussian families")

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """The inverse link :math:`g^{-1}(\\eta)`: a probability or an expected count."""
        from scipy import special

        if self.link == "probit":
            return special.ndtr(eta)
        if self.link == "logit":
            return special.expit(eta)
        if self.link == "log":
            return np.exp(eta)
        return eta


def _ordinal_terms(y: np.ndarray, eta: np.ndarray, cutpoints: np.ndarray | None):
    r"""For the cumulative probit, :math:`\log P` of each record's category and the ratios
    :math:`g_j = (\phi^{(j)}\text{-terms})/P` whose combinations are the derivatives in
    :math:`\eta`: with :math:`a = c_{k-1} - \eta`, :math:`b = c_k - \eta`,
    :math:`g_1 = (\phi(a) - \phi(b))/P = \partial\log P/\partial\eta`,
    :math:`g_2 = (a\phi(a) - b\phi(b))/P`, :math:`g_3 = ((a^2-1)\phi(a) - (b^2-1)\phi(b))/P`,
    so that :math:`\partial^2 \log P/\partial\eta^2 = g_2 - g_1^2` and
    :math:`\partial^3 = g_3 - 3g_1g_2 + 2g_1^3`. ``P`` is taken from the tail it lies in (no
    cancellation), the open ends contributing 0."""
    from scipy import special

    if cutpoints is None:
        raise ValueError("the ordinal family needs its cut-points")
    edges = np.concatenate([[-np.inf], np.asarray(cutpoints, dtype=float), [np.inf]])
    codes = np.asarray(y, dtype=np.int64)
    a = edges[codes] - eta
    b = edges[codes + 1] - eta
    upper = a > 0  # both ends above 0: P = Φ(−a) − Φ(−b), no cancellation
    log_high = np.where(upper, special.log_ndtr(-a), special.log_ndtr(b))
    log_low = np.where(upper, special.log_ndtr(-b), special.log_ndtr(a))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = log_high + np.log1p(-np.exp(log_low - log_high))

    def term(t: np.ndarray, power: int) -> np.ndarray:
        finite = np.isfinite(t)
        safe = np.where(finite, t, 0.0)
        density = np.exp(-0.5 * safe * safe - 0.5 * math.log(2.0 * math.pi) - log_p)
        factor = 1.0 if power == 0 else safe if power == 1 else safe * safe - 1.0
        return np.where(finite, factor * density, 0.0)

    g1 = term(a, 0) - term(b, 0)
    g2 = term(a, 1) - term(b, 1)
    g3 = term(a, 2) - term(b, 2)
    return log_p, g1, g2, g3


def _log_ndtr_derivatives(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The first three derivatives of :math:`\log\Phi(t)`, stable in both tails:
    :math:`m = \phi/\Phi`, :math:`m' = -m(t+m)`, :math:`m'' = -m'(t + m) - m(1 + m')`."""
    from scipy import special

    m = np.exp(-0.5 * t * t - 0.5 * math.log(2.0 * math.pi) - special.log_ndtr(t))
    d1 = -m * (t + m)
    d2 = -d1 * (t + m) - m * (1.0 + d1)
    return m, d1, d2


GAUSSIAN = Family()


def family_of(
    family: str | Family | None = None,
    link: str | None = None,
    overdispersion: bool | str | None = None,
) -> Family:
    """The family the user named, checked.

    Parameters
    ----------
    family
        ``"gaussian"`` (default), ``"binomial"``, ``"threshold"`` (the binomial probit, as in
        MCMCglmm) or ``"poisson"``; or a :class:`Family`.
    link
        The link (default: the family's first in :data:`FAMILIES`).
    overdispersion
        Poisson only: ``True``/``"units"`` (default) fits an observation-level effect,
        ``False``/``"none"`` drops it.

    Raises
    ------
    FormulaError
        An unknown family or link, or an option the family does not take.
    """
    if isinstance(family, Family):
        return family
    name = "gaussian" if family is None else str(family).lower()
    if name not in FAMILIES:
        raise FormulaError(
            f"Unknown family {family!r}: choose one of {', '.join(FAMILIES)} (family='binomial', "
            "--family binomial)."
        )
    links = FAMILIES[name]
    chosen = links[0] if link is None else str(link).lower()
    if chosen not in links:
        raise FormulaError(f"The {name} family takes the link {' or '.join(links)}, not {link!r}.")
    if isinstance(overdispersion, str):
        if overdispersion.lower() not in ("units", "none"):
            raise FormulaError(f"overdispersion must be 'units' or 'none', not {overdispersion!r}.")
        overdispersion = overdispersion.lower() == "units"
    if name != "poisson" and overdispersion:
        raise FormulaError(
            f"overdispersion is an option of the poisson family, not of {name}: the latent "
            "residual of a binomial model is fixed (1 for probit, π²/3 for logit) and a "
            "Gaussian model's residual is its own."
        )
    if name == "threshold":
        name = "binomial"
    if name == "poisson":
        return Family(name, chosen, True if overdispersion is None else bool(overdispersion))
    if name == "ordinal":
        return Family(name, chosen, False)
    return Family(name, chosen, False)


def _binary_moments(family: Family, mu: np.ndarray, v_eta: np.ndarray):
    """``(E[p], E[dp/dη])`` of each μ (rows) at each latent variance (columns)."""
    from scipy import special

    if family.link == "probit":
        scale = np.sqrt(1.0 + v_eta)
        z = mu / scale
        return special.ndtr(z), np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / scale
    nodes, weights = _HERMITE
    weights = weights / weights.sum()
    eta = mu[..., None] + np.sqrt(v_eta)[..., None] * nodes
    p = special.expit(eta)
    return p @ weights, (p * (1.0 - p)) @ weights


def observed_heritability(
    family: Family,
    mu: np.ndarray,
    v_eta: np.ndarray,
    v_a: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    r""":math:`h^2` on the observed data scale (see the module docstring).

    Parameters
    ----------
    family
        A non-Gaussian family.
    mu
        The records' fixed-effect predictions :math:`x_i^\top b`: a vector, or one row per
        draw (draws × records).
    v_eta
        The latent variance :math:`V_\eta` (every random variance, the observation-level one
        included, not the probit's or logit's fixed residual): a number or one per draw.
    v_a
        The additive genetic variance, alike.
    weights
        How many records share each μ (when ``mu`` holds distinct predictions only).

    Returns
    -------
    numpy.ndarray
        One value per draw (a 0-d array for one).
    """
    v_eta = np.asarray(v_eta, dtype=float)
    v_a = np.asarray(v_a, dtype=float)
    mu = np.asarray(mu, dtype=float)
    if mu.ndim == 1:
        mu = np.broadcast_to(mu, (*v_eta.shape, len(mu)))
    v = v_eta[..., None]
    share = (
        np.full(mu.shape[-1], 1.0 / mu.shape[-1]) if weights is None else weights / np.sum(weights)
    )

    def mean(values: np.ndarray) -> np.ndarray:
        return values @ share

    if family.name == "binomial":
        p, psi = _binary_moments(family, mu, np.broadcast_to(v, mu.shape))
        p_bar = mean(p)
        v_obs = p_bar * (1.0 - p_bar)
    elif family.name == "poisson":
        lam = np.exp(mu + 0.5 * v)
        psi = lam
        within = lam * lam * np.expm1(v) + lam
        lam_bar = mean(lam)
        v_obs = mean(within) + mean(lam * lam) - lam_bar * lam_bar
    else:
        raise ValueError("the observed scale is for the non-Gaussian families")
    return mean(psi) ** 2 * v_a / v_obs


def observed_heritability_draws(
    family: Family,
    X: np.ndarray,
    beta: np.ndarray,
    v_eta: np.ndarray,
    v_a: np.ndarray,
    *,
    chunk: int = 64,
) -> np.ndarray:
    """:func:`observed_heritability` for each posterior draw (rows of ``beta``, ``v_eta``,
    ``v_a``): the records' predictions come from the distinct rows of X, a chunk of draws at
    a time."""
    rows, counts = np.unique(np.asarray(X, dtype=float), axis=0, return_counts=True)
    beta = np.atleast_2d(beta)
    nodes = len(_HERMITE[0]) if family.link == "logit" else 1
    chunk = max(1, min(chunk, 4_000_000 // (len(rows) * nodes)))
    out = np.empty(len(beta))
    for start in range(0, len(beta), chunk):
        part = slice(start, start + chunk)
        mu = beta[part] @ rows.T
        out[part] = observed_heritability(
            family, mu, np.asarray(v_eta)[part], np.asarray(v_a)[part], weights=counts
        )
    return out
