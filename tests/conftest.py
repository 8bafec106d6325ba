"""Shared fixtures: paths to ../shared/data (skipped with a reason when absent), small problems."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_animal import RelationshipMatrix

#: The README's claim, and every ASReml comparison's tolerance: our REML estimates equal
#: ASReml's printed values to 5e-6 relative (ASReml stops at its own tolerance; gryphon model 3's
#: additive variance is 4.2e-6 off) ...
ASREML_RTOL = 5e-6
#: ... and our SEs are within one unit of the last digit ASReml prints: 1e-4 (four decimals;
#: model 4's additive SE is 0.49627 against 0.4962) or 1e-3 (the lay-date model, three).
ASREML_SE_ATOL = 1e-4
ASREML_SE_ATOL_3_DECIMALS = 1e-3

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BAYES_ANIMAL_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_folder(name: str) -> Path:
    """The folder ../shared/data/<name>, or skip the test with the reason."""
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"reference data {folder} is not present (clone with ../shared beside it)")
    return folder


@pytest.fixture
def seed_sim() -> Path:
    return shared_folder("seed_sim")


@pytest.fixture
def mrode() -> Path:
    return shared_folder("mrode")


def random_relationship(q: int, rng: np.random.Generator, *, rank: int | None = None) -> np.ndarray:
    """A random PSD matrix with a diagonal near 1 (full rank unless ``rank`` is given)."""
    k = rank or 2 * q
    codes = rng.integers(0, 3, size=(k, q)).astype(float)
    codes -= codes.mean(axis=1, keepdims=True)
    matrix = codes.T @ codes / k
    if rank is None:
        matrix += 0.05 * np.eye(q)
    return matrix


def dense_restricted_loglik(V: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    r"""The REML log-likelihood of y ~ N(Xb, V) from V itself (O(n³), the oracle):
    :math:`\log \int N(y; Xb, V)\,db + \tfrac12 \log|X^\top X|`."""
    n, p = X.shape
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    P = Vi - Vi @ X @ np.linalg.solve(XtViX, X.T @ Vi)
    return -0.5 * (
        (n - p) * np.log(2 * np.pi)
        + np.linalg.slogdet(V)[1]
        + np.linalg.slogdet(XtViX)[1]
        - np.linalg.slogdet(X.T @ X)[1]
        + y @ P @ y
    )


def valid_thetas(params, rng: np.random.Generator, count: int = 3) -> list[np.ndarray]:
    """``count`` random θ of a model's parameters with every G₀ and R₀ positive definite."""
    out = []
    while len(out) < count:
        theta = np.zeros(params.size)
        for block in params.all_blocks:
            root = rng.standard_normal((block.size, block.size)) * 0.6 + np.eye(block.size)
            g = root @ root.T
            for i, term in enumerate(block.terms):
                theta[params.index(term)] = g[i, i]
            for i, j, name in block.covariances:
                theta[params.index(name)] = g[i, j]
        if params.valid(theta):
            out.append(theta)
    return out


def small_problem(
    seed: int,
    *,
    q: int = 30,
    n: int = 45,
    unphenotyped: int = 6,
    sigma2_u: float = 2.0,
    sigma2_e: float = 1.0,
) -> tuple[pd.DataFrame, RelationshipMatrix]:
    """Repeated records (Z ≠ I), some animals without records, a covariate and a factor."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"a{i}" for i in range(q)], dtype=object)
    A = random_relationship(q, rng)
    u = np.linalg.cholesky(sigma2_u * A) @ rng.standard_normal(q)
    phenotyped = ids[: q - unphenotyped]
    animals = rng.choice(phenotyped, size=n)
    animals[: len(phenotyped)] = phenotyped
    position = {a: i for i, a in enumerate(ids)}
    x = rng.standard_normal(n)
    sex = rng.choice(["F", "M"], size=n)
    y = 1.0 + 0.5 * x + (sex == "M") * 0.8 + u[[position[a] for a in animals]]
    y += rng.normal(0, np.sqrt(sigma2_e), n)
    data = pd.DataFrame({"animal": animals, "x": x, "sex": sex, "y": y})
    return data, RelationshipMatrix(ids=ids, matrix=A)


def herd_records(*, n_animals: int, n_herds: int, groups: int, seed: int):
    """A small simulated herd (4 generations) with an additive effect, a permanent environment
    and a herd-year group (variances 2, 1, 0.8, residual 2; 1-3 records per animal):
    ``(records, pedigree)``."""
    from bayes_animal.simulate import simulate_herd_pedigree, simulate_records

    table = simulate_herd_pedigree(n_animals=n_animals, n_generations=4, n_herds=n_herds, seed=seed)
    sim = simulate_records(
        table,
        variances={"additive": 2.0, "pe": 1.0, "hy": 0.8, "residual": 2.0},
        records_per_animal=(1, 3),
        groups={"hy": groups},
        seed=seed + 1,
    )
    return sim.data, table[["id", "sire", "dam"]]


def python_stdout(code: str) -> str:
    """What a fresh Python process running ``code`` prints (it must exit cleanly): for checks of
    what importing or running something imports, which this test process has long imported."""
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout
