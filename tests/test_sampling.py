"""nutpie on the hand-derived density (bayes.sampling): nutpie imported without ArviZ, its raw
trace read as nutpie's own conversion reads it, and the caller's work done while the chains run.

The chain groups' equality in one process or two, and errors raised inside the density, are
tested in test_density.py beside the density itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bayes_animal import AnimalModel, simulate_reference
from bayes_animal.bayes import sampling


def _run(script: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr


def test_nutpie_is_imported_without_arviz_and_arviz_still_works_after():
    """import_nutpie leaves ArviZ (and matplotlib) unimported; an ``import arviz`` afterwards
    gets the real package, and nutpie's own conversion to a DataTree, which uses it, works."""
    _run(
        "import sys, types\n"
        "import numpy as np\n"
        "from bayes_animal.bayes.sampling import import_nutpie\n"
        "nutpie = import_nutpie()\n"
        "assert 'arviz' not in sys.modules and 'matplotlib' not in sys.modules\n"
        "from nutpie.compiled_pyfunc import from_pyfunc\n"
        "def make_logp():\n"
        "    return lambda z: (-0.5 * float(z @ z), -z)\n"
        "def make_expand(a, b, c):\n"
        "    return lambda z: {'z': np.array(z)}\n"
        "model = from_pyfunc(2, make_logp, make_expand, [np.dtype('float64')], [(2,)], ['z'],\n"
        "    make_initial_point_fn=lambda s: np.random.default_rng(s).uniform(-.5, .5, 2))\n"
        "tree = nutpie.sample(model, draws=20, tune=20, chains=1, seed=1, progress_bar=False)\n"
        "import arviz\n"
        "assert type(arviz) is types.ModuleType and hasattr(arviz, 'from_dict')\n"
        "assert tree['posterior']['z'].shape == (1, 20, 2)\n"
        "print('ok')\n"
    )


def test_the_raw_trace_reads_as_nutpies_own_conversion():
    """The kept draws of z and the sample statistics read from the raw Arrow trace equal those
    of nutpie's conversion to a DataTree (same model and seed): values, shapes and types."""
    nutpie = sampling.import_nutpie()
    from nutpie.compiled_pyfunc import from_pyfunc

    scale = np.array([1.0, 3.0, 0.5])

    def make_logp():
        return lambda z: (-0.5 * float(np.sum((z / scale) ** 2)), -z / scale**2)

    def make_expand(seed1, seed2, chain):
        return lambda z: {"z": np.array(z, dtype=float)}

    model = from_pyfunc(
        3, make_logp, make_expand, [np.dtype("float64")], [(3,)], ["z"],
        make_initial_point_fn=lambda s: np.random.default_rng(s).uniform(-0.5, 0.5, 3),
    )  # fmt: skip
    options = {"draws": 60, "tune": 40, "chains": 2, "cores": 1, "seed": 3}
    options |= {"save_warmup": False, "progress_bar": False}
    tree = nutpie.sample(model, **options)
    raw = nutpie.sample(model, **options, return_raw_trace=True)
    z, stats = sampling._trace_arrays(raw, 3, 60)
    expected = tree["posterior"]["z"].values
    assert z.shape == expected.shape == (2, 60, 3)
    np.testing.assert_array_equal(z, expected)
    assert set(stats) == set(sampling.SAMPLE_STATS.values())
    for name, renamed in sampling.SAMPLE_STATS.items():
        reference = tree["sample_stats"][name].values
        assert stats[renamed].dtype == reference.dtype, name
        np.testing.assert_array_equal(stats[renamed], reference, err_msg=name)

    again = nutpie.sample(model, **options, return_raw_trace=True)  # a trace is taken once

    class Interrupted:  # what nutpie returns when sampling stops early: a shorter chain
        def get_arrow_trace(self):
            draw_batches, stat_batches = again.get_arrow_trace()
            return (
                [draw_batches[0], draw_batches[1].slice(0, 70)],
                [stat_batches[0], stat_batches[1].slice(0, 70)],
            )

    with pytest.raises(KeyboardInterrupt, match="chain 2 has 30 of 60 draws"):
        sampling._trace_arrays(Interrupted(), 3, 60)


_SMALL = (
    "import os, sys\n"
    "import numpy as np\n"
    "from bayes_animal import AnimalModel, simulate_reference\n"
    "from bayes_animal.bayes import sampling\n"
    "sim = simulate_reference(n=100, n_snps=150, seed=2)\n"
    "model = AnimalModel('response ~ 1 + fix', sim.data, relmat=sim.relmat)\n"
    "density = model.density('spectral')\n"
    "x0 = density.unconstrained(model._initial_values())\n"
    "cov = model._reml_covariance(density.theta_jacobian(x0))\n"
    "options = dict(draws=50, tune=50, chains=2, seed=4, target_accept=0.8)\n"
)


def test_the_second_group_runs_in_a_worker_while_the_first_and_the_callers_work_run_here():
    """With a core free, the first chain group (with the progress bar) and then ``meanwhile``
    run in this process while the second group runs in a worker process (``chain_processes``
    2, nutpie called in another process); with one core all of it runs here; the draws are
    the same either way."""
    _run(
        _SMALL + "order = []\n"
        "nutpie = sampling.import_nutpie()\n"
        "real_sample = nutpie.sample\n"
        "def sample(*args, **kwargs):\n"
        "    order.append(('sample', os.getpid(), kwargs['progress_bar']))\n"
        "    return real_sample(*args, **kwargs)\n"
        "nutpie.sample = sample\n"
        "work = lambda: order.append(('meanwhile', os.getpid()))\n"
        "here = os.getpid()\n"
        "a = sampling.sample_density(density, x0, cov, cores=2, progressbar=True,"
        " meanwhile=work, **options)\n"
        "assert a.attrs['chain_processes'] == 2\n"
        "assert order == [('sample', here, True), ('meanwhile', here)], order\n"
        "order.clear()\n"
        "b = sampling.sample_density(density, x0, cov, cores=1, progressbar=False,"
        " meanwhile=work, **options)\n"
        "assert b.attrs['chain_processes'] == 1\n"
        "assert order == [('sample', here, False), ('meanwhile', here), ('sample', here, False)]\n"
        "for name in ('h2', 'sigma2:additive', 'sigma2:residual'):\n"
        "    assert np.array_equal(a['posterior'][name].values, b['posterior'][name].values)\n"
        "print('ok')\n"
    )


def test_without_nutpie_the_fit_says_how_to_install_it(monkeypatch):
    """nutpie missing (here: blocked in sys.modules): the default fit raises the package's
    ModelError with the install command."""
    from bayes_animal.bayes.model import ModelError

    sim = simulate_reference(n=60, n_snps=80, seed=3)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)
    monkeypatch.setitem(sys.modules, "nutpie", None)
    with pytest.raises(ModelError, match=r"'nutpie' sampler is not installed.*pip install nutpie"):
        model.fit(progressbar=False)


def test_a_failure_after_nutpie_is_imported_is_not_called_a_missing_nutpie(monkeypatch):
    """Only nutpie's own import is reported as "not installed": an ImportError from the
    summary's imports (a broken SciPy, say) reaches the caller as it is."""
    from bayes_animal.bayes import model as model_module

    sim = simulate_reference(n=60, n_snps=80, seed=3)
    model = AnimalModel("response ~ 1 + fix", sim.data, relmat=sim.relmat)

    def broken() -> None:
        raise ImportError("scipy is broken here")

    monkeypatch.setattr(model_module, "import_summary_libraries", broken)
    with pytest.raises(ImportError, match="scipy is broken here"):
        model.fit(progressbar=False, draws=20, tune=20)


def test_the_arviz_stand_in_is_removed_when_nutpie_fails_to_import():
    """A fresh process where importing nutpie fails: the error is nutpie's ImportError and
    ``sys.modules`` has no stand-in for ArviZ afterwards."""
    _run(
        "import sys\n"
        "seen = []\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'nutpie':\n"
        "            seen.append(type(sys.modules.get('arviz')).__name__)\n"
        "            raise ImportError('no nutpie here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from bayes_animal.bayes.sampling import import_nutpie\n"
        "try:\n"
        "    import_nutpie()\n"
        "except ImportError as exc:\n"
        "    assert 'no nutpie here' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('nutpie imported')\n"
        "assert seen == ['_ImportedOnFirstUse'], seen  # the stand-in was in place\n"
        "assert 'arviz' not in sys.modules\n"
        "print('ok')\n"
    )
