"""Fitting over the row chunks of dask arrays, and lazy predictions.

Bad dask input is in the table of tests/test_validation.py.

A fit on dask arrays takes the same EM steps as the in-memory fit, each sum
over rows computed chunk by chunk: with ``partition="random"`` and the same
seed it reaches the same model. The tests run on dask's threaded
scheduler; tests/test_distributed.py runs a fit on a cluster.
"""

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import (
    GammaRegressor,
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
)

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


@pytest.fixture(autouse=True)
def threads():
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def data():
    X, y = make_regimes(n_samples=2000, n_regimes=3, n_features=3, random_state=0)[:2]
    return X, y


def chunked(*arrays, rows=450):
    """The arrays as dask arrays of `rows`-row chunks (the last shorter)."""
    return [da.from_array(a, chunks=(rows,) + (-1,) * (a.ndim - 1)) for a in arrays]


CASES = {
    "softmax gate": {},
    "constant gate": {"gate": "constant"},
    "ridge experts": {"expert": Ridge(alpha=30.0)},
    "mixed experts": {
        "expert": [LinearRegression(), Ridge(alpha=5.0), LinearRegression()]
    },
    "no intercept": {"expert": LinearRegression(fit_intercept=False)},
    "gate features": {"gate_features": [0, 2]},
    "fixed alpha": {"gate": "softmax", "n_init": 2},
}


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_chunked_fit_equals_in_memory_fit(data, params):
    X, y = data
    params = {"n_experts": 3, "partition": "random", "random_state": 0, **params}
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    over_chunks = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y))
    assert over_chunks.n_iter_ == in_memory.n_iter_
    assert over_chunks.converged_
    assert over_chunks.lower_bound_ == pytest.approx(in_memory.lower_bound_, abs=1e-6)
    np.testing.assert_allclose(
        over_chunks.lower_bounds_, in_memory.lower_bounds_, rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(over_chunks.predict(X), in_memory.predict(X), atol=1e-6)
    np.testing.assert_allclose(
        over_chunks.expert_load_, in_memory.expert_load_, atol=1e-6
    )
    assert over_chunks.load_balance_ == pytest.approx(in_memory.load_balance_, abs=1e-6)
    assert over_chunks.n_features_in_ == X.shape[1]


def test_sampled_gate_hessian_takes_the_same_rows_over_chunks(data, monkeypatch):
    # Every third row (2,000 // 600) of chunks of 450 rows: the sample's
    # first row in a chunk moves from chunk to chunk.
    from mixexp import _softmax

    monkeypatch.setattr(_softmax, "_HESSIAN_SAMPLE_ROWS", 600)
    X, y = data
    params = {"n_experts": 3, "partition": "random", "random_state": 0}
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    over_chunks = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y))
    assert over_chunks.n_iter_ == in_memory.n_iter_
    np.testing.assert_allclose(
        over_chunks.lower_bounds_, in_memory.lower_bounds_, rtol=0, atol=1e-6
    )
    assert over_chunks.gate_.alpha_ == pytest.approx(in_memory.gate_.alpha_, rel=1e-6)
    # The sample changed the fit: the gate's penalty comes from its curvature.
    monkeypatch.setattr(_softmax, "_HESSIAN_SAMPLE_ROWS", 20_000)
    all_rows = MixtureOfExpertsRegressor(**params).fit(X, y)
    assert all_rows.gate_.alpha_ != pytest.approx(in_memory.gate_.alpha_, rel=1e-6)


def test_accelerated_fit_takes_the_same_jumps_over_chunks(monkeypatch):
    # 66 gate parameters: soft EM is accelerated (SQUAREM), in memory and
    # over chunks alike.
    from mixexp import _run

    X, y = make_regimes(n_samples=3000, n_regimes=4, n_features=10, random_state=1)[:2]
    params = {"n_experts": 6, "partition": "random", "random_state": 0}
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    over_chunks = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y, rows=700))
    assert over_chunks.n_iter_ == in_memory.n_iter_
    np.testing.assert_allclose(
        over_chunks.lower_bounds_, in_memory.lower_bounds_, rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(over_chunks.predict(X), in_memory.predict(X), atol=1e-5)
    monkeypatch.setattr(_run, "_ACCELERATE_MIN_GATE_PARAMETERS", 10**6)
    plain = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y, rows=700))
    assert plain.lower_bounds_ != pytest.approx(over_chunks.lower_bounds_, abs=1e-6)


def test_weights_and_several_outputs_equal_in_memory(data):
    X, y = data
    rng = np.random.RandomState(1)
    Y = np.column_stack([y, 0.5 * y + rng.normal(size=y.shape)])
    weights = rng.uniform(0.5, 2.0, size=y.shape)
    params = {
        "n_experts": 2,
        "partition": "random",
        "random_state": 3,
        "covariance_type": "full",
    }
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, Y, sample_weight=weights)
    Xd, Yd = chunked(X, Y)
    # A NumPy weight vector is split into X's chunks.
    over_chunks = MixtureOfExpertsRegressor(**params).fit(Xd, Yd, sample_weight=weights)
    assert over_chunks.lower_bound_ == pytest.approx(in_memory.lower_bound_, abs=1e-6)
    np.testing.assert_allclose(over_chunks.predict(X), in_memory.predict(X), atol=1e-6)
    np.testing.assert_allclose(
        over_chunks.covariances_, in_memory.covariances_, rtol=1e-6
    )


def test_kmeans_start_fits_as_well_as_in_memory(data):
    X, y = data
    params = {"n_experts": 3, "random_state": 0}
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    over_chunks = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y))
    assert over_chunks.converged_
    # Mini-batch k-means starts elsewhere than k-means, but EM ends as high.
    assert over_chunks.lower_bound_ > in_memory.lower_bound_ - 0.01
    assert over_chunks.score(X, y) > in_memory.score(X, y) - 0.01


def test_predictions_on_dask_arrays_are_lazy_and_equal(data):
    X, y = data
    model = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
    Xd, yd = chunked(X, y, rows=600)
    lazy = {
        "predict": (model.predict(Xd), model.predict(X)),
        "std": (model.predict(Xd, return_std=True)[1], model.predict(X, True)[1]),
        "gate": (model.predict_gate(Xd), model.predict_gate(X)),
        "expert": (model.predict_expert(Xd), model.predict_expert(X)),
        "log_likelihood": (model.log_likelihood(Xd, yd), model.log_likelihood(X, y)),
    }
    for name, (result, expected) in lazy.items():
        assert isinstance(result, da.Array), name
        assert result.shape == expected.shape, name
        np.testing.assert_allclose(result.compute(), expected, err_msg=name)
    # Columns split over chunks are joined for prediction.
    split = da.from_array(X, chunks=(600, 2))
    np.testing.assert_allclose(model.predict(split).compute(), model.predict(X))


def test_classifier_predicts_lazily():
    X, y = make_xor(n_samples=400, random_state=0)
    model = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, y)
    (Xd,) = chunked(X, rows=150)
    proba = model.predict_proba(Xd)
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), model.predict_proba(X))
    np.testing.assert_array_equal(model.predict(Xd).compute(), model.predict(X))


def test_unconverged_chunked_fit_warns(data):
    X, y = data
    model = MixtureOfExpertsRegressor(n_experts=3, partition="random", max_iter=2)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        model.fit(*chunked(X, y))
    assert not model.converged_
    assert model.n_iter_ == 2


def test_fit_over_chunks_never_holds_the_rows():
    # Lazily generated rows: each chunk exists only while a task reads it.
    n_samples, n_features, rows = 200_000, 20, 5_000
    state = da.random.RandomState(0)
    X = state.standard_normal((n_samples, n_features), chunks=(rows, -1))
    y = (
        da.sin(2 * X[:, 0])
        + X[:, 1]
        + 0.1 * state.standard_normal(n_samples, chunks=rows)
    )
    model = MixtureOfExpertsRegressor(
        n_experts=4, partition="random", random_state=0, max_iter=1
    )
    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        # A first fit imports what the fit needs: modules are traced too.
        model.fit(X[: 4 * rows], y[: 4 * rows])
        tracemalloc.start()
        try:
            model.fit(X, y)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert model.n_iter_ == 1
    assert peak < 0.25 * X.nbytes, peak / X.nbytes


@pytest.fixture(scope="module")
def positive_data():
    """Two regimes of log-linear means: Poisson counts and Gamma targets."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1500, 3))
    mean = np.where(
        X[:, 0] > 0, np.exp(1.0 + 0.5 * X[:, 1]), np.exp(0.2 - 0.7 * X[:, 2])
    )
    return X, rng.poisson(mean).astype(float), rng.gamma(2.0, mean / 2.0)


GLM_CASES = {
    "poisson": (PoissonRegressor(alpha=1e-3), 1),
    "gamma": (GammaRegressor(alpha=0.0), 2),
}


@pytest.mark.parametrize("expert, column", GLM_CASES.values(), ids=GLM_CASES.keys())
def test_generalised_linear_experts_reach_the_in_memory_optimum(
    positive_data, expert, column
):
    # One Newton step per EM iteration (a generalised M-step) against a full
    # refit: other paths, the same fixed point.
    X, y = positive_data[0], positive_data[column]
    params = {
        "expert": expert,
        "n_experts": 2,
        "partition": "random",
        "random_state": 0,
        "tol": 1e-7,
        "max_iter": 300,
    }
    in_memory = MixtureOfExpertsRegressor(**params).fit(X, y)
    over_chunks = MixtureOfExpertsRegressor(**params).fit(*chunked(X, y))
    assert over_chunks.converged_
    assert over_chunks.lower_bound_ == pytest.approx(in_memory.lower_bound_, abs=1e-4)
    # Every step raises the objective.
    assert np.all(np.diff(over_chunks.lower_bounds_) > -1e-10)
    np.testing.assert_allclose(over_chunks.predict(X), in_memory.predict(X), rtol=0.02)
    assert isinstance(over_chunks.experts_[0], type(expert))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_logistic_experts_fit_as_well_as_in_memory(n_classes):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(1200, 2))
    score = np.where(X[:, 0] > 0, 2.0 * X[:, 1], -2.0 * X[:, 1])
    cuts = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    labels = np.array(["ant", "bee", "cat"])[np.digitize(score, cuts)]
    labels[rng.rand(labels.size) < 0.05] = "ant"
    params = {
        "expert": LogisticRegression(C=10.0),
        "n_experts": 2,
        "partition": "random",
        "random_state": 1,
        "tol": 1e-7,
        "max_iter": 300,
    }
    in_memory = MixtureOfExpertsClassifier(**params).fit(X, labels)
    over_chunks = MixtureOfExpertsClassifier(**params).fit(*chunked(X, labels))
    np.testing.assert_array_equal(over_chunks.classes_, in_memory.classes_)
    # LogisticRegression's own fit stops at its tol: the in-memory M-step is
    # inexact, and the two paths may settle in different local optima. The
    # fit over chunks ends at least as high, and classifies as well.
    assert over_chunks.lower_bound_ > in_memory.lower_bound_ - 1e-3
    assert np.all(np.diff(over_chunks.lower_bounds_) > -1e-10)
    assert over_chunks.score(X, labels) > in_memory.score(X, labels) - 0.02
    proba = over_chunks.predict_proba(chunked(X)[0])
    assert isinstance(proba, da.Array)
    np.testing.assert_allclose(proba.compute(), over_chunks.predict_proba(X))
