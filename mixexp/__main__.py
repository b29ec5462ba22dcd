"""``python -m mixexp``: a one-minute tour of what a mixture of experts buys.

Two problems, each solved three ways and printed side by side:

- generated data made of linear regimes, where a single linear model cannot
  follow the regimes but three linear experts and a softmax gate can;
- the breast cancer data set that ships with scikit-learn, where the experts
  are scaled logistic regressions.

For each model: the held-out score, the fit time and, for the mixture, the
share of the training data each expert took.
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes


def _evaluate(name, model, X_train, X_test, y_train, y_test):
    start = time.perf_counter()
    model.fit(X_train, y_train)
    seconds = time.perf_counter() - start
    load = getattr(model, "expert_load_", None)
    return {
        "model": name,
        "score": model.score(X_test, y_test),
        "seconds": seconds,
        "load": "-" if load is None else " ".join(f"{v:.2f}" for v in load),
    }


def _print_table(title, metric, rows):
    print(f"\n{title}")
    header = f"  {'model':<34} {metric:>9} {'fit (s)':>9}   expert load"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in rows:
        print(
            f"  {row['model']:<34} {row['score']:>9.4f} {row['seconds']:>9.3f}"
            f"   {row['load']}"
        )


def regimes_demo(n_samples=6000, random_state=0):
    """Three linear regimes: mixture vs one linear model vs boosting."""
    X, y = make_regimes(n_samples=n_samples, n_regimes=3, random_state=random_state)
    split = train_test_split(X, y, test_size=0.3, random_state=random_state)
    models = [
        (
            "mixture of 3 linear experts",
            MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=random_state),
        ),
        ("single linear expert", LinearRegression()),
        (
            "HistGradientBoostingRegressor",
            HistGradientBoostingRegressor(random_state=random_state),
        ),
    ]
    return [_evaluate(name, model, *split) for name, model in models]


def breast_cancer_demo(random_state=0):
    """Breast cancer: mixture of logistic experts vs one vs boosting."""
    X, y = load_breast_cancer(return_X_y=True)
    split = train_test_split(X, y, test_size=0.3, stratify=y, random_state=random_state)
    expert = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    models = [
        (
            "mixture of 2 logistic experts",
            MixtureOfExpertsClassifier(expert, n_experts=2, random_state=random_state),
        ),
        ("single logistic expert", expert),
        (
            "HistGradientBoostingClassifier",
            HistGradientBoostingClassifier(random_state=random_state),
        ),
    ]
    return [_evaluate(name, model, *split) for name, model in models]


def main(argv=None):
    """Run the demo and print its tables."""
    parser = argparse.ArgumentParser(prog="python -m mixexp", description=__doc__)
    parser.add_argument("--n-samples", type=int, default=6000)
    parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    np.set_printoptions(precision=3)
    print("mixexp demo: a mixture of experts against a single expert and boosting")
    _print_table(
        f"Linear regimes (make_regimes, {args.n_samples} rows, 30% held out)",
        "R2",
        regimes_demo(args.n_samples, args.random_state),
    )
    _print_table(
        "Breast cancer (scikit-learn, 569 rows, 30% held out)",
        "accuracy",
        breast_cancer_demo(args.random_state),
    )


if __name__ == "__main__":
    main()
