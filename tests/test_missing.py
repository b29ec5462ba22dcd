"""Missing values pass through to experts and gates that take them."""

import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeRegressor

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor
from mixexp.gating import ConstantGate


def _with_missing(X, share, seed):
    rng = np.random.RandomState(seed)
    X = X.copy()
    X[rng.rand(*X.shape) < share] = np.nan
    return X


def _hgb_regressor(**params):
    return MixtureOfExpertsRegressor(
        HistGradientBoostingRegressor(max_iter=30),
        gate=HistGradientBoostingClassifier(max_iter=30),
        n_experts=3,
        random_state=0,
        **params,
    )


@pytest.mark.parametrize("partition", ["kmeans", "gmm", "random"])
def test_hgb_experts_and_gate_fit_and_predict_through_missing_values(partition):
    X, y = make_regimes(n_samples=600, random_state=0)
    X_missing = _with_missing(X, 0.05, seed=1)
    model = _hgb_regressor(partition=partition)
    assert model.__sklearn_tags__().input_tags.allow_nan
    model.fit(X_missing, y)
    for method in (model.predict, model.predict_gate, model.predict_expert):
        out = method(X_missing)
        assert np.all(np.isfinite(out))
    assert np.all(np.isfinite(model.log_likelihood(X_missing, y)))
    # Missing values cost some accuracy, not the fit.
    assert model.score(X_missing, y) > 0.8


def test_a_classifier_of_hgb_experts_takes_missing_values():
    X, y = make_xor(n_samples=500, random_state=0)
    X_missing = _with_missing(X, 0.05, seed=2)
    model = MixtureOfExpertsClassifier(
        HistGradientBoostingClassifier(max_iter=30),
        gate=HistGradientBoostingClassifier(max_iter=30),
        n_experts=2,
        random_state=0,
    ).fit(X_missing, y)
    assert model.__sklearn_tags__().input_tags.allow_nan
    proba = model.predict_proba(X_missing)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert model.score(X_missing, y) > 0.85


@pytest.mark.parametrize("gate", ["constant", ConstantGate()])
def test_a_constant_gate_never_reads_x_so_it_takes_missing_values(gate):
    X, y = make_regimes(n_samples=300, random_state=0)
    model = MixtureOfExpertsRegressor(
        DecisionTreeRegressor(max_depth=3), gate=gate, n_experts=2, random_state=0
    )
    assert model.__sklearn_tags__().input_tags.allow_nan
    model.fit(_with_missing(X, 0.05, seed=3), y)
    assert np.all(np.isfinite(model.predict(_with_missing(X, 0.05, seed=4))))


@pytest.mark.parametrize(
    ("expert", "gate"),
    [
        (HistGradientBoostingRegressor(), "softmax"),
        (LinearRegression(), HistGradientBoostingClassifier()),
        ([HistGradientBoostingRegressor(), LinearRegression()], "constant"),
    ],
    ids=["softmax-gate", "linear-expert", "one-linear-expert-in-a-list"],
)
def test_any_part_that_refuses_missing_values_makes_the_mixture_refuse(expert, gate):
    X, y = make_regimes(n_samples=200, random_state=0)
    model = MixtureOfExpertsRegressor(expert, gate=gate, n_experts=2, random_state=0)
    assert not model.__sklearn_tags__().input_tags.allow_nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        model.fit(_with_missing(X, 0.05, seed=5), y)
    fitted = model.fit(X, y)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.predict(_with_missing(X, 0.05, seed=6))


def test_missing_targets_are_still_refused():
    X, y = make_regimes(n_samples=200, random_state=0)
    y = y.copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        _hgb_regressor().fit(X, y)


def test_the_partition_sees_a_missing_value_as_its_columns_mean():
    X, y = make_regimes(n_samples=300, random_state=0)
    missing = np.random.RandomState(7).rand(300) < 0.1
    X_missing = X.copy()
    X_missing[missing, 0] = np.nan

    def filled(value):
        out = X.copy()
        out[missing, 0] = value
        return out

    def partition_shares(data):
        return _hgb_regressor(training="fixed").fit(data, y).expert_load_

    shares = partition_shares(X_missing)
    np.testing.assert_array_equal(
        shares, partition_shares(filled(np.nanmean(X_missing[:, 0])))
    )
    assert not np.array_equal(shares, partition_shares(filled(100.0)))
