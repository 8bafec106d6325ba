"""run_forked: pieces of one job at once in forked children, results back, failures redone
here (the chain groups of bayes.sampling and the figures of the fit command use it)."""

from __future__ import annotations

import os

import pytest

from bayes_animal.execution import can_fork, run_forked


def test_results_come_back_from_the_children_in_order():
    parent = os.getpid()
    results = run_forked(
        [lambda: ("first", os.getpid()), lambda: ("second", os.getpid()), lambda: [1, 2]],
        parallel=True,
    )
    assert [r[0] for r in results[:2]] == ["first", "second"] and results[2] == [1, 2]
    assert results[0][1] == parent
    if can_fork():
        assert results[1][1] != parent  # ran in a child


def test_not_parallel_runs_everything_here_in_order():
    order = []
    results = run_forked(
        [lambda: order.append(0) or 0, lambda: order.append(1) or 1], parallel=False
    )
    assert results == [0, 1] and order == [0, 1]


def test_a_failing_child_is_run_again_here_where_its_error_is_raised():
    parent = os.getpid()

    def fails_in_a_child():
        if os.getpid() != parent:
            raise RuntimeError("the child fails")
        return "here"

    assert run_forked([lambda: None, fails_in_a_child], parallel=True)[1] == "here"

    def always_fails():
        raise ValueError("a real error")

    with pytest.raises(ValueError, match="a real error"):
        run_forked([lambda: None, always_fails], parallel=True)


def test_a_result_that_cannot_be_pickled_is_made_here():
    parent = os.getpid()
    result = run_forked([lambda: None, lambda: lambda: os.getpid()], parallel=True)[1]
    assert result() == parent  # the child's lambda could not come back: remade here


def test_files_written_in_a_child_exist(tmp_path):
    """What the fit command relies on: a child's side effects (its figures) are there when
    run_forked returns."""
    target = tmp_path / "made.txt"
    run_forked([lambda: None, lambda: target.write_text("x")], parallel=True)
    assert target.read_text() == "x"


def test_an_error_here_stops_and_reaps_the_children(tmp_path):
    """When the work done here raises, the children (whose results are no longer wanted) are
    stopped and waited for: none is left running or as a zombie, and the error goes on."""
    import time

    if not can_fork():
        pytest.skip("children are forked on Linux only")
    marker = tmp_path / "child.pid"
    started = time.perf_counter()

    def child():
        marker.write_text(str(os.getpid()))
        time.sleep(30)

    def fails_here():
        while not marker.exists() or not marker.read_text():
            time.sleep(0.01)
        raise RuntimeError("here")

    with pytest.raises(RuntimeError, match="here"):
        run_forked([fails_here, child], parallel=True)
    assert time.perf_counter() - started < 10  # the sleeping child was stopped
    with pytest.raises(ChildProcessError):  # and reaped: it is no longer this process's child
        os.waitpid(int(marker.read_text()), os.WNOHANG)


def test_a_failing_child_is_redone_only_after_every_child_is_reaped(tmp_path):
    """Child 1 fails for real (its error is raised here, where it is redone) while child 2
    returns a result larger than a pipe's buffer: child 2 has been read and reaped first, so
    nothing is left blocked writing to a pipe nobody reads."""
    if not can_fork():
        pytest.skip("children are forked on Linux only")
    marker = tmp_path / "child.pid"

    def always_fails():
        raise ValueError("a real error")

    def large():
        marker.write_text(str(os.getpid()))
        return b"x" * 300_000

    with pytest.raises(ValueError, match="a real error"):
        run_forked([lambda: None, always_fails, large], parallel=True)
    with pytest.raises(ChildProcessError):  # reaped: no longer this process's child
        os.waitpid(int(marker.read_text()), os.WNOHANG)


def _marked_task(folder, task):
    """Task 0 fails at once; the others take a while and leave a mark when they ran."""
    import time
    from pathlib import Path

    if task == [0]:
        raise ValueError("task 0 failed")
    time.sleep(0.3)
    (Path(folder) / f"ran_{task[0]}").write_text("")
    return task


def test_a_failing_task_cancels_the_tasks_not_yet_started(tmp_path):
    """run_tasks raises the first error and does not start the tasks still waiting (20 tasks of
    0.3 s on 2 workers: those running or already handed to a worker's queue finish — a few;
    without the cancellation the pool's exit would wait for all 20)."""
    import pytest

    from bayes_animal.execution import run_tasks

    tasks = [[k] for k in range(20)]
    with pytest.raises(ValueError, match="task 0 failed"):
        run_tasks(_marked_task, str(tmp_path), tasks, lambda result: None, workers=2)
    assert len(list(tmp_path.glob("ran_*"))) <= 8
