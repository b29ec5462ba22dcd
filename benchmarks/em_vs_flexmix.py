"""mixexp against R's flexmix: same data, same initial partition, same model.

The model is a mixture of 3 linear regressions with Gaussian noise and a
multinomial-logit gate (flexmix: ``FLXMRglm()`` experts and the
``FLXPmultinom(~ x1 + x2)`` concomitant model; mixexp: ``LinearRegression``
experts and ``SoftmaxGate(alpha=0.0)``, the unpenalised gate). Both start
from the same hard k-means partition, computed once here and handed to
flexmix as ``cluster=`` and to mixexp as a fixed-labels "clusterer".

Three comparisons:

1. **To convergence** under the same stopping rule. flexmix stops when
   ``|L_t - L_{t-1}| / (|L_t| + 0.1) < tolerance`` (``L`` the total
   log-likelihood, ``tolerance = 1e-6`` by default, see ``FLXfit``); mixexp
   stops when the change of the *mean* log-likelihood is below ``tol``. The
   equivalent ``tol`` is ``1e-6 * (|L*| + 0.1) / n`` with ``L*`` the final
   total log-likelihood, taken from a pilot run.
2. **A fixed 200 iterations** (``tolerance = 0`` in flexmix, ``tol = 0`` in
   mixexp), so that the time per EM iteration is compared on equal work.
3. **At equal log-likelihood**, the project's target: flexmix's time to
   convergence against the time of a mixexp fit stopped at the first
   iteration whose log-likelihood reaches flexmix's final one (found from
   the pilot run's history). Under comparison 1 mixexp also spends the
   iterations that take it past flexmix's log-likelihood.

Only the fitting call is timed: ``system.time(flexmix(...))`` inside R (R's
start-up, reading the CSV and loading the package are excluded) and
``fit`` in Python. Each timing is the median of ``--repeats`` runs. R uses
the BLAS it is linked to (reported below; Debian's reference BLAS is single
threaded), so mixexp is timed both with the process's default BLAS threads
and with BLAS limited to one thread for the whole fit (recent mixexp pins
BLAS to one thread inside its EM loop anyway).

Run from the repository root::

    python benchmarks/em_vs_flexmix.py            # writes RESULTS.md
    python benchmarks/em_vs_flexmix.py --no-write # prints only
"""

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    FixedLabels,
    LoadMeter,
    flexmix_rule_iteration,
    markdown_table,
    median_time,
    print_machine,
    write_section,
)
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.gating import SoftmaxGate

N_EXPERTS = 3
MAX_ITER = 200
FLEXMIX_TOLERANCE = 1e-6  # flexmix's default (FLXcontrol@tolerance)

R_SCRIPT = r"""
suppressPackageStartupMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
repeats <- as.integer(args[2])
tolerances <- as.numeric(strsplit(args[3], ",")[[1]])
labels <- d$label
cat(sprintf("INFO flexmix %s; %s\n", as.character(packageVersion("flexmix")),
            R.version.string))
cat(sprintf("INFO BLAS %s\n", extSoftVersion()[["BLAS"]]))
cat(sprintf("INFO LAPACK %s\n", La_library()))
for (tol in tolerances) {
  elapsed <- numeric(repeats)
  for (r in seq_len(repeats)) {
    set.seed(0)
    elapsed[r] <- system.time(
      m <- flexmix(y ~ x1 + x2, data = d, k = @K@, cluster = labels,
                   model = FLXMRglm(), concomitant = FLXPmultinom(~ x1 + x2),
                   control = list(iter.max = @MAX_ITER@, minprior = 0,
                                  tolerance = tol))
    )[["elapsed"]]
  }
  cat(sprintf(
    "RESULT tol=%g loglik=%.10f iter=%d converged=%s k=%d times=%s\n",
    tol, as.numeric(logLik(m)), m@iter, m@converged, m@k,
    paste(sprintf("%.6f", elapsed), collapse = ",")))
}
"""


def run_flexmix(X, y, labels, repeats, tolerances):
    """Run the R script; return {tol: result dict} and info lines."""
    script = R_SCRIPT.replace("@K@", str(N_EXPERTS))
    script = script.replace("@MAX_ITER@", str(MAX_ITER))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        table = np.column_stack([X, y, labels + 1])
        np.savetxt(
            data,
            table,
            delimiter=",",
            header="x1,x2,y,label",
            comments="",
            fmt=["%.17g", "%.17g", "%.17g", "%d"],
        )
        rfile = Path(tmp) / "fit.R"
        rfile.write_text(script)
        tol_arg = ",".join(repr(float(t)) for t in tolerances)
        proc = subprocess.run(
            ["Rscript", str(rfile), str(data), str(repeats), tol_arg],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(
            f"Rscript failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    results, info = {}, []
    for line in proc.stdout.splitlines():
        if line.startswith("INFO "):
            info.append(line[5:])
        elif line.startswith("RESULT "):
            fields = dict(re.findall(r"(\w+)=(\S+)", line))
            times = [float(t) for t in fields["times"].split(",")]
            results[float(fields["tol"])] = {
                "loglik": float(fields["loglik"]),
                "iter": int(fields["iter"]),
                "converged": fields["converged"] == "TRUE",
                "k": int(fields["k"]),
                "times": times,
                "time": float(np.median(times)),
            }
    return results, info


def make_mixexp(labels, tol, max_iter=MAX_ITER):
    return MixtureOfExpertsRegressor(
        LinearRegression(),
        n_experts=N_EXPERTS,
        gate=SoftmaxGate(alpha=0.0),
        partition=FixedLabels(labels),
        max_iter=max_iter,
        tol=tol,
    )


def time_mixexp(X, y, labels, tol, repeats, threads=None, max_iter=MAX_ITER):
    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make_mixexp(labels, tol, max_iter).fit(X, y)

    # The thread limit is set outside the timed call: setting it scans the
    # loaded libraries (milliseconds), which is not the fit's cost.
    with contextlib.nullcontext() if threads is None else threadpool_limits(threads):
        median, times, model = median_time(fit, repeats=repeats, warmup=1)
    return {
        "loglik": float(model.log_likelihood(X, y).sum()),
        "lower_bound_total": model.lower_bound_ * X.shape[0],
        "iter": model.n_iter_,
        "converged": model.converged_,
        "times": times,
        "time": median,
        "model": model,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-write", action="store_true", help="do not update RESULTS.md"
    )
    args = parser.parse_args(argv)
    machine = print_machine()
    meter = LoadMeter()

    X, y = make_regimes(
        n_samples=args.n_samples,
        n_regimes=N_EXPERTS,
        n_features=2,
        noise=args.noise,
        random_state=args.seed,
    )
    n = X.shape[0]
    # One initial partition for both tools: k-means on the standardised inputs
    # (what mixexp's own "kmeans" partition does).
    Xs = StandardScaler().fit_transform(X)
    labels = KMeans(n_clusters=N_EXPERTS, n_init=10, random_state=args.seed)
    labels = labels.fit_predict(Xs)
    print(
        f"Data: make_regimes(n_samples={n}, n_regimes={N_EXPERTS}, n_features=2, "
        f"noise={args.noise}, random_state={args.seed}); k-means cluster sizes "
        f"{np.bincount(labels).tolist()}"
    )

    # Pilot: 200 iterations with tol=0 gives the history from which the tol
    # equivalent to flexmix's relative rule is derived; it is also the
    # fixed-iteration run, timed below.
    fixed = time_mixexp(X, y, labels, 0.0, args.repeats)
    history = fixed["model"].lower_bounds_
    final_total = history[-1] * n
    equiv_tol = FLEXMIX_TOLERANCE * (abs(final_total) + 0.1) / n
    rule_iter = flexmix_rule_iteration(history, n, FLEXMIX_TOLERANCE)
    print(
        f"mixexp tol equivalent to flexmix's relative tolerance "
        f"{FLEXMIX_TOLERANCE:g}: {equiv_tol:.3g} on the mean log-likelihood "
        f"(flexmix's rule applied to mixexp's history stops at iteration "
        f"{rule_iter})"
    )
    conv = time_mixexp(X, y, labels, equiv_tol, args.repeats)
    conv1 = time_mixexp(X, y, labels, equiv_tol, args.repeats, threads=1)
    fixed1 = time_mixexp(X, y, labels, 0.0, args.repeats, threads=1)
    default = time_mixexp(X, y, labels, 1e-4, args.repeats)

    rscript = shutil.which("Rscript")
    flex, info, skipped = {}, [], None
    if rscript is None:
        skipped = (
            "Rscript not found: flexmix was not run. Install R and flexmix "
            "(e.g. apt-get install r-cran-flexmix) to compare."
        )
    else:
        try:
            flex, info = run_flexmix(
                X, y, labels, args.repeats, [FLEXMIX_TOLERANCE, 0.0]
            )
        except RuntimeError as exc:
            skipped = f"flexmix could not be run: {exc}"
    if skipped:
        print(f"SKIPPED: {skipped}", file=sys.stderr)

    def row(label, rule, res, n_threads):
        per_iter = res["time"] / res["iter"]
        return [
            label,
            rule,
            n_threads,
            res["iter"],
            "yes" if res["converged"] else "no",
            f"{res['loglik']:.3f}",
            f"{res['time'] * 1e3:.1f}",
            f"{per_iter * 1e3:.2f}",
        ]

    headers = [
        "tool",
        "stopping rule",
        "BLAS threads of the process",
        "iterations",
        "converged",
        "total log-likelihood",
        "fit time, ms (median)",
        "ms / iteration",
    ]
    rows_conv, rows_fixed = [], []
    if FLEXMIX_TOLERANCE in flex:
        rows_conv.append(
            row(
                "flexmix",
                f"relative {FLEXMIX_TOLERANCE:g} (default)",
                flex[FLEXMIX_TOLERANCE],
                "1 (R)",
            )
        )
    rows_conv.append(row("mixexp", f"tol={equiv_tol:.3g} (same rule)", conv, "default"))
    rows_conv.append(row("mixexp", f"tol={equiv_tol:.3g} (same rule)", conv1, "1"))
    rows_conv.append(row("mixexp", "tol=1e-4 (mixexp default)", default, "default"))
    if 0.0 in flex:
        rows_fixed.append(row("flexmix", "tolerance=0", flex[0.0], "1 (R)"))
    rows_fixed.append(row("mixexp", "tol=0", fixed, "default"))
    rows_fixed.append(row("mixexp", "tol=0", fixed1, "1"))

    table_conv = markdown_table(headers, rows_conv)
    table_fixed = markdown_table(headers, rows_fixed)
    print("\nTo convergence (same stopping rule)")
    print(table_conv)
    print(f"\nFixed {MAX_ITER} iterations")
    print(table_fixed)

    summary = []
    if flex:
        fc, ff = flex[FLEXMIX_TOLERANCE], flex[0.0]
        ratio_conv = fc["time"] / conv["time"]
        ratio_conv1 = fc["time"] / conv1["time"]
        ratio_iter = (ff["time"] / ff["iter"]) / (fixed["time"] / fixed["iter"])
        ratio_iter1 = (ff["time"] / ff["iter"]) / (fixed1["time"] / fixed1["iter"])
        dll = conv["loglik"] - fc["loglik"]
        dll_fixed = fixed["loglik"] - ff["loglik"]
        dll1 = conv1["loglik"] - fc["loglik"]
        close = 1e-6 * abs(fc["loglik"])
        # Time for mixexp to first reach flexmix's final log-likelihood: the
        # pilot history says at which iteration, a fit stopped there is timed.
        reached = np.flatnonzero(np.asarray(history) * n >= fc["loglik"] - close)
        reach = None
        if reached.size:
            reach_iter = int(reached[0]) + 1
            reach = time_mixexp(X, y, labels, 0.0, args.repeats, max_iter=reach_iter)

        def verdict(ratio, delta):
            return "met" if ratio >= 50 and delta >= -close else "NOT met"

        # The target is a speed at equal log-likelihood: the time mixexp takes
        # to reach flexmix's final log-likelihood. Run to convergence under
        # the same rule, mixexp also does the further work of climbing past
        # it, so that ratio is reported as well, with its own verdict.
        ratio_reach = None if reach is None else fc["time"] / reach["time"]
        target = "target >= 50x faster"
        summary = [
            ["flexmix / mixexp wall time, to convergence, default threads", ratio_conv],
            ["flexmix / mixexp wall time, to convergence, 1 thread", ratio_conv1],
            [
                "flexmix / mixexp per iteration, 200 iterations, default threads",
                ratio_iter,
            ],
            ["flexmix / mixexp per iteration, 200 iterations, 1 thread", ratio_iter1],
            [
                "flexmix / mixexp wall time, mixexp stopped when it first reaches "
                "flexmix's final log-likelihood"
                + ("" if reach is None else f" (iteration {reach['iter']})"),
                "never reached" if reach is None else fc["time"] / reach["time"],
            ],
            ["log-likelihood mixexp - flexmix, to convergence", dll],
            ["log-likelihood mixexp - flexmix, 200 iterations", dll_fixed],
            [
                f"{target} at equal log-likelihood (time to reach flexmix's)",
                "NOT met" if reach is None else verdict(ratio_reach, 0.0),
            ],
            [
                f"{target}, both to convergence under the same rule, default threads",
                verdict(ratio_conv, dll),
            ],
            [
                f"{target}, both to convergence under the same rule, 1 thread",
                verdict(ratio_conv1, dll1),
            ],
        ]
        table_summary = markdown_table(["figure", "value"], summary)
        print("\nSummary")
        print(table_summary)
    else:
        table_summary = f"**flexmix not run.** {skipped}"

    load = meter.text()
    print(load)
    blocks = [
        load,
        f"Data: `make_regimes(n_samples={n}, n_regimes={N_EXPERTS}, n_features=2, "
        f"noise={args.noise}, random_state={args.seed})`; one initial partition "
        f"for both tools: k-means (n_init=10) on the standardised inputs, "
        f"cluster sizes {np.bincount(labels).tolist()}. Model: 3 linear experts "
        "with Gaussian noise, multinomial-logit gate on (x1, x2), no penalty "
        "(flexmix `FLXMRglm()` + `FLXPmultinom(~ x1 + x2)`, `minprior=0`; "
        "mixexp `LinearRegression` + `SoftmaxGate(alpha=0.0)`). Times are the "
        f"median of {args.repeats} runs of the fitting call only "
        "(`system.time(flexmix(...))` in R, `fit` in Python, after one "
        "untimed warm-up fit). R runs on its linked BLAS (see below); mixexp "
        "with the default BLAS threads of the process, and with BLAS limited to "
        "one thread for the whole fit. Log-likelihoods are totals over the rows "
        "(flexmix `logLik(m)`, mixexp `log_likelihood(X, y).sum()`).",
        f"Stopping rule: flexmix stops when `|L_t - L_(t-1)| / (|L_t| + 0.1) < "
        f"{FLEXMIX_TOLERANCE:g}` on the total log-likelihood; mixexp stops when "
        "the change of the mean log-likelihood is below `tol`, so the same rule "
        f"is `tol = {FLEXMIX_TOLERANCE:g} * (|L*| + 0.1) / n = {equiv_tol:.3g}` "
        f"(L* from a pilot run; flexmix's rule applied to mixexp's own history "
        f"stops at iteration {rule_iter}).",
        "flexmix: " + ("; ".join(info) if info else "not run"),
        "**To convergence, same stopping rule**\n\n" + table_conv,
        f"**Fixed {MAX_ITER} iterations** (equal work per tool)\n\n" + table_fixed,
        "**Summary**\n\n" + table_summary,
    ]
    if not args.no_write:
        write_section(
            "em_vs_flexmix",
            "EM against R's flexmix (5,000 x 2, 3 linear experts, softmax gate)",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
