"""Accelerated EM (SQUAREM, ``mixexp/_accelerate.py``) against plain EM.

Compares this checkout of mixexp with another one (``--before``, the tree
of the commit to compare with), fit by
fit, each fit in a fresh process with 1 BLAS thread, the two versions
alternating so that a change of load touches both:

- the **default fits**: ``MixtureOfExpertsRegressor(n_experts=K,
  random_state=0)``, every other parameter at its default, on
  ``scale.py``'s smooth surface (100,000 x 20), K = 8, 16, 32: EM
  iterations (M-steps; the accelerated run's extra E-steps are in the time
  only), convergence, ``lower_bound_`` and the total fit time;
- the **small cases** behind the rule of when EM is accelerated
  (``_ACCELERATE_MIN_GATE_PARAMETERS`` in ``mixexp/_run.py``): the default
  mixture with K = 2, 3, 4, 8 on ``make_regimes`` data (200 x 2,
  2,000 x 3, 20,000 x 5 and x 10) and on the smooth surface (5,000 x 20,
  20,000 x 10 and x 20), three seeds each: iterations, ``lower_bound_``,
  total time. Here this checkout runs with that threshold set to 0
  (accelerated wherever the model allows), to show what the rule leaves
  out.

The default fits use only the public API; the small cases set the one
private threshold above.

Run from the repository root::

    mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before
    python benchmarks/accelerate.py --before /tmp/before
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import HERE, markdown_table, print_machine, write_section

DEFAULT_KS = (8, 16, 32)
SMALL_KS = (2, 3, 4, 8)
SMALL_DATA = (
    ("regimes", 200, 2),
    ("regimes", 2000, 3),
    ("regimes", 20000, 5),
    ("regimes", 20000, 10),
    ("surface", 5000, 20),
    ("surface", 20000, 10),
    ("surface", 20000, 20),
)
SEEDS = (0, 1, 2)


def _data(kind, n_samples, n_features):
    if kind == "surface":
        from scale import make_surface

        return make_surface(n_samples, n_features)
    from mixexp.datasets import make_regimes

    X, y = make_regimes(
        n_samples=n_samples, n_regimes=3, n_features=n_features, random_state=0
    )[:2]
    return X, y


def _fit_once(kind, n_samples, n_features, n_experts, seed, everywhere):
    """One default fit in this process: a dict of its figures.

    `everywhere`: accelerated whatever the gate's size.
    """
    from threadpoolctl import threadpool_limits

    import mixexp
    from mixexp import MixtureOfExpertsRegressor

    if everywhere:
        from mixexp import _run

        _run._ACCELERATE_MIN_GATE_PARAMETERS = 0

    X, y = _data(kind, n_samples, n_features)
    model = MixtureOfExpertsRegressor(n_experts=n_experts, random_state=seed)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unconverged fit is reported
        start = time.perf_counter()
        model.fit(X, y)
        seconds = time.perf_counter() - start
    history = np.asarray(model.lower_bounds_)
    return {
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "lower_bound": float(model.lower_bound_),
        "seconds": seconds,
        "monotone": bool(np.all(np.diff(history) >= 0)),
        "mixexp": str(Path(mixexp.__file__).parent.parent),
    }


def _fit_in_process(root, *case):
    """`_fit_once` in a fresh Python importing mixexp from `root`."""
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(
        [sys.executable, __file__, "--one", *map(str, case)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if Path(result["mixexp"]).resolve() != Path(root).resolve():
        raise RuntimeError(f"mixexp came from {result['mixexp']}, not {root}")
    return result


def run_default_fits(before, after):
    rows = []
    for n_experts in DEFAULT_KS:
        case = ("surface", 100_000, 20, n_experts, 0, 0)
        for label, root in (("before", before), ("after", after)):
            r = _fit_in_process(root, *case)
            print(f"K={n_experts} {label}: {r}", flush=True)
            rows.append(
                (
                    n_experts,
                    label,
                    r["n_iter"],
                    r["converged"],
                    f"{r['lower_bound']:.5f}",
                    r["seconds"],
                    r["monotone"],
                )
            )
    headers = ("K", "version", "iterations", "converged", "lower_bound_", "seconds")
    return markdown_table((*headers, "objective never lower"), rows)


def run_small_cases(before, after):
    rows = []
    for kind, n_samples, n_features in SMALL_DATA:
        for n_experts in SMALL_KS:
            figures = {}
            for label, root in (("before", before), ("after", after)):
                everywhere = int(label == "after")
                runs = [
                    _fit_in_process(
                        root, kind, n_samples, n_features, n_experts, s, everywhere
                    )
                    for s in SEEDS
                ]
                figures[label] = (
                    "/".join(str(r["n_iter"]) for r in runs),
                    "/".join(f"{r['lower_bound']:.4f}" for r in runs),
                    sum(r["seconds"] for r in runs),
                )
            row = (
                f"{kind} {n_samples} x {n_features}",
                n_experts,
                (n_features + 1) * n_experts,
                *figures["before"],
                *figures["after"],
            )
            print(row, flush=True)
            rows.append(row)
    headers = (
        "data",
        "K",
        "gate parameters",
        "iterations before",
        "lower_bound_ before",
        "seconds before",
        "iterations accelerated",
        "lower_bound_ accelerated",
        "seconds accelerated",
    )
    return markdown_table(headers, rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", type=Path, help="the tree of the mixexp to compare with"
    )
    parser.add_argument("--no-small", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--one", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, *numbers = args.one
        print(json.dumps(_fit_once(kind, *map(int, numbers))))
        return
    if args.before is None:
        parser.error("--before is required")
    machine = print_machine()
    after = HERE.parent
    blocks = [
        f"Before: mixexp from `{args.before}`; after: from this checkout. "
        "Iterations are M-steps; the extra E-steps of the accelerated runs "
        "are counted in the time.",
        "Default fits, 100,000 x 20 (`scale.py`'s smooth surface), 1 BLAS thread:",
        run_default_fits(args.before, after),
    ]
    if not args.no_small:
        blocks += [
            "Small cases, seeds 0/1/2 (seconds: their sum), this checkout "
            "accelerated whatever the gate's size:",
            run_small_cases(args.before, after),
        ]
    for block in blocks:
        print(block)
    if not args.no_write:
        write_section(
            "accelerate",
            "Accelerated EM (SQUAREM) against plain EM, 1 BLAS thread",
            blocks,
            machine=machine,
        )


if __name__ == "__main__":
    main()
