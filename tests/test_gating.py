"""Gates of mixexp.gating, checked against independent computations."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier

from mixexp import _softmax, gating
from mixexp._softmax import softmax_objective
from mixexp.gating import (
    ClassifierGate,
    ConstantGate,
    SoftmaxGate,
    check_gate_classifier,
    make_gate,
)


def _standardise(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


TIGHT = {"tol": 1e-10, "max_iter": 1000}


@pytest.fixture(scope="module")
def softmax_data():
    """Inputs and the exact soft targets of a known softmax model."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(200, 3))
    coef = rng.normal(size=(3, 3))
    intercept = rng.normal(size=3)
    targets = softmax(X @ coef + intercept, axis=1)
    return X, targets, coef, intercept


@pytest.fixture(scope="module")
def labelled_data():
    """Overlapping classes: no gate runs to infinite coefficients."""
    rng = np.random.RandomState(1)
    X = rng.normal(size=(120, 2))
    labels = rng.randint(3, size=120)
    X[:, 0] += labels
    return X, labels


# ---------------------------------------------------------------------------
# SoftmaxGate


def test_softmax_gate_recovers_known_model(softmax_data):
    X, targets, coef, intercept = softmax_data
    gate = SoftmaxGate(alpha=0.0, **TIGHT).fit(X, targets)

    proba = gate.predict_proba(X)
    np.testing.assert_allclose(proba, targets, atol=1e-5)
    # Softmax scores are defined up to a constant per row: compare centred.
    np.testing.assert_allclose(
        gate.coef_ - gate.coef_.mean(axis=1, keepdims=True),
        coef - coef.mean(axis=1, keepdims=True),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        gate.intercept_ - gate.intercept_.mean(),
        intercept - intercept.mean(),
        atol=1e-4,
    )
    np.testing.assert_array_equal(gate.classes_, [0, 1, 2])
    assert gate.n_features_in_ == 3
    assert gate.penalty_ == 0.0


def test_softmax_gate_predict_methods_agree(softmax_data):
    X, targets, _, _ = softmax_data
    gate = SoftmaxGate().fit(X, targets)
    proba = gate.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(gate.predict_log_proba(X)), proba, rtol=1e-12)
    np.testing.assert_array_equal(gate.predict(X), np.argmax(proba, axis=1))


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_softmax_gate_matches_logistic_regression(labelled_data, alpha):
    """Same objective as LogisticRegression with C = 1 / alpha on scaled X."""
    X, labels = labelled_data
    Xs = _standardise(X)
    C = np.inf if alpha == 0 else 1.0 / alpha
    lr = LogisticRegression(C=C, tol=1e-10, max_iter=1000).fit(Xs, labels)
    gate = SoftmaxGate(alpha=alpha, **TIGHT).fit(Xs, labels)
    np.testing.assert_allclose(gate.predict_proba(Xs), lr.predict_proba(Xs), atol=1e-5)


def test_softmax_gate_unpenalised_is_invariant_to_scaling(labelled_data):
    X, labels = labelled_data
    gate = SoftmaxGate(alpha=0.0, **TIGHT).fit(X, labels)
    scaled = SoftmaxGate(alpha=0.0, **TIGHT).fit(X * [1e-3, 1e4] + 7.0, labels)
    np.testing.assert_allclose(
        scaled.predict_proba(X * [1e-3, 1e4] + 7.0), gate.predict_proba(X), atol=1e-6
    )


def test_softmax_gate_hard_labels_equal_one_hot_targets(labelled_data):
    X, labels = labelled_data
    from_labels = SoftmaxGate(**TIGHT).fit(X, labels)
    from_one_hot = SoftmaxGate(**TIGHT).fit(X, np.eye(3)[labels])
    from_floats = SoftmaxGate(**TIGHT).fit(X, labels.astype(float))
    expected = from_one_hot.predict_proba(X)
    np.testing.assert_allclose(from_labels.predict_proba(X), expected, rtol=1e-12)
    np.testing.assert_allclose(from_floats.predict_proba(X), expected, rtol=1e-12)


def test_softmax_gate_warm_start_needs_fewer_iterations(softmax_data):
    X, targets, _, _ = softmax_data
    gate = SoftmaxGate(alpha=0.0, warm_start=True).fit(X, targets)
    first = gate.n_iter_
    first_proba = gate.predict_proba(X)
    gate.fit(X, targets)
    assert first > 2
    assert gate.n_iter_ < first
    np.testing.assert_allclose(gate.predict_proba(X), first_proba, atol=1e-6)

    cold = SoftmaxGate(alpha=0.0, warm_start=False).fit(X, targets)
    cold.fit(X, targets)
    assert cold.n_iter_ == first


def test_softmax_gate_refit_after_data_changed_in_place(softmax_data):
    """A warm-started refit must see the new values of a reused X array."""
    X0, targets, _, _ = softmax_data
    X = np.array(X0, dtype=np.float64, order="C")
    gate = SoftmaxGate(warm_start=True, **TIGHT).fit(X, targets)
    X[:, 0] = 10.0 * X[:, 0] + 50.0  # same object, new values
    gate.fit(X, targets)
    fresh = SoftmaxGate(**TIGHT).fit(X.copy(), targets)
    np.testing.assert_allclose(gate.coef_, fresh.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gate.predict_proba(X), fresh.predict_proba(X), atol=1e-6)


def test_softmax_gate_predicts_on_new_values_of_the_training_array(softmax_data):
    """No evaluation cached during fit may outlive the public fit."""
    X0, targets, _, _ = softmax_data
    X = np.array(X0, dtype=np.float64, order="C")
    gate = SoftmaxGate(warm_start=True).fit(X, targets)
    X[:, 0] += 3.0  # same object, new values
    expected = SoftmaxGate(warm_start=True).fit(X0, targets).predict_proba(X.copy())
    np.testing.assert_allclose(gate.predict_proba(X), expected, rtol=1e-12)


def test_softmax_fit_in_progress_reuses_the_last_evaluation(softmax_data):
    """Inside EM, log-probabilities on the training X come from the last step
    and equal a fresh computation; the next step starts from them. The
    fitted gate holds none of the fit's state."""
    X, targets, _, _ = softmax_data
    weights = np.ones(X.shape[0])
    progress = SoftmaxGate()._em_start(X, weights, 3)
    reference = SoftmaxGate()._em_start(X.copy(), weights, 3)
    for step in range(3):
        shifted = np.roll(targets, step, axis=1) * 0.5 + targets * 0.5
        progress.improve(shifted, exact=False)
        reference.improve(shifted, exact=False)
        assert progress._evaluation_at(progress.params.ravel()) is not None
        fitted = progress.fitted()
        np.testing.assert_allclose(
            progress.log_proba(), fitted._predict_log_proba(X.copy())
        )
        np.testing.assert_allclose(fitted.coef_, reference.fitted().coef_, rtol=1e-12)
    state = set(vars(fitted)) - set(fitted.get_params())
    assert state == {
        "_params",
        "_mean",
        "_scale",
        "coef_",
        "intercept_",
        "penalty_",
        "alpha_",
        "gamma_",
        "n_iter_",
        "classes_",
        "n_features_in_",
    }
    assert fitted.get_params() == SoftmaxGate().get_params()
    assert "_evaluated" not in pickle.loads(pickle.dumps(fitted)).__dict__


def test_softmax_checkpoint_continues_where_the_fit_stopped(softmax_data):
    """Three capped steps equal two, a checkpoint, and one more step."""
    X, targets, _, _ = softmax_data
    weights = np.ones(X.shape[0])
    straight = SoftmaxGate()._em_start(X, weights, 3)
    paused = SoftmaxGate()._em_start(X, weights, 3)
    for step in range(2):
        shifted = np.roll(targets, step, axis=1) * 0.5 + targets * 0.5
        straight.improve(shifted, exact=False)
        paused.improve(shifted, exact=False)
    resumed = SoftmaxGate()._em_start(X, weights, 3, init=paused.checkpoint())
    shifted = np.roll(targets, 2, axis=1) * 0.5 + targets * 0.5
    straight.improve(shifted, exact=False)
    resumed.improve(shifted, exact=False)
    np.testing.assert_array_equal(resumed.params, straight.params)
    assert resumed.penalty == straight.penalty


def test_softmax_fit_from_a_gate_on_other_data_starts_from_its_function(
    softmax_data,
):
    """A warm start on data with another standardisation starts from the
    same gate function, re-expressed on the new scale."""
    X, targets, _, _ = softmax_data
    weights = np.ones(X.shape[0])
    gate = SoftmaxGate(alpha=0.0).fit(X, targets)
    X_new = X[:100] * [2.0, 1.0, 0.5] + [1.0, 0.0, -3.0]
    progress = SoftmaxGate(alpha=0.0)._em_start(X_new, weights[:100], 3, init=gate)
    np.testing.assert_allclose(
        _softmax.softmax_scoresT(progress.params, X_new, progress.mean, progress.scale),
        _softmax.softmax_scoresT(gate._params, X_new, gate._mean, gate._scale),
        atol=1e-10,
    )


def test_softmax_gate_warm_start_ignores_mismatched_shape(softmax_data):
    X, targets, _, _ = softmax_data
    gate = SoftmaxGate(warm_start=True).fit(X, targets)
    gate.fit(X[:, :2], targets[:, :2] / targets[:, :2].sum(axis=1, keepdims=True))
    assert gate.coef_.shape == (2, 2)
    assert gate.n_features_in_ == 2


@pytest.mark.parametrize("column_scale", [1.0, 1e6, 1e-6])
def test_softmax_gate_coef_reproduce_proba_on_original_scale(
    softmax_data, column_scale
):
    X, targets, _, _ = softmax_data
    X = X * np.array([1.0, column_scale, 1.0]) + np.array([0.0, 3.0, -2.0])
    gate = SoftmaxGate(alpha=0.1).fit(X, targets)
    rng = np.random.RandomState(4)
    X_new = X[rng.permutation(len(X))[:20]] * 1.5
    np.testing.assert_allclose(
        softmax(X_new @ gate.coef_ + gate.intercept_, axis=1),
        gate.predict_proba(X_new),
        rtol=1e-8,
        atol=1e-12,
    )
    assert gate.coef_.shape == (3, 3)
    assert gate.intercept_.shape == (3,)


def test_softmax_gate_constant_column(softmax_data):
    X, targets, _, _ = softmax_data
    X = np.column_stack([X, np.full(len(X), 5.0)])
    gate = SoftmaxGate().fit(X, targets)
    assert np.all(np.isfinite(gate.coef_))
    np.testing.assert_allclose(gate.coef_[3], 0.0, atol=1e-12)
    assert np.all(np.isfinite(gate.predict_proba(X)))


@pytest.mark.parametrize("alpha", [0.01, 1.0, 30.0])
def test_softmax_gate_penalty_attribute(softmax_data, alpha):
    X, targets, _, _ = softmax_data
    X = X * np.array([2.0, 0.5, 10.0])
    gate = SoftmaxGate(alpha=alpha).fit(X, targets)
    # The penalty is on the coefficients of the standardised features.
    standardised_coef = gate.coef_ * X.std(axis=0)[:, None]
    expected = 0.5 * alpha * np.sum(standardised_coef**2)
    assert gate.penalty_ == pytest.approx(expected, rel=1e-8)
    assert gate.penalty_ > 0


def test_softmax_gate_larger_alpha_shrinks_coefficients(softmax_data):
    X, targets, _, _ = softmax_data
    norms = [
        np.linalg.norm(SoftmaxGate(alpha=alpha).fit(X, targets).coef_)
        for alpha in (0.0, 1.0, 10.0, 100.0, 1000.0)
    ]
    assert np.all(np.diff(norms) < 0)


def test_softmax_gate_sample_weight_equals_repeated_rows(labelled_data):
    X, labels = labelled_data
    weights = np.ones(len(X))
    weights[::3] = 2.0
    repeat = np.repeat(np.arange(len(X)), weights.astype(int))
    weighted = SoftmaxGate(alpha=0.5, **TIGHT).fit(X, labels, sample_weight=weights)
    repeated = SoftmaxGate(alpha=0.5, **TIGHT).fit(X[repeat], labels[repeat])
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-6)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, atol=1e-6)


def test_softmax_gate_zero_weight_rows_are_ignored(labelled_data):
    X, labels = labelled_data
    weights = np.ones(len(X))
    weights[:30] = 0.0
    X_noisy = X.copy()
    X_noisy[:30] = 1e3  # would move the standardisation if it were counted
    weighted = SoftmaxGate(alpha=0.5, **TIGHT).fit(X_noisy, labels, weights)
    dropped = SoftmaxGate(alpha=0.5, **TIGHT).fit(X[30:], labels[30:])
    np.testing.assert_allclose(weighted.coef_, dropped.coef_, atol=1e-6)
    np.testing.assert_allclose(weighted.intercept_, dropped.intercept_, atol=1e-6)


def test_softmax_gate_convergence_warning(softmax_data):
    X, targets, _, _ = softmax_data
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):
        gate = SoftmaxGate(alpha=0.0, max_iter=1).fit(X, targets)
    assert gate.n_iter_ == 1


def test_softmax_gate_feature_names(softmax_data):
    X, targets, _, _ = softmax_data
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    gate = SoftmaxGate().fit(frame, targets)
    np.testing.assert_array_equal(gate.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_allclose(
        gate.predict_proba(frame), SoftmaxGate().fit(X, targets).predict_proba(X)
    )
    with pytest.raises(ValueError, match="feature names"):
        gate.predict_proba(frame[["a", "b"]])


def test_softmax_gate_not_fitted():
    with pytest.raises(NotFittedError):
        SoftmaxGate().predict_proba(np.zeros((2, 2)))


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": "evidence"}, "alpha"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1e-3}, "tol"),
        ({"warm_start": "yes"}, "warm_start"),
    ],
)
def test_softmax_gate_invalid_parameters(labelled_data, params, name):
    X, labels = labelled_data
    with pytest.raises(ValueError, match=name):
        SoftmaxGate(**params).fit(X, labels)


def _bad_targets():
    good = np.full((6, 2), 0.5)
    negative = good.copy()
    negative[0] = [1.5, -0.5]
    not_summing = good.copy()
    not_summing[2] = [0.5, 0.6]
    with_nan = good.copy()
    with_nan[1, 0] = np.nan
    return [
        pytest.param(negative, "non-negative", id="negative"),
        pytest.param(not_summing, "sum to 1", id="rows-not-summing-to-1"),
        pytest.param(with_nan, "finite", id="nan"),
        pytest.param(np.full((5, 2), 0.5), "n_samples=6", id="wrong-n-rows"),
        pytest.param(np.full((6, 2, 1), 0.5), "shape", id="3d"),
        pytest.param(np.array([0, 1, -1, 0, 1, 0]), ">= 0", id="negative-label"),
        pytest.param(np.array([0, 0.5, 1, 0, 1, 0]), "integers", id="float-label"),
    ]


@pytest.mark.parametrize("gate", [SoftmaxGate(), ConstantGate()], ids=type)
@pytest.mark.parametrize(("targets", "match"), _bad_targets())
def test_gate_invalid_targets(gate, targets, match):
    with pytest.raises(ValueError, match=match):
        gate.fit(np.arange(12.0).reshape(6, 2), targets)


# ---------------------------------------------------------------------------
# ConstantGate


def test_constant_gate_proportions_are_weighted_mean():
    rng = np.random.RandomState(5)
    X = rng.normal(size=(40, 2))
    targets = rng.dirichlet(np.ones(3), size=40)
    weights = rng.uniform(0.1, 2.0, size=40)
    gate = ConstantGate().fit(X, targets, sample_weight=weights)

    expected = np.average(targets, axis=0, weights=weights)
    np.testing.assert_allclose(gate.proportions_, expected, rtol=1e-12)
    assert gate.proportions_.sum() == pytest.approx(1.0)
    assert gate.penalty_ == 0.0
    np.testing.assert_array_equal(gate.classes_, [0, 1, 2])

    X_new = rng.normal(size=(7, 2)) * 100
    proba = gate.predict_proba(X_new)
    assert proba.shape == (7, 3)
    np.testing.assert_allclose(proba, np.tile(expected, (7, 1)), rtol=1e-12)
    np.testing.assert_array_equal(gate.predict(X_new), np.argmax(expected))


def test_constant_gate_hard_labels_and_empty_expert():
    gate = ConstantGate().fit(np.zeros((4, 1)), np.array([0, 0, 0, 2]))
    np.testing.assert_allclose(gate.proportions_, [0.75, 0.0, 0.25])
    log_proba = gate.predict_log_proba(np.zeros((2, 1)))
    # An expert with no weight keeps a finite (very negative) log gate.
    assert np.all(np.isfinite(log_proba))
    assert np.all(log_proba[:, 1] < -700)
    np.testing.assert_allclose(log_proba[:, [0, 2]], np.log([[0.75, 0.25]] * 2))


def test_constant_gate_checks_n_features():
    gate = ConstantGate().fit(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="features"):
        gate.predict_proba(np.zeros((3, 3)))
    with pytest.raises(NotFittedError):
        ConstantGate().predict(np.zeros((2, 2)))


# ---------------------------------------------------------------------------
# ClassifierGate


class _RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Records what fit receives; predicts uniform probabilities."""

    def fit(self, X, y, sample_weight=None, groups=None):
        self.X_, self.y_ = np.asarray(X), np.asarray(y)
        self.sample_weight_, self.groups_ = sample_weight, groups
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        n = len(self.classes_)
        return np.full((len(X), n), 1.0 / n)


def test_classifier_gate_stacks_weighted_copies():
    X = np.arange(8.0).reshape(4, 2)
    targets = np.array([[1.0, 0.0], [0.25, 0.75], [0.5, 0.5], [1e-12, 1.0 - 1e-12]])
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    groups = np.array([10, 11, 12, 13])
    gate = ClassifierGate(_RecordingClassifier()).fit(
        X, targets, sample_weight=weights, groups=groups
    )
    rec = gate.estimator_

    # (row, label) pairs with weight w_i * T_ik; negligible ones dropped.
    rows = np.array([0, 1, 1, 2, 2, 3])
    labels = np.array([0, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(rec.X_, X[rows])
    np.testing.assert_array_equal(rec.y_, labels)
    np.testing.assert_allclose(
        rec.sample_weight_, weights[rows] * targets[rows, labels]
    )
    np.testing.assert_array_equal(rec.groups_, groups[rows])
    # The summed stacked weight of a row is its own weight.
    np.testing.assert_allclose(np.bincount(rows, rec.sample_weight_), weights)


def test_classifier_gate_one_hot_equals_classifier_on_labels(labelled_data):
    X, labels = labelled_data
    lr = LogisticRegression(tol=1e-8, max_iter=500)
    gate = ClassifierGate(lr).fit(X, np.eye(3)[labels])
    direct = LogisticRegression(tol=1e-8, max_iter=500).fit(X, labels)
    np.testing.assert_allclose(gate.predict_proba(X), direct.predict_proba(X))
    np.testing.assert_array_equal(gate.predict(X), direct.predict(X))
    assert gate.estimator_ is not lr
    assert not hasattr(lr, "coef_")  # the user's object is left unfitted


def test_classifier_gate_soft_targets_match_softmax_gate(softmax_data):
    """Stacked weighted copies minimise the soft cross-entropy."""
    X, targets, _, _ = softmax_data
    weights = np.random.RandomState(6).uniform(0.5, 2.0, size=len(X))
    lr = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000)
    # SoftmaxGate penalises the coefficients of the features standardised
    # with the weighted moments: give both gates data standardised that way.
    mean = np.average(X, axis=0, weights=weights)
    std = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
    Xw = (X - mean) / std
    gate = ClassifierGate(lr).fit(Xw, targets, sample_weight=weights)
    reference = SoftmaxGate(alpha=1.0, **TIGHT).fit(Xw, targets, weights)
    np.testing.assert_allclose(
        gate.predict_proba(Xw), reference.predict_proba(Xw), atol=1e-5
    )


def test_classifier_gate_absent_expert_keeps_its_column():
    rng = np.random.RandomState(7)
    X = rng.normal(size=(30, 2))
    labels = np.where(X[:, 0] > 0, 2, 0)  # expert 1 never appears
    for y in (labels, np.eye(3)[labels]):
        gate = ClassifierGate(LogisticRegression()).fit(X, y)
        proba = gate.predict_proba(X)
        assert proba.shape == (30, 3)
        np.testing.assert_array_equal(gate.classes_, [0, 1, 2])
        assert np.all(proba[:, 1] < 1e-300)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert np.all(np.isfinite(gate.predict_log_proba(X)))
        assert set(gate.predict(X)) <= {0, 2}


@pytest.mark.parametrize(
    "targets",
    [np.ones((30, 1)), np.tile([0.0, 1.0], (30, 1))],
    ids=["one-expert", "all-weight-on-expert-1"],
)
def test_classifier_gate_single_present_expert(targets):
    """Targets with one expert only (n_experts=1, or a collapsed expert).

    SoftmaxGate and ConstantGate give that expert probability 1; a classifier
    gate must too, even when its classifier refuses single-class data.
    """
    X = np.random.RandomState(8).normal(size=(30, 2))
    expected = np.zeros(targets.shape)
    expected[:, -1] = 1.0
    for reference in (SoftmaxGate(), ConstantGate()):
        proba = reference.fit(X, targets).predict_proba(X)
        np.testing.assert_allclose(proba, expected, atol=1e-5)
    gate = ClassifierGate(LogisticRegression()).fit(X, targets)
    np.testing.assert_allclose(gate.predict_proba(X), expected, atol=1e-5)


def test_classifier_gate_refit_uses_new_estimator(labelled_data):
    """fit must clone the current `estimator`, not reuse a stale fitted one."""
    X, labels = labelled_data
    gate = ClassifierGate(LogisticRegression(C=1e-3)).fit(X, labels)
    gate.set_params(estimator=DecisionTreeClassifier(max_depth=1, random_state=0))
    gate.fit(X, labels)
    assert isinstance(gate.estimator_, DecisionTreeClassifier)


def test_classifier_gate_refit_uses_new_estimator_params(labelled_data):
    X, labels = labelled_data
    gate = ClassifierGate(LogisticRegression(C=1e-3)).fit(X, labels)
    gate.set_params(estimator__C=100.0)
    gate.fit(X, labels)
    assert gate.estimator_.C == 100.0
    direct = LogisticRegression(C=100.0).fit(X, labels)
    np.testing.assert_allclose(gate.predict_proba(X), direct.predict_proba(X))


def test_classifier_gate_rejects_unsuitable_classifiers(labelled_data):
    X, labels = labelled_data
    with pytest.raises(ValueError, match="estimator"):
        ClassifierGate(LinearSVC()).fit(X, labels)
    with pytest.raises(TypeError, match="sample_weight"):
        ClassifierGate(KNeighborsClassifier()).fit(X, labels)


# ---------------------------------------------------------------------------
# make_gate and check_gate_classifier


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("softmax", SoftmaxGate),
        ("constant", ConstantGate),
        (SoftmaxGate(alpha=0.25, max_iter=500), SoftmaxGate),
        (ConstantGate(), ConstantGate),
        (ClassifierGate(LogisticRegression(C=3.0)), ClassifierGate),
        (LogisticRegression(C=3.0), ClassifierGate),
        (DecisionTreeClassifier(max_depth=2), ClassifierGate),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_make_gate_returns_fresh_unfitted_gate(labelled_data, spec, kind):
    X, labels = labelled_data
    if not isinstance(spec, str):
        spec.fit(X, labels)  # a fitted spec must not leak into the gate
    gate = make_gate(spec)
    assert type(gate) is kind
    assert gate is not spec
    with pytest.raises(NotFittedError):
        gate.predict_proba(X)
    if isinstance(spec, (SoftmaxGate, ConstantGate, ClassifierGate)):
        assert gate.get_params(deep=False).keys() == spec.get_params(deep=False).keys()
        if isinstance(spec, SoftmaxGate):
            assert (gate.alpha, gate.max_iter) == (0.25, 500)
    elif not isinstance(spec, str):
        assert gate.estimator is not spec
        assert gate.estimator.get_params() == spec.get_params()
        assert not hasattr(gate.estimator, "classes_")
    # Each call gives a new object.
    assert make_gate(spec) is not gate
    assert gate.fit(X, labels).predict_proba(X).shape == (len(X), 3)


def test_make_gate_defaults():
    assert make_gate("softmax").get_params() == SoftmaxGate().get_params()


@pytest.mark.parametrize("spec", ["linear", "Softmax", ""])
def test_make_gate_unknown_string(spec):
    with pytest.raises(ValueError, match="gate="):
        make_gate(spec)


def test_make_gate_without_predict_proba():
    with pytest.raises(TypeError, match="predict_proba"):
        make_gate(LinearSVC())


def test_make_gate_without_sample_weight():
    with pytest.raises(TypeError, match="sample_weight"):
        make_gate(KNeighborsClassifier())


@pytest.mark.parametrize(
    ("estimator", "match"),
    [(LinearSVC(), "predict_proba"), (KNeighborsClassifier(), "sample_weight")],
)
def test_check_gate_classifier_names_parameter(estimator, match):
    with pytest.raises(TypeError, match=f"The my_gate .*{match}"):
        check_gate_classifier(estimator, "my_gate")
    check_gate_classifier(LogisticRegression(), "my_gate")  # no error


# ---------------------------------------------------------------------------
# The Newton solver's Hessian


def test_newton_gate_reaches_the_minimum_in_few_steps():
    rng = np.random.RandomState(1)
    X = rng.normal(size=(500, 3))
    targets = rng.dirichlet(np.ones(3), size=500)
    gate = SoftmaxGate(alpha=0.1, tol=1e-10).fit(X, targets)
    assert gate.n_iter_ <= 10  # quadratic convergence
    _, grad = softmax_objective(
        gate._params.ravel(),
        X,
        gate._mean,
        gate._scale,
        np.ascontiguousarray(targets.T),
        np.full(500, 1 / 500),
        0.1 / 500,
    )
    assert np.max(np.abs(grad)) < 1e-10


def test_a_new_penalty_reuses_the_last_hessian(monkeypatch):
    """Inside EM the penalty is re-estimated at every M-step: the kept
    Hessian of the cross-entropy is reused with the new penalty (only its
    diagonal term changes), and no pass over the rows is made."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 2))
    targets = rng.dirichlet(np.ones(3), size=300)
    weights = np.ones(300)
    progress = SoftmaxGate(alpha=1.0)._em_start(X, weights, 3)
    progress.improve(targets, exact=True)
    old_scale, new_scale = 1.0 / 300, 0.25 / 300
    assert progress._remembered_curvature(old_scale) is progress._curvature

    def matrix(curvature):
        values, vectors = curvature
        assert values.size == 3 * 3 - 1  # only the shared intercept shift is null
        return (vectors * values) @ vectors.T

    change = matrix(progress._remembered_curvature(new_scale)) - matrix(
        progress._curvature
    )
    on_coef = np.r_[np.zeros(3), np.ones(6)]  # (feature, expert) order
    np.testing.assert_allclose(
        change, np.diag((new_scale - old_scale) * on_coef), atol=1e-12
    )
    calls = []
    monkeypatch.setattr(
        _softmax, "softmax_hessian", lambda *args: calls.append(args) or 1 / 0
    )
    relaxed = SoftmaxGate(alpha=0.25)._em_start(
        X, weights, 3, init=progress.checkpoint()
    )
    relaxed.improve(targets, exact=False)
    assert relaxed.n_iter == 1 and calls == []


def test_the_evidence_at_the_kept_hessians_point_makes_no_pass(monkeypatch):
    """A solve that took no step since the last Hessian (alpha="auto"'s
    rounds once alpha barely moves) re-estimates alpha from the kept one,
    as it would from a fresh one; and the Hessian at zero, where EM's first
    M-step starts twice, is made once."""
    rng = np.random.RandomState(3)
    X = rng.normal(size=(400, 3))
    targets = rng.dirichlet(np.ones(4), size=400)
    progress = SoftmaxGate(alpha=1.0)._em_start(X, np.ones(400), 4)
    progress.improve(targets, exact=True)
    fresh = SoftmaxGate(alpha=1.0)._em_start(X, np.ones(400), 4)
    fresh.params, fresh.alpha = progress.params, progress.alpha
    expected = fresh._evidence_update(fresh=True)
    calls = []
    original = _softmax.softmax_hessian
    monkeypatch.setattr(
        _softmax,
        "softmax_hessian",
        lambda *args: calls.append(1) or original(*args),
    )
    progress._hessian_at(progress.params.ravel(), 1.0 / 400)
    assert len(calls) == 1
    np.testing.assert_allclose(
        progress._evidence_update(fresh=True), expected, rtol=1e-10
    )
    assert len(calls) == 1  # the kept Hessian served
    # The fit started from zero: that Hessian is kept, and serves again.
    at_zero = progress._hessian_at(np.zeros(4 * 4), 1.0 / 400)
    assert len(calls) == 1
    uniform = np.full((4, 400), 0.25)
    expected_hessian = original(
        X, progress.mean, progress.scale, uniform, np.full(400, 1 / 400), 1.0 / 400
    )
    np.testing.assert_allclose(at_zero, expected_hessian, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# alpha="auto": the evidence re-estimate of the penalty


def _labels_from_a_softmax(seed, n_samples=300, scale=1.0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, 4)) * [1.0, 5.0, 0.1, 2.0] + 3.0
    scores = scale * X @ rng.normal(size=(4, 3)) / 3 + rng.gumbel(size=(n_samples, 3))
    weights = rng.uniform(0.5, 1.5, n_samples)
    return X, np.argmax(scores, axis=1), weights


def test_evidence_gamma_counts_the_well_determined_coefficients():
    """gamma from the cached eigenpairs equals sum lambda / (lambda + alpha)
    over the eigenvalues of the data Hessian on the coefficients, with the
    intercepts profiled out (MacKay's definition)."""
    from mixexp._softmax import (
        evidence_alpha,
        pseudo_inverse_factors,
        softmax_hessian,
        softmax_probaT,
    )

    X, labels, weights = _labels_from_a_softmax(0)
    n_experts, alpha, total = 3, 2.5, weights.sum()
    gate = SoftmaxGate(alpha=alpha, **TIGHT).fit(X, labels, sample_weight=weights)
    params = gate._params
    probaT = softmax_probaT(params.ravel(), X, gate._mean, gate._scale, n_experts)
    hessian = softmax_hessian(X, gate._mean, gate._scale, probaT, weights / total, 0)
    data = hessian * total  # of the summed cross-entropy
    b, w = np.arange(n_experts), np.arange(n_experts, params.size)
    profiled = (
        data[np.ix_(w, w)]
        - data[np.ix_(w, b)] @ np.linalg.pinv(data[np.ix_(b, b)]) @ data[np.ix_(b, w)]
    )
    lam = np.clip(np.linalg.eigvalsh(profiled), 0.0, None)
    expected = np.sum(lam / (lam + alpha))

    curvature = pseudo_inverse_factors(
        softmax_hessian(
            X, gate._mean, gate._scale, probaT, weights / total, alpha / total
        )
    )
    new_alpha, gamma = evidence_alpha(params, curvature, alpha / total, n_experts)
    assert gamma == pytest.approx(expected, rel=1e-8)
    # The shift shared by every expert's coefficients is not determined.
    assert 0 < gamma < 4 * (n_experts - 1) + 1e-9
    assert new_alpha == pytest.approx(gamma / np.sum(params[1:] ** 2))


def test_auto_alpha_fit_ends_at_the_evidence_fixed_point():
    X, labels, weights = _labels_from_a_softmax(1)
    gate = SoftmaxGate(alpha="auto", **TIGHT).fit(X, labels, sample_weight=weights)
    assert gate.alpha_ == pytest.approx(
        gate.gamma_ / np.sum(gate._params[1:] ** 2), rel=1e-4
    )
    # The same fit as a fixed penalty at that value.
    fixed = SoftmaxGate(alpha=gate.alpha_, **TIGHT).fit(
        X, labels, sample_weight=weights
    )
    np.testing.assert_allclose(gate.coef_, fixed.coef_, rtol=1e-5, atol=1e-8)
    assert fixed.gamma_ is None and fixed.alpha_ == gate.alpha_


def test_auto_alpha_is_small_for_sharp_labels_and_large_for_noise():
    X, sharp_labels, _ = _labels_from_a_softmax(2, n_samples=2000, scale=20.0)
    noise_labels = np.random.RandomState(2).randint(3, size=2000)
    sharp = SoftmaxGate(alpha="auto").fit(X, sharp_labels)
    noise = SoftmaxGate(alpha="auto").fit(X, noise_labels)
    assert sharp.alpha_ < 1e-2 < 1.0 < noise.alpha_
    # Noise labels carry no information about X: the gate stays near flat.
    assert np.ptp(noise.predict_proba(X), axis=0).max() < 0.2


def test_auto_alpha_warm_refit_only_lowers_it():
    X, labels, _ = _labels_from_a_softmax(3)
    gate = SoftmaxGate(alpha="auto", warm_start=True).fit(X, labels)
    first = gate.alpha_
    # Random labels would call for a larger penalty: a warm refit keeps it.
    gate.fit(X, np.random.RandomState(3).randint(3, size=len(X)))
    assert gate.alpha_ <= first
    cold = SoftmaxGate(alpha="auto").fit(X, labels)
    assert cold.alpha_ == pytest.approx(first, rel=1e-3)  # to the solver's tol


def test_auto_alpha_inside_em_only_decreases_after_the_first_step():
    from mixexp import MixtureOfExpertsRegressor
    from mixexp.datasets import make_regimes

    X, y = make_regimes(n_samples=1500, n_regimes=3, random_state=0)
    seen = []
    original = gating._SoftmaxFit.improve

    def recording(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        seen.append(self.alpha)
        return result

    moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gating._SoftmaxFit, "improve", recording)
        moe.fit(X, y)
    steps = np.diff(seen[1:])
    assert len(seen) == moe.n_iter_ and np.all(steps <= 0)
    assert seen[-1] == moe.gate_.alpha_ < seen[1]  # sharp regimes: relaxed
    history = np.array(moe.lower_bounds_)
    assert np.all(np.diff(history) >= -1e-12)  # EM's objective never goes down


# ---------------------------------------------------------------------------
# Many experts: truncated Newton steps above _TRUNCATED_NEWTON_MIN_PARAMETERS


def _many_experts_problem(seed=0, n_samples=1500, n_features=6, n_experts=9):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features)) * np.linspace(0.2, 5.0, n_features)
    scores = X @ rng.normal(size=(n_features, n_experts)) + rng.gumbel(
        size=(n_samples, n_experts)
    )
    targets = np.exp(scores - scores.max(axis=1, keepdims=True))
    targets /= targets.sum(axis=1, keepdims=True)
    return X, 0.7 * targets + 0.3 * rng.dirichlet(np.ones(n_experts), n_samples)


@pytest.mark.parametrize("alpha", [0.5, "auto"])
def test_truncated_newton_gate_reaches_the_exact_newton_solution(alpha, monkeypatch):
    X, targets = _many_experts_problem()
    exact = SoftmaxGate(alpha=alpha, tol=1e-9).fit(X, targets)
    monkeypatch.setattr(gating, "_TRUNCATED_NEWTON_MIN_PARAMETERS", 0)
    progress = SoftmaxGate(alpha=alpha, tol=1e-9)._standalone_start(
        X, np.ones(len(X)), targets.shape[1], {}
    )
    assert progress.truncated
    truncated = SoftmaxGate(alpha=alpha, tol=1e-9).fit(X, targets)
    if alpha == "auto":
        # The evidence from the experts' blocks, not the Hessian: a nearby
        # penalty, so a nearby gate.
        assert truncated.alpha_ == pytest.approx(exact.alpha_, rel=0.5)
        atol = 1e-3
    else:
        atol = 1e-7
    np.testing.assert_allclose(
        truncated.predict_proba(X), exact.predict_proba(X), atol=atol
    )


def test_truncated_newton_steps_lower_the_gate_objective_in_em(monkeypatch):
    """Capped at one step per M-step (soft EM), each truncated Newton step
    lowers the penalised cross-entropy, and costs no Hessian."""
    monkeypatch.setattr(gating, "_TRUNCATED_NEWTON_MIN_PARAMETERS", 0)
    monkeypatch.setattr(
        _softmax, "softmax_hessian", lambda *args: pytest.fail("Hessian formed")
    )
    X, targets = _many_experts_problem(1)
    weights = np.ones(len(X))
    progress = SoftmaxGate(alpha=0.1)._em_start(X, weights, targets.shape[1])
    losses = []
    for _ in range(4):
        progress.improve(targets, exact=False)
        assert progress.n_iter == 1
        losses.append(
            _softmax.softmax_objective(
                progress.params.ravel(),
                X,
                progress.mean,
                progress.scale,
                np.ascontiguousarray(targets.T),
                weights / weights.sum(),
                0.1 / weights.sum(),
            )[0]
        )
    assert np.all(np.diff(losses) < 0)


def test_many_experts_em_is_monotone_without_a_hessian(monkeypatch, capsys):
    """A mixture whose gate has more parameters than the exact Newton path
    takes: soft EM's objective never decreases, and no Hessian is formed."""
    from sklearn.linear_model import LinearRegression

    from mixexp import MixtureOfExpertsRegressor
    from mixexp.datasets import make_regimes

    monkeypatch.setattr(gating, "_TRUNCATED_NEWTON_MIN_PARAMETERS", 0)
    monkeypatch.setattr(
        _softmax, "softmax_hessian", lambda *args: pytest.fail("Hessian formed")
    )
    X, y = make_regimes(n_samples=2000, n_regimes=4, n_features=5, random_state=0)
    moe = MixtureOfExpertsRegressor(
        LinearRegression(), n_experts=4, max_iter=15, tol=0, random_state=0, verbose=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        moe.fit(X, y)
    changes = [
        float(line.rsplit("objective change", 1)[1])
        for line in capsys.readouterr().out.splitlines()
        if "objective change" in line and "nan" not in line
    ]
    assert moe.n_iter_ == 15 and len(changes) == 14
    assert min(changes) > -1e-10 and not moe.n_reseeds_.any()
    assert moe.score(X, y) > 0.9
