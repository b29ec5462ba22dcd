"""mixexp against R's flexmix on a mixture of Poisson regressions with a gate.

The model is a mixture of 2 Poisson regressions of a count ``y`` on ``x``
whose mixing proportions follow a logistic model in a second covariate ``z``
(flexmix's concomitant variable): flexmix ``FLXMRglm(family = "poisson")``
experts and the ``FLXPmultinom(~ z)`` concomitant model; mixexp
``PoissonRegressor(alpha=0)`` experts on ``x`` (``feature_groups``) and the
unpenalised ``SoftmaxGate(alpha=0.0)`` on ``z`` (``gate_features``). Both
start from the same random partition of the rows (flexmix's kind of start),
drawn once here and handed to flexmix as ``cluster=`` and to mixexp as a
fixed-labels "clusterer".

Data (seeded): ``x, z ~ N(0, 1)``; the component is 2 with probability
``logistic(-0.5 + 2 z)``, else 1; ``y ~ Poisson(exp(b0 + b1 x))`` with
``(b0, b1) = (0.5, 0.6)`` in component 1 and ``(2.0, -0.4)`` in component 2.

Two comparisons:

1. **To convergence** under the same stopping rule, at flexmix's default
   tolerance (1e-6) and at a tight one (1e-10, where both tools should sit
   at the same maximum). flexmix stops when
   ``|L_t - L_{t-1}| / (|L_t| + 0.1) < tolerance`` (``L`` the total
   log-likelihood, see ``FLXfit``); mixexp stops when the change of the
   *mean* log-likelihood is below ``tol``, so the same rule is
   ``tol = tolerance * (|L*| + 0.1) / n`` with ``L*`` the total
   log-likelihood of a pilot fit.
2. **A fixed number of iterations** (``--fixed-iter``; ``tolerance = 0`` in
   flexmix, ``tol = 0`` in mixexp), so that the time per EM iteration is
   compared on equal work.

Only the fitting call is timed: ``system.time(flexmix(...))`` inside R
(``benchmarks/glm_vs_flexmix.R``; R's start-up, reading the CSV and loading
the package are excluded) and ``fit`` in Python after one untimed warm-up.
Each timing is the median of ``--repeats`` runs. R runs single threaded;
mixexp is timed with the process's default threads and with BLAS and OpenMP
limited to one thread for the whole fit: scikit-learn's GLM losses run on
OpenMP threads, which on a busy machine wait for a core at every parallel
region.

Both M-steps are iterative: flexmix's ``glm.fit`` stops at a relative
deviance change of 1e-8, ``PoissonRegressor`` at ``max |gradient| <= tol``
on the mean loss (1e-4 by default, ``--expert-tol``). On small data the
default leaves mixexp's maximum a little below flexmix's (about 2e-6 at 500
rows); ``--expert-tol 1e-8`` closes the gap.

Run from the repository root::

    python benchmarks/glm_vs_flexmix.py            # writes RESULTS.md
    python benchmarks/glm_vs_flexmix.py --no-write # prints only
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
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import PoissonRegressor
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsRegressor
from mixexp.gating import SoftmaxGate

R_SCRIPT = Path(__file__).resolve().parent / "glm_vs_flexmix.R"
N_EXPERTS = 2
MAX_ITER = 1000  # iteration cap of the runs to convergence, both tools
FLEXMIX_DEFAULT_TOLERANCE = 1e-6  # FLXcontrol@tolerance
TOLERANCES = (FLEXMIX_DEFAULT_TOLERANCE, 1e-10)
THREADS = (None, 1)  # mixexp: the process's default threads, then one

# The generating model: component k has log-rate BETA[k, 0] + BETA[k, 1] * x;
# P(component 2 | z) = logistic(GATE[0] + GATE[1] * z).
BETA = np.array([[0.5, 0.6], [2.0, -0.4]])
GATE = np.array([-0.5, 2.0])


def make_data(n_samples, seed):
    """Columns (x, z), counts y, the true components and a random partition."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n_samples)
    z = rng.standard_normal(n_samples)
    second = rng.random(n_samples) < 1.0 / (1.0 + np.exp(-(GATE[0] + GATE[1] * z)))
    component = second.astype(int)
    y = rng.poisson(np.exp(BETA[component, 0] + BETA[component, 1] * x))
    labels = rng.integers(0, N_EXPERTS, size=n_samples)
    return np.column_stack([x, z]), y.astype(float), component, labels


def equivalent_tol(tolerance, total_loglik, n_samples):
    """mixexp's ``tol`` (on the mean) for flexmix's relative `tolerance`."""
    return tolerance * (abs(total_loglik) + 0.1) / n_samples


def run_flexmix(X, y, labels, repeats, runs):
    """Run the R script on `runs` [(tolerance, max_iter)]; return results, info.

    The results are keyed by ``(tolerance, max_iter)``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        np.savetxt(
            data,
            np.column_stack([X, y, labels + 1]),
            delimiter=",",
            header="x,z,y,label",
            comments="",
            fmt=["%.17g", "%.17g", "%d", "%d"],
        )
        proc = subprocess.run(
            [
                "Rscript",
                str(R_SCRIPT),
                str(data),
                str(repeats),
                ",".join(repr(float(t)) for t, _ in runs),
                ",".join(str(int(m)) for _, m in runs),
            ],
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

            def floats(key, fields=fields):
                return [float(v) for v in fields[key].split(",")]

            key = (float(fields["tol"]), int(fields["max_iter"]))
            results[key] = {
                "loglik": float(fields["loglik"]),
                "iter": int(fields["iter"]),
                "converged": fields["converged"] == "TRUE",
                "k": int(fields["k"]),
                "times": times,
                "time": float(np.median(times)),
                # flexmix's component 1 is the gate's reference class.
                "intercepts": floats("intercepts"),
                "slopes": floats("slopes"),
                "gate": [
                    float(fields["gate_intercept"]),
                    float(fields["gate_slope"]),
                ],
            }
    return results, info


def make_mixexp(expert, labels, tol, max_iter, seed):
    return MixtureOfExpertsRegressor(
        expert,
        n_experts=N_EXPERTS,
        feature_groups=[[0], [0]],  # the experts see x
        gate_features=[1],  # the gate sees z
        gate=SoftmaxGate(alpha=0.0),
        partition=FixedLabels(labels),
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )


def time_mixexp(
    expert, X, y, labels, tol, repeats, seed, threads=None, max_iter=MAX_ITER
):
    def fit():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return make_mixexp(expert, labels, tol, max_iter, seed).fit(X, y)

    # The thread limit (BLAS and OpenMP, whose threads scikit-learn's GLM
    # losses use) is set outside the timed call: setting it scans the loaded
    # libraries (milliseconds), which is not the fit's cost.
    with contextlib.nullcontext() if threads is None else threadpool_limits(threads):
        median, times, model = median_time(fit, repeats=repeats, warmup=1)
    gate = model.gate_
    return {
        "loglik": float(model.log_likelihood(X, y).sum()),
        "iter": model.n_iter_,
        "converged": model.converged_,
        "times": times,
        "time": median,
        "intercepts": [float(e.intercept_) for e in model.experts_],
        "slopes": [float(e.coef_[0]) for e in model.experts_],
        # Log-odds of expert 1 against expert 0, flexmix's parametrisation.
        "gate": [
            float(gate.intercept_[1] - gate.intercept_[0]),
            float(gate.coef_[0, 1] - gate.coef_[0, 0]),
        ],
        "history": list(model.lower_bounds_),
    }


def by_intercept(res):
    """(b0, b1) per component, lowest intercept first, and the gate's log-odds
    of the second of them against the first."""
    order = np.argsort(res["intercepts"])
    experts = [(res["intercepts"][k], res["slopes"][k]) for k in order]
    sign = 1.0 if order[0] == 0 else -1.0
    return experts, [sign * v for v in res["gate"]]


def coefficient_rows(results):
    """One row per parameter: its true value, then each tool's estimate."""
    names = [
        "component 1: intercept",
        "component 1: slope on x",
        "component 2: intercept",
        "component 2: slope on x",
        "gate log-odds 2 vs 1: intercept",
        "gate log-odds 2 vs 1: slope on z",
    ]
    truth = [*BETA.ravel(), *GATE]
    columns = []
    for res in results:
        experts, gate = by_intercept(res)
        columns.append([*experts[0], *experts[1], *gate])
    return [
        [name, f"{t:g}", *(f"{col[i]:.5f}" for col in columns)]
        for i, (name, t) in enumerate(zip(names, truth, strict=True))
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--fixed-iter",
        type=int,
        default=50,
        help="iterations of the equal-work comparison",
    )
    parser.add_argument(
        "--expert-tol",
        type=float,
        default=None,
        help="tol of the PoissonRegressor experts (default: scikit-learn's, 1e-4)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-write", action="store_true", help="do not update RESULTS.md"
    )
    args = parser.parse_args(argv)
    machine = print_machine()
    meter = LoadMeter()

    X, y, component, labels = make_data(args.n_samples, args.seed)
    expert = PoissonRegressor(alpha=0.0)
    if args.expert_tol is not None:
        expert.set_params(tol=args.expert_tol)
    expert_text = (
        "PoissonRegressor(alpha=0)"
        if args.expert_tol is None
        else f"PoissonRegressor(alpha=0, tol={args.expert_tol:g})"
    )
    n = X.shape[0]
    data_text = (
        f"{n} rows, seed {args.seed}: x, z ~ N(0, 1); component 2 with "
        f"probability logistic({GATE[0]:g} + {GATE[1]:g} z), else 1 "
        f"(sizes {np.bincount(component).tolist()}); y ~ Poisson(exp(b0 + b1 x)) "
        f"with (b0, b1) = ({BETA[0, 0]:g}, {BETA[0, 1]:g}) and "
        f"({BETA[1, 0]:g}, {BETA[1, 1]:g}); mean count {y.mean():.2f}. Initial "
        "partition for both tools: uniformly random labels, sizes "
        f"{np.bincount(labels).tolist()}"
    )
    print("Data: " + data_text + "\n")

    # Pilot: a fit with mixexp's default tol gives L*, from which the tol
    # equivalent to flexmix's relative rule is derived (L* need not be exact:
    # it only scales the tolerance).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        pilot = make_mixexp(expert, labels, 1e-4, MAX_ITER, args.seed).fit(X, y)
    pilot_total = pilot.lower_bound_ * n
    tols = {t: equivalent_tol(t, pilot_total, n) for t in TOLERANCES}
    print(
        f"mixexp likelihood_: {pilot.likelihood_!r}; L* = {pilot_total:.4f}; tol "
        + ", ".join(f"{tols[t]:.3g} for relative {t:g}" for t in TOLERANCES)
    )

    conv = {
        (t, threads): time_mixexp(
            expert, X, y, labels, tols[t], args.repeats, args.seed, threads
        )
        for t in TOLERANCES
        for threads in THREADS
    }
    default = time_mixexp(expert, X, y, labels, 1e-4, args.repeats, args.seed)
    fixed = {
        threads: time_mixexp(
            expert, X, y, labels, 0.0, args.repeats, args.seed, threads, args.fixed_iter
        )
        for threads in THREADS
    }
    tight = min(TOLERANCES)
    # flexmix's rule applied to mixexp's own (tightest) history: checks the
    # conversion of the tolerance.
    tight_history = conv[(tight, None)]["history"]
    rule_iters = {t: flexmix_rule_iteration(tight_history, n, t) for t in TOLERANCES}

    runs = [(t, MAX_ITER) for t in TOLERANCES] + [(0.0, args.fixed_iter)]
    flex, info, skipped = {}, [], None
    if shutil.which("Rscript") is None:
        skipped = (
            "Rscript not found: flexmix was not run. Install R and flexmix "
            "(e.g. apt-get install r-cran-flexmix) to compare."
        )
    else:
        try:
            flex, info = run_flexmix(X, y, labels, args.repeats, runs)
        except RuntimeError as exc:
            skipped = f"flexmix could not be run: {exc}"
    if skipped:
        print(f"SKIPPED: {skipped}", file=sys.stderr)

    def row(tool, rule, res, n_threads):
        return [
            tool,
            rule,
            n_threads,
            res["iter"],
            "yes" if res["converged"] else "no",
            f"{res['loglik']:.4f}",
            f"{res['time'] * 1e3:.1f}",
            f"{res['time'] / res['iter'] * 1e3:.2f}",
        ]

    headers = [
        "tool",
        "stopping rule",
        "threads of the process (BLAS, OpenMP)",
        "iterations",
        "converged",
        "total log-likelihood",
        "fit time, ms (median)",
        "ms / iteration",
    ]
    rows_conv = []
    for t in TOLERANCES:
        rule = f"relative {t:g}" + (
            " (flexmix default)" if t == FLEXMIX_DEFAULT_TOLERANCE else ""
        )
        if (t, MAX_ITER) in flex:
            rows_conv.append(row("flexmix", rule, flex[(t, MAX_ITER)], "1 (R)"))
        for threads in THREADS:
            rows_conv.append(
                row(
                    "mixexp",
                    f"tol={tols[t]:.3g} (same rule)",
                    conv[(t, threads)],
                    "default" if threads is None else threads,
                )
            )
    rows_conv.append(row("mixexp", "tol=1e-4 (mixexp default)", default, "default"))
    rows_fixed = []
    if (0.0, args.fixed_iter) in flex:
        rows_fixed.append(
            row("flexmix", "tolerance=0", flex[(0.0, args.fixed_iter)], "1 (R)")
        )
    for threads in THREADS:
        rows_fixed.append(
            row("mixexp", "tol=0", fixed[threads], "default" if threads is None else 1)
        )

    table_conv = markdown_table(headers, rows_conv)
    table_fixed = markdown_table(headers, rows_fixed)
    print("\nTo convergence (same stopping rule)")
    print(table_conv)
    print(f"\nFixed {args.fixed_iter} iterations")
    print(table_fixed)

    coef_results = [conv[(tight, None)]]
    coef_headers = ["parameter", "true", f"mixexp (relative {tight:g})"]
    if (tight, MAX_ITER) in flex:
        coef_results.insert(0, flex[(tight, MAX_ITER)])
        coef_headers.insert(2, f"flexmix (relative {tight:g})")
    table_coef = markdown_table(coef_headers, coefficient_rows(coef_results))
    print("\nCoefficients (components ordered by intercept)")
    print(table_coef)

    def threads_text(threads):
        return "default threads" if threads is None else "1 thread"

    if flex:
        summary = []
        for t in TOLERANCES:
            fc = flex[(t, MAX_ITER)]
            for threads in THREADS:
                mc = conv[(t, threads)]
                summary.append(
                    [
                        f"flexmix / mixexp wall time, to convergence, relative {t:g}, "
                        + threads_text(threads),
                        fc["time"] / mc["time"],
                    ]
                )
        ff = flex[(0.0, args.fixed_iter)]
        for threads in THREADS:
            mf = fixed[threads]
            summary.append(
                [
                    f"flexmix / mixexp time per iteration, {args.fixed_iter} "
                    "iterations, " + threads_text(threads),
                    (ff["time"] / ff["iter"]) / (mf["time"] / mf["iter"]),
                ]
            )
        for t in TOLERANCES:
            fc, mc = flex[(t, MAX_ITER)], conv[(t, None)]
            summary.append(
                [
                    f"iterations flexmix / mixexp, relative {t:g}",
                    f"{fc['iter']} / {mc['iter']}",
                ]
            )
        for t in TOLERANCES:
            dll = conv[(t, None)]["loglik"] - flex[(t, MAX_ITER)]["loglik"]
            summary.append(
                [f"log-likelihood mixexp - flexmix, relative {t:g}", f"{dll:.3g}"]
            )
        dll_fixed = fixed[None]["loglik"] - ff["loglik"]
        summary.append(
            [
                f"log-likelihood mixexp - flexmix, {args.fixed_iter} iterations",
                f"{dll_fixed:.3g}",
            ]
        )
        # At the tight rule both should sit at the maximum: mixexp not below
        # flexmix beyond a relative 1e-9 (about 1e-5 here).
        fc_tight = flex[(tight, MAX_ITER)]["loglik"]
        reached = conv[(tight, None)]["loglik"] >= fc_tight - 1e-9 * abs(fc_tight)
        summary.append(
            [
                f"mixexp reaches flexmix's log-likelihood at relative {tight:g} "
                "(within a relative 1e-9)",
                "yes" if reached else "NO",
            ]
        )
        table_summary = markdown_table(["figure", "value"], summary)
        print("\nSummary")
        print(table_summary)
    else:
        table_summary = f"**flexmix not run.** {skipped}"

    load = meter.text()
    print(load)
    tol_text = "; ".join(
        f"relative {t:g}: `tol = {t:g} * (|L*| + 0.1) / n = {tols[t]:.3g}` "
        "(flexmix's rule applied to mixexp's own history stops at iteration "
        f"{rule_iters[t]})"
        for t in TOLERANCES
    )
    blocks = [
        load,
        f"Data: {data_text}. Model: 2 Poisson regressions on x, "
        "multinomial-logit gate on z, no penalty (flexmix "
        '`FLXMRglm(family = "poisson")` + `FLXPmultinom(~ z)`, `cluster = '
        f"labels`, `minprior = 0`; mixexp `{expert_text}` experts "
        "with `feature_groups=[[0], [0]]`, `gate_features=[1]`, "
        "`SoftmaxGate(alpha=0.0)`, `partition=FixedLabels(labels)`; "
        f"`likelihood_ == {pilot.likelihood_!r}`). mixexp softens the hard "
        "partition before its first M-step (80 % of a row's weight on its "
        "label); flexmix starts from the hard labels. Times are the median of "
        f"{args.repeats} runs of the fitting call only "
        "(`system.time(flexmix(...))` in R, `fit` in Python after one untimed "
        "warm-up). R is single threaded here; mixexp runs with the process's "
        "default threads and with BLAS and OpenMP limited to one thread for "
        "the whole fit (scikit-learn's GLM losses run on OpenMP threads). "
        "Log-likelihoods are totals over the rows (flexmix `logLik(m)`, "
        "mixexp `log_likelihood(X, y).sum()`, both with the `-log(y!)` term).",
        "Stopping rule: flexmix stops when `|L_t - L_(t-1)| / (|L_t| + 0.1) < "
        "tolerance` on the total log-likelihood; mixexp stops when the change "
        "of the mean log-likelihood is below `tol`. L* from a pilot mixexp fit "
        f"(`tol=1e-4`): {pilot_total:.4f}. {tol_text}. The experts' M-step "
        "is itself iterative (flexmix's `glm.fit` to a relative deviance "
        "change of 1e-8; `PoissonRegressor` to `max |gradient| <= tol` on the "
        "mean loss, `--expert-tol`): a mixexp log-likelihood a little below "
        "flexmix's at the tight rule comes from there.",
        "flexmix: " + ("; ".join(info) if info else "not run"),
        "**To convergence, same stopping rule**\n\n" + table_conv,
        f"**Fixed {args.fixed_iter} iterations** (equal work per tool)\n\n"
        + table_fixed,
        f"**Coefficients at relative {tight:g}** (components ordered by "
        "intercept; gate as the log-odds of component 2 against component 1; "
        "mixexp with default threads)\n\n" + table_coef,
        "**Summary** (log-likelihoods and iterations: mixexp with default "
        "threads)\n\n" + table_summary,
    ]
    if not args.no_write:
        write_section(
            "glm_vs_flexmix",
            f"Poisson experts against R's flexmix ({n:,} rows, 2 Poisson "
            "regressions, softmax gate on a concomitant variable)",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
