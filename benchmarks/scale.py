"""How the EM iteration of mixexp scales with rows n and experts K (d = 20).

For every (n, K) this measures, with linear experts and the default softmax
gate:

- **time per EM iteration**, the marginal cost of one more iteration:
  ``(t(max_iter=1 + m) - t(max_iter=1)) / m`` with ``tol=0`` (so exactly
  that many iterations run; the ConvergenceWarning is silenced), each ``t``
  the median of ``--repeats`` fits. The difference removes the set-up
  (validation, initial partition, the first, cold gate fit), which is
  reported apart as ``t(max_iter=1)``. The initial partition is fixed in
  advance (k-means labels computed once per case) so no clustering is timed.
- the same as a **ratio to one scikit-learn LinearRegression fit** on all
  rows (unweighted, same data; timed twice in each repeat, interleaved with
  the mixture fits so that a change of load touches both; median);
- the **machine floor** of an iteration and measured / floor. The floor is a
  lower bound for an EM iteration of this model on this machine::

      flops = n*K*d^2          K weighted Gram matrices X' W_k X (symmetric)
            + 8*n*K*d          expert predictions, gate scores and one gate
                               gradient (2 flops per multiply-add each)
      bytes = 3 * 8*n*d        three passes over X (Grams, predictions, gate)
            + 6 * 8*n*K        a few passes over n x K matrices (R, log-lik.)
      floor = max(flops / matmul rate, bytes / copy bandwidth)

  with the matmul rate measured on a large square ``numpy.dot`` and the
  bandwidth on a large array copy (read + write counted);
- **peak memory of a fit** (``max_iter=2``) as a ratio to ``X.nbytes``,
  traced with ``tracemalloc`` (numpy and scipy register their array buffers
  with it; allocations inside BLAS are not seen). The memory held before
  the fit (X, y, labels) is not counted. For the target case the peak
  resident set of a fit in a fresh subprocess (``VmHWM`` of
  ``/proc/self/status``, reset just before the fit through
  ``/proc/self/clear_refs``, minus the resident set before the fit) is also
  reported; it sees every allocation, BLAS included, at page granularity;
- the target case again with ``X`` column-major (Fortran order), the
  layout in which a pandas DataFrame's values reach ``fit``.

The project's target: at 200,000 x 20 with 8 experts, one EM iteration at
most 12x one LinearRegression fit and peak memory at most 6x X.

Two more tables measure the cost of many experts:

- the **K table**: the same per-iteration time, ratio to one
  LinearRegression fit and peak memory at 100,000 x 20 for K = 8, 16, 32,
  64, with the mixture started as a new user would (``partition="random"``,
  no fixed labels), on the smooth surface below (``--k-table-data regimes``:
  on ``make_regimes`` data instead; ``--k-table-start kmeans``: from the
  grid's k-means labels fixed in advance);
- the **default-fit table**: ``MixtureOfExpertsRegressor(n_experts=K,
  random_state=0)``, every other parameter at its default, fitted to
  convergence (or ``max_iter``) on the smooth surface: ``X ~ N(0, 1)`` of
  shape 100,000 x 20 and ``y = 3 sin(2 x0) + 2 |x1| + x2 x3 + 0.3 X b +
  N(0, 0.3^2)``, ``b ~ N(0, 1)`` (``numpy.random.default_rng(0)`` draws X,
  then b, then the noise), for K = 16 and 32. It reports iterations,
  convergence, ``lower_bound_``, the total fit time and its cost in
  LinearRegression fits on the same rows (timed in the same run, three fits
  before and three after each mixture fit, median), next to the time per
  iteration: total / iterations, and the marginal cost of an iteration
  after the first, ``(t(fit) - t(max_iter=1)) / (n_iter_ - 1)``;
- the **many-experts targets**: at 100,000 x 20 and K = 64, one EM
  iteration at most 10 LinearRegression fits and peak memory at most 4x X;
  the default fits at K = 16 and 32 converge, at most 150 and 600
  LinearRegression fits, to a ``lower_bound_`` at least the one of the code
  these targets were set against (-1.006 and -0.739); at 200,000 x 20 and
  K = 8, one EM iteration at most 3 fits and peak memory at most 3x X.

A fourth table, not run by default, measures the **rule between the two EM
runs** (``--lean-rule``): for each (n, K) the time of a fit of 10 iterations
(``tol=0``, the first fit of a fresh process, median of ``--repeats``) and peak
memory of the in-memory run (``_run.run_em``, (n, K) arrays) and of the lean
run (``_lean.lean_run``, sums over blocks of rows), each forced, side by
side, with the run the rule (``_lean._LEAN_MIN_RESPONSIBILITY_BYTES``)
picks.

Run from the repository root::

    python benchmarks/scale.py                 # everything (about 20 minutes)
    python benchmarks/scale.py --grid          # the (n, K) grid and target
    python benchmarks/scale.py --full --grid   # the grid with n = 1e6
    python benchmarks/scale.py --k-table       # K = 8 ... 64 at 100,000 x 20
    python benchmarks/scale.py --default-fits --fit-ks 16 32
    python benchmarks/scale.py --lean-rule     # both EM runs (about 6 minutes)
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    HERE,
    FixedLabels,
    LoadMeter,
    markdown_table,
    median_time,
    print_machine,
    traced_peak,
    write_section,
)
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsRegressor, _lean
from mixexp.datasets import make_regimes

N_FEATURES = 20
N_REGIMES = 8
DEFAULT_NS = [1_000, 10_000, 100_000, 200_000]
FULL_NS = [*DEFAULT_NS, 1_000_000]
DEFAULT_KS = [2, 4, 8, 16, 32]
TARGET = {"n": 200_000, "K": 8, "time_ratio": 12.0, "memory_ratio": 6.0}
K_TABLE_N = 100_000
K_TABLE_KS = [8, 16, 32, 64]
FIT_N = 100_000
FIT_KS = [16, 32]
# Many experts: the K table's largest case, the default fits (cost in
# LinearRegression fits; lower_bound_ of the code the targets were set
# against, to 3 decimals) and the grid's target case.
MANY_EXPERTS = {
    "k_table": {"n": 100_000, "K": 64, "time_ratio": 10.0, "memory_ratio": 4.0},
    "fit_cost": {16: 150.0, 32: 600.0},
    "fit_lower_bound": {16: -1.006, 32: -0.739},
    "target_case": {"time_ratio": 3.0, "memory_ratio": 3.0},
}


# ----------------------------------------------------------------------
# Machine floor.


def matmul_gflops(size=2000, repeats=3):
    """Rate of a large square matrix product, in GFLOP/s (2 N^3 flops)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size))
    b = rng.standard_normal((size, size))
    seconds, _, _ = median_time(lambda: a @ b, repeats=repeats, warmup=1)
    return 2.0 * size**3 / seconds / 1e9


def copy_bandwidth(n_bytes=512 * 2**20, repeats=3):
    """Memory bandwidth of a large array copy, GB/s (read + write counted)."""
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    seconds, _, _ = median_time(lambda: np.copyto(dst, src), repeats=repeats, warmup=1)
    return 2.0 * src.nbytes / seconds / 1e9


def iteration_floor(n, K, d, gflops, bandwidth):
    """Lower bound of one EM iteration's time (seconds); see module doc."""
    flops = n * K * d**2 + 8 * n * K * d
    n_bytes = 3 * 8 * n * d + 6 * 8 * n * K
    return max(flops / (gflops * 1e9), n_bytes / (bandwidth * 1e9)), flops, n_bytes


# ----------------------------------------------------------------------
# Cases.


def initial_labels(X, n_experts, seed=0):
    """k-means labels (fitted on at most 20,000 rows) of the standardised X."""
    Xs = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(seed)
    sample = Xs[rng.choice(len(Xs), size=min(len(Xs), 20_000), replace=False)]
    km = KMeans(n_clusters=n_experts, n_init=1, random_state=seed).fit(sample)
    return km.predict(Xs)


def make_surface(n_samples, n_features=N_FEATURES, random_state=0):
    """The smooth surface of the default-fit table (see the module doc)."""
    rng = np.random.default_rng(random_state)
    X = rng.standard_normal((n_samples, n_features))
    b = rng.standard_normal(n_features)
    noise = rng.normal(0.0, 0.3, n_samples)
    y = (
        3.0 * np.sin(2.0 * X[:, 0])
        + 2.0 * np.abs(X[:, 1])
        + X[:, 2] * X[:, 3]
        + 0.3 * (X @ b)
        + noise
    )
    return X, y


def make_model(labels, n_experts, max_iter):
    """Linear experts, ``tol=0``; `labels` fixed in advance, or a partition name."""
    partition = labels if isinstance(labels, str) else FixedLabels(labels)
    return MixtureOfExpertsRegressor(
        LinearRegression(),
        n_experts=n_experts,
        partition=partition,
        max_iter=max_iter,
        tol=0.0,
        random_state=0,
    )


def fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # e.g. collapsed experts
        return model.fit(X, y)


def _timed(func):
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def run_case(X, y, K, args, gflops, bandwidth, partition=None):
    """Time one (n, K) case; the baseline LinearRegression is interleaved.

    Each repeat times two LinearRegression fits, then a mixture fit with
    max_iter=1, then one with max_iter=1+m, so that a change of the load on
    the machine during the run touches the baseline and the mixture alike.
    The mixture starts from k-means labels computed once, or from
    `partition` (a partition name such as ``"random"``) when given.
    """
    n, d = X.shape
    labels = initial_labels(X, K) if partition is None else partition

    def fit1():
        return fit_quietly(make_model(labels, K, 1), X, y)

    def fitm():
        return fit_quietly(make_model(labels, K, 1 + args.iters), X, y)

    def lr():
        return LinearRegression().fit(X, y)

    if n <= 10_000:  # warm-up: caches, lazy imports, BLAS threads
        lr(), fit1(), fitm()
    t_lr, t_1, t_m = [], [], []
    for _ in range(args.repeats):
        t_lr += [_timed(lr)[0], _timed(lr)[0]]
        t_1.append(_timed(fit1)[0])
        seconds, model = _timed(fitm)
        t_m.append(seconds)
    lr_time = float(np.median(t_lr))
    t1, tm = float(np.median(t_1)), float(np.median(t_m))
    per_iter = (tm - t1) / args.iters
    floor, flops, n_bytes = iteration_floor(n, K, d, gflops, bandwidth)
    peak = traced_peak(lambda: fit_quietly(make_model(labels, K, 2), X, y))
    return {
        "n": n,
        "K": K,
        "lr_ms": lr_time * 1e3,
        "setup_ms": t1 * 1e3,
        "iter_ms": per_iter * 1e3,
        "ratio_lr": per_iter / lr_time,
        "floor_ms": floor * 1e3,
        "ratio_floor": per_iter / floor,
        "peak_mb": peak / 2**20,
        "ratio_mem": peak / X.nbytes,
        "n_iter": model.n_iter_,
        "gate_lbfgs_iter": getattr(model.gate_, "n_iter_", None),
        "reseeds": int(np.sum(getattr(model, "n_reseeds_", 0))),
        "flops": flops,
        "bytes": n_bytes,
    }


def run_default_fit(X, y, K, args):
    """One default fit (all but n_experts, random_state and max_iter default).

    Three LinearRegression fits are timed before and three after the
    mixture's fits (median), so that a change of load touches both. The
    mixture is also fitted with ``max_iter=1`` (set-up and first iteration).
    """
    params = {"n_experts": K, "random_state": 0}
    if args.fit_max_iter is not None:
        params["max_iter"] = args.fit_max_iter

    def lr():
        return LinearRegression().fit(X, y)

    t_lr = [_timed(lr)[0] for _ in range(3)]
    t1 = _timed(
        lambda: fit_quietly(
            MixtureOfExpertsRegressor(**{**params, "max_iter": 1}), X, y
        )
    )[0]
    totals = []
    for _ in range(args.fit_repeats):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seconds, model = _timed(
                lambda: MixtureOfExpertsRegressor(**params).fit(X, y)
            )
        totals.append(seconds)
    t_lr += [_timed(lr)[0] for _ in range(3)]
    lr_time = float(np.median(t_lr))
    total = float(np.median(totals))
    n_iter = int(model.n_iter_)
    later = (total - t1) / (n_iter - 1) if n_iter > 1 else float("nan")
    for w in caught:
        print(f"  K={K}: {w.category.__name__}: {str(w.message)[:120]}")
    return {
        "K": K,
        "n_iter": n_iter,
        "converged": bool(model.converged_),
        "lower_bound": float(model.lower_bound_),
        "total_s": total,
        "lr_ms": lr_time * 1e3,
        "cost_lr": total / lr_time,
        "iter_s": total / n_iter,
        "iter_lr": total / n_iter / lr_time,
        "setup_s": t1,
        "later_lr": later / lr_time,
        "warnings": len(caught),
        "max_iter": model.max_iter,
    }


# ----------------------------------------------------------------------
# Resident-set check of one case in a fresh process.

_RSS_CHILD = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from scale import fit_quietly, make_model

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None

data = np.load(sys.argv[2])
X, y, labels = data["X"], data["y"], data["labels"]
K = int(sys.argv[3])
try:
    # Reset the peak resident set (VmHWM) to the current one (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
before = status("VmRSS")
fit_quietly(make_model(labels, K, 2), X, y)
print(json.dumps({"before": before, "peak": status("VmHWM"), "reset": reset,
                  "x_bytes": X.nbytes}))
"""


def rss_peak_ratio(X, y, K, threads=None):
    """Peak resident set of a fit above the set before it, in a subprocess."""
    labels = initial_labels(X, K)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "case.npz"
        np.savez(path, X=X, y=y, labels=labels)
        env = dict(os.environ)
        if threads:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = str(threads)
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, str(HERE), str(path), str(K)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = out["peak"] - out["before"]
    note = ""
    if not out["reset"]:
        note = " (peak not reset before the fit: an upper bound)"
    return extra / out["x_bytes"], extra, note


# ----------------------------------------------------------------------


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ks = sorted({r["K"] for r in results})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("ratio_lr", "EM iteration / one LinearRegression fit", TARGET["time_ratio"]),
        ("ratio_floor", "EM iteration / machine floor", None),
        ("ratio_mem", "peak memory of fit / X.nbytes", TARGET["memory_ratio"]),
    ]
    for ax, (key, title, target) in zip(axes, panels, strict=True):
        for K in ks:
            rows = sorted((r for r in results if r["K"] == K), key=lambda r: r["n"])
            ax.plot(
                [r["n"] for r in rows],
                [r[key] for r in rows],
                marker="o",
                label=f"K={K}",
            )
        if target is not None:
            ax.axhline(target, color="k", linestyle="--", linewidth=1)
            ax.annotate(
                f"target at n=2e5, K=8: {target:g}",
                (0.02, target),
                xycoords=("axes fraction", "data"),
                va="bottom",
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows n (d = 20)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"Plot saved to {path}")


# ----------------------------------------------------------------------
# Tables.

HEADERS = [
    "n",
    "K",
    "LinearRegression fit, ms",
    "set-up + 1st iteration, ms",
    "EM iteration, ms",
    "iteration / LR fit",
    "floor, ms",
    "iteration / floor",
    "peak memory, MiB",
    "peak / X.nbytes",
]
KEYS = [
    "n",
    "K",
    "lr_ms",
    "setup_ms",
    "iter_ms",
    "ratio_lr",
    "floor_ms",
    "ratio_floor",
    "peak_mb",
    "ratio_mem",
]
FIT_HEADERS = [
    "K",
    "iterations",
    "converged",
    "lower_bound_",
    "fit, s",
    "LinearRegression fit, ms",
    "fit / LR fit",
    "per iteration, s",
    "per iteration / LR fit",
    "set-up + 1st iteration, s",
    "later iteration / LR fit",
    "warnings",
]
FIT_KEYS = [
    "K",
    "n_iter",
    "converged",
    "lower_bound",
    "total_s",
    "lr_ms",
    "cost_lr",
    "iter_s",
    "iter_lr",
    "setup_s",
    "later_lr",
    "warnings",
]


def _verdict(ok):
    return "met" if ok else "NOT met"


def _at_most_row(figure, measured, bound):
    """A target table's row for ``measured <= bound``."""
    return [figure, f"{measured:.2f}", f"<= {bound:g}", _verdict(measured <= bound)]


def _print_row(values):
    print(
        " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values),
        flush=True,
    )


def _part_note(elapsed, meter):
    return f"Run time of this table {elapsed:.0f} s. {meter.text()}"


def run_grid(args, ns, gflops, bandwidth):
    """The (n, K) grid and the target case; its blocks of RESULTS.md."""
    meter = LoadMeter()
    start = time.perf_counter()
    print("(n, K) grid, make_regimes data, k-means labels fixed in advance")
    print(" | ".join(HEADERS))
    results = []
    for n in ns:
        X, y = make_regimes(
            n_samples=n,
            n_regimes=N_REGIMES,
            n_features=N_FEATURES,
            noise=0.5,
            random_state=0,
        )
        for n_experts in args.ks:
            if 4 * n_experts > n:
                continue
            res = run_case(X, y, n_experts, args, gflops, bandwidth)
            results.append(res)
            _print_row([res[k] for k in KEYS])
        del X, y
        gc.collect()

    rss = column_major = None
    if TARGET["n"] in ns and TARGET["K"] in args.ks:
        X, y = make_regimes(
            n_samples=TARGET["n"],
            n_regimes=N_REGIMES,
            n_features=N_FEATURES,
            noise=0.5,
            random_state=0,
        )
        rss = rss_peak_ratio(X, y, TARGET["K"], args.threads)
        # A pandas DataFrame's values reach fit column-major.
        column_major = run_case(
            np.asfortranarray(X), y, TARGET["K"], args, gflops, bandwidth
        )
        print(
            "target case, X column-major: iteration / LR fit "
            f"{column_major['ratio_lr']:.3g}, peak / X.nbytes "
            f"{column_major['ratio_mem']:.3g}",
            flush=True,
        )
        del X, y
        gc.collect()

    note = _part_note(time.perf_counter() - start, meter)
    print(note)
    table = markdown_table(HEADERS, [[r[k] for k in KEYS] for r in results])
    blocks = [
        f"Data: `make_regimes(n_samples=n, n_regimes={N_REGIMES}, "
        f"n_features={N_FEATURES}, noise=0.5, random_state=0)`. Model: "
        "`MixtureOfExpertsRegressor(LinearRegression(), n_experts=K, "
        "gate='softmax', tol=0)`, soft EM, initial partition fixed in advance "
        "(k-means labels). EM iteration = `(t(max_iter=1+m) - t(max_iter=1)) / "
        f"m` with m={args.iters}, each t the median of {args.repeats} fits; the "
        "LinearRegression fit is unweighted on all rows, timed twice in each "
        "repeat, interleaved with the mixture fits (median). "
        "Peak memory: tracemalloc over a fit with max_iter=2, above the memory "
        "held before the fit. Floor: see `scale.py` "
        f"(measured matmul rate {gflops:.1f} GFLOP/s, copy bandwidth "
        f"{bandwidth:.1f} GB/s)."
        + (f" BLAS limited to {args.threads} thread(s)." if args.threads else "")
        + f" {note}",
        table,
    ]
    target = [r for r in results if r["n"] == TARGET["n"] and r["K"] == TARGET["K"]]
    if target:
        t = target[0]
        tighter = MANY_EXPERTS["target_case"]
        rows = [
            _at_most_row(
                "EM iteration / one LinearRegression fit",
                t["ratio_lr"],
                TARGET["time_ratio"],
            ),
            _at_most_row(
                "peak memory / X.nbytes (tracemalloc)",
                t["ratio_mem"],
                TARGET["memory_ratio"],
            ),
        ]
        if column_major is not None:
            rows.append(
                _at_most_row(
                    "EM iteration / one LinearRegression fit, both on X "
                    "column-major (as from a pandas DataFrame; LinearRegression "
                    "saves a copy there)",
                    column_major["ratio_lr"],
                    TARGET["time_ratio"],
                )
            )
        if rss is not None:
            rows.append(
                _at_most_row(
                    "peak resident set of fit / X.nbytes (subprocess)" + rss[2],
                    rss[0],
                    TARGET["memory_ratio"],
                )
            )
        rows += [
            _at_most_row(
                "EM iteration / one LinearRegression fit (many-experts target)",
                t["ratio_lr"],
                tighter["time_ratio"],
            ),
            _at_most_row(
                "peak memory / X.nbytes, tracemalloc (many-experts target)",
                t["ratio_mem"],
                tighter["memory_ratio"],
            ),
        ]
        target_table = markdown_table(["figure", "measured", "target", ""], rows)
        print("\nTarget (n=200,000, d=20, K=8)")
        print(target_table)
        blocks.append("**Target: n = 200,000, d = 20, K = 8**\n\n" + target_table)
    return results, blocks


def run_k_table(args, gflops, bandwidth):
    """Per-iteration time and memory over K at one n; its blocks."""
    meter = LoadMeter()
    start = time.perf_counter()
    n = args.k_table_n
    if args.k_table_data == "surface":
        X, y = make_surface(n)
        data = (
            f"the smooth surface of the default-fit table (`X ~ N(0, 1)`, {n:,} x "
            f"{N_FEATURES}, seed 0)"
        )
    else:
        X, y = make_regimes(
            n_samples=n,
            n_regimes=N_REGIMES,
            n_features=N_FEATURES,
            noise=0.5,
            random_state=0,
        )
        data = (
            f"`make_regimes(n_samples={n}, n_regimes={N_REGIMES}, "
            f"n_features={N_FEATURES}, noise=0.5, random_state=0)`"
        )
    partition = "random" if args.k_table_start == "random" else None
    start_text = (
        "partition='random'"
        if partition
        else "k-means labels fixed in advance, as in the grid"
    )
    print(f"\nK table at {n:,} x {N_FEATURES}, {start_text}")
    print(" | ".join(HEADERS))
    rows = []
    for n_experts in args.k_table_ks:
        res = run_case(X, y, n_experts, args, gflops, bandwidth, partition=partition)
        rows.append(res)
        _print_row([res[k] for k in KEYS])
    del X, y
    gc.collect()
    note = _part_note(time.perf_counter() - start, meter)
    print(note)
    blocks = [
        f"Data: {data}. Model: `MixtureOfExpertsRegressor(LinearRegression(), "
        + (
            "n_experts=K, partition='random', tol=0, random_state=0)`, default "
            "softmax gate, soft EM: the start a new user would make, no labels "
            "fixed in advance. "
            if partition
            else "n_experts=K, partition=FixedLabels(k-means labels), tol=0, "
            "random_state=0)`, default softmax gate, soft EM: the grid's start. "
        )
        + "EM iteration, LinearRegression fit, floor and peak "
        f"memory as in the grid (m={args.iters}, {args.repeats} repeats); "
        "'iteration / LR fit' is the cost of one EM iteration in "
        "LinearRegression fits on all rows."
        + (f" BLAS limited to {args.threads} thread(s)." if args.threads else "")
        + f" {note}",
        markdown_table(HEADERS, [[r[k] for k in KEYS] for r in rows]),
    ]
    goal = MANY_EXPERTS["k_table"]
    big = [r for r in rows if r["K"] == goal["K"] and r["n"] == goal["n"]]
    if big:
        t = big[0]
        target_table = markdown_table(
            ["figure", "measured", "target", ""],
            [
                _at_most_row(
                    "EM iteration / one LinearRegression fit",
                    t["ratio_lr"],
                    goal["time_ratio"],
                ),
                _at_most_row(
                    "peak memory / X.nbytes (tracemalloc)",
                    t["ratio_mem"],
                    goal["memory_ratio"],
                ),
            ],
        )
        title = f"Many-experts target: n = {goal['n']:,}, d = 20, K = {goal['K']}"
        print(f"\n{title}")
        print(target_table)
        blocks.append(f"**{title}**\n\n{target_table}")
    return rows, blocks


def run_default_fits(args):
    """Default fits to convergence over K on the smooth surface; its blocks."""
    meter = LoadMeter()
    start = time.perf_counter()
    n = args.fit_n
    X, y = make_surface(n)
    LinearRegression().fit(X, y)  # warm-up
    capped = args.fit_max_iter is not None
    print(
        f"\nDefault fits on the smooth surface, {n:,} x {N_FEATURES}"
        + (f", max_iter capped at {args.fit_max_iter}" if capped else "")
    )
    print(" | ".join(FIT_HEADERS))
    rows = []
    for n_experts in args.fit_ks:
        res = run_default_fit(X, y, n_experts, args)
        rows.append(res)
        _print_row([res[k] for k in FIT_KEYS])
    del X, y
    gc.collect()
    note = _part_note(time.perf_counter() - start, meter)
    print(note)
    blocks = [
        f"Data: `X ~ N(0, 1)` of shape {n:,} x {N_FEATURES} and `y = 3 sin(2 x0) "
        "+ 2 |x1| + x2 x3 + 0.3 X b + N(0, 0.3^2)`, `b ~ N(0, 1)` "
        "(`numpy.random.default_rng(0)` draws X, b, then the noise). Model: "
        "`MixtureOfExpertsRegressor(n_experts=K, random_state=0"
        + (f", max_iter={args.fit_max_iter}" if capped else "")
        + ")`, every other parameter at its default (linear experts, softmax "
        "gate, k-means partition, `tol=1e-4`"
        + ("" if capped else ", `max_iter=100`")
        + "). 'fit / LR fit' is the whole fit's cost in LinearRegression fits "
        "on the same rows (median of three fits before and three after the "
        "mixture's, in the same run); 'per iteration' is the fit time over "
        "the iterations, set-up included; 'later iteration' is `(t(fit) - "
        "t(max_iter=1)) / (n_iter_ - 1)`, the cost of an iteration after the "
        "first."
        + (
            f" Fit time: median of {args.fit_repeats} fits."
            if args.fit_repeats > 1
            else ""
        )
        + (
            f" max_iter capped at {args.fit_max_iter} to bound the run time: "
            "an unconverged row is not the default fit's figure."
            if capped
            else ""
        )
        + (f" BLAS limited to {args.threads} thread(s)." if args.threads else "")
        + f" {note}",
        markdown_table(FIT_HEADERS, [[r[k] for k in FIT_KEYS] for r in rows]),
    ]
    target_rows = []
    for r in rows:
        cost = MANY_EXPERTS["fit_cost"].get(r["K"])
        if cost is None:
            continue
        reference = MANY_EXPERTS["fit_lower_bound"][r["K"]]
        target_rows += [
            [
                f"K={r['K']}: converged",
                str(r["converged"]),
                "True",
                _verdict(r["converged"]),
            ],
            [
                f"K={r['K']}: fit / one LinearRegression fit",
                f"{r['cost_lr']:.0f}",
                f"<= {cost:g}",
                _verdict(r["cost_lr"] <= cost),
            ],
            [
                f"K={r['K']}: lower_bound_ (3 decimals)",
                f"{r['lower_bound']:.3f}",
                f">= {reference:.3f}",
                _verdict(round(r["lower_bound"], 3) >= reference),
            ],
        ]
    if target_rows and n == FIT_N:
        target_table = markdown_table(["figure", "measured", "target", ""], target_rows)
        title = "Many-experts targets: default fits"
        print(f"\n{title}")
        print(target_table)
        blocks.append(f"**{title}**\n\n{target_table}")
    return rows, blocks


RULE_NS = [10_000, 30_000, 100_000]
RULE_KS = [4, 8, 16, 32, 64]
RULE_HEADERS = [
    "n",
    "K",
    "(n, K) array, MiB",
    "fit in memory, s",
    "fit lean, s",
    "lean / in memory",
    "peak in memory / X",
    "peak lean / X",
    "rule picks",
]


class _forced_run:
    """Force the in-memory (`lean=False`) or the lean EM run."""

    def __init__(self, lean):
        self.limit = 0 if lean else 1 << 62

    def __enter__(self):
        self.kept = _lean._LEAN_MIN_RESPONSIBILITY_BYTES
        _lean._LEAN_MIN_RESPONSIBILITY_BYTES = self.limit

    def __exit__(self, *exc):
        _lean._LEAN_MIN_RESPONSIBILITY_BYTES = self.kept


_RULE_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from threadpoolctl import threadpool_limits
import scale

n, K, lean, iters, threads = (int(a) for a in sys.argv[2:7])
X, y = scale.make_surface(n)

def fit(max_iter):
    with scale._forced_run(bool(lean)):
        return scale.fit_quietly(scale.make_model("random", K, max_iter), X, y)

with threadpool_limits(threads or None):
    seconds = scale._timed(lambda: fit(iters))[0]
    peak = scale.traced_peak(lambda: fit(2))
print(json.dumps({"fit": seconds, "peak": peak / X.nbytes}))
"""


def _both_runs(n, n_experts, args):
    """Seconds of a fit of `args.rule_iters` iterations and peak memory / X
    of the in-memory and lean runs, each fit the first of a fresh process
    (as a user's first fit is), the two runs alternated over the repeats.
    The time of a whole fit, not the difference of two: measured in one
    process, where earlier fits have left their memory to the allocator,
    the in-memory run's iterations were up to 1.6 times faster than in a
    fresh one."""
    runs = {False: [], True: []}
    for _ in range(args.repeats):
        for lean in (False, True):
            proc = subprocess.run(
                [sys.executable, "-c", _RULE_CHILD, str(HERE)]
                + [str(v) for v in (n, n_experts, int(lean), args.rule_iters)]
                + [str(args.threads or 0)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[lean].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        lean: (
            float(np.median([r["fit"] for r in results])),
            results[0]["peak"],
        )
        for lean, results in runs.items()
    }


def run_lean_rule(args):
    """Both EM runs, forced, over (n, K); its blocks."""
    meter = LoadMeter()
    start = time.perf_counter()
    print(f"\nLean rule: both EM runs, d = {N_FEATURES}, partition='random'")
    print(" | ".join(RULE_HEADERS))
    rows = []
    for n in args.rule_ns:
        for n_experts in args.rule_ks:
            both = _both_runs(n, n_experts, args)
            (memory, memory_peak), (lean, lean_peak) = both[False], both[True]
            array_bytes = 8 * n * n_experts
            row = [
                f"{n}",
                f"{n_experts}",
                f"{array_bytes / 2**20:.3g}",
                f"{memory:.3g}",
                f"{lean:.3g}",
                f"{lean / memory:.3g}",
                f"{memory_peak:.3g}",
                f"{lean_peak:.3g}",
                "lean"
                if array_bytes >= _lean._LEAN_MIN_RESPONSIBILITY_BYTES
                else "in memory",
            ]
            rows.append(row)
            _print_row(row)
    note = _part_note(time.perf_counter() - start, meter)
    print(note)
    rule = _lean._LEAN_MIN_RESPONSIBILITY_BYTES
    blocks = [
        "Both EM runs forced, on the smooth surface of the default-fit table "
        f"(d = {N_FEATURES}), from `partition='random'`: the time of a fit of "
        f"{args.rule_iters} iterations (`tol=0`, set-up included; median of "
        f"{args.repeats}, each the first fit of a fresh process, the two runs "
        "alternated) and the peak memory of a fit "
        "with `max_iter=2` over X.nbytes (tracemalloc). The rule runs lean from "
        f"{rule / 2**20:g} MiB of (n, K) responsibilities in double precision."
        + (f" BLAS limited to {args.threads} thread(s)." if args.threads else "")
        + f" {note}",
        markdown_table(RULE_HEADERS, rows),
    ]
    return rows, blocks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_argument_group(
        "tables (none given: all three; each writes its own RESULTS.md section)"
    )
    parts.add_argument(
        "--grid", action="store_true", help="the (n, K) grid and the target case"
    )
    parts.add_argument(
        "--k-table", action="store_true", help="K table at --k-table-n rows"
    )
    parts.add_argument(
        "--default-fits", action="store_true", help="default fits over --fit-ks"
    )
    parts.add_argument(
        "--lean-rule",
        action="store_true",
        help="both EM runs over --rule-ns x --rule-ks (not run by default)",
    )
    parser.add_argument("--full", action="store_true", help="grid: also n = 1e6")
    parser.add_argument("--ns", type=int, nargs="+", help="grid: row counts")
    parser.add_argument("--ks", type=int, nargs="+", default=DEFAULT_KS, help="grid")
    parser.add_argument("--k-table-n", type=int, default=K_TABLE_N)
    parser.add_argument("--k-table-ks", type=int, nargs="+", default=K_TABLE_KS)
    parser.add_argument(
        "--k-table-data",
        choices=["surface", "regimes"],
        default="surface",
        help="K table data: the default-fit table's surface or make_regimes",
    )
    parser.add_argument(
        "--k-table-start",
        choices=["random", "kmeans"],
        default="random",
        help="K table start: partition='random' or the grid's fixed k-means labels",
    )
    parser.add_argument("--rule-ns", type=int, nargs="+", default=RULE_NS)
    parser.add_argument("--rule-ks", type=int, nargs="+", default=RULE_KS)
    parser.add_argument(
        "--rule-iters", type=int, default=10, help="iterations of a rule fit"
    )
    parser.add_argument("--fit-n", type=int, default=FIT_N)
    parser.add_argument("--fit-ks", type=int, nargs="+", default=FIT_KS)
    parser.add_argument(
        "--fit-max-iter",
        type=int,
        default=None,
        help="cap max_iter of the default fits (default: the model's, 100)",
    )
    parser.add_argument(
        "--fit-repeats", type=int, default=1, help="default fits timed (median)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--iters", type=int, default=4, help="extra EM iterations timed (m)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="limit BLAS threads (threadpoolctl)"
    )
    parser.add_argument("--no-write", action="store_true", help="no RESULTS.md")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if not (args.grid or args.k_table or args.default_fits or args.lean_rule):
        args.grid = args.k_table = args.default_fits = True
    ns = args.ns or (FULL_NS if args.full else DEFAULT_NS)

    limits = threadpool_limits(args.threads) if args.threads else None
    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()

    gflops = bandwidth = None
    if args.grid or args.k_table:
        gflops = matmul_gflops()
        bandwidth = copy_bandwidth()
        print(
            f"Machine floor: matmul {gflops:.1f} GFLOP/s, copy {bandwidth:.1f} GB/s\n"
        )

    suffix = f"-threads{args.threads}" if args.threads else ""
    threads = f", {args.threads} BLAS thread(s)" if args.threads else ""
    sections = []
    if args.grid:
        results, blocks = run_grid(args, ns, gflops, bandwidth)
        if not args.no_plot and results:
            png = HERE / f"scale{suffix}.png"
            plot(results, png)
            blocks.append(f"Plot: `benchmarks/{png.name}`.")
        sections.append(
            (
                "scale" + suffix,
                "Scaling of the EM iteration with rows and experts (d = 20)" + threads,
                blocks,
            )
        )
    if args.k_table:
        _, blocks = run_k_table(args, gflops, bandwidth)
        sections.append(
            (
                "scale-k" + suffix,
                f"Cost of an EM iteration against experts K at {args.k_table_n:,} "
                f"x {N_FEATURES}" + threads,
                blocks,
            )
        )
    if args.default_fits:
        _, blocks = run_default_fits(args)
        sections.append(
            (
                "scale-default-fits" + suffix,
                f"Default fits with many experts at {args.fit_n:,} x {N_FEATURES}"
                + threads,
                blocks,
            )
        )

    if args.lean_rule:
        _, blocks = run_lean_rule(args)
        sections.append(
            (
                "scale-lean-rule" + suffix,
                "The rule between the in-memory and the lean EM runs" + threads,
                blocks,
            )
        )

    elapsed = time.perf_counter() - start
    if limits is not None:
        limits.restore_original_limits()
    print(f"\nTotal run time {elapsed:.0f} s. {meter.text()}")
    if not args.no_write:
        for name, title, blocks in sections:
            write_section(name, title, blocks, machine=machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
