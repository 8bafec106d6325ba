"""The one rule for BLAS threads: the environment variable wins, small dense blocks get one
thread, large ones the cores this process may use (affinity within the cgroup quota) — the
same whatever the load, unless BAYES_ANIMAL_THREADS=load asks for the cores other processes
leave free."""

from __future__ import annotations

import os

import pytest

from bayes_animal.linalg import threads
from bayes_animal.linalg.threads import SMALL_DENSE, blas_threads, default_threads


@pytest.fixture(autouse=True)
def fresh_looks(monkeypatch):
    """Every call looks afresh (no count reused from an earlier test)."""
    monkeypatch.setattr(threads, "REUSE_SECONDS", 0.0)
    monkeypatch.setattr(threads, "_recent", {})


@pytest.fixture
def two_cores(monkeypatch):
    """Two cores, and the opt-in count of the cores other processes are busy on."""
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "load")
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_running_here", lambda: 1)  # this process: one thread


def test_by_default_the_count_does_not_depend_on_the_load(monkeypatch):
    """Without the opt-in, another job busy on a core changes nothing: the same count (and so
    the same floating-point path) on an idle and a busy machine; /proc is not even read."""
    monkeypatch.delenv("BAYES_ANIMAL_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_running_now", lambda: pytest.fail("looked at the load"))
    assert default_threads() == 2
    assert default_threads(size=SMALL_DENSE - 1) == 1
    assert default_threads(size=SMALL_DENSE) == 2


def test_a_bad_environment_value_is_an_error_naming_it(monkeypatch):
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "two")
    with pytest.raises(ValueError, match="BAYES_ANIMAL_THREADS='two'.*'load'"):
        default_threads()


def test_the_cgroup_quota_limits_the_cores(monkeypatch, tmp_path):
    """A container's or a job's CPU quota bounds the cores, rounded up: cgroup v2's cpu.max on
    the process's own cgroup or any parent (the smallest), else v1's cfs files; 'max', −1 or
    a zero period is no quota."""
    own = tmp_path / "system.slice" / "job.scope"
    own.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "system.slice" / "cpu.max").write_text("150000 100000\n")
    (own / "cpu.max").write_text("max 100000\n")
    where = ("/system.slice/job.scope", None)
    assert threads._cgroup_quota(tmp_path, where) == 1.5  # the parent slice's quota
    (own / "cpu.max").write_text("300000 0\n")  # a zero period: no quota there
    assert threads._cgroup_quota(tmp_path, where) == 1.5
    (tmp_path / "system.slice" / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path, where) is None
    v1 = tmp_path / "cpu" / "batch"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    for name in ("cpu.max",):
        for folder in (tmp_path, tmp_path / "system.slice", own):
            (folder / name).unlink()
    assert threads._cgroup_quota(tmp_path, (None, "/batch")) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert threads._cgroup_quota(tmp_path, (None, "/batch")) is None
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    threads.available_cores.cache_clear()
    try:
        assert threads.available_cores() == 2
    finally:
        threads.available_cores.cache_clear()


def test_a_count_is_reused_for_a_second(two_cores, monkeypatch):
    # on a busy machine a count takes all the looks: the thousands of calls of a fit reuse it
    looks = []
    monkeypatch.setattr(threads, "_running_now", lambda: looks.append(1) or 2)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(threads, "REUSE_SECONDS", 1.0)
    clock = iter([100.0, 100.0, 100.5, 101.2, 101.2])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    assert [default_threads(), default_threads(), default_threads()] == [1, 1, 1]
    assert len(looks) == 2 * threads.LOOKS  # looked at 100.0 and at 101.2, not at 100.5


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "3")
    assert default_threads() == 3
    assert default_threads(size=10) == 3  # even for a small block: the user asked
    monkeypatch.setenv("BAYES_ANIMAL_THREADS", "0")
    assert default_threads() == 1


def test_small_blocks_run_on_one_thread(two_cores, monkeypatch):
    monkeypatch.setattr(threads, "_running_now", lambda: 1)  # only this process
    assert default_threads(size=SMALL_DENSE - 1) == 1
    assert default_threads(size=SMALL_DENSE) == 2
    assert default_threads() == 2


def test_busy_cores_are_left_alone(two_cores, monkeypatch):
    monkeypatch.setattr(threads, "_running_now", lambda: 2)  # this process and another job
    assert default_threads() == 1
    monkeypatch.setattr(threads, "_running_now", lambda: 6)
    assert default_threads() == 1  # never below one
    monkeypatch.setattr(threads, "_running_now", lambda: 1)
    assert default_threads() == 2


def test_a_passing_process_is_not_counted(two_cores, monkeypatch):
    # another task runnable for a few looks (the kernel's short work) is not another job
    looks = iter([3, 2, 2, 3, 1, 2])
    monkeypatch.setattr(threads, "_running_now", lambda: next(looks))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    assert default_threads() == 2
    assert next(looks) == 2  # the looks stopped at the first that saw only this process


def test_a_busy_process_is_seen_at_every_look(two_cores, monkeypatch):
    pauses = []
    monkeypatch.setattr(threads, "_running_now", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", pauses.append)
    assert default_threads() == 1
    assert len(pauses) == threads.LOOKS - 1  # spread over a few milliseconds
    assert sum(pauses) == pytest.approx((threads.LOOKS - 1) * threads.LOOK_INTERVAL)


def test_this_process_threads_are_not_another_job(two_cores, monkeypatch):
    monkeypatch.setattr(threads, "_running_now", lambda: 3)
    monkeypatch.setattr(threads, "_running_here", lambda: 3)  # e.g. its sampler's threads
    assert default_threads() == 2


def test_load_average_where_proc_is_missing(two_cores, monkeypatch):
    monkeypatch.setattr(threads, "_running_now", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.3, 1.0, 1.0))
    assert default_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert default_threads() == 2


def test_the_running_counts_are_read_from_proc():
    count = threads._running_now()
    assert count is None or count >= 1  # at least this process is running
    assert threads._running_here() >= 1


def test_at_most_eight_threads(monkeypatch):
    monkeypatch.delenv("BAYES_ANIMAL_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 64)
    monkeypatch.setattr(threads, "_running_now", lambda: 1)
    monkeypatch.setattr(threads, "_running_here", lambda: 1)
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


def test_a_nested_block_with_the_same_limit_costs_nothing(monkeypatch):
    calls = []
    real = threads._controller()

    class Counting:
        def limit(self, **options):
            calls.append(options["limits"])
            return real.limit(**options)

    monkeypatch.setattr(threads, "_controller", lambda: Counting())
    with blas_threads(1):
        with blas_threads(1), blas_threads(1):
            pass
        if threads.available_cores() >= 2:
            with blas_threads(2):
                pass
    assert calls[0] == 1 and calls.count(1) == 1
    assert threads._applied == []
