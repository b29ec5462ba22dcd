"""Does ``n_jobs`` pay off? Fit time with 1 and 2 workers, same model.

A mixture parallelises two things through joblib: the expert fits of each
M-step and the ``n_init`` restarts. The gate's M-step and the E-step are
not split. This script fits the same model with ``n_jobs=1`` and
``n_jobs=2`` (joblib's default for mixexp: threads) and, for the restarts,
with the process-based ``loky`` backend too (``joblib.parallel_config``),
and reports the speed-up and whether the fitted models are the same.

Cases (``make_regimes`` data, initial partition fixed in advance so no
clustering is timed, a fixed number of EM iterations with ``tol=0`` so both
settings do the same work):

- **trees**: 4 ``DecisionTreeRegressor(max_depth=8)`` experts on 50,000 x
  20, 5 EM iterations: expensive experts, the case ``n_jobs`` is for;
- **forests**: 4 ``RandomForestRegressor(n_estimators=10, max_depth=6,
  n_jobs=1)`` experts on 25,000 x 20, 3 EM iterations;
- **linear**: 8 ``LinearRegression`` experts on 200,000 x 20, 5 EM
  iterations: cheap experts solved together by normal equations with
  ``n_jobs=1`` (one job per expert with ``n_jobs=2``);
- **restarts**: ``n_init=4`` runs of 4 linear experts on 50,000 x 10
  (k-means partitions, default ``tol``): whole EM runs in parallel.

Run from the repository root::

    python benchmarks/parallel.py
    python benchmarks/parallel.py --no-write
"""

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    FixedLabels,
    LoadMeter,
    markdown_table,
    median_time,
    print_machine,
    write_section,
)
from joblib import parallel_config
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes


def _data(n_samples, n_features, n_regimes):
    X, y = make_regimes(
        n_samples=n_samples,
        n_regimes=n_regimes,
        n_features=n_features,
        noise=0.5,
        random_state=0,
    )
    return X, y


def _fixed_partition(X, n_experts):
    return KMeans(n_experts, n_init=1, random_state=0).fit_predict(X)


def _fixed_partition_case(name, expert, text, n, n_experts, max_iter):
    """A case of `max_iter` EM iterations from k-means labels fixed in advance."""
    X, y = _data(n, 20, n_experts)
    labels = _fixed_partition(X, n_experts)

    def make(n_jobs):
        return MixtureOfExpertsRegressor(
            expert,
            n_experts=n_experts,
            partition=FixedLabels(labels),
            max_iter=max_iter,
            tol=0,
            random_state=0,
            n_jobs=n_jobs,
        )

    description = f"{n_experts} {text} experts, {n} x 20, {max_iter} EM iterations"
    return name, description, X, y, make


def cases(scale):
    """(name, description, X, y, mixture factory) of each case."""
    out = [
        _fixed_partition_case(
            "trees",
            DecisionTreeRegressor(max_depth=8),
            "DecisionTreeRegressor(max_depth=8)",
            int(50_000 * scale),
            4,
            5,
        ),
        _fixed_partition_case(
            "forests",
            RandomForestRegressor(n_estimators=10, max_depth=6, n_jobs=1),
            "RandomForestRegressor(n_estimators=10, max_depth=6)",
            int(25_000 * scale),
            4,
            3,
        ),
        _fixed_partition_case(
            "linear",
            LinearRegression(),
            "LinearRegression",
            int(200_000 * scale),
            8,
            5,
        ),
    ]
    n = int(50_000 * scale)
    X, y = _data(n, 10, 4)
    out.append(
        (
            "restarts",
            f"n_init=4 runs of 4 LinearRegression experts, {n} x 10 (k-means "
            "partitions, default tol)",
            X,
            y,
            lambda n_jobs: MixtureOfExpertsRegressor(
                n_experts=4, n_init=4, random_state=0, n_jobs=n_jobs
            ),
        )
    )
    return out


def _fit(make, n_jobs, X, y, backend=None):
    model = make(n_jobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if backend is None:
            model.fit(X, y)
        else:
            with parallel_config(backend=backend):
                model.fit(X, y)
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every case's rows"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()
    header = [
        "case",
        "n_jobs=1, s",
        "n_jobs=2 (threads), s",
        "speed-up",
        "n_jobs=2 (loky processes), s",
        "speed-up",
        "same model",
    ]
    rows = []
    for name, description, X, y, make in cases(args.scale):
        print(f"{name}: {description}", flush=True)
        timings, models = {}, {}
        settings = {"1": (1, None), "threads": (2, None), "loky": (2, "loky")}
        for label, (n_jobs, backend) in settings.items():
            t, _, model = median_time(
                lambda make=make, n_jobs=n_jobs, X=X, y=y, backend=backend: _fit(
                    make, n_jobs, X, y, backend
                ),
                repeats=args.repeats,
                warmup=1,
            )
            timings[label], models[label] = t, model
            print(f"  {label}: {t:.2f} s", flush=True)
        reference = models["1"].predict(X[:2000])
        same = all(
            np.array_equal(models[label].predict(X[:2000]), reference)
            for label in ("threads", "loky")
        )
        rows.append(
            [
                description,
                f"{timings['1']:.2f}",
                f"{timings['threads']:.2f}",
                f"{timings['1'] / timings['threads']:.2f}",
                f"{timings['loky']:.2f}",
                f"{timings['1'] / timings['loky']:.2f}",
                "yes" if same else "NO",
            ]
        )
    total = time.perf_counter() - start
    table = markdown_table(header, rows)
    print("\n" + table)
    print(meter.text() + " (loky workers count as other processes)")
    print(f"Total run time: {total:.0f} s")

    if not args.no_write:
        blocks = [
            "Each fit is timed whole (median of "
            f"{args.repeats} after one warm-up); the initial partition of the "
            "first three cases is fixed in advance (k-means labels) and they "
            "run a fixed number of EM iterations (`tol=0`). `n_jobs=2` runs "
            "the experts of each M-step (and the `n_init` restarts) in two "
            "joblib workers: threads by default, processes under "
            '`parallel_config(backend="loky")`. Same model: the predictions '
            "on 2,000 rows are identical to those of `n_jobs=1`. "
            f"{os.cpu_count()} logical cores. Total run time {total:.0f} s. "
            + meter.text()
            + " (The loky worker processes are not this process's children "
            "that it waits for: their work counts as other processes' load.)",
            table,
        ]
        write_section(
            "parallel",
            "Parallel expert fits and restarts (n_jobs)",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
