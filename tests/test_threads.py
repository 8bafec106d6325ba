"""The one rule for BLAS threads: the environment variable wins, small dense blocks get one
thread, large ones the cores that other processes leave free."""

from __future__ import annotations

import os

import pytest

from bayes_animal.linalg import threads
from bayes_animal.linalg.threads import SMALL_DENSE, blas_threads, default_threads


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("BAYES_ANIMAL_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "3")
    assert default_threads() == 3
    assert default_threads(size=10) == 3  # even for a small block: the user asked
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "0")
    assert default_threads() == 1


def test_small_blocks_run_on_one_thread(two_cores, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads(size=SMALL_DENSE - 1) == 1
    assert default_threads(size=SMALL_DENSE) == 2
    assert default_threads() == 2


def test_busy_cores_are_left_alone(two_cores, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # another job on one core
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    assert default_threads() == 1  # never below one
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.4, 0.4))
    assert default_threads() == 2


def test_at_most_eight_threads(monkeypatch):
    monkeypatch.delenv("BAYES_ANIMAL_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 64)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert default_threads() == 8


def test_the_limit_is_applied_and_restored():
    from threadpoolctl import threadpool_info

    def blas():
        return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}

    before = blas()
    with blas_threads(1):
        assert blas() == {1}
        if threads.available_cores() >= 2:
            with blas_threads(2):
                assert blas() == {2}
            assert blas() == {1}
    assert blas() == before
