"""scikit-learn's own estimator checks on every public estimator and setting."""

import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor

# Each configuration exercises a different part of the model: the default
# soft EM, classification EM, argmax pooling, the constant gate (a finite
# mixture), per-expert feature groups, a scikit-learn classifier as gate,
# cluster-then-fit, Switch-style capacity with top-k pooling, and the
# out-of-fold E-step.
CONFIGURATIONS = [
    {},
    {"training": "hard", "n_experts": 2},
    {"pooling": "argmax", "n_experts": 2},
    {"gate": "constant", "n_experts": 2},
    {"feature_groups": [[0], [0, 1]], "n_experts": 2},
    {"gate": LogisticRegression(), "n_experts": 2},
    {"training": "fixed", "partition": "gmm", "n_experts": 2},
    {"training": "hard", "capacity_factor": 1.25, "top_k": 2},
    {"cv": 3, "n_experts": 2},
]


def _estimators():
    for cls in (MixtureOfExpertsRegressor, MixtureOfExpertsClassifier):
        for params in CONFIGURATIONS:
            yield cls(random_state=0, **params)
    # Experts and a gate that take missing values: the mixture passes them
    # through (its allow_nan tag is set, and the checks feed it NaN).
    gate = HistGradientBoostingClassifier(max_iter=5)
    yield MixtureOfExpertsRegressor(
        HistGradientBoostingRegressor(max_iter=5),
        gate=gate,
        n_experts=2,
        max_iter=10,
        random_state=0,
    )
    # Experts that partial_fit updates through their own partial_fit: the
    # checks that call it train the classifier online.
    yield MixtureOfExpertsClassifier(
        SGDClassifier(loss="log_loss", random_state=0), n_experts=2, random_state=0
    )
    yield MixtureOfExpertsClassifier(
        HistGradientBoostingClassifier(max_iter=5),
        gate=gate,
        n_experts=2,
        max_iter=10,
        random_state=0,
    )


# The one place where checks that do not apply to a mixture are listed.
_RANDOM_START = (
    "EM finds a local optimum that depends on its initial partition, and the "
    "check shuffles the weighted rows, so k-means++ seeding (and the Gaussian "
    "mixture, which takes no sample_weight) starts elsewhere than on the "
    "repeated rows; on its 15 rows and 30 features every linear expert can "
    "interpolate its rows, so the optima differ. From the same start, weights "
    "and repeated rows give the same model: "
    "tests/test_classes.py::test_sample_weight_equals_repetition_from_same_start"
)


_NO_PARTIAL_FIT = (
    "partial_fit refuses this configuration (hard EM, a fixed partition, a "
    "capacity, out-of-fold E-steps, a classifier gate, or experts with neither "
    "sufficient statistics nor a partial_fit of their own) with a ValueError "
    "that names the setting at fault (docs/bad_input.md); these checks call "
    "partial_fit expecting it to train: tests/test_partial_fit.py"
)
_PARTIAL_FIT_CHECKS = (
    "check_fit_score_takes_y",
    "check_n_features_in_after_fitting",
    "check_estimators_partial_fit_n_features",
)


def _expected_failed_checks(estimator):
    failed = {"check_sample_weight_equivalence_on_dense_data": _RANDOM_START}
    try:
        estimator._check_partial_fit_support()
    except ValueError:
        failed.update(dict.fromkeys(_PARTIAL_FIT_CHECKS, _NO_PARTIAL_FIT))
    return failed


def _listed(mark):
    """The same ``parametrize`` mark with its values in a list.

    scikit-learn 1.6 hands pytest a generator of (estimator, check) pairs,
    which pytest 9 refuses; later releases hand it a list.
    """
    argnames, argvalues = mark.args
    return pytest.mark.parametrize(argnames, list(argvalues), **mark.kwargs)


# The checks fit on tiny data sets where EM may stop at max_iter or an expert
# may collapse; those warnings are tested where they are meant to fire.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::mixexp.exceptions.CollapsedExpertWarning")
@_listed(
    parametrize_with_checks(
        list(_estimators()), expected_failed_checks=_expected_failed_checks
    )
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
