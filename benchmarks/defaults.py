"""Default mixtures on scikit-learn's small data sets: scores and warnings.

``make_pipeline(StandardScaler(), MixtureOfExpertsRegressor/Classifier(
random_state=0))`` with every other parameter at its default, scored by
``cross_val_score(cv=5)`` (R2 for diabetes, accuracy for the classifiers).
Counts the ConvergenceWarnings raised across the folds: the default model
should converge on data this plain.

Run from the repository root::

    python benchmarks/defaults.py
"""

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_wine,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

DATASETS = {
    "diabetes": (load_diabetes, MixtureOfExpertsRegressor),
    "breast_cancer": (load_breast_cancer, MixtureOfExpertsClassifier),
    "wine": (load_wine, MixtureOfExpertsClassifier),
    "iris": (load_iris, MixtureOfExpertsClassifier),
    "digits": (load_digits, MixtureOfExpertsClassifier),
}


def run(name):
    loader, estimator = DATASETS[name]
    X, y = loader(return_X_y=True)
    model = make_pipeline(StandardScaler(), estimator(random_state=0))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scores = cross_val_score(model, X, y, cv=5)
    seconds = time.perf_counter() - start
    n_warnings = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float(np.mean(scores)), n_warnings, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    args = parser.parse_args(argv)
    print("| data set | mean score | ConvergenceWarnings | seconds |")
    print("|---|---|---|---|")
    total = 0
    for name in args.datasets:
        score, n_warnings, seconds = run(name)
        total += n_warnings
        print(f"| {name} | {score:.3f} | {n_warnings} | {seconds:.1f} |")
    print(f"\nConvergenceWarnings in all: {total}")
    return total


if __name__ == "__main__":
    main()
