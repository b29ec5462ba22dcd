"""Out-of-fold E-step (``cv``) against plain EM, with experts that memorise.

A fully grown decision tree (or a k-nearest-neighbours model) fitted on a
row predicts that row almost exactly. In plain EM the E-step scores each row
with experts fitted on it, so every row looks perfectly explained by every
expert that saw it: the noise scales ``noise_std_`` collapse towards their
floor (a millionth of the variance of ``y``), the responsibilities stop
moving after an iteration or two, and the fitted mixture is wildly
over-confident on new rows. With ``cv=k`` the E-step scores each row with
experts fitted without its fold (one extra fit per fold and expert each
iteration), which is what this script puts side by side.

Regression: ``make_regimes(n_samples, n_regimes=3, noise=0.5,
random_state=seed)``, split into train and test (``--test-size``, split
seeded with the same seed); 3 experts, softmax gate, ``n_init=1``,
``max_iter=100``. Arms:

- ``DecisionTreeRegressor()`` (fully grown), soft EM (``training="em"``);
- the same tree, hard EM (``training="hard"``: each row to its most
  responsible expert);
- ``KNeighborsRegressor(n_neighbors=5)``, hard EM (its ``fit`` takes no
  ``sample_weight``, which soft EM needs); a row is one of its own 5
  neighbours, so it only half memorises;
- ``KNeighborsRegressor(n_neighbors=1)``, hard EM: memorises exactly.

Each arm is fitted with ``cv=None`` (plain EM) and ``cv`` in ``--cv``
(default 3 and 5) on every seed. Reported on the test rows: mean
log-likelihood ``model.log_likelihood(X_test, y_test).mean()``, R2 of
``predict``; on the model: ``noise_std_``, the spread of ``expert_load_``
(largest minus smallest share), the training objective ``lower_bound_``,
iterations, convergence and fit time. Mean and standard deviation over the
seeds.

Classification: ``make_xor(n_samples, flip=0.1, random_state=seed)``, 4
experts (one per quadrant), the same arms with ``DecisionTreeClassifier()``
and ``KNeighborsClassifier`` (5 and 1 neighbours); held-out mean
log-likelihood, log-loss (scikit-learn's ``log_loss`` of ``predict_proba``)
and accuracy.

For reference, the expert alone (no mixture) on the same split: R2 or
accuracy (and log-loss for the classifier).

Verdict: ``cv`` beats plain EM on held-out log-likelihood in an arm when
its mean over the seeds is higher and it is higher on more than half of the
seeds. Every fit runs with ``n_jobs=1`` and BLAS / OpenMP limited to one
thread.

Run from the repository root::

    python benchmarks/cv_e_step.py            # writes RESULTS.md
    python benchmarks/cv_e_step.py --no-write # prints only
"""

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import LoadMeter, markdown_table, print_machine, write_section
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor

N_REGIMES = 3
N_EXPERTS_REG = 3
N_EXPERTS_CLF = 4  # one per quadrant of the XOR square

REGRESSION_ARMS = [
    ("fully grown tree, soft EM", DecisionTreeRegressor(), "em"),
    ("fully grown tree, hard EM", DecisionTreeRegressor(), "hard"),
    ("5-NN, hard EM", KNeighborsRegressor(n_neighbors=5), "hard"),
    ("1-NN, hard EM", KNeighborsRegressor(n_neighbors=1), "hard"),
]
CLASSIFICATION_ARMS = [
    ("fully grown tree, soft EM", DecisionTreeClassifier(), "em"),
    ("fully grown tree, hard EM", DecisionTreeClassifier(), "hard"),
    ("5-NN, hard EM", KNeighborsClassifier(n_neighbors=5), "hard"),
    ("1-NN, hard EM", KNeighborsClassifier(n_neighbors=1), "hard"),
]


def fit_mixture(kind, expert, training, cv, n_experts, X, y, seed):
    """Fit one mixture; return it, its fit time and the warnings it raised."""
    cls = MixtureOfExpertsRegressor if kind == "reg" else MixtureOfExpertsClassifier
    model = cls(
        clone(expert),
        n_experts=n_experts,
        training=training,
        cv=cv,
        random_state=seed,
        n_jobs=1,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model.fit(X, y)
        elapsed = time.perf_counter() - start
    names = sorted({w.category.__name__ for w in caught})
    return model, elapsed, names


def evaluate(kind, model, X_test, y_test):
    """Held-out figures of one fitted mixture."""
    out = {
        "ll": float(model.log_likelihood(X_test, y_test).mean()),
        "train_obj": float(model.lower_bound_),
        "load_spread": float(np.ptp(model.expert_load_)),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
    }
    if kind == "reg":
        out["score"] = r2_score(y_test, model.predict(X_test))
        out["noise_mean"] = float(np.mean(model.noise_std_))
        out["noise_min"] = float(np.min(model.noise_std_))
    else:
        proba = model.predict_proba(X_test)
        out["score"] = accuracy_score(y_test, model.classes_[proba.argmax(axis=1)])
        out["log_loss"] = log_loss(y_test, proba, labels=model.classes_)
    return out


def single_expert(kind, expert, X_train, y_train, X_test, y_test):
    """The expert alone on the same split: R2, or accuracy and log-loss."""
    est = clone(expert).fit(X_train, y_train)
    if kind == "reg":
        return {"score": r2_score(y_test, est.predict(X_test))}
    proba = est.predict_proba(X_test)
    return {
        "score": accuracy_score(y_test, est.classes_[proba.argmax(axis=1)]),
        "log_loss": log_loss(y_test, proba, labels=est.classes_),
    }


def make_data(kind, n_samples, noise, flip, test_size, seed):
    if kind == "reg":
        X, y = make_regimes(
            n_samples=n_samples, n_regimes=N_REGIMES, noise=noise, random_state=seed
        )
        stratify = None
    else:
        X, y = make_xor(n_samples=n_samples, flip=flip, random_state=seed)
        stratify = y
    return train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=stratify
    )


def mean_std(values, num=None):
    """'mean ± std' over the seeds (std with ddof=1)."""
    num = _num if num is None else num
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{num(mean)} ± {num(std)}"


def _num(value):
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.01:
        return f"{value:.3f}"
    return f"{value:.2g}"


def run_arm(kind, arm, cvs, seeds, args):
    """Every seed and cv setting of one arm; {cv: [results per seed]}."""
    label, expert, training = arm
    n_experts = N_EXPERTS_REG if kind == "reg" else N_EXPERTS_CLF
    results = {cv: [] for cv in cvs}
    alone = []
    for seed in seeds:
        X_train, X_test, y_train, y_test = make_data(
            kind, args.n_samples, args.noise, args.flip, args.test_size, seed
        )
        alone.append(single_expert(kind, expert, X_train, y_train, X_test, y_test))
        for cv in cvs:
            model, elapsed, caught = fit_mixture(
                kind, expert, training, cv, n_experts, X_train, y_train, seed
            )
            res = evaluate(kind, model, X_test, y_test)
            res["time"] = elapsed
            res["warnings"] = caught
            results[cv].append(res)
            print(
                f"  {kind} | {label} | cv={cv} | seed {seed}: held-out "
                f"log-lik {res['ll']:.4g}, score {res['score']:.4f}, "
                f"{res['n_iter']} it, {elapsed:.2f} s"
                + (f", warnings {caught}" if caught else ""),
                flush=True,
            )
    return results, alone


def arm_rows(kind, label, results, alone):
    rows = []
    for cv, runs in results.items():
        n_conv = sum(r["converged"] for r in runs)
        warned = sorted({w for r in runs for w in r["warnings"]})
        row = [
            label,
            "None (plain EM)" if cv is None else str(cv),
            mean_std([r["ll"] for r in runs]),
        ]
        if kind == "reg":
            row += [
                mean_std([r["score"] for r in runs]),
                mean_std([r["noise_mean"] for r in runs]),
                mean_std([r["noise_min"] for r in runs]),
            ]
        else:
            row += [
                mean_std([r["log_loss"] for r in runs]),
                mean_std([r["score"] for r in runs]),
            ]
        row += [
            mean_std([r["load_spread"] for r in runs]),
            mean_std([r["train_obj"] for r in runs]),
            mean_std([r["n_iter"] for r in runs], num=lambda v: f"{v:.1f}"),
            f"{n_conv}/{len(runs)}" + (f" ({', '.join(warned)})" if warned else ""),
            f"{statistics.median(r['time'] for r in runs):.2f}",
        ]
        rows.append(row)
    ref = [label, "expert alone (no mixture)", "-"]
    if kind == "reg":
        ref += [mean_std([a["score"] for a in alone]), "-", "-"]
    else:
        ref += [
            mean_std([a["log_loss"] for a in alone]),
            mean_std([a["score"] for a in alone]),
        ]
    ref += ["-", "-", "-", "-", "-"]
    rows.append(ref)
    return rows


def headers(kind):
    head = ["experts", "cv", "held-out mean log-lik"]
    if kind == "reg":
        head += ["held-out R2", "noise_std_ (mean of experts)", "noise_std_ (smallest)"]
    else:
        head += ["held-out log-loss", "held-out accuracy"]
    head += [
        "expert_load_ spread (max - min)",
        "training lower_bound_",
        "iterations",
        "converged (warnings)",
        "fit time, s (median)",
    ]
    return head


def verdicts(kind, label, results, cvs):
    """One row per cv setting: does it beat plain EM on this arm?"""
    base = results[None]
    rows = []
    for cv in cvs:
        if cv is None:
            continue
        runs = results[cv]
        d_ll = [r["ll"] - b["ll"] for r, b in zip(runs, base, strict=True)]
        d_score = [r["score"] - b["score"] for r, b in zip(runs, base, strict=True)]
        wins = sum(d > 0 for d in d_ll)
        beats = statistics.fmean(d_ll) > 0 and wins > len(d_ll) / 2
        score_wins = sum(d > 0 for d in d_score)
        rows.append(
            [
                "regression" if kind == "reg" else "classification",
                label,
                f"cv={cv}",
                mean_std(d_ll),
                f"{wins}/{len(d_ll)}",
                mean_std(d_score),
                f"{score_wins}/{len(d_score)}",
                "yes" if beats else "no",
            ]
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--test-size", type=float, default=0.3)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=6, help="number of seeds (0..)")
    parser.add_argument("--cv", type=int, nargs="+", default=[3, 5])
    parser.add_argument(
        "--no-write", action="store_true", help="do not update RESULTS.md"
    )
    args = parser.parse_args(argv)
    machine = print_machine()
    meter = LoadMeter()
    seeds = list(range(args.seeds))
    cvs = [None, *args.cv]
    start = time.perf_counter()

    tables, verdict_rows = {}, []
    with threadpool_limits(limits=1):
        for kind, arms in (("reg", REGRESSION_ARMS), ("clf", CLASSIFICATION_ARMS)):
            rows = []
            for arm in arms:
                results, alone = run_arm(kind, arm, cvs, seeds, args)
                rows += arm_rows(kind, arm[0], results, alone)
                verdict_rows += verdicts(kind, arm[0], results, cvs)
            tables[kind] = markdown_table(headers(kind), rows)
    total = time.perf_counter() - start

    verdict_head = [
        "task",
        "experts",
        "cv",
        "held-out log-lik, cv - plain EM",
        "seeds where cv is higher",
        "held-out R2 / accuracy, cv - plain EM",
        "seeds where cv scores higher",
        "cv beats plain EM on held-out log-likelihood",
    ]
    table_verdict = markdown_table(verdict_head, verdict_rows)
    main_cv = max(args.cv)
    on_main = [r for r in verdict_rows if r[2] == f"cv={main_cv}"]
    n_yes = sum(r[-1] == "yes" for r in on_main)
    overall = "yes" if n_yes == len(on_main) else "no"
    headline = (
        f"cv={main_cv} beats plain EM on held-out log-likelihood: **{overall}** "
        f"(in {n_yes} of {len(on_main)} arms)"
    )

    n_test = math.ceil(args.test_size * args.n_samples)  # as train_test_split
    n_train = args.n_samples - n_test
    floor = "about 1e-3 of the standard deviation of y"
    print("\nRegression: make_regimes, 3 experts")
    print(tables["reg"])
    print("\nClassification: make_xor, 4 experts")
    print(tables["clf"])
    print("\nVerdict (differences per seed, then mean ± std over seeds)")
    print(table_verdict)
    print("\n" + headline.replace("**", ""))
    load = meter.text()
    print(load)
    print(f"Total run time: {total:.0f} s")

    blocks = [
        load,
        f"Regression data: `make_regimes(n_samples={args.n_samples}, "
        f"n_regimes={N_REGIMES}, noise={args.noise}, random_state=seed)`; "
        f"classification data: `make_xor(n_samples={args.n_samples}, "
        f"flip={args.flip}, random_state=seed)`; seeds 0..{args.seeds - 1}, "
        f"each split {n_train} train / {n_test} test "
        "(`train_test_split`, same seed; stratified for XOR). Mixtures: "
        f"{N_EXPERTS_REG} experts (regression) or {N_EXPERTS_CLF} "
        "(classification), default softmax gate and k-means partition, "
        "`n_init=1`, `max_iter=100`, `random_state=seed`, `n_jobs=1`; BLAS "
        "and OpenMP limited to one thread. k-NN experts have no "
        "`sample_weight` in `fit`, so they run under hard EM only. Figures are "
        "mean ± standard deviation over the seeds; the noise floor of "
        f"`noise_std_` is {floor} (the true noise is {args.noise}). "
        f"Total run time {total:.0f} s.",
        f"**Regression** (make_regimes, {N_EXPERTS_REG} experts)\n\n" + tables["reg"],
        f"**Classification** (make_xor, flip={args.flip}, {N_EXPERTS_CLF} "
        "experts)\n\n" + tables["clf"],
        "**Verdict**: per arm and cv setting, the paired per-seed difference "
        "to plain EM (mean ± std over seeds). cv beats plain EM when the mean "
        "held-out log-likelihood is higher and it is higher on more than half "
        "the seeds.\n\n" + table_verdict,
        headline + ".",
    ]
    if not args.no_write:
        write_section(
            "cv_e_step",
            "Out-of-fold E-step (cv) against plain EM with memorising experts",
            blocks,
            machine=machine,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
