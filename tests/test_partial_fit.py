"""Online EM: ``partial_fit`` of both mixtures.

The numerics of a step are tested in tests/test_online.py; bad input to
``partial_fit`` is in the table of tests/test_validation.py.
"""

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge, SGDClassifier, SGDRegressor

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor


def _stream(estimator, X, y, batch_size, n_passes, seed=0, **params):
    """`partial_fit` over shuffled batches, `n_passes` times over the rows."""
    rng = np.random.RandomState(seed)
    for _ in range(n_passes):
        order = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], batch_size):
            rows = order[start : start + batch_size]
            estimator.partial_fit(X[rows], y[rows], **params)
    return estimator


# ---------------------------------------------------------------------------
# Online EM reaches batch EM.


def test_three_passes_match_batch_em_on_regimes():
    # 200,000 rows of three linear regimes, batches of 2,000, three passes
    # (300 steps, about 1.5 s); restarts on the first batch as in the batch
    # fit, since either can stop in a local optimum that merges two regimes.
    X, y = make_regimes(n_samples=220_000, n_regimes=3, random_state=0)
    X_train, X_test, y_train, y_test = (
        X[:200_000],
        X[200_000:],
        y[:200_000],
        y[200_000:],
    )
    model = MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=0)
    batch = clone(model).fit(X_train, y_train)
    online = _stream(clone(model), X_train, y_train, 2_000, 3)
    assert online.n_batch_iter_ == 300
    batch_score = batch.log_likelihood(X_test, y_test).mean()
    online_score = online.log_likelihood(X_test, y_test).mean()
    assert abs(online_score - batch_score) < 0.02
    np.testing.assert_allclose(
        np.sort(online.noise_std_), np.sort(batch.noise_std_), rtol=0.05
    )


def test_three_passes_match_batch_em_on_xor():
    X, y = make_xor(n_samples=25_000, flip=0.02, random_state=0)
    X_train, X_test, y_train, y_test = X[:20_000], X[20_000:], y[:20_000], y[20_000:]
    model = MixtureOfExpertsClassifier(
        SGDClassifier(loss="log_loss", random_state=0), n_experts=2, random_state=0
    )
    batch = clone(model).fit(X_train, y_train)
    online = _stream(clone(model), X_train, y_train, 1_000, 3, classes=[0, 1])
    assert online.n_batch_iter_ == 60
    batch_accuracy = batch.score(X_test, y_test)
    assert batch_accuracy > 0.95
    assert abs(online.score(X_test, y_test) - batch_accuracy) < 0.02


def test_dask_ml_incremental_fits_in_one_pass():
    dask_array = pytest.importorskip("dask.array")
    wrappers = pytest.importorskip("dask_ml.wrappers")
    X, y = make_regimes(n_samples=22_000, n_regimes=3, random_state=0)
    X_dask = dask_array.from_array(X[:20_000], chunks=(2_000, 2))
    y_dask = dask_array.from_array(y[:20_000], chunks=2_000)
    incremental = wrappers.Incremental(
        MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=0)
    ).fit(X_dask, y_dask)
    fitted = incremental.estimator_
    assert fitted.n_batch_iter_ == 10
    predicted = incremental.predict(dask_array.from_array(X[20_000:], chunks=1_000))
    residual = y[20_000:] - np.asarray(predicted.compute())
    # R^2 by hand: dask-ml's own r2_score fails on recent dask arrays.
    assert 1 - residual.var() / y[20_000:].var() > 0.99


# ---------------------------------------------------------------------------
# Exactness where the running statistics are plain means.


@pytest.mark.parametrize(
    "expert", [LinearRegression(), Ridge(alpha=300.0)], ids=["linear", "ridge"]
)
def test_one_linear_expert_online_is_its_fit_on_the_whole_stream(expert):
    # learning_decay=1 and learning_offset=1 average equally weighted
    # batches; one expert has all the responsibility: the running moments
    # are those of all the rows, and a Ridge penalises against all of them.
    rng = np.random.RandomState(0)
    X = rng.normal(size=(600, 3)) + 5.0
    y = X @ [1.0, -1.0, 2.0] + rng.normal(size=600)
    online = MixtureOfExpertsRegressor(
        expert, n_experts=1, learning_decay=1.0, learning_offset=1.0
    )
    for rows in np.split(np.arange(600), 6):
        online.partial_fit(X[rows], y[rows])
    reference = clone(expert).fit(X, y)
    np.testing.assert_allclose(online.experts_[0].coef_, reference.coef_, rtol=1e-8)
    np.testing.assert_allclose(
        online.experts_[0].intercept_, reference.intercept_, rtol=1e-8
    )


# ---------------------------------------------------------------------------
# The fitted model after each call.


@pytest.fixture(scope="module")
def regimes():
    X, y = make_regimes(n_samples=3_000, n_regimes=2, random_state=1)
    return X[:2_500], y[:2_500], X[2_500:], y[2_500:]


def test_every_prediction_method_works_after_each_call(regimes):
    X, y, X_test, y_test = regimes
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    for step, rows in enumerate(np.split(np.arange(2_500), 5), start=1):
        model.partial_fit(X[rows], y[rows])
        assert model.n_batch_iter_ == step
        assert model.n_features_in_ == 2
        assert model.predict(X_test).shape == (500,)
        assert model.predict(X_test, return_std=True)[1].shape == (500,)
        np.testing.assert_allclose(model.predict_gate(X_test).sum(axis=1), 1.0)
        assert np.isfinite(model.log_likelihood(X_test, y_test)).all()
        assert np.isfinite(model.lower_bound_)
        np.testing.assert_allclose(model.expert_load_.sum(), 1.0)
    assert model.score(X_test, y_test) > 0.97  # batch EM's: 0.975
    assert model.noise_std_.shape == (2,)


def test_feature_names_are_kept_between_calls(regimes):
    X, y, _, _ = regimes
    frame = pd.DataFrame(X, columns=["a", "b"])
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    model.partial_fit(frame[:1_000], y[:1_000]).partial_fit(frame[1_000:], y[1_000:])
    assert list(model.feature_names_in_) == ["a", "b"]
    with pytest.raises(ValueError, match="feature names should match"):
        model.partial_fit(frame[["b", "a"]], y)


def test_partial_fit_after_fit_continues_the_fitted_model(regimes):
    X, y, X_test, y_test = regimes
    fitted = MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X, y)
    assert fitted.n_batch_iter_ == 0
    before = fitted.log_likelihood(X_test, y_test).mean()
    updated = pickle.loads(pickle.dumps(fitted))
    updated.partial_fit(X[:500], y[:500])
    assert updated.n_batch_iter_ == 1
    # One step from the fitted model, not a new fit: the gate and the
    # experts move little.
    np.testing.assert_allclose(
        updated.predict(X_test), fitted.predict(X_test), atol=0.05
    )
    assert updated.log_likelihood(X_test, y_test).mean() > before - 0.05
    # fit starts afresh: the online statistics go.
    assert updated.fit(X, y).n_batch_iter_ == 0


def test_constant_gate_proportions_follow_the_stream():
    rng = np.random.RandomState(0)
    X = rng.uniform(-2, 2, size=(4_000, 1))
    first = rng.uniform(size=4_000) < 0.3
    y = np.where(first, 3 * X[:, 0] + 4, -X[:, 0]) + 0.1 * rng.normal(size=4_000)
    model = MixtureOfExpertsRegressor(
        n_experts=2, gate="constant", n_init=3, random_state=0
    )
    _stream(model, X, y, 500, 2)
    np.testing.assert_allclose(np.sort(model.gate_.proportions_), [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(model.gate_.proportions_, model.expert_load_, atol=0.05)


def test_experts_with_their_own_partial_fit(regimes):
    X, y, X_test, y_test = regimes
    model = MixtureOfExpertsRegressor(
        SGDRegressor(random_state=0), n_experts=2, random_state=0
    )
    _stream(model, X, y, 500, 3)
    assert all(isinstance(e, SGDRegressor) for e in model.experts_)
    assert model.score(X_test, y_test) > 0.97


def test_multi_output_with_full_covariances_and_column_groups():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2_000, 3))
    side = X[:, 0] > 0
    y = np.column_stack([np.where(side, X[:, 1], -X[:, 1]), X[:, 2]])
    y += 0.1 * rng.normal(size=y.shape)
    model = MixtureOfExpertsRegressor(
        n_experts=2,
        covariance_type="full",
        feature_groups=[[1, 2], [1, 2]],
        gate_features=[0],
        random_state=0,
    )
    _stream(model, X, y, 500, 2)
    assert model.covariances_.shape == (2, 2, 2)
    assert model.predict(X).shape == (2_000, 2)
    assert model.score(X, y) > 0.95


def test_classifier_learns_a_class_missing_from_the_first_batch():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(3_000, 2))
    y = np.digitize(X[:, 0], [-0.5, 0.5])
    model = MixtureOfExpertsClassifier(
        SGDClassifier(loss="log_loss", random_state=0), n_experts=2, random_state=0
    )
    first = np.flatnonzero(y < 2)[:500]
    model.partial_fit(X[first], y[first], classes=[0, 1, 2])
    assert list(model.classes_) == [0, 1, 2]
    _stream(model, X, y, 500, 2)
    assert model.n_batch_iter_ == 13
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)
    np.testing.assert_allclose(model.predict_gate(X).sum(axis=1), 1.0)
    assert np.isfinite(model.log_likelihood(X, y)).all()
    assert model.score(X, y) > 0.9


def test_sample_weight_zero_leaves_rows_out(regimes):
    X, y, X_test, y_test = regimes
    noise = np.random.RandomState(0).normal(scale=50.0, size=1_000)
    weights = np.r_[np.ones(1_000), np.zeros(1_000)]
    X_batch, y_batch = np.r_[X[:1_000], X[:1_000]], np.r_[y[:1_000], noise]
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    model.partial_fit(X_batch, y_batch, sample_weight=weights)
    model.partial_fit(X_batch, y_batch, sample_weight=weights)
    assert model.score(X_test, y_test) > 0.97  # batch EM's: 0.975
    assert np.all(model.noise_std_ < 0.2)  # the noise is 0.1; 50 left out


def test_a_failed_call_leaves_the_model_as_it_was(regimes):
    X, y, _, _ = regimes
    model = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    model.partial_fit(X[:1_000], y[:1_000])
    state = pickle.dumps(model)
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(X[:100, :1], y[:100])
    assert pickle.dumps(model) == state
