"""Property-based tests: small random problems, every option value.

For any small problem (shapes, scales, label sets, weights) and any
combination of options, fit either succeeds with finite outputs or refuses
with a ValueError/TypeError whose message names what is wrong; gate and class
probabilities are distributions; soft EM with linear experts and the softmax
gate never lowers its objective.

Hypothesis runs under the ``mixexp-ci`` profile by default: derandomized (the
same examples on every run, so CI is reproducible), no deadline, a bounded
number of examples, no example database. ``MIXEXP_HYPOTHESIS_PROFILE=mixexp-dev``
explores with fresh random examples and more of them.
"""

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.exceptions import CollapsedExpertWarning
from mixexp.gating import SoftmaxGate

settings.register_profile(
    "mixexp-ci",
    derandomize=True,
    deadline=None,
    max_examples=30,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "mixexp-dev",
    parent=settings.get_profile("mixexp-ci"),
    derandomize=False,
    max_examples=300,
)
# Applied per test rather than loaded globally, so that other test modules
# keep their own hypothesis settings.
PROFILE = settings.get_profile(os.environ.get("MIXEXP_HYPOTHESIS_PROFILE", "mixexp-ci"))

MAX_ITER = 30  # keeps every example fast; tiny data may not converge in it


def _quiet_fit(model, X, y, sample_weight):
    with warnings.catch_warnings():
        # Tiny random problems legitimately stop at max_iter and let experts
        # collapse; both warn by design. Every other warning stays an error.
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", CollapsedExpertWarning)
        model.fit(X, y, sample_weight=sample_weight)


# ---------------------------------------------------------------------------
# Strategies


@st.composite
def inputs(draw, min_rows=3, max_rows=30):
    """X with a random shape and scale; sometimes rounded into repeated rows."""
    n_samples = draw(st.integers(min_rows, max_rows))
    n_features = draw(st.integers(1, 3))
    scale = 10.0 ** draw(st.sampled_from([-8, -3, 0, 3, 8]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features))
    if draw(st.booleans()):
        X = np.round(X)  # few distinct values: ties and repeated rows
    return X * scale, rng


@st.composite
def sample_weights(draw, n_samples, rng):
    kind = draw(st.sampled_from(["none", "uniform", "some-zero", "integer"]))
    if kind == "none":
        return None
    scale = 10.0 ** draw(st.sampled_from([-8, 0, 8]))
    if kind == "uniform":
        weights = rng.uniform(0.1, 10.0, size=n_samples)
    elif kind == "integer":
        weights = rng.randint(1, 4, size=n_samples).astype(float)
    else:
        weights = rng.uniform(0.1, 10.0, size=n_samples)
        weights[rng.rand(n_samples) < 0.3] = 0.0
        weights[rng.randint(n_samples)] = 1.0  # at least one row counts
    return weights * scale


@st.composite
def options(draw, n_samples, n_features):
    """Every option value; n_experts sometimes above n_samples (refused)."""
    n_experts = draw(st.integers(1, min(4, n_samples + 1)))
    params = {
        "n_experts": n_experts,
        "gate": draw(st.sampled_from(["softmax", "constant", "tree"])),
        "partition": draw(st.sampled_from(["kmeans", "gmm", "random"])),
        "training": draw(st.sampled_from(["em", "hard", "fixed"])),
        "pooling": draw(st.sampled_from(["weighted", "argmax"])),
        "max_iter": MAX_ITER,
        "random_state": draw(st.integers(0, 100)),
    }
    if params["gate"] == "tree":
        params["gate"] = DecisionTreeClassifier(max_depth=2, random_state=0)
    if params["pooling"] == "weighted" and draw(st.booleans()):
        params["top_k"] = draw(st.integers(1, n_experts))
    if draw(st.integers(0, 3)) == 0:
        columns = st.lists(
            st.integers(0, n_features - 1), min_size=1, max_size=n_features
        )
        params["feature_groups"] = draw(
            st.lists(columns, min_size=n_experts, max_size=n_experts)
        )
    return params


@st.composite
def regression_problems(draw):
    X, rng = draw(inputs())
    n_samples, n_features = X.shape
    y_scale = 10.0 ** draw(st.sampled_from([-8, 0, 8]))
    noise = draw(st.sampled_from([0.0, 0.1, 1.0]))
    Xs = X / np.abs(X).max() if np.abs(X).max() > 0 else X
    y = np.where(Xs[:, 0] > 0, Xs.sum(axis=1), -2 * Xs[:, 0]) + noise * rng.normal(
        size=n_samples
    )
    if draw(st.integers(0, 4)) == 0:
        y = np.column_stack([y, -y + 1])  # two outputs
    weights = draw(sample_weights(n_samples, rng))
    params = draw(options(n_samples, n_features))
    return X, y * y_scale, weights, params


LABEL_SETS = [
    np.array([0, 1, 2, 3]),
    np.array([-5, 7, 11, 2]),
    np.array(["a", "b", "c", "d"]),
    np.array([0.0, 2.0, -1.0, 7.0]),
    np.array([True, False]),
]


@st.composite
def classification_problems(draw):
    X, rng = draw(inputs(min_rows=4))
    n_samples, n_features = X.shape
    labels = draw(st.sampled_from(LABEL_SETS))
    n_classes = draw(st.integers(2, min(len(labels), n_samples)))
    codes = rng.randint(n_classes, size=n_samples)
    codes[rng.permutation(n_samples)[:n_classes]] = np.arange(n_classes)
    if draw(st.booleans()):
        # Classes that follow X, so experts have something to learn.
        codes = (X[:, 0] > np.median(X[:, 0])).astype(int) % n_classes
        codes[rng.permutation(n_samples)[:n_classes]] = np.arange(n_classes)
    y = labels[codes]
    weights = draw(sample_weights(n_samples, rng))
    params = draw(options(n_samples, n_features))
    return X, y, weights, params


def _effective_n_experts(params):
    groups = params.get("feature_groups")
    return len(groups) if groups is not None else params["n_experts"]


def _fit_or_refuse(model, X, y, weights, params):
    """Fit; return False when refused, which only invalid input may be.

    The generated input is valid except that n_experts may exceed the
    number of rows, which is refused with a ValueError naming n_experts.
    Everything else (repeated rows, extreme scales, zero weights, rare
    classes, any option) is a degenerate fit at worst, and must succeed.
    """
    n_experts = _effective_n_experts(params)
    if n_experts > X.shape[0]:
        with pytest.raises(ValueError, match=r"n_experts=\d+ must be <= n_samples"):
            _quiet_fit(model, X, y, weights)
        event("refused: more experts than rows")
        return False
    try:
        _quiet_fit(model, X, y, weights)
    except Exception as exc:
        # Say what failed in the hypothesis report, then fail.
        raise AssertionError(
            f"fit refused valid input: {type(exc).__name__}: {exc}"
        ) from exc
    assert model.n_experts_ == n_experts
    return True


def _check_gate_and_fit(model, X):
    far = np.vstack([X, 1e4 * X[:2] + 1.0, -X[:1]])
    gate = model.predict_gate(far)
    assert gate.shape == (far.shape[0], model.n_experts_)
    assert np.all(np.isfinite(gate)) and np.all(gate >= 0)
    np.testing.assert_allclose(gate.sum(axis=1), 1.0, rtol=1e-10)
    assert np.isfinite(model.lower_bound_)
    assert np.all(np.isfinite(model.lower_bounds_))
    assert np.all(np.isfinite(model.expert_load_))
    return far


# ---------------------------------------------------------------------------
# Properties


@PROFILE
@given(problem=regression_problems())
def test_regressor_fits_with_finite_outputs_or_refuses_clearly(problem):
    X, y, weights, params = problem
    model = MixtureOfExpertsRegressor(**params)
    if not _fit_or_refuse(model, X, y, weights, params):
        return
    far = _check_gate_and_fit(model, X)
    pred, std = model.predict(far, return_std=True)
    assert pred.shape == (far.shape[0], *y.shape[1:])
    assert np.all(np.isfinite(pred))
    assert np.all(np.isfinite(std)) and np.all(std >= 0)
    assert np.all(np.isfinite(model.noise_std_)) and np.all(model.noise_std_ > 0)
    assert np.all(np.isfinite(model.log_likelihood(X, y)))
    # Row-wise: one row alone gives what it gives in the batch.
    i = X.shape[0] // 2
    np.testing.assert_allclose(
        model.predict(X[i : i + 1]), model.predict(X)[i : i + 1], rtol=1e-9, atol=0
    )


@PROFILE
@given(problem=classification_problems())
def test_classifier_probabilities_are_distributions(problem):
    X, y, weights, params = problem
    model = MixtureOfExpertsClassifier(**params)
    if not _fit_or_refuse(model, X, y, weights, params):
        return
    far = _check_gate_and_fit(model, X)
    np.testing.assert_array_equal(model.classes_, np.unique(y))
    proba = model.predict_proba(far)
    assert proba.shape == (far.shape[0], len(model.classes_))
    assert np.all(np.isfinite(proba))
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-10)
    predicted = model.predict(far)
    assert set(predicted.tolist()) <= set(model.classes_.tolist())
    np.testing.assert_array_equal(predicted, model.classes_[proba.argmax(axis=1)])
    assert np.all(np.isfinite(model.log_likelihood(X, y)))
    i = X.shape[0] // 2
    np.testing.assert_allclose(
        model.predict_proba(X[i : i + 1]), model.predict_proba(X)[i : i + 1], rtol=1e-9
    )


@st.composite
def soft_em_problems(draw):
    X, rng = draw(inputs(min_rows=12, max_rows=40))
    n_samples = X.shape[0]
    y_scale = 10.0 ** draw(st.sampled_from([-8, 0, 8]))
    Xs = X / np.abs(X).max() if np.abs(X).max() > 0 else X
    y = np.where(Xs[:, 0] > 0, 2 * Xs[:, 0], -Xs.sum(axis=1))
    y = y + draw(st.sampled_from([0.0, 0.05, 0.5])) * rng.normal(size=n_samples)
    params = {
        "n_experts": draw(st.integers(1, 3)),
        "partition": draw(st.sampled_from(["kmeans", "gmm", "random"])),
        "gate": SoftmaxGate(alpha=draw(st.sampled_from([0.0, 1e-3, 1.0]))),
        "random_state": draw(st.integers(0, 100)),
    }
    return X, y * y_scale, draw(sample_weights(n_samples, rng)), params


@settings(PROFILE, max_examples=max(40, PROFILE.max_examples))
@given(problem=soft_em_problems())
def test_soft_em_never_lowers_its_objective(problem):
    X, y, weights, params = problem
    model = MixtureOfExpertsRegressor(
        LinearRegression(), training="em", max_iter=15, tol=0.0, **params
    )
    n_experts = params["n_experts"]
    _fit_or_refuse(model, X, y, weights, {"n_experts": n_experts})
    history = np.asarray(model.lower_bounds_)
    assert np.all(np.isfinite(history))
    if np.any(model.n_reseeds_):
        # A re-seed restarts an expert elsewhere: the objective may drop there.
        event("re-seeded")
        return
    steps = np.diff(history)
    slack = 1e-9 * np.maximum(1.0, np.abs(history[1:]))
    assert np.all(steps >= -slack), (steps.min(), history)


def test_the_ci_profile_is_deterministic_and_bounded():
    profile = settings.get_profile("mixexp-ci")
    assert profile.derandomize is True
    assert profile.deadline is None
    assert profile.max_examples <= 50
    assert profile.database is None
