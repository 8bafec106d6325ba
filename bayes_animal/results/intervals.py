"""The one highest-density interval of the package (arviz-stats'), for draws in any layout.

All intervals reported by bayes_animal are 95 % HDIs (ArviZ 1's default is an 89 %
equal-tailed interval; it is overridden everywhere through :data:`HDI_PROB`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HDI_PROB", "hdi"]

HDI_PROB = 0.95


def hdi(draws: np.ndarray, *, prob: float = HDI_PROB) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the HDI of each column of ``draws`` (draws along axis 0;
    a 1-D array is one column), by arviz-stats.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Lower and upper bounds, one per column (scalars' arrays of length 1 for 1-D input).
    """
    import arviz_stats as az

    values = np.asarray(draws, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    bounds = np.asarray(az.hdi(values, prob=prob, axis=0)).reshape(values.shape[1], 2)
    return bounds[:, 0], bounds[:, 1]
