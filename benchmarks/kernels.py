"""Timings behind the reasons given in mixexp's source comments.

Comments in ``mixexp/`` give the reason for a choice and cite this script,
without figures; the figures live in ``RESULTS.md``. Each item measures the
way a comment prefers against the alternative it names, in the same run, and
reports the ratio with the absolute times next to it:

1. Reductions over the experts: (n, K) against (K, n) layout (``_em.py``,
   ``_softmax.py``): the short last axis of an (n, K) array against the
   first axis of the (K, n) transposed copy;
2. Gathering rows of X and passes over blocks (``_linear.py``): ``np.take``
   against fancy indexing; a column-major X gathered through its transpose;
   passes over a transposed (d, m) block against the (m, d) row block;
3. Copies of an unfitted LinearRegression (``_linear.py``):
   ``_shallow_copy`` against ``copy.copy`` and ``clone``;
4. Building a threadpoolctl controller (``_utils.py``);
5. Linear experts by weighted normal equations (``_linear.py``,
   ``_mstep.py``): ``fit_linear_regressions`` against K
   ``LinearRegression().fit`` calls;
6. BLAS threads in mixexp's kernels (``_utils.py``): default BLAS threads
   against one thread, on an idle machine and with the other core kept busy;
7. Retired: the softmax gate above 400 parameters takes truncated Newton
   steps, compared with exact Newton steps in item 9;
8. Shared normal equations (``_linear.py``, ``_SHARED_FIXED_COST``,
   ``_SHARED_EXPERT_COST``): ``fit_linear_regressions`` with the shared
   pass over all rows forced on and off, at 100,000 x 20 for K = 2 to 64
   and kept fractions of the rows 1 to 0.1; whether ``_shares_dense_rows``
   picks the faster pass, and the cost constants fitted to the timings;
9. Softmax gate: exact against truncated Newton steps (``gating.py``,
   ``_TRUNCATED_NEWTON_MIN_PARAMETERS``): time per EM iteration of whole
   fits with either step forced, 84 to 672 gate parameters, and fits to
   convergence;
10. exp of log-probabilities that underflow (``_utils.py``, ``_EXP_FLOOR``):
    ``np.exp`` against ``exp_floored`` on arrays with a share of arguments
    below -708;
11. The exact Newton steps' Hessian over a sample of rows (``_softmax.py``,
    ``_HESSIAN_SAMPLE_ROWS``): default fits to convergence at 100,000 rows
    with the Hessian summed over all rows or a sample;
12. The exact Hessian of a sharp gate (``_softmax.py``,
    ``_NEGLIGIBLE_PROBABILITY``): ``softmax_hessian`` with tiny
    probabilities in its products and without them;
13. Zeroing the tiny probabilities (``_softmax.py``, ``block_curvature``,
    ``truncated_newton_direction``): an assignment through the mask
    against a product with it, on a sharp gate's probabilities.

Every ratio divides the way the source calls slower by the way it calls
faster, so above 1 agrees with the source. Times are medians of
``--repeats`` rounds; within a round the compared calls are timed one after
the other (so a change of the machine's load hits them alike), each timing a
loop of enough calls to last about 0.2 s after an untimed call. Items 1-5
and 8 run with BLAS limited to one thread, as mixexp's EM loop runs; item 9
with BLAS and OpenMP limited to one thread; item 10 calls no BLAS; item 11
as item 9; items 12 and 13 with BLAS limited to one thread.

``--items`` runs some of the items. Items 1-6 write one section of
``RESULTS.md`` together (only when all six ran); items 8 to 12 write a
section each (13 too).

Run from the repository root::

    python benchmarks/kernels.py
    python benchmarks/kernels.py --items 8 9
    python benchmarks/kernels.py --quick --no-write
"""

import argparse
import contextlib
import copy
import functools
import itertools
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import LoadMeter, fmt, markdown_table, print_machine, write_section
from scale import make_surface
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

import mixexp._linear
import mixexp.gating
from mixexp import MixtureOfExpertsRegressor
from mixexp._linear import _BLOCK_BYTES, _shallow_copy, fit_linear_regressions
from mixexp._softmax import softmax_hessian
from mixexp._utils import exp_floored

RATIO_NOTE = (
    "Ratio: the way the source calls slower over the way it calls faster "
    "(above 1 agrees with the source)."
)


class Settings:
    """What the command line asks for."""

    def __init__(self, args):
        self.quick = args.quick
        self.repeats = 1 if args.quick else args.repeats
        self.min_time = 0.01 if args.quick else args.min_time
        # --quick: a smoke run of a few seconds, on smaller fits.
        self.fit_rows = 20_000 if args.quick else 200_000
        # Item 8: rows, experts and the share of rows each expert keeps.
        self.shared_rows = 20_000 if args.quick else 100_000
        self.shared_experts = (2, 8) if args.quick else (2, 4, 8, 16, 32, 64)
        self.shared_fractions = (1.0, 0.25) if args.quick else (1.0, 0.5, 0.25, 0.1)
        # Item 9: rows, (n_features, n_experts) cases, fixed iterations, and
        # the experts of the fits to convergence (n_features = 20).
        self.switch_rows = 5_000 if args.quick else 20_000
        self.switch_cases = (
            ((20, 4), (20, 24), (5, 16))
            if args.quick
            else (
                *((20, k) for k in (4, 8, 12, 16, 24, 32)),
                *((5, k) for k in (16, 32, 64)),
            )
        )
        self.switch_iter = 5 if args.quick else 30
        self.switch_fit_experts = (8,) if args.quick else (8, 16, 24)
        self.gate_repeats = 1 if args.quick else args.gate_repeats
        self.controller = ThreadpoolController()


# --------------------------------------------------------------------------
# Timing helpers


def timed(funcs, settings, contexts=None, calibrate=True, repeats=None):
    """Median seconds per call of each function, timed in alternation.

    Parameters
    ----------
    funcs : dict of name -> callable
    settings : Settings
    contexts : dict of name -> context manager factory, default=None
        Entered around every timed loop of that function (a BLAS limit,
        say), so that its own cost is not timed.
    calibrate : bool, default=True
        Make one untimed call of each function first and time loops of
        enough calls to last ``settings.min_time``; without it, every timing
        is one call and nothing runs untimed (for whole model fits).
    repeats : int, default=None
        Rounds (``settings.repeats`` if None).
    """
    contexts = contexts or {}
    repeats = settings.repeats if repeats is None else repeats
    numbers = dict.fromkeys(funcs, 1)
    if calibrate:
        for name, func in funcs.items():
            with contexts.get(name, contextlib.nullcontext)():
                func()  # warm-up: lazy imports, caches, page faults
                start = time.perf_counter()
                func()
                once = time.perf_counter() - start
            numbers[name] = max(1, math.ceil(settings.min_time / max(once, 1e-9)))
    times = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            number = numbers[name]
            with contexts.get(name, contextlib.nullcontext)():
                start = time.perf_counter()
                for _ in range(number):
                    func()
                times[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(values) for name, values in times.items()}


def duration(seconds):
    """Seconds as a short string in s, ms or us."""
    if seconds >= 1:
        return f"{fmt(seconds)} s"
    if seconds >= 1e-3:
        return f"{fmt(seconds * 1e3)} ms"
    return f"{fmt(seconds * 1e6)} us"


def ratio(value):
    return f"{fmt(value, 2)}x"


def blas_limit(settings, threads):
    """Factory of a context limiting BLAS to `threads` (a controller built once)."""
    return lambda: settings.controller.limit(limits=threads, user_api="blas")


def pair_row(case, slow_name, fast_name, times):
    """A table row comparing the source's slower way with its faster one."""
    slow, fast = times["slow"], times["fast"]
    return [
        case,
        slow_name,
        duration(slow),
        fast_name,
        duration(fast),
        ratio(slow / fast),
    ]


PAIR_HEADER = [
    "case",
    "slower way (per the source)",
    "time",
    "faster way (per the source)",
    "time",
    "ratio",
]


class Claim:
    """One claim's results: what it backs, what it compares, its table."""

    def __init__(self, number, title, files, backs, compared, table, measured):
        self.number = number
        self.title = title
        self.files = files  # the source files, as in the summary table
        self.backs = backs
        self.compared = compared
        self.table = table
        self.measured = measured  # one line for the summary table

    def blocks(self):
        return [
            f"**{self.number}. {self.title}**",
            f"backs: {self.backs}",
            f"compared: {self.compared}",
            self.table,
        ]

    def print(self):
        print("\n".join([*self.blocks()[:3], "", self.table, ""]), flush=True)


# --------------------------------------------------------------------------
# 1. Reductions over the experts


def _logsumexp_nk(a):
    shift = a.max(axis=1, keepdims=True)
    return np.log(np.exp(a - shift).sum(axis=1)) + shift[:, 0]


def _logsumexp_kn(aT):
    shift = aT.max(axis=0)
    return np.log(np.exp(aT - shift).sum(axis=0)) + shift


def _logsumexp_via_copy(a):
    """mixexp's way: a transposed C-ordered copy, then (K, n) reductions."""
    return _logsumexp_kn(np.array(a.T, order="C"))


def _reduction_pairs(a, aT):
    np.testing.assert_allclose(_logsumexp_nk(a), _logsumexp_kn(aT), rtol=1e-12)
    np.testing.assert_allclose(logsumexp(a, axis=1), _logsumexp_via_copy(a), rtol=1e-12)
    return [
        ("max", lambda: a.max(axis=1), lambda: aT.max(axis=0)),
        ("sum", lambda: a.sum(axis=1), lambda: aT.sum(axis=0)),
        (
            "exp-shift-sum (logsumexp)",
            lambda: _logsumexp_nk(a),
            lambda: _logsumexp_kn(aT),
        ),
    ]


def claim_reductions(settings):
    rng = np.random.RandomState(0)
    n = 100_000
    rows, measured = [], []
    with blas_limit(settings, 1)():
        for n_experts in (3, 8):
            a = rng.standard_normal((n, n_experts))
            aT = np.ascontiguousarray(a.T)
            ratios = []
            for name, slow, fast in _reduction_pairs(a, aT):
                times = timed({"slow": slow, "fast": fast}, settings)
                rows.append(
                    pair_row(
                        f"{name}, K = {n_experts}",
                        f"over axis 1 of ({n:,}, {n_experts})",
                        f"over axis 0 of ({n_experts}, {n:,}), C order",
                        times,
                    )
                )
                ratios.append(
                    f"{name.split(' ')[0]} {ratio(times['slow'] / times['fast'])}"
                )
            # The function as used: a transposed copy, then the reductions.
            times = timed(
                {
                    "slow": lambda a=a: logsumexp(a, axis=1),
                    "fast": lambda a=a: _logsumexp_via_copy(a),
                },
                settings,
            )
            rows.append(
                pair_row(
                    f"whole logsumexp of ({n:,}, {n_experts}), K = {n_experts}",
                    "`scipy.special.logsumexp(a, axis=1)`",
                    "transposed C-ordered copy, then the (K, n) logsumexp (copy timed)",
                    times,
                )
            )
            ratios.append(f"scipy/via-copy {ratio(times['slow'] / times['fast'])}")
            measured.append(f"K = {n_experts}: " + ", ".join(ratios))
    return Claim(
        1,
        "Reductions over the experts: (n, K) against (K, n) layout",
        "`_em.py`, `_softmax.py`",
        '`mixexp/_em.py` (`posterior`: "Computed on the (K, n) layout: '
        "reductions over the experts then run along contiguous memory, "
        'vectorised over the rows") and `mixexp/_softmax.py` '
        "(`softmax_objective`: reductions over the experts on (n_experts, "
        'n_samples) arrays are "several times faster than over the short '
        'last axis of (n_samples, n_experts) arrays").',
        f"the same reduction of float64 random normals, n = {n:,}, over the "
        "last axis of the (n, K) C-ordered array against the first axis of "
        "its transposed C-ordered copy (the copy not timed); then the whole "
        "logsumexp as mixexp computes it (copy included) against scipy's. "
        + RATIO_NOTE,
        markdown_table(PAIR_HEADER, rows),
        "(n, K) / (K, n): " + "; ".join(measured),
    )


# --------------------------------------------------------------------------
# 2. Gathering rows, passes over blocks


def _blockwise(gather, rows, n_features, block_rows):
    """Gather `rows` block by block into a (d, m) buffer, as _normal_equations."""
    block = np.empty((n_features, block_rows))

    def run():
        for start in range(0, rows.size, block_rows):
            picked = rows[start : start + block_rows]
            block[:, : picked.size] = gather(picked)

    return run


def _gather_pairs(X, XF, rows, block_rows):
    d = X.shape[1]
    XT = XF.T
    np.testing.assert_array_equal(np.take(X, rows, axis=0), X[rows])
    np.testing.assert_array_equal(np.take(XT, rows, axis=1), np.take(XF, rows, 0).T)
    return [
        (
            "C-order X, whole gather",
            "`X[rows]`",
            lambda: X[rows],
            "`np.take(X, rows, axis=0)`",
            lambda: np.take(X, rows, axis=0),
        ),
        (
            f"C-order X, in blocks of {block_rows:,} rows into a (d, m) buffer",
            "`X[p].T`",
            _blockwise(lambda p: X[p].T, rows, d, block_rows),
            "`np.take(X, p, axis=0).T`",
            _blockwise(lambda p: np.take(X, p, axis=0).T, rows, d, block_rows),
        ),
        (
            "F-order X, whole gather",
            "`np.take(X, rows, axis=0)`",
            lambda: np.take(XF, rows, axis=0),
            "`np.take(X.T, rows, axis=1)`",
            lambda: np.take(XT, rows, axis=1),
        ),
        (
            f"F-order X, in blocks of {block_rows:,} rows into a (d, m) buffer",
            "`np.take(X, p, axis=0).T`",
            _blockwise(lambda p: np.take(XF, p, axis=0).T, rows, d, block_rows),
            "`np.take(X.T, p, axis=1)`",
            _blockwise(lambda p: np.take(XT, p, axis=1), rows, d, block_rows),
        ),
    ]


def _centre_and_scale_pairs(rng, m):
    w = rng.uniform(0.1, 1.0, size=m)
    root = np.sqrt(w)
    pairs = []
    for d in (2, 20):
        Z = rng.standard_normal((m, d))  # (m, d): a block of rows
        ZT = np.ascontiguousarray(Z.T)  # (d, m): the transposed block
        work, workT = np.empty_like(Z), np.empty_like(ZT)

        def along_rows(Z=Z, work=work):
            mean = w @ Z / w.sum()
            np.subtract(Z, mean, out=work)
            np.multiply(work, root[:, np.newaxis], out=work)

        def transposed(ZT=ZT, workT=workT):
            mean = ZT @ w / w.sum()
            np.subtract(ZT, mean[:, np.newaxis], out=workT)
            np.multiply(workT, root, out=workT)

        along_rows()
        transposed()
        np.testing.assert_allclose(work.T, workT, rtol=1e-10, atol=1e-12)
        pairs.append((d, along_rows, transposed))
    return pairs


def claim_gathers(settings):
    rng = np.random.RandomState(0)
    n, d, m = 200_000, 20, 50_000
    X = rng.standard_normal((n, d))
    XF = np.asfortranarray(X)
    rows = np.sort(rng.choice(n, n // 2, replace=False))
    block_rows = _BLOCK_BYTES // (8 * (d + 1))  # d features and one target
    table, measured = [], []
    with blas_limit(settings, 1)():
        for case, slow_name, slow, fast_name, fast in _gather_pairs(
            X, XF, rows, block_rows
        ):
            times = timed({"slow": slow, "fast": fast}, settings)
            table.append(pair_row(case, slow_name, fast_name, times))
            measured.append(f"{case}: {ratio(times['slow'] / times['fast'])}")
        for width, along_rows, transposed in _centre_and_scale_pairs(rng, m):
            times = timed({"slow": along_rows, "fast": transposed}, settings)
            case = f"centre and scale, d = {width}, m = {m:,}"
            table.append(
                pair_row(
                    case,
                    f"over the ({m:,}, {width}) row block",
                    f"over the ({width}, {m:,}) transposed block",
                    times,
                )
            )
            measured.append(f"{case}: {ratio(times['slow'] / times['fast'])}")
    return Claim(
        2,
        "Gathering rows of X and passes over blocks",
        "`_linear.py`",
        "`mixexp/_linear.py`: the module docstring (blocks transposed into a "
        'small buffer: "every pass then runs along contiguous memory, faster '
        'than along rows of a few features") and `_normal_equations` (a '
        'column-major X is gathered from its transpose: "gathering its rows, '
        'each spread over all columns, is several times slower"; "np.take: '
        'faster than fancy indexing").',
        f"X of {n:,} x {d} float64 (C order, and a Fortran-order copy), rows "
        f"a random sorted half ({n // 2:,}) of its rows, gathered whole and, "
        "as `_normal_equations` does, block by block into a (d, m) buffer; "
        "a pass = weighted mean, centring, scaling by the square root of the "
        "weights (written to a buffer), over a transposed (d, m) contiguous "
        "block against the (m, d) row block. " + RATIO_NOTE,
        markdown_table(PAIR_HEADER, table),
        "; ".join(measured),
    )


# --------------------------------------------------------------------------
# 3. Copies of an unfitted estimator


def claim_copies(settings):
    estimator = LinearRegression()
    twin = _shallow_copy(estimator)
    assert twin.get_params() == estimator.get_params() and twin is not estimator
    funcs = {
        "shallow": lambda: _shallow_copy(estimator),
        "clone": lambda: clone(estimator),
        "copy": lambda: copy.copy(estimator),
    }
    times = timed(funcs, settings)
    names = {
        "shallow": "`mixexp._linear._shallow_copy(LinearRegression())`",
        "clone": "`sklearn.base.clone(LinearRegression())`",
        "copy": "`copy.copy(LinearRegression())`",
    }
    rows = [
        [
            names[key],
            f"{fmt(times[key] * 1e6)} us",
            ratio(times[key] / times["shallow"]),
        ]
        for key in funcs
    ]
    return Claim(
        3,
        "Copies of an unfitted LinearRegression",
        "`_linear.py`",
        "`mixexp/_linear.py` (`_shallow_copy`: sharing the parameters is a "
        "clone \"without copy.copy's pickling protocol (ten times the cost "
        '[...]; an EM fit makes thousands)").',
        "microseconds per call of each way of making an unfitted twin; "
        "ratio: each over `_shallow_copy`.",
        markdown_table(["call", "per call", "ratio to _shallow_copy"], rows),
        f"_shallow_copy {fmt(times['shallow'] * 1e6)} us per call; copy.copy "
        f"{rows[2][2]}, clone {rows[1][2]} that",
    )


# --------------------------------------------------------------------------
# 4. threadpoolctl


def _enter_limit(controller):
    with controller.limit(limits=1, user_api="blas"):
        pass


def _enter_threadpool_limits():
    with threadpool_limits(limits=1, user_api="blas"):
        pass


def claim_threadpoolctl(settings):
    controller = ThreadpoolController()
    funcs = {
        "build": ThreadpoolController,
        "limit": lambda: _enter_limit(controller),
        "threadpool_limits": _enter_threadpool_limits,
    }
    names = {
        "build": "`threadpoolctl.ThreadpoolController()`",
        "limit": '`with controller.limit(limits=1, user_api="blas"): pass` '
        "(controller built once)",
        "threadpool_limits": '`with threadpool_limits(limits=1, user_api="blas"): '
        "pass` (builds a controller each time)",
    }
    times = timed(funcs, settings)
    rows = [
        [names[key], duration(times[key]), ratio(times[key] / times["limit"])]
        for key in funcs
    ]
    return Claim(
        4,
        "Building a threadpoolctl controller",
        "`_utils.py`",
        '`mixexp/_utils.py` (`_blas_controllers`: "Building a controller '
        "scans the process's loaded libraries [...]: once per process is "
        'enough").',
        "time per call; ratio: each over entering and leaving a BLAS limit "
        f"on a controller built once. {len(threadpool_info())} thread pools "
        "loaded (see the machine's blas list).",
        markdown_table(["call", "per call", "ratio to limit"], rows),
        f"ThreadpoolController() {duration(times['build'])}, limit on a built "
        f"controller {duration(times['limit'])}",
    )


# --------------------------------------------------------------------------
# 5. and 6. Linear experts by normal equations; the gate's Hessian


def _linear_problem(rng, n, d, n_experts):
    """X, y and the K responsibility columns (views of an (n, K) array, as EM)."""
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    resp = rng.dirichlet(np.ones(n_experts), size=n)
    return X, y, [resp[:, k] for k in range(n_experts)]


def _mixexp_linear(X, y, weights):
    n_experts = len(weights)
    return fit_linear_regressions(
        [LinearRegression()] * n_experts,
        [X] * n_experts,
        y,
        weights,
        [None] * n_experts,
    )


def _sklearn_linear(X, y, weights):
    return [LinearRegression().fit(X, y, sample_weight=w) for w in weights]


def claim_linear(settings):
    rng = np.random.RandomState(0)
    n, d, n_experts = settings.fit_rows, 20, 8
    X, y, weights = _linear_problem(rng, n, d, n_experts)
    with blas_limit(settings, 1)():
        ours = _mixexp_linear(X, y, weights)
        theirs = _sklearn_linear(X, y, weights)
        difference = max(
            np.abs(a.coef_ - b.coef_).max() for a, b in zip(ours, theirs, strict=True)
        )
        times = timed(
            {
                "slow": lambda: _sklearn_linear(X, y, weights),
                "fast": lambda: _mixexp_linear(X, y, weights),
            },
            settings,
        )
    row = pair_row(
        f"{n:,} x {d}, K = {n_experts}",
        f"{n_experts} x `LinearRegression().fit(X, y, sample_weight=w)`",
        "`fit_linear_regressions` (all K)",
        times,
    )
    return Claim(
        5,
        "Linear experts by weighted normal equations",
        "`_linear.py`, `_mstep.py`",
        "`mixexp/_linear.py` module docstring (scikit-learn's SVD-based fit "
        '"costs several times more than forming the d x d weighted Gram '
        "matrix when n >> d, plus validation and copies made anew at each "
        'call") and `mixexp/_mstep.py` `_fit_linear_experts` (the same '
        'minimiser as `LinearRegression.fit`, "faster when refitted at every '
        'EM step").',
        f"`fit_linear_regressions([LinearRegression()] * {n_experts}, [X] * "
        f"{n_experts}, y, weights, [None] * {n_experts})` against "
        f"{n_experts} calls of `LinearRegression().fit(X, y, "
        "sample_weight=w)`; X and y random normal, the weights the columns of "
        "an (n, K) array of Dirichlet(1, ..., 1) rows (views, as EM passes "
        "them); BLAS limited to one thread. Largest coefficient difference "
        f"between the two: {difference:.1e}. " + RATIO_NOTE,
        markdown_table(PAIR_HEADER, [row]),
        f"K LinearRegression.fit / fit_linear_regressions = "
        f"{ratio(times['slow'] / times['fast'])} ({duration(times['slow'])} "
        f"against {duration(times['fast'])})",
    )


def _spin():
    while True:
        pass


@contextlib.contextmanager
def busy_core():
    """Keep one core busy with a spinning process while the block runs."""
    process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    process.start()
    try:
        time.sleep(2.0)  # the spawned interpreter imports this script first
        yield
    finally:
        process.terminate()
        process.join()


def _kernel_cases(rng):
    cases = []
    for n, d, n_experts in ((20_000, 20, 8), (5_000, 2, 3)):
        X, y, weights = _linear_problem(rng, n, d, n_experts)
        mean, scale = X.mean(axis=0), X.std(axis=0)
        probaT = np.ascontiguousarray(rng.dirichlet(np.ones(n_experts), size=n).T)
        scaled = np.full(n, 1.0 / n)
        size = f"{n:,} x {d}, K = {n_experts}"
        cases.append(
            (
                "`fit_linear_regressions`",
                size,
                lambda X=X, y=y, weights=weights: _mixexp_linear(X, y, weights),
            )
        )
        cases.append(
            (
                "`softmax_hessian`",
                size,
                lambda X=X, mean=mean, scale=scale, probaT=probaT, scaled=scaled: (
                    softmax_hessian(X, mean, scale, probaT, scaled, 0.0)
                ),
            )
        )
    return cases


def claim_threads(settings):
    rng = np.random.RandomState(0)
    default = max(
        (
            pool["num_threads"]
            for pool in threadpool_info()
            if pool["user_api"] == "blas"
        ),
        default=1,
    )
    cases = _kernel_cases(rng)
    contexts = {
        "one": blas_limit(settings, 1),
        "default": blas_limit(settings, default),
    }
    rows, measured = [], []
    for condition in ("idle", "busy"):
        load = contextlib.nullcontext() if condition == "idle" else busy_core()
        with load:
            meter = LoadMeter()
            results = []
            for kernel, size, func in cases:
                times = timed({"one": func, "default": func}, settings, contexts)
                results.append((kernel, size, times))
            cores = meter.cores()
        label = (
            "idle (no load of ours)"
            if condition == "idle"
            else "other core busy (a spinning process)"
        )
        load_text = "unknown" if cores is None else f"{cores:.2f} cores"
        for kernel, size, times in results:
            value = times["default"] / times["one"]
            rows.append(
                [
                    label,
                    kernel,
                    size,
                    duration(times["one"]),
                    duration(times["default"]),
                    ratio(value),
                    load_text,
                ]
            )
            measured.append(f"{condition} {kernel.strip('`')} {size}: {ratio(value)}")
    header = [
        "load condition",
        "kernel",
        "size",
        "1 BLAS thread",
        f"{default} BLAS threads (default)",
        "default / 1 thread",
        "load of other processes",
    ]
    return Claim(
        6,
        "BLAS threads in mixexp's kernels",
        "`_utils.py`",
        "`mixexp/_utils.py` (`_SingleThreadedBlas`: mixexp's kernels \"are "
        "many small matrix products, which gain little from BLAS threads on "
        "idle cores and lose much to them on busy ones, as when fits run "
        'side by side").',
        "each kernel with BLAS limited to one thread against the machine's "
        f"default ({default} threads; threadpoolctl limits entered outside "
        "the timed loops), first with nothing of ours running alongside, then "
        "with one spinning Python process (started before and stopped after "
        f"the timings) keeping a core busy; {os.cpu_count()} logical cores. "
        "Kernels, called directly (they set no thread limit of their own): "
        "`mixexp._linear.fit_linear_regressions` as in item 5 (K Dirichlet "
        "weight columns) and the softmax gate's Hessian "
        "`mixexp._softmax.softmax_hessian(X, X.mean(0), X.std(0), probaT, "
        "np.full(n, 1 / n), 0.0)`, probaT the transposed C-ordered (K, n) "
        "array of Dirichlet rows. The load column counts the spinning process "
        "as another process. Ratio: default threads over one thread (above 1: "
        "threads slow the kernel down).",
        markdown_table(header, rows),
        "default / 1 thread: " + "; ".join(measured),
    )


# --------------------------------------------------------------------------
# 8. The experts' normal equations formed together or one expert at a time


@contextlib.contextmanager
def shares_dense_rows(value):
    """Force ``mixexp._linear._shares_dense_rows`` to `value`; restore it."""
    saved = mixexp._linear._shares_dense_rows
    mixexp._linear._shares_dense_rows = lambda *args: value
    try:
        yield
    finally:
        mixexp._linear._shares_dense_rows = saved


def _kept_rows(rng, resp, fraction):
    """Each expert's kept rows (None: all) and its weights, zero elsewhere.

    EM keeps the rows on which an expert's responsibility is not negligible,
    so its weights outside them are (near) zero; the shared pass, which
    reads every row, then fits the same problem as the expert's own pass.
    """
    n_experts, n = resp.shape
    if fraction >= 1.0:
        return [None] * n_experts, [resp[k] for k in range(n_experts)]
    rows, kept = [], np.zeros_like(resp)
    for k in range(n_experts):
        picked = np.sort(rng.choice(n, int(fraction * n), replace=False))
        kept[k, picked] = resp[k, picked]
        rows.append(picked)
    return rows, [kept[k] for k in range(n_experts)]


def _fit_all(X, y, weights, rows):
    n_experts = len(weights)
    return fit_linear_regressions(
        [LinearRegression()] * n_experts, [X] * n_experts, y, weights, rows, None
    )


def _picked_faster(picked, other, slack=1.1):
    """Whether the picked way was the faster one, within `slack`."""
    if picked <= slack * other:
        return "yes"
    return f"NO ({ratio(picked / other)} slower)"


def claim_shared_normal_equations(settings):
    rng = np.random.RandomState(0)
    n, d = settings.shared_rows, 20
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n)
    rule = mixexp._linear._shares_dense_rows
    contexts = {
        "own": lambda: shares_dense_rows(False),
        "shared": lambda: shares_dense_rows(True),
    }
    rows_out, cases = [], []
    with blas_limit(settings, 1)():
        for n_experts in settings.shared_experts:
            resp = np.ascontiguousarray(rng.dirichlet(np.ones(n_experts), size=n).T)
            for fraction in settings.shared_fractions:
                rows, weights = _kept_rows(rng, resp, fraction)
                kept = sum(n if r is None else r.size for r in rows) / n
                shared_pick = rule(
                    [X] * n_experts, weights, rows, np.ones(n_experts, dtype=bool)
                )
                fitted = {}
                for key in contexts:
                    with contexts[key]():
                        fitted[key] = _fit_all(X, y, weights, rows)
                difference = max(
                    max(
                        np.abs(a.coef_ - b.coef_).max(),
                        abs(a.intercept_ - b.intercept_),
                    )
                    for a, b in zip(fitted["own"], fitted["shared"], strict=True)
                )
                times = timed(
                    {
                        key: lambda w=weights, r=rows: _fit_all(X, y, w, r)
                        for key in contexts
                    },
                    settings,
                    contexts,
                )
                own, shared = times["own"], times["shared"]
                picked, other = (shared, own) if shared_pick else (own, shared)
                cases.append((n_experts, fraction, kept, own, shared))
                rows_out.append(
                    [
                        n_experts,
                        fmt(fraction, 2),
                        fmt(kept, 3),
                        f"{own * 1e3:.1f}",
                        f"{shared * 1e3:.1f}",
                        ratio(own / shared),
                        "shared" if shared_pick else "own",
                        _picked_faster(picked, other),
                        f"{difference:.1e}",
                    ]
                )
    experts, fractions, kept, own, shared = (
        np.array(column) for column in zip(*cases, strict=True)
    )
    # shared ms = a + b K; own ms = c * (kept rows summed over experts / n).
    (fixed_s, per_expert_s), *_ = np.linalg.lstsq(
        np.column_stack([np.ones_like(experts, dtype=float), experts]),
        shared,
        rcond=None,
    )
    (own_s,), *_ = np.linalg.lstsq(kept[:, np.newaxis], own, rcond=None)
    # Not in the code's model: a shared pass over row subsets also places
    # each expert's kept rows in every block (a term in those kept rows).
    subsets = np.where(fractions < 1.0, kept, 0.0)
    (_, _, scatter_s), *_ = np.linalg.lstsq(
        np.column_stack([np.ones_like(kept), experts, subsets]), shared, rcond=None
    )
    fixed, per_expert = fixed_s / own_s, per_expert_s / own_s
    code_fixed = mixexp._linear._SHARED_FIXED_COST
    code_expert = mixexp._linear._SHARED_EXPERT_COST
    # Which way the rule picks with the code's and with the fitted constants.
    picks = {
        "code": kept > code_fixed + code_expert * experts,
        "fitted": kept > fixed + per_expert * experts,
    }
    faster = shared < own
    hits = {key: int(np.sum(pick == faster)) for key, pick in picks.items()}
    cost_rows = [
        [
            "fixed cost of the shared pass (`_SHARED_FIXED_COST`), in own "
            "passes over all rows",
            fmt(code_fixed),
            fmt(fixed),
            f"{fixed_s * 1e3:.1f} ms (comment: about 36 ms)",
        ],
        [
            "cost of the shared pass per expert (`_SHARED_EXPERT_COST`), in "
            "own passes over all rows",
            fmt(code_expert),
            fmt(per_expert),
            f"{per_expert_s * 1e3:.2f} ms (comment: about 1.6 ms)",
        ],
        [
            "one expert's own pass over all rows",
            "1 (the unit)",
            "1 (the unit)",
            f"{own_s * 1e3:.2f} ms (comment: about 8.7 ms)",
        ],
        [
            "not in the code: the shared pass per kept row of a row subset "
            "(fitted with the two above), in own passes over the same rows",
            "-",
            fmt(scatter_s / own_s),
            f"{scatter_s * 1e3:.2f} ms per n kept rows",
        ],
        [
            "cases in which the rule picks the faster pass (no slack)",
            f"{hits['code']} of {len(cases)}",
            f"{hits['fitted']} of {len(cases)}",
            "",
        ],
    ]
    header = [
        "K",
        "kept fraction",
        "kept rows / n (summed over experts)",
        "own passes, ms",
        "shared pass, ms",
        "own / shared",
        "rule picks",
        "pick faster (10 % slack)",
        "max abs difference of the coefficients",
    ]
    table = "\n\n".join(
        [
            markdown_table(header, rows_out),
            "Cost model fitted to the table: shared ms = a + b K (least "
            "squares over all rows of the table), own ms = c (kept rows "
            "summed over experts / n) (least squares through 0); the code's "
            "constants are a / c and b / c. The row below them refits the "
            "shared ms with a third term, e (kept rows summed over experts / "
            "n) on the rows of fraction below 1 (0 at fraction 1, where no "
            "rows are passed), and gives e / c.",
            markdown_table(
                ["constant", "code", "fitted (this run)", "fitted, absolute"],
                cost_rows,
            ),
        ]
    )
    return Claim(
        8,
        "Shared normal equations: one pass for all experts against one pass each",
        "`_linear.py`",
        "`mixexp/_linear.py` (`_SHARED_FIXED_COST` = "
        f"{fmt(code_fixed)}, `_SHARED_EXPERT_COST` = {fmt(code_expert)}, used "
        "by `_shares_dense_rows`: the shared pass costs all rows once plus a "
        'little per expert, "a least-squares fit gives about 36 ms + 1.6 ms '
        "per expert for the shared pass, 8.7 ms per expert and full set of "
        'rows for the own ones").',
        f"`mixexp._linear.fit_linear_regressions([LinearRegression()] * K, [X] "
        f"* K, y, weights, rows, None)` on {n:,} x {d} random normals, with "
        "`mixexp._linear._shares_dense_rows` replaced by this script to "
        "return False (each expert's own pass over its kept rows) or True "
        "(the shared pass over all rows; restored after); BLAS limited to "
        "one thread. Weights: the rows of the C-ordered (K, n) transpose of "
        "an (n, K) array of Dirichlet(1, ..., 1) rows; each expert keeps a "
        "random subset of the given fraction of the rows (`np.sort(rng."
        "choice(n, int(f * n), replace=False))`; `None` at fraction 1, as EM "
        "passes all rows) and its weights outside them are set to 0, as "
        "EM's are negligible outside an expert's rows. Rule picks: what "
        "`_shares_dense_rows` decides (kept rows "
        "summed over experts > (fixed + per expert x K) n); pick faster: "
        "the picked pass took at most 1.1 times the other. Difference: the "
        "largest absolute difference of `coef_` and `intercept_` between "
        "the two passes. Own / shared above 1: the shared pass is faster.",
        table,
        f"fitted fixed {fmt(fixed)} (code {fmt(code_fixed)}), per expert "
        f"{fmt(per_expert)} (code {fmt(code_expert)}); rule right in "
        f"{hits['code']} of {len(cases)} cases",
    )


# --------------------------------------------------------------------------
# 9. Exact against truncated Newton steps of the softmax gate


@contextlib.contextmanager
def truncated_newton_min_parameters(value):
    """Set ``mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS``; restore it."""
    saved = mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS
    mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS = value
    try:
        yield
    finally:
        mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS = saved


GATE_PATHS = {"exact": 10**9, "truncated": 0}


def _gate_fit(X, y, n_experts, max_iter, tol, fitted, key):
    params = {} if tol is None else {"tol": tol}
    model = MixtureOfExpertsRegressor(
        LinearRegression(),
        n_experts=n_experts,
        random_state=0,
        max_iter=max_iter,
        **params,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    fitted[key] = model


def _gate_contexts(suffixes):
    return {
        path + suffix: (lambda value=value: truncated_newton_min_parameters(value))
        for path, value in GATE_PATHS.items()
        for suffix in suffixes
    }


def _crossover(cases):
    """Parameters at which exact / truncated crosses 1 (interpolated), or None."""
    cases = sorted(cases)
    for (p0, r0), (p1, r1) in itertools.pairwise(cases):
        if r0 < 1.0 <= r1:
            return p0 + (p1 - p0) * (1.0 - r0) / (r1 - r0)
    return None


def _crossover_text(cases):
    value = _crossover(cases)
    if value is not None:
        return f"about {value:.0f} parameters"
    if all(r >= 1.0 for _, r in cases):
        return "below the cases timed (truncated faster throughout)"
    if all(r < 1.0 for _, r in cases):
        return "above the cases timed (exact faster throughout)"
    return "none upwards (the ratio falls through 1)"


def claim_gate_steps(settings):
    # One thread for BLAS and OpenMP: the k-means partition of the set-up
    # runs on OpenMP threads, whose waits for a core on a shared machine
    # made the set-up, subtracted below, vary by seconds.
    with settings.controller.limit(limits=1):
        return _claim_gate_steps(settings)


def _claim_gate_steps(settings):
    n, iters = settings.switch_rows, settings.switch_iter
    limit = mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS
    X, y = make_surface(2_000)
    _gate_fit(X, y, 4, 3, 0.0, {}, "warm-up")  # lazy imports, first-call costs
    rows, by_width, measured = [], {}, []
    for d, n_experts in settings.switch_cases:
        X, y = make_surface(n, n_features=d)
        parameters = (d + 1) * n_experts
        fitted = {}
        funcs = {}
        for path in GATE_PATHS:
            for suffix, max_iter in (("", iters), ("1", 1)):
                funcs[path + suffix] = functools.partial(
                    _gate_fit, X, y, n_experts, max_iter, 0.0, fitted, path + suffix
                )
        times = timed(
            funcs,
            settings,
            _gate_contexts(("", "1")),
            calibrate=False,
            repeats=settings.gate_repeats,
        )
        per_iter = {
            path: (times[path] - times[path + "1"]) / (iters - 1) for path in GATE_PATHS
        }
        value = per_iter["exact"] / per_iter["truncated"]
        by_width.setdefault(d, []).append((parameters, value))
        pick = "truncated" if parameters > limit else "exact"
        other = "exact" if pick == "truncated" else "truncated"
        counts = {fitted[path].n_iter_ for path in GATE_PATHS}
        rows.append(
            [
                d,
                n_experts,
                parameters,
                f"{per_iter['exact'] * 1e3:.1f}",
                f"{per_iter['truncated'] * 1e3:.1f}",
                ratio(value),
                pick,
                _picked_faster(per_iter[pick], per_iter[other]),
                f"{times['exact1']:.2f} / {times['truncated1']:.2f}",
                f"{fitted['exact'].lower_bound_:.4f}",
                f"{fitted['truncated'].lower_bound_:.4f}"
                + ("" if counts == {iters} else f" (n_iter_ {sorted(counts)})"),
            ]
        )
        measured.append(f"{parameters}: {ratio(value)}")
    header = [
        "d",
        "K",
        "gate parameters (d + 1) K",
        "exact Newton, ms / iteration",
        "truncated Newton, ms / iteration",
        "exact / truncated",
        "rule picks",
        "pick faster (10 % slack)",
        "set-up + 1st iteration, s (exact / truncated)",
        "`lower_bound_`, exact",
        "`lower_bound_`, truncated",
    ]
    crossover_text = "; ".join(
        f"d = {d}: {_crossover_text(cases)}" for d, cases in by_width.items()
    )

    d = 20
    X, y = make_surface(n, n_features=d)
    fit_rows = []
    for n_experts in settings.switch_fit_experts:
        parameters = (d + 1) * n_experts
        fitted = {}
        times = timed(
            {
                path: functools.partial(
                    _gate_fit, X, y, n_experts, 300, None, fitted, path
                )
                for path in GATE_PATHS
            },
            settings,
            _gate_contexts(("",)),
            calibrate=False,
            repeats=1,
        )
        pick = "truncated" if parameters > limit else "exact"
        other = "exact" if pick == "truncated" else "truncated"
        fit_rows.append(
            [
                n_experts,
                parameters,
                " / ".join(str(fitted[path].n_iter_) for path in GATE_PATHS),
                f"{times['exact']:.2f} / {times['truncated']:.2f}",
                ratio(times["exact"] / times["truncated"]),
                pick,
                _picked_faster(times[pick], times[other]),
                " / ".join(f"{fitted[path].lower_bound_:.4f}" for path in GATE_PATHS),
            ]
        )
    fit_header = [
        "K",
        "gate parameters",
        "iterations (exact / truncated)",
        "fit time, s (exact / truncated)",
        "exact / truncated",
        "rule picks",
        "pick faster (10 % slack)",
        "`lower_bound_` (exact / truncated)",
    ]
    table = "\n\n".join(
        [
            f"Fixed work: {iters} iterations (`tol=0.0`), n = {n:,}.",
            markdown_table(header, rows),
            f"Crossover (exact / truncated = 1, interpolated): {crossover_text}.",
            f"To convergence: default `tol`, `max_iter=300`, n = {n:,}, d = "
            f"{d}, one fit of each path.",
            markdown_table(fit_header, fit_rows),
        ]
    )
    return Claim(
        9,
        "Softmax gate: exact Newton against truncated Newton steps",
        "`gating.py`",
        "`mixexp/gating.py` (`_TRUNCATED_NEWTON_MIN_PARAMETERS` = "
        f"{limit}: above this many gate parameters ((n_features + 1) * "
        "n_experts) the gate takes truncated Newton steps (conjugate gradients "
        'on Hessian products) instead of exact ones; "fits to convergence took '
        "as long with either up to 336 parameters, the exact steps needing "
        "fewer iterations; from 504 the truncated steps are 1.5 times "
        'faster").',
        "whole fits of `MixtureOfExpertsRegressor(LinearRegression(), "
        "n_experts=K, random_state=0, max_iter=M, tol=0.0)` (default k-means "
        "partition and gate, ConvergenceWarning silenced) on `make_surface(n, "
        "n_features=d)` of `benchmarks/scale.py`, with "
        "`mixexp.gating._TRUNCATED_NEWTON_MIN_PARAMETERS` set by this script "
        "to 10**9 (exact Newton steps always) or 0 (truncated always; "
        "restored after). Time per iteration: the marginal cost "
        f"(t(max_iter={iters}) - t(max_iter=1)) / {iters - 1}, each t the "
        f"median of {settings.gate_repeats} fits, the four fits of a case "
        "alternated (after one small warm-up fit), so the k-means partition "
        "and the set-up are left out (reported apart). BLAS and OpenMP "
        "limited to one thread by this script around the whole item (as "
        "mixexp's EM loop limits BLAS; k-means runs on OpenMP threads). "
        "Rule picks: truncated "
        f"when the parameters exceed {limit}; pick faster: the picked path "
        "took at most 1.1 times the other. The two paths take different "
        "steps, so their `lower_bound_` differ. Exact / truncated above 1: "
        "the truncated step is faster.",
        table,
        f"exact / truncated by parameters: {'; '.join(measured)}; crossover "
        f"{crossover_text}",
    )


# --------------------------------------------------------------------------


def summary_table(claims):
    rows = [[c.number, c.title, c.files, c.measured] for c in claims]
    return markdown_table(["#", "claim", "source", "measured (this run)"], rows)


# Items 1-6 share the section "kernels", written when all six ran; the
# longer items 8 and 9 write a section each. Item 7 is retired (see the
# module docstring); its number is kept free.
# --------------------------------------------------------------------------
# 10. exp of underflowing arguments


def _time_exps(logs, settings):
    out = np.empty_like(logs)
    return timed(
        {
            "slow": lambda: np.exp(logs, out=out),
            "fast": lambda: exp_floored(logs, out=out),
        },
        settings,
    )


def claim_exp_floor(settings):
    rng = np.random.RandomState(0)
    shape = (16, 100_000)
    rows, measured = [], []
    # Log-probabilities less each row's largest: most near 0 in a soft
    # gate, a share far below -708 in a sharp one (scores of experts far
    # from a row).
    for share in (0.0, 0.1, 0.5):
        logs = rng.uniform(-30.0, 0.0, shape)
        far = rng.rand(*shape) < share
        logs[far] = rng.uniform(-5000.0, -708.0, far.sum())
        times = _time_exps(logs, settings)
        rows.append(
            pair_row(
                f"{share:.0%} of the arguments below -708",
                "`np.exp(x, out=out)`",
                "`mixexp._utils.exp_floored(x, out=out)`",
                times,
            )
        )
        measured.append(f"{share:.0%} below: {ratio(times['slow'] / times['fast'])}")
    for value, name in ((-720.0, "subnormal"), (-1e4, "zero")):
        logs = np.full(shape, value)
        times = _time_exps(logs, settings)
        rows.append(
            pair_row(
                f"every argument {value:g} (exp {name})",
                "`np.exp(x, out=out)`",
                "`mixexp._utils.exp_floored(x, out=out)`",
                times,
            )
        )
        measured.append(f"all {name}: {ratio(times['slow'] / times['fast'])}")
    return Claim(
        10,
        "exp of log-probabilities that underflow",
        "`_utils.py`",
        "`mixexp/_utils.py` (`_EXP_FLOOR`: \"numpy's vectorised exp takes a "
        "slow path, element by element, for arguments whose result underflows "
        "(below about -708), three times slower where the result is zero and "
        'fifty where it is subnormal"; "where none underflow, the extra pass '
        '(the minimum) costs about 40%").',
        f"exp of a C-ordered float64 ({shape[0]}, {shape[1]:,}) array into a "
        "preallocated one: uniform on [-30, 0], with the given share of the "
        "entries uniform on [-5000, -708] instead; then arrays of one value. "
        "The floored exp includes its extra passes (the minimum, and the "
        "maximum where some argument is below -707). " + RATIO_NOTE,
        markdown_table(PAIR_HEADER, rows),
        "np.exp / floored: " + "; ".join(measured),
    )


# --------------------------------------------------------------------------
# 11. The exact Newton steps' Hessian over a sample of rows

HESSIAN_SAMPLE_FITS = {
    "n": 100_000,
    "ks": (8, 16),
    "samples": (None, 50_000, 20_000, 10_000),
}


def _sampled_fit(X, y, n_experts, sample_rows):
    """A default fit with the Hessian's sample set to `sample_rows` (None: all)."""
    saved = mixexp._softmax._HESSIAN_SAMPLE_ROWS
    mixexp._softmax._HESSIAN_SAMPLE_ROWS = sample_rows or X.shape[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            model = MixtureOfExpertsRegressor(n_experts=n_experts, random_state=0)
            model.fit(X, y)
            return time.perf_counter() - start, model
    finally:
        mixexp._softmax._HESSIAN_SAMPLE_ROWS = saved


def claim_hessian_sample(settings):
    with settings.controller.limit(limits=1):
        return _claim_hessian_sample(settings)


def _claim_hessian_sample(settings):
    n = HESSIAN_SAMPLE_FITS["n"]
    code = mixexp._softmax._HESSIAN_SAMPLE_ROWS
    X, y = make_surface(n)
    _sampled_fit(*make_surface(2_000), 4, None)  # lazy imports, first-call costs
    rows, measured = [], []
    for n_experts in HESSIAN_SAMPLE_FITS["ks"]:
        results = {
            sample: _sampled_fit(X, y, n_experts, sample)
            for sample in HESSIAN_SAMPLE_FITS["samples"]
        }
        full_time, full = results[None]
        for sample, (seconds, model) in results.items():
            rows.append(
                [
                    str(n_experts),
                    "all" if sample is None else f"{sample:,}",
                    str(model.n_iter_),
                    "yes" if model.converged_ else "no",
                    f"{model.lower_bound_:.5f}",
                    f"{model.lower_bound_ - full.lower_bound_:+.1e}",
                    f"{seconds:.1f}",
                    ratio(full_time / seconds),
                ]
            )
        seconds, model = results[code]
        measured.append(
            f"K = {n_experts}: {ratio(full_time / seconds)} faster, "
            f"{model.n_iter_} against {full.n_iter_} iterations, lower_bound_ "
            f"{model.lower_bound_ - full.lower_bound_:+.1e}"
        )
    return Claim(
        11,
        "The exact Newton steps' Hessian over a sample of rows",
        "`_softmax.py`, `gating.py`",
        f'`mixexp/_softmax.py` (`_HESSIAN_SAMPLE_ROWS` = {code:,}: "default fits '
        "to convergence on 100,000 rows with 8 and 16 experts ran 1.3 and 1.6 "
        "times faster with 20,000 rows than with all of them, in as many "
        "iterations or fewer, to a lower_bound_ within 4e-4 of theirs (the "
        'paths differ; 10,000 rows ended higher at 16 experts)").',
        f"one default fit, `MixtureOfExpertsRegressor(n_experts=K, "
        f"random_state=0)`, to convergence on `make_surface({n:,})` of "
        "`benchmarks/scale.py` (20 features; the gate takes exact Newton "
        "steps at these K), with `mixexp._softmax._HESSIAN_SAMPLE_ROWS` set by "
        "this script (the Hessian is summed over every (n // that)-th row; "
        "'all': set to n); BLAS and OpenMP limited to one thread. Speed-up: "
        "the fit time over all rows divided by this fit's time (one fit each, "
        "so about 5% is noise).",
        markdown_table(
            [
                "K",
                "Hessian rows",
                "iterations",
                "converged",
                "lower_bound_",
                "difference to all rows",
                "fit, s",
                "speed-up",
            ],
            rows,
        ),
        "; ".join(measured),
    )


# --------------------------------------------------------------------------
# 12. The exact Hessian of a sharp gate


def claim_sharp_hessian(settings):
    rng = np.random.RandomState(0)
    n, d, n_experts = 20_000, 20, 8
    X = rng.standard_normal((n, d))
    mean, scale = X.mean(axis=0), X.std(axis=0)
    params = 0.3 * rng.standard_normal((d + 1) * n_experts)
    probaT = mixexp._softmax.softmax_probaT(params, X, mean, scale, n_experts)
    scaled = np.full(n, 1.0 / n)
    code = mixexp._softmax._NEGLIGIBLE_PROBABILITY
    rows, measured = [], []
    # A sharp gate: a share of each row's probabilities tiny (e^-705, about
    # the floor of exp_floored), the rest as they were.
    for share in (0.0, 0.1, 0.5):
        sharp = probaT.copy()
        sharp[rng.rand(*sharp.shape) < share] = np.exp(-705.0)

        def hessian(floor, sharp=sharp):
            mixexp._softmax._NEGLIGIBLE_PROBABILITY = floor
            try:
                return softmax_hessian(X, mean, scale, sharp, scaled, 0.0)
            finally:
                mixexp._softmax._NEGLIGIBLE_PROBABILITY = code

        times = timed(
            {"slow": lambda h=hessian: h(0.0), "fast": lambda h=hessian: h(code)},
            settings,
            {name: blas_limit(settings, 1) for name in ("slow", "fast")},
        )
        difference = np.max(np.abs(hessian(0.0) - hessian(code)))
        rows.append(
            [
                *pair_row(
                    f"{share:.0%} of the probabilities e^-705",
                    "every probability in the products",
                    f"probabilities below {code:g} as zero",
                    times,
                ),
                f"{difference:.1e}",
            ]
        )
        measured.append(f"{share:.0%} tiny: {ratio(times['slow'] / times['fast'])}")
    return Claim(
        12,
        "The exact Hessian of a sharp gate",
        "`_softmax.py`",
        "`mixexp/_softmax.py` (`softmax_hessian`: \"A sharp gate's tiny "
        "probabilities would make the products below run on subnormal "
        'numbers, tens of times slower, for terms that count nothing").',
        f"`mixexp._softmax.softmax_hessian` on {n:,} x {d} random normals, "
        f"{n_experts} experts, equal row weights, with "
        "`mixexp._softmax._NEGLIGIBLE_PROBABILITY` set by this script to 0 "
        "(every probability enters the products) or left as in the code; the "
        "probabilities of random gate parameters with the given share set to "
        "e^-705 (a sharp gate's, as `exp_floored` leaves them); BLAS limited "
        "to one thread. Last column: the largest absolute difference between "
        "the two Hessians. " + RATIO_NOTE,
        markdown_table([*PAIR_HEADER, "max abs difference"], rows),
        "with / without the floor: " + "; ".join(measured),
    )


def claim_tiny_zeroing(settings):
    rng = np.random.RandomState(0)
    n, n_experts = 100_000, 32
    code = mixexp._softmax._NEGLIGIBLE_PROBABILITY
    rows, measured = [], []
    for share in (0.0, 0.5, 0.9):
        probaT = rng.dirichlet(np.ones(n_experts), size=n).T.copy()
        probaT[rng.rand(*probaT.shape) < share] = np.exp(-705.0)
        for dtype in (np.float64, np.float32):
            source = probaT.astype(dtype)

            def assigned(source=source):
                a = source.copy()
                a[a < code] = 0.0
                return a

            def multiplied(source=source):
                a = source.copy()
                np.multiply(a, a >= code, out=a)
                return a

            times = timed(
                {"slow": assigned, "fast": multiplied},
                settings,
                {name: blas_limit(settings, 1) for name in ("slow", "fast")},
            )
            same = np.array_equal(assigned(), multiplied())
            rows.append(
                [
                    *pair_row(
                        f"{share:.0%} tiny, {np.dtype(dtype).name}",
                        "a[a < c] = 0",
                        "np.multiply(a, a >= c, out=a)",
                        times,
                    ),
                    "yes" if same else "NO",
                ]
            )
            measured.append(
                f"{share:.0%} tiny, {np.dtype(dtype).name}: "
                f"{ratio(times['slow'] / times['fast'])}"
            )
    return Claim(
        13,
        "Zeroing a sharp gate's tiny probabilities",
        "`_softmax.py`",
        '`mixexp/_softmax.py` (`block_curvature`: "A product with the mask '
        "zeroes them several times faster than an assignment through it where "
        "many are tiny, as on a sharp gate, at about 1.5 times its cost where "
        'none is").',
        f"A copy of a ({n_experts}, {n:,}) array of Dirichlet probabilities, "
        "the given share set to e^-705, in double and single precision; the "
        f"entries below c = {code:g} set to zero by an assignment through "
        "the mask or by a product with it (each timing includes the copy). "
        "Last column: whether the two results are equal. " + RATIO_NOTE,
        markdown_table([*PAIR_HEADER, "equal"], rows),
        "assignment / product: " + "; ".join(measured),
    )


ITEMS = {
    1: claim_reductions,
    2: claim_gathers,
    3: claim_copies,
    4: claim_threadpoolctl,
    5: claim_linear,
    6: claim_threads,
    8: claim_shared_normal_equations,
    9: claim_gate_steps,
    10: claim_exp_floor,
    11: claim_hessian_sample,
    12: claim_sharp_hessian,
    13: claim_tiny_zeroing,
}
SHARED_ITEMS = (1, 2, 3, 4, 5, 6)
OWN_SECTIONS = {
    8: ("kernels-shared-normal-equations", "Shared normal equations (kernels, item 8)"),
    9: (
        "kernels-truncated-newton",
        "Softmax gate: exact against truncated Newton (kernels, item 9)",
    ),
    10: (
        "kernels-exp-floor",
        "exp of underflowing log-probabilities (kernels, item 10)",
    ),
    11: (
        "kernels-hessian-sample",
        "The gate's Hessian over a sample of rows (kernels, item 11)",
    ),
    12: (
        "kernels-sharp-hessian",
        "The exact Hessian of a sharp gate (kernels, item 12)",
    ),
    13: (
        "kernels-tiny-zeroing",
        "Zeroing a sharp gate's tiny probabilities (kernels, item 13)",
    ),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--items",
        type=int,
        nargs="+",
        choices=sorted(ITEMS),
        default=sorted(ITEMS),
        metavar="N",
        help="items to run (default: all, 1-6, 8 and 9; 7 is retired)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds of each micro-benchmark"
    )
    parser.add_argument(
        "--gate-repeats",
        type=int,
        default=2,
        help="fits of each setting in item 9's fixed-iteration table",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.2,
        help="seconds each timed loop of a micro-benchmark lasts at least",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of a few seconds (one round, 20,000 rows in item 5, "
        "fewer and smaller cases in items 8 and 9); never writes RESULTS.md",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings(args)
    selected = sorted(set(args.items))

    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()
    claims, own_meters, own_times = [], {}, {}
    for number in selected:
        item_meter, item_start = LoadMeter(), time.perf_counter()
        claim = ITEMS[number](settings)
        own_times[number] = time.perf_counter() - item_start
        own_meters[number] = item_meter.text()
        claim.print()
        print(f"Item {number} run time: {own_times[number]:.0f} s\n", flush=True)
        claims.append(claim)
    total = time.perf_counter() - start
    summary = summary_table(claims)
    print("Summary\n\n" + summary + "\n")
    print(
        meter.text()
        + (
            " (item 6's spinning process counts as another process)"
            if 6 in selected
            else ""
        )
    )
    print(f"Total run time: {total:.0f} s")

    if args.quick:
        print("--quick: RESULTS.md not written.")
        return 0
    if args.no_write:
        return 0
    shared = [c for c in claims if c.number in SHARED_ITEMS]
    if len(shared) == len(SHARED_ITEMS):
        shared_time = sum(own_times[number] for number in SHARED_ITEMS)
        blocks = [
            "Each figure backs a reason given in a source comment of "
            "`mixexp/` (quoted on its `backs:` line). Times are medians of "
            f"{settings.repeats} rounds; "
            "in each round the compared calls are timed one after the other, "
            f"each a loop of calls lasting at least {settings.min_time} s after "
            "an untimed call. Items 1-5 run with BLAS limited to one thread, as "
            "mixexp's EM loop does. Random data from `np.random.RandomState(0)`. "
            f"Run time of items 1-6 {shared_time:.0f} s. "
            + meter.text()
            + " (item 6's "
            "spinning process counts as another process.) Items 8 to 12 have "
            "sections of their own.",
            "**Summary**",
            summary_table(shared),
        ]
        for claim in shared:
            blocks.extend(claim.blocks())
        write_section(
            "kernels",
            "Timings behind the source comments (kernels)",
            blocks,
            machine=machine,
        )
    elif shared:
        print(
            "Items 1-6 write their section only when all six run: "
            "section 'kernels' not written."
        )
    for claim in claims:
        if claim.number not in OWN_SECTIONS:
            continue
        name, title = OWN_SECTIONS[claim.number]
        blocks = [
            f"Item {claim.number} of `benchmarks/kernels.py`, which backs a "
            "reason given in a source comment of `mixexp/` (quoted on its "
            f"`backs:` line). Run time {own_times[claim.number]:.0f} s. "
            + own_meters[claim.number],
            *claim.blocks(),
        ]
        write_section(name, title, blocks, machine=machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
