"""Where the time of one mixexp EM fit goes (cProfile).

Profiles one fit of ``MixtureOfExpertsRegressor(n_experts=8)`` (linear
experts, default softmax gate, default k-means partition, default ``tol``)
on ``make_regimes`` data of 200,000 x 20, and splits its time into:

- **expert fits**: the M-step of the experts (``fit_experts``);
- **gate fits**: the M-step of the gate (its fit in progress's
  ``improve``);
- **E-step**: expert predictions, their log-likelihoods, gate
  probabilities and the normalisation (the experts' outputs, the family's
  ``log_likelihood``, the gate's ``log_proba``, ``posterior``);
- **noise variances**: the family's ``fit_scale``;
- **initial partition**: the clustering that starts EM;
- **other**: validation, bookkeeping, the EM loop's own code.

The split uses the time of each function *as called from the EM loop*
(``run_em``), so a helper also used outside the loop is not double counted.
A fit that runs on sums (``_lean.lean_run``, large n K) has no (n, K)
arrays to pass between these parts: its E-step pass (``e_step_sums``) also
sums the experts' moments, counted with the expert fits (``_Summer.add``),
and evaluates the gate for its next M-step, counted with the E-step
(``block_posterior``); the trials at SQUAREM's jumps
(``log_likelihood_at``) are E-steps. It then lists the functions with the
most own time, and the calls under the experts' fits.

Run from the repository root::

    python benchmarks/profile_em.py
    python benchmarks/profile_em.py --threads 1
    python benchmarks/profile_em.py --n-experts 64 --n-samples 100000

Another number of experts writes its own section (``profile_em-k64``).
"""

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LoadMeter, markdown_table, print_machine, write_section
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes

# Functions called by the EM loop, by the part of EM they belong to.
CATEGORIES = {
    "fit_experts": "expert fits (M-step)",
    "keep_better_fits": "expert fits (M-step)",
    "improve": "gate fits (M-step)",
    "_regression_outputs": "E-step",
    "_class_outputs": "E-step",
    "out_of_fold_outputs": "E-step",
    "log_likelihood": "E-step",
    "log_proba": "E-step",
    "posterior": "E-step",
    "mean_log_likelihood": "E-step",
    "fit_scale": "noise variances (M-step)",
}
# The same parts in a fit that runs on sums (mixexp/_lean.py): functions
# called from its loop, and from its passes over the rows.
LEAN_CATEGORIES = {
    "_experts_step": "expert fits (M-step)",
    "improve": "gate fits (M-step)",
    "log_likelihood_at": "E-step",
}
LEAN_PASS_CATEGORIES = {
    "add": "expert fits (M-step)",  # _Summer.add: the experts' and gate's sums
    "block_posterior": "E-step",
}
ORDER = [
    "expert fits (M-step)",
    "gate fits (M-step)",
    "E-step",
    "noise variances (M-step)",
    "initial partition",
    "other",
]


def _key_name(key):
    filename, _, name = key
    return name, filename


def callees_of(stats, func_name, file_part):
    """{callee key: cumulative seconds spent in it when called from func}."""
    out = {}
    callers_keys = [k for k in stats.stats if k[2] == func_name and file_part in k[0]]
    for key, (_, _, _, _, callers) in stats.stats.items():
        for caller in callers_keys:
            if caller in callers:
                out[key] = out.get(key, 0.0) + callers[caller][3]
    return out


def cumulative(stats, func_name, file_part):
    return sum(
        v[3] for k, v in stats.stats.items() if k[2] == func_name and file_part in k[0]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=200_000)
    parser.add_argument("--n-features", type=int, default=20)
    parser.add_argument("--n-experts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    limits = threadpool_limits(args.threads) if args.threads else None
    machine = print_machine()
    meter = LoadMeter()
    X, y = make_regimes(
        n_samples=args.n_samples,
        n_regimes=args.n_experts,
        n_features=args.n_features,
        noise=0.5,
        random_state=0,
    )
    model = MixtureOfExpertsRegressor(n_experts=args.n_experts, random_state=0)
    profiler = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        profiler.enable()
        model.fit(X, y)
        profiler.disable()
        wall = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    total = cumulative(stats, "fit", "mixexp")
    em = cumulative(stats, "run_em", "mixexp")
    lean = cumulative(stats, "lean_run", "mixexp/_lean")
    em += lean
    partition = cumulative(stats, "initial_responsibilities", "mixexp")
    if lean:
        partition = cumulative(stats, "initial_partition", "mixexp")
        partition += cumulative(stats, "block", "mixexp/_lean")  # Start.block

    shares = dict.fromkeys(ORDER, 0.0)
    callers = [("run_em", "mixexp/_run", CATEGORIES)]
    callers += [
        ("lean_run", "mixexp/_lean", LEAN_CATEGORIES),
        ("e_step_sums", "mixexp/_lean", LEAN_PASS_CATEGORIES),
        ("_start_sums", "mixexp/_lean", {"add": "expert fits (M-step)"}),
    ]
    for caller, file_part, categories in callers:
        for key, seconds in callees_of(stats, caller, file_part).items():
            category = categories.get(key[2])
            if category is not None and "mixexp" in key[0]:
                shares[category] += seconds
    shares["initial partition"] = partition
    shares["other"] = total - sum(shares.values())

    print(
        f"\nOne fit: {args.n_samples} x {args.n_features}, K={args.n_experts}: "
        f"{wall:.2f} s wall ({total:.2f} s under the profiler in fit), "
        f"{model.n_iter_} EM iterations, converged={model.converged_}, EM loop "
        f"{em:.2f} s" + (" (the run on sums, mixexp/_lean.py)" if lean else "")
    )
    rows = [
        [part, f"{shares[part]:.3f}", f"{100 * shares[part] / total:.1f}%"]
        for part in ORDER
    ]
    rows.append(["total (fit)", f"{total:.3f}", "100%"])
    split = markdown_table(["part", "seconds", "share"], rows)
    print(split)

    # One level further down, into the linear experts' normal equations:
    # their own time is the blocks' centring, weighting and products
    # (operators, which cProfile does not list apart).
    deep = {}
    for fn in ("fit_linear_regressions", "_normal_equations"):
        for key, seconds in callees_of(stats, fn, "mixexp/_linear").items():
            if key[2] not in ("<listcomp>", "<genexpr>", "_normal_equations"):
                deep[key] = deep.get(key, 0.0) + seconds
    own = [
        v[2]
        for k, v in stats.stats.items()
        if k[2] == "_normal_equations" and "mixexp/_linear" in k[0]
    ]
    expert_rows = [
        [
            "_normal_equations, own time (centring, weighting, block products)",
            f"{sum(own):.3f}",
        ],
        *(
            [f"{k[2]} ({Path(k[0]).name}:{k[1]})", f"{v:.3f}"]
            for k, v in sorted(deep.items(), key=lambda kv: -kv[1])[:7]
        ),
    ]
    expert_table = markdown_table(
        ["inside the linear experts' fits (all experts, all iterations)", "seconds"],
        expert_rows,
    )
    print("\n" + expert_table)

    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(args.top)
    top = buffer.getvalue()
    top = top[top.find("   ncalls") :].rstrip()
    print("\nTop functions by own time\n" + top)
    if limits is not None:
        limits.restore_original_limits()

    blocks = [
        f"One fit of `MixtureOfExpertsRegressor(n_experts={args.n_experts}, "
        f"random_state=0)` (linear experts, softmax gate, k-means partition, "
        f"tol=1e-4) on `make_regimes(n_samples={args.n_samples}, "
        f"n_regimes={args.n_experts}, n_features={args.n_features}, noise=0.5, "
        f"random_state=0)`: {wall:.2f} s wall, {model.n_iter_} EM iterations, "
        f"converged={model.converged_}."
        + (
            " The fit ran on sums over blocks of rows (`mixexp/_lean.py`): "
            "its E-step pass also sums the experts' moments (counted with "
            "the expert fits) and evaluates the gate (with the E-step)."
            if lean
            else ""
        )
        + (f" BLAS limited to {args.threads} thread(s)." if args.threads else "")
        + " "
        + meter.text(),
        split,
        expert_table,
        "Top functions by own time (cProfile):\n\n```\n" + top + "\n```",
    ]
    if not args.no_write:
        name = (
            "profile_em"
            + (f"-k{args.n_experts}" if args.n_experts != 8 else "")
            + (f"-threads{args.threads}" if args.threads else "")
        )
        write_section(
            name,
            f"Where the time of one EM fit goes ({args.n_samples} x "
            f"{args.n_features}, K={args.n_experts})"
            + (f", {args.threads} BLAS thread(s)" if args.threads else ""),
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
