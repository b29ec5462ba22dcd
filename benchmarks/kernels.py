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
7. Softmax gate: Newton steps against L-BFGS inside EM (``gating.py``,
   ``_NEWTON_MAX_PARAMETERS``): time per EM iteration.

Every ratio divides the way the source calls slower by the way it calls
faster, so above 1 agrees with the source. Times are medians of
``--repeats`` rounds; within a round the compared calls are timed one after
the other (so a change of the machine's load hits them alike), each timing a
loop of enough calls to last about 0.2 s after an untimed call. Items 1-5
run with BLAS limited to one thread, as mixexp's EM loop runs.

Run from the repository root::

    python benchmarks/kernels.py
    python benchmarks/kernels.py --quick --no-write
"""

import argparse
import contextlib
import copy
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
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits

import mixexp.gating
from mixexp import MixtureOfExpertsRegressor
from mixexp._linear import _BLOCK_BYTES, _shallow_copy, fit_linear_regressions
from mixexp._softmax import softmax_hessian
from mixexp.datasets import make_regimes

RATIO_NOTE = (
    "Ratio: the way the source calls slower over the way it calls faster "
    "(above 1 agrees with the source)."
)


class Settings:
    """What the command line asks for."""

    def __init__(self, args):
        self.quick = args.quick
        self.repeats = 1 if args.quick else args.repeats
        self.fit_repeats = 1 if args.quick else args.fit_repeats
        self.min_time = 0.01 if args.quick else args.min_time
        # --quick: a smoke run of a few seconds, on smaller fits.
        self.fit_rows = 20_000 if args.quick else 200_000
        self.em_rows = 20_000 if args.quick else 100_000
        self.em_experts = (8,) if args.quick else (8, 16, 32)
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
# 7. Newton steps against L-BFGS in the softmax gate


@contextlib.contextmanager
def newton_max_parameters(value):
    """Set ``mixexp.gating._NEWTON_MAX_PARAMETERS`` for the block; restore it."""
    saved = mixexp.gating._NEWTON_MAX_PARAMETERS
    mixexp.gating._NEWTON_MAX_PARAMETERS = value
    try:
        yield
    finally:
        mixexp.gating._NEWTON_MAX_PARAMETERS = saved


def _em_fit(X, y, n_experts, fitted, key):
    model = MixtureOfExpertsRegressor(
        LinearRegression(),
        n_experts=n_experts,
        partition="random",
        max_iter=5,
        tol=0.0,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    fitted[key] = model


def claim_gating(settings):
    n, d = settings.em_rows, 20
    X, y = make_regimes(n_samples=2_000, n_features=d, n_regimes=4, random_state=0)
    _em_fit(X, y, 4, {}, "warm-up")  # lazy imports, first-call costs
    rows, measured = [], []
    for n_experts in settings.em_experts:
        X, y = make_regimes(
            n_samples=n, n_features=d, n_regimes=n_experts, random_state=0
        )
        fitted = {}
        times = timed(
            {
                "newton": lambda X=X, y=y, k=n_experts, out=fitted: _em_fit(
                    X, y, k, out, "newton"
                ),
                "lbfgs": lambda X=X, y=y, k=n_experts, out=fitted: _em_fit(
                    X, y, k, out, "lbfgs"
                ),
            },
            settings,
            contexts={"lbfgs": lambda: newton_max_parameters(0)},
            calibrate=False,
            repeats=settings.fit_repeats,
        )
        iterations = {key: model.n_iter_ for key, model in fitted.items()}
        newton = times["newton"] / iterations["newton"]
        lbfgs = times["lbfgs"] / iterations["lbfgs"]
        differ = not np.allclose(
            fitted["newton"].predict(X[:1000]), fitted["lbfgs"].predict(X[:1000])
        )
        rows.append(
            [
                n_experts,
                (d + 1) * n_experts,
                f"{iterations['newton']} / {iterations['lbfgs']}",
                f"{newton:.3f} s",
                f"{lbfgs:.3f} s",
                ratio(lbfgs / newton),
                "yes" if differ else "NO (the constant had no effect)",
            ]
        )
        measured.append(
            f"K = {n_experts}: {newton:.2f} / {lbfgs:.2f} s ({ratio(lbfgs / newton)})"
        )
    header = [
        "K",
        "gate parameters",
        "iterations (Newton / L-BFGS)",
        "Newton, s / iteration",
        "L-BFGS, s / iteration",
        "L-BFGS / Newton",
        "models differ",
    ]
    return Claim(
        7,
        "Softmax gate: Newton steps against L-BFGS inside EM",
        "`gating.py`",
        "`mixexp/gating.py` (`_NEWTON_MAX_PARAMETERS` = 1000, above which the "
        'gate is fitted by L-BFGS: "a Hessian costs about (n_features + 1) * '
        "n_experts / 4 gradients and its eigendecomposition grows with the "
        "cube of the parameters. Below it, EM iterations with Newton steps "
        'were the faster ones").',
        f"whole fits of `MixtureOfExpertsRegressor(LinearRegression(), "
        'n_experts=K, partition="random", max_iter=5, tol=0.0, '
        f"random_state=0)` on `make_regimes(n_samples={n:,}, n_features={d}, "
        "n_regimes=K, random_state=0)`, ConvergenceWarning silenced, as they "
        "are (Newton steps, the gate has at most 1000 parameters) and with "
        "`mixexp.gating._NEWTON_MAX_PARAMETERS` set to 0 by this script "
        "(L-BFGS solves; restored after). Seconds per iteration = fit time (median of "
        f"{settings.fit_repeats}, the two settings alternated, after one "
        "small warm-up fit) / `n_iter_`, set-up included. EM runs with BLAS "
        "limited to one thread (mixexp's own limit). Models differ: the two "
        "fits predict differently, so the constant took effect.",
        markdown_table(header, rows),
        "Newton / L-BFGS s per iteration: " + "; ".join(measured),
    )


# --------------------------------------------------------------------------


def summary_table(claims):
    rows = [[c.number, c.title, c.files, c.measured] for c in claims]
    return markdown_table(["#", "claim", "source", "measured (this run)"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds of each micro-benchmark"
    )
    parser.add_argument(
        "--fit-repeats", type=int, default=3, help="fits of each EM setting (item 7)"
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
        help="smoke run of a few seconds (one round, smaller fits, K = 8 only "
        "in item 7); never writes RESULTS.md",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings(args)

    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()
    claims = []
    for measure in (
        claim_reductions,
        claim_gathers,
        claim_copies,
        claim_threadpoolctl,
        claim_linear,
        claim_threads,
        claim_gating,
    ):
        claim = measure(settings)
        claim.print()
        claims.append(claim)
    total = time.perf_counter() - start
    summary = summary_table(claims)
    print("Summary\n\n" + summary + "\n")
    print(meter.text() + " (item 6's spinning process counts as another process)")
    print(f"Total run time: {total:.0f} s")

    if args.quick:
        print("--quick: RESULTS.md not written.")
    elif not args.no_write:
        blocks = [
            "Each figure backs a reason given in a source comment of "
            "`mixexp/` (quoted on its `backs:` line). Times are medians of "
            f"{settings.repeats} rounds (item 7: {settings.fit_repeats} fits); "
            "in each round the compared calls are timed one after the other, "
            f"each a loop of calls lasting at least {settings.min_time} s after "
            "an untimed call. Items 1-5 run with BLAS limited to one thread, as "
            "mixexp's EM loop does. Random data from `np.random.RandomState(0)`. "
            f"Total run time {total:.0f} s. " + meter.text() + " (item 6's "
            "spinning process counts as another process.)",
            "**Summary**",
            summary,
        ]
        for claim in claims:
            blocks.extend(claim.blocks())
        write_section(
            "kernels",
            "Timings behind the source comments (kernels)",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
