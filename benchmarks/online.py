"""Online EM (``partial_fit``) against batch EM (``fit``) on the same rows.

Regression: ``make_regimes(n_train + n_test, n_regimes=3, noise=--noise,
random_state=seed)``, the last ``--n-test`` rows held out. Batch EM:
``MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=seed)
.fit`` on the training rows. Online EM: the same estimator, unfitted,
given the training rows by ``partial_fit`` in shuffled batches of each
``--batch-sizes``, ``--passes`` times over them (a new shuffle per pass).
Reported: the held-out mean log-likelihood (``log_likelihood(X, y).mean()``)
of batch EM and of online EM after each pass, their difference, the steps
taken and the wall times (the online time sums every call, the first one's
fit on its batch included).

Classification: ``make_xor(n_train + n_test, flip=--flip,
random_state=seed)``, ``MixtureOfExpertsClassifier(SGDClassifier(
loss="log_loss"), n_experts=2, random_state=seed)``, batch EM against
online EM in batches of ``--xor-batch-size``; held-out accuracy.

The defaults are the acceptance sizes of tests/test_partial_fit.py (200,000
rows in batches of 2,000, three passes; XOR on 20,000 rows in batches of
1,000), on three seeds. Every fit runs with BLAS limited to one thread.

Run from the repository root::

    python benchmarks/online.py            # writes RESULTS.md
    python benchmarks/online.py --no-write # prints only
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import LoadMeter, markdown_table, print_machine, write_section
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import SGDClassifier
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor


def stream(model, X, y, batch_size, passes, seed, after_pass, **params):
    """`partial_fit` over shuffled batches; `after_pass(model)` after each
    pass. Returns the wall time of the calls alone."""
    rng = np.random.RandomState(seed)
    elapsed = 0.0
    for _ in range(passes):
        order = rng.permutation(X.shape[0])
        start = time.perf_counter()
        for first in range(0, X.shape[0], batch_size):
            rows = order[first : first + batch_size]
            model.partial_fit(X[rows], y[rows], **params)
        elapsed += time.perf_counter() - start
        after_pass(model)
    return elapsed


def timed_fit(model, X, y):
    start = time.perf_counter()
    with warnings.catch_warnings():
        # SGD experts refitted from scratch at each EM step may stop at
        # their max_iter: batch EM is the reference here, as it is.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    return time.perf_counter() - start


def regression_rows(args, seed):
    n = args.n_train + args.n_test
    X, y = make_regimes(n_samples=n, n_regimes=3, noise=args.noise, random_state=seed)
    X_train, X_test = X[: args.n_train], X[args.n_train :]
    y_train, y_test = y[: args.n_train], y[args.n_train :]
    model = MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=seed)
    batch = clone(model)
    batch_time = timed_fit(batch, X_train, y_train)
    batch_score = batch.log_likelihood(X_test, y_test).mean()
    rows = []
    for batch_size in args.batch_sizes:
        scores = []
        online = clone(model)
        online_time = stream(
            online,
            X_train,
            y_train,
            batch_size,
            args.passes,
            seed,
            lambda m, scores=scores: scores.append(
                m.log_likelihood(X_test, y_test).mean()
            ),
        )
        rows.append(
            [
                seed,
                batch_size,
                online.n_batch_iter_,
                batch_score,
                *scores,
                scores[-1] - batch_score,
                batch_time,
                online_time,
            ]
        )
    return rows


def classification_rows(args, seed):
    n = args.n_train_xor + args.n_test
    X, y = make_xor(n_samples=n, flip=args.flip, random_state=seed)
    X_train, X_test = X[: args.n_train_xor], X[args.n_train_xor :]
    y_train, y_test = y[: args.n_train_xor], y[args.n_train_xor :]
    model = MixtureOfExpertsClassifier(
        SGDClassifier(loss="log_loss", random_state=seed),
        n_experts=2,
        random_state=seed,
    )
    batch = clone(model)
    batch_time = timed_fit(batch, X_train, y_train)
    batch_score = batch.score(X_test, y_test)
    scores = []
    online = clone(model)
    online_time = stream(
        online,
        X_train,
        y_train,
        args.xor_batch_size,
        args.passes,
        seed,
        lambda m: scores.append(m.score(X_test, y_test)),
        classes=[0, 1],
    )
    return [
        [
            seed,
            args.xor_batch_size,
            online.n_batch_iter_,
            batch_score,
            *scores,
            scores[-1] - batch_score,
            batch_time,
            online_time,
        ]
    ]


def headers(args, score):
    passes = [f"online {score}, pass {p}" for p in range(1, args.passes + 1)]
    return [
        "seed",
        "batch size",
        "steps",
        f"batch EM {score}",
        *passes,
        "online - batch",
        "batch EM fit, s",
        "online calls, s",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=200_000)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[500, 2_000, 10_000]
    )
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--n-train-xor", type=int, default=20_000)
    parser.add_argument("--xor-batch-size", type=int, default=1_000)
    parser.add_argument("--flip", type=float, default=0.02)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0..)")
    parser.add_argument(
        "--no-write", action="store_true", help="do not update RESULTS.md"
    )
    args = parser.parse_args(argv)
    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()
    regression, classification = [], []
    with threadpool_limits(limits=1):
        for seed in range(args.seeds):
            regression += regression_rows(args, seed)
            classification += classification_rows(args, seed)
    total = time.perf_counter() - start
    table_reg = markdown_table(headers(args, "log-lik"), regression)
    table_clf = markdown_table(headers(args, "accuracy"), classification)
    worst_reg = max(abs(row[-3]) for row in regression)
    worst_clf = max(abs(row[-3]) for row in classification)
    verdict = (
        f"Largest gap to batch EM after {args.passes} passes: held-out mean "
        f"log-likelihood {worst_reg:.4f} (target 0.02), held-out accuracy "
        f"{worst_clf:.4f} (target 0.02)."
    )
    load = meter.text()
    print("\nRegression: make_regimes, 3 linear experts")
    print(table_reg)
    print("\nClassification: make_xor, 2 SGDClassifier(loss='log_loss') experts")
    print(table_clf)
    print("\n" + verdict)
    print(load)
    print(f"Total run time: {total:.0f} s")
    blocks = [
        load,
        f"Regression: `make_regimes(n_samples={args.n_train + args.n_test}, "
        f"n_regimes=3, noise={args.noise}, random_state=seed)`, the last "
        f"{args.n_test} rows held out; `MixtureOfExpertsRegressor(n_experts=3, "
        "n_init=3, random_state=seed)`, `fit` against `partial_fit` in shuffled "
        f"batches, {args.passes} passes. Classification: `make_xor(n_samples="
        f"{args.n_train_xor + args.n_test}, flip={args.flip}, "
        "random_state=seed)`, `MixtureOfExpertsClassifier(SGDClassifier("
        "loss='log_loss'), n_experts=2)`. Online times sum every call, the "
        "first call's fit on its batch included. BLAS limited to one thread. "
        f"Total run time {total:.0f} s.",
        "**Regression**: held-out mean log-likelihood\n\n" + table_reg,
        "**Classification**: held-out accuracy\n\n" + table_clf,
        verdict,
    ]
    if not args.no_write:
        write_section(
            "online",
            "Online EM (partial_fit) against batch EM",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
