"""run_beside: pieces of one job at once, the first here and the others in worker processes of
their own (fresh interpreters: the chain groups of bayes.sampling and the figures of the fit
command use it); run_tasks: batches, cancelled on a failure."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from bayes_animal.errors import BayesAnimalError
from bayes_animal.execution import Worker, run_beside


def _pid_and(label):
    return label, os.getpid()


def _fails(message):
    raise ValueError(message)


def _write(path, text):
    Path(path).write_text(text)
    return text


def _sleep_after_marking(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(30)


def _exit_hard():
    os._exit(3)


def _unpicklable_result():
    return lambda: None


def _imported(name):
    return name in sys.modules


def test_results_come_back_from_the_workers_in_order():
    results = run_beside(
        [partial(_pid_and, "first"), partial(_pid_and, "second"), partial(_pid_and, "third")],
        parallel=True,
    )
    assert [r[0] for r in results] == ["first", "second", "third"]
    assert results[0][1] == os.getpid()
    assert len({r[1] for r in results}) == 3  # each in a process of its own


def test_not_parallel_runs_everything_here_in_order():
    order = []
    results = run_beside(
        [lambda: order.append(0) or 0, lambda: order.append(1) or 1], parallel=False
    )
    assert results == [0, 1] and order == [0, 1]


def test_a_workers_error_is_raised_here_with_its_traceback_and_not_run_again(tmp_path):
    with pytest.raises(ValueError, match="the worker fails") as raised:
        run_beside([lambda: None, partial(_fails, "the worker fails")], parallel=True)
    notes = "\n".join(getattr(raised.value, "__notes__", []))
    assert "raised in worker process 1" in notes and "_fails" in notes


def test_a_result_that_cannot_be_pickled_is_an_error_from_the_worker():
    with pytest.raises(Exception, match="pickle|lambda") as raised:
        run_beside([lambda: None, _unpicklable_result], parallel=True)
    assert "raised in worker process 1" in "\n".join(getattr(raised.value, "__notes__", []))


def test_a_worker_that_dies_without_an_answer_is_a_clear_error():
    with pytest.raises(BayesAnimalError, match=r"Worker process 1 ended with exit status 3"):
        run_beside([lambda: None, _exit_hard], parallel=True)


def test_files_written_in_a_worker_exist(tmp_path):
    """What the fit command relies on: a worker's side effects (its figures) are there when
    run_beside returns."""
    target = tmp_path / "made.txt"
    assert run_beside([lambda: None, partial(_write, target, "x")], parallel=True)[1] == "x"
    assert target.read_text() == "x"


def test_an_error_here_stops_and_reaps_the_workers(tmp_path):
    """When the work done here raises, the workers (whose results are no longer wanted) are
    killed and waited for: none is left running, and the error goes on."""
    marker = tmp_path / "worker.pid"
    started = time.perf_counter()

    def fails_here():
        while not marker.exists() or not marker.read_text():
            time.sleep(0.01)
        raise RuntimeError("here")

    with pytest.raises(RuntimeError, match="here"):
        run_beside([fails_here, partial(_sleep_after_marking, marker)], parallel=True)
    assert time.perf_counter() - started < 20  # the sleeping worker was stopped
    pid = int(marker.read_text())
    with pytest.raises(ChildProcessError):  # and reaped: no longer this process's child
        os.waitpid(pid, os.WNOHANG)


def test_a_worker_started_early_has_its_modules_imported_and_one_unused_just_ends():
    with Worker(["json"]) as worker:
        assert run_beside(
            [lambda: None, partial(_imported, "json")], parallel=True, workers=[worker]
        ) == [None, True]
    unused = Worker(["json"])
    started = time.perf_counter()
    unused.stop()
    assert unused.process.returncode is not None and time.perf_counter() - started < 5


def test_a_script_without_a_main_guard_runs_work_in_a_worker(tmp_path):
    """The worker never imports the caller's __main__: a script with no
    ``if __name__ == "__main__":`` guard does not run itself again (spawn and forkserver
    would)."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import os\n"
        "from functools import partial\n"
        "from bayes_animal.execution import run_beside\n"
        "print('script body ran', flush=True)\n"
        "results = run_beside([os.getpid, os.getpid], parallel=True)\n"
        "assert results[0] != results[1]\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script body ran") == 1 and done.stdout.strip().endswith("ok")


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


class _TwoArguments(Exception):
    """Pickles, but does not unpickle (its __init__ needs two arguments, args holds one)."""

    def __init__(self, first, second):
        super().__init__(f"{first} and {second}")


def _raises_two_arguments():
    raise _TwoArguments("one", "two")


def _warns_then_returns():
    import warnings

    warnings.warn("from the worker", UserWarning, stacklevel=1)
    return 7


def _returns_a_tuple():
    return ("error", "not an error", "a plain tuple")


def test_an_exception_that_does_not_unpickle_still_comes_back_with_its_text():
    with pytest.raises(RuntimeError, match="one and two") as raised:
        run_beside([lambda: None, _raises_two_arguments], parallel=True)
    assert "_raises_two_arguments" in "\n".join(getattr(raised.value, "__notes__", []))


def test_a_workers_warnings_are_issued_here():
    with pytest.warns(UserWarning, match="from the worker"):
        assert run_beside([lambda: None, _warns_then_returns], parallel=True)[1] == 7


def test_a_tuple_result_is_a_result():
    result = run_beside([lambda: None, _returns_a_tuple], parallel=True)[1]
    assert result == ("error", "not an error", "a plain tuple")


def test_a_module_the_worker_cannot_import_is_its_error():
    worker = Worker(["no_such_module_here"])
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):
        run_beside([lambda: None, partial(_pid_and, "x")], parallel=True, workers=[worker])


def test_the_worker_keeps_this_processs_blas_limit():
    from bayes_animal.linalg.threads import blas_threads

    with blas_threads(1):
        limits = run_beside([lambda: None, _blas_threads_there], parallel=True)[1]
    assert limits == {1}


def _blas_threads_there():
    from threadpoolctl import threadpool_info

    return {info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """A parent killed mid-work (no chance to stop its worker): the worker notices within
    seconds and ends instead of working on for nobody."""
    marker = tmp_path / "worker.pid"
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from functools import partial\n"
        "from bayes_animal.execution import run_beside\n"
        "import test_execution as t\n"
        f"run_beside([lambda: __import__('time').sleep(60), partial(t._sleep_after_marking, "
        f"{str(marker)!r})], parallel=True)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.perf_counter() + 60
        while not (marker.exists() and marker.read_text()) and time.perf_counter() < deadline:
            time.sleep(0.05)
        pid = int(marker.read_text())
    finally:
        parent.kill()
        parent.wait(timeout=30)
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker outlived its parent")
