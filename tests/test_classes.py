"""Behaviour of MixtureOfExpertsRegressor and MixtureOfExpertsClassifier."""

import copy
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from joblib import parallel_backend
from scipy.special import logsumexp
from sklearn import config_context
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.cluster import KMeans
from sklearn.ensemble import RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from threadpoolctl import threadpool_info, threadpool_limits

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes, make_xor
from mixexp.gating import ClassifierGate, ConstantGate, SoftmaxGate, make_gate

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def regimes():
    X, y = make_regimes(n_samples=1500, n_regimes=3, random_state=0)
    return X[:1000], X[1000:], y[:1000], y[1000:]


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    labels = np.repeat(np.arange(3), 40)
    X = centres[labels] + rng.normal(size=(120, 2))
    return X, labels


# ---------------------------------------------------------------------------
# Published solution and the EM guarantees


def test_co2_golden_mixture_of_regressions():
    """Two linear experts, constant gate: mixtools' published ML solution.

    CO2 per capita against GNP for 28 countries (mixtools CO2data, Hurn,
    Justel and Robert 2003); solution from Benaglia et al., Journal of
    Statistical Software 32(6), 2009.
    """
    data = pd.read_csv(DATA / "co2.csv")
    X, y = data[["GNP"]].to_numpy(), data["CO2"].to_numpy()
    moe = MixtureOfExpertsRegressor(
        n_experts=2,
        gate="constant",
        tol=1e-12,
        max_iter=5000,
        n_init=10,
        random_state=0,
    ).fit(X, y)

    assert moe.log_likelihood(X, y).sum() == pytest.approx(-66.93977, abs=1e-4)
    assert moe.lower_bound_ * len(y) == pytest.approx(-66.93977, abs=1e-4)
    order = np.argsort(-moe.gate_.proportions_)
    expected = {
        "proportion": [0.754922, 0.245078],
        "intercept": [8.678973, 1.415144],
        "slope": [-0.023344, 0.676596],
        "sigma": [2.049318, 0.809388],
    }
    fitted = {
        "proportion": moe.gate_.proportions_[order],
        "intercept": [moe.experts_[k].intercept_ for k in order],
        "slope": [moe.experts_[k].coef_[0] for k in order],
        "sigma": moe.noise_std_[order],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(fitted[name], values, atol=1e-3, err_msg=name)


def _smooth_data(seed):
    rng = np.random.RandomState(seed)
    X = rng.uniform(-3, 3, size=(300, 2))
    y = np.sin(2 * X[:, 0]) + 0.3 * X[:, 1] ** 2 + 0.1 * rng.normal(size=300)
    return X, y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("data", ["regimes", "smooth"])
@pytest.mark.parametrize("gate", [SoftmaxGate(), SoftmaxGate(alpha=0.0)])
def test_soft_em_never_lowers_the_objective(seed, data, gate):
    if data == "regimes":
        X, y = make_regimes(n_samples=400, n_regimes=3, noise=0.3, random_state=seed)
    else:
        X, y = _smooth_data(seed)
    moe = MixtureOfExpertsRegressor(
        n_experts=4, gate=gate, max_iter=60, tol=0.0, random_state=seed
    ).fit(X, y)
    history = np.asarray(moe.lower_bounds_)
    assert len(history) == 60
    assert np.all(moe.n_reseeds_ == 0)
    steps = np.diff(history)
    assert np.all(steps >= -1e-9 * np.abs(history[1:])), steps.min()


def test_lower_bound_is_mean_log_likelihood_less_gate_penalty(regimes):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    expected = moe.log_likelihood(X, y).mean() - moe.gate_.penalty_ / len(y)
    assert moe.lower_bound_ == pytest.approx(expected, rel=1e-10)
    assert moe.lower_bounds_[-1] == moe.lower_bound_


def test_weighted_lower_bound_uses_sample_weight(regimes):
    X, _, y, _ = regimes
    w = np.random.RandomState(0).uniform(0.5, 2.0, size=len(y))
    moe = MixtureOfExpertsRegressor(gate="constant", random_state=0)
    moe.fit(X, y, sample_weight=w)
    expected = np.average(moe.log_likelihood(X, y), weights=w)
    assert moe.lower_bound_ == pytest.approx(expected, rel=1e-10)
    assert moe.expert_load_.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# What a mixture of experts is for


def test_three_linear_regimes(regimes):
    X_train, X_test, y_train, y_test = regimes
    moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X_train, y_train)
    single = LinearRegression().fit(X_train, y_train)
    assert moe.score(X_test, y_test) >= 0.97
    assert single.score(X_test, y_test) < 0.8
    np.testing.assert_allclose(moe.noise_std_, 0.1, rtol=0.2)


def test_xor_with_four_logistic_experts():
    X, y = make_xor(n_samples=800, random_state=0)
    moe = MixtureOfExpertsClassifier(n_experts=4, random_state=0)
    moe.fit(X[:400], y[:400])
    assert moe.score(X[400:], y[400:]) >= 0.95
    assert LogisticRegression().fit(X[:400], y[:400]).score(X[400:], y[400:]) < 0.7


# ---------------------------------------------------------------------------
# Classes


def test_experts_that_never_saw_a_class_are_aligned(blobs):
    X, labels = blobs
    y = np.array(["cat", "dog", "emu"])[labels]
    moe = MixtureOfExpertsClassifier(n_experts=3, training="hard", random_state=0)
    moe.fit(X, y)
    seen = [len(expert.classes_) for expert in moe.experts_]
    assert min(seen) < 3  # some expert has not seen every class
    proba = moe.predict_proba(X)
    assert proba.shape == (len(y), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(moe.classes_) == ["cat", "dog", "emu"]
    assert moe.score(X, y) > 0.95


@pytest.mark.parametrize(
    "names",
    [np.array([3, 10, -2]), np.array(["b", "a", "c"]), np.array([0.0, 2.0, 7.0])],
)
def test_labels_of_any_kind(blobs, names):
    X, labels = blobs
    y = names[labels]
    moe = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(moe.classes_, np.sort(names))
    assert set(moe.predict(X)) <= set(names)
    assert moe.score(X, y) > 0.95
    assert moe.log_likelihood(X, y).shape == (len(y),)


def test_log_likelihood_refuses_unseen_labels(blobs):
    X, labels = blobs
    moe = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, labels)
    with pytest.raises(ValueError, match="not seen in fit"):
        moe.log_likelihood(X, labels + 5)


# ---------------------------------------------------------------------------
# Experts that lack something


def test_expert_without_sample_weight_points_to_hard_training(regimes):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(KNeighborsRegressor(), random_state=0)
    with pytest.raises(ValueError, match=r"sample_weight.*training='hard'"):
        moe.fit(X, y)
    hard = moe.set_params(training="hard").fit(X, y)
    assert hard.score(X, y) > 0.9


def test_expert_without_sample_weight_refuses_weights_in_hard_training(regimes):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(KNeighborsRegressor(), training="hard")
    with pytest.raises(ValueError, match="sample_weight"):
        moe.fit(X, y, sample_weight=np.arange(len(y)) % 3 + 1.0)


def test_classifier_expert_needs_predict_proba(blobs):
    X, y = blobs
    with pytest.raises(ValueError, match="predict_proba"):
        MixtureOfExpertsClassifier(LinearSVC()).fit(X, y)


def test_failing_expert_names_itself_and_fit_is_atomic(regimes):
    X, X_test, y, _ = regimes

    class Exploding(LinearRegression):
        def fit(self, X, y, sample_weight=None):
            raise ValueError("boom")

    moe = MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X, y)
    before = moe.predict(X_test)
    moe.set_params(expert=[LinearRegression(), Exploding()])
    with pytest.raises(ValueError, match=r"expert 1 \(Exploding\) failed to fit: boom"):
        moe.fit(X, y)
    np.testing.assert_array_equal(moe.predict(X_test), before)
    assert moe.n_experts_ == 2


# ---------------------------------------------------------------------------
# Parameters


def test_heterogeneous_expert_list(regimes):
    X, _, y, _ = regimes
    experts = [LinearRegression(), DecisionTreeRegressor(max_depth=4)]
    moe = MixtureOfExpertsRegressor(experts, n_experts=5, random_state=0).fit(X, y)
    assert moe.n_experts_ == 2
    assert [type(e) for e in moe.experts_] == [LinearRegression, DecisionTreeRegressor]
    assert moe.predict_gate(X).shape == (len(y), 2)
    # The user's templates are never fitted.
    assert not hasattr(experts[0], "coef_")


def test_argmax_pooling_uses_the_most_trusted_expert(regimes):
    X, X_test, y, _ = regimes
    moe = MixtureOfExpertsRegressor(pooling="argmax", random_state=0).fit(X, y)
    chosen = np.argmax(moe.predict_gate(X_test), axis=1)
    by_expert = np.column_stack([e.predict(X_test) for e in moe.experts_])
    np.testing.assert_allclose(
        moe.predict(X_test), by_expert[np.arange(len(chosen)), chosen]
    )


def test_weighted_pooling_is_the_mixture_mean(regimes):
    X, X_test, y, _ = regimes
    moe = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    by_expert = np.column_stack([e.predict(X_test) for e in moe.experts_])
    expected = np.sum(moe.predict_gate(X_test) * by_expert, axis=1)
    np.testing.assert_allclose(moe.predict(X_test), expected)


def test_classifier_weighted_pooling(blobs):
    X, y = blobs
    moe = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, y)
    gate = moe.predict_gate(X)
    expected = sum(
        gate[:, [k]] * e.predict_proba(X) for k, e in enumerate(moe.experts_)
    )
    np.testing.assert_allclose(moe.predict_proba(X), expected, rtol=1e-10)
    np.testing.assert_allclose(moe.predict_log_proba(X), np.log(expected), rtol=1e-10)


@pytest.mark.parametrize(
    "gate", ["softmax", "constant", DecisionTreeClassifier(max_depth=3)]
)
def test_gates(regimes, gate):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(gate=gate, random_state=0).fit(X, y)
    expected = {"softmax": SoftmaxGate, "constant": ConstantGate}
    assert isinstance(moe.gate_, expected.get(gate, ClassifierGate))
    proba = moe.predict_gate(X)
    assert proba.shape == (len(y), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_fixed_training_fits_each_expert_on_its_cluster(regimes):
    X, _, y, _ = regimes
    Xs = StandardScaler().fit_transform(X)
    init = Xs[[0, 1, 2]]
    partition = KMeans(n_clusters=3, init=init, n_init=1)
    moe = MixtureOfExpertsRegressor(training="fixed", partition=partition).fit(X, y)
    labels = KMeans(n_clusters=3, init=init, n_init=1).fit_predict(Xs)
    for k, expert in enumerate(moe.experts_):
        manual = LinearRegression().fit(X[labels == k], y[labels == k])
        np.testing.assert_allclose(expert.coef_, manual.coef_, rtol=1e-8)
    assert moe.n_iter_ == 1 and moe.converged_
    np.testing.assert_allclose(moe.expert_load_, np.bincount(labels) / len(y))


def test_hard_training_gives_each_row_one_expert(regimes):
    X, X_test, y, y_test = regimes
    moe = MixtureOfExpertsRegressor(training="hard", random_state=0).fit(X, y)
    assert moe.converged_
    assert moe.score(X_test, y_test) > 0.95
    # Shares of a hard assignment are multiples of one row.
    np.testing.assert_allclose(
        moe.expert_load_ * len(y), np.round(moe.expert_load_ * len(y))
    )


def test_multi_output_regression(regimes):
    X, X_test, y, _ = regimes
    Y = np.column_stack([y, -2 * y])
    moe = MixtureOfExpertsRegressor(random_state=0).fit(X, Y)
    assert moe.predict(X_test).shape == (len(X_test), 2)
    assert moe.noise_std_.shape == (3, 2)
    np.testing.assert_allclose(
        moe.noise_std_[:, 1], 2 * moe.noise_std_[:, 0], rtol=1e-6
    )


def test_n_init_keeps_the_best_run(regimes):
    X, _, y, _ = regimes
    one = MixtureOfExpertsRegressor(partition="random", random_state=3).fit(X, y)
    best = MixtureOfExpertsRegressor(partition="random", n_init=4, random_state=3)
    best.fit(X, y)
    assert best.lower_bound_ >= one.lower_bound_


def test_warm_start_continues_from_the_previous_fit(regimes):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        moe.fit(X, y)
    assert not moe.converged_ and moe.n_iter_ == 2
    first = moe.lower_bound_
    moe.set_params(warm_start=True, max_iter=100)
    moe.fit(X, y)
    assert moe.converged_
    assert moe.lower_bounds_[0] >= first
    with pytest.raises(ValueError, match="warm_start"):
        moe.fit(X[:, :1], y)


def test_n_jobs_gives_the_same_model(regimes):
    X, X_test, y, _ = regimes
    expert = DecisionTreeRegressor(max_depth=3, max_features=1)
    one = MixtureOfExpertsRegressor(expert, training="hard", n_jobs=1, random_state=0)
    two = MixtureOfExpertsRegressor(expert, training="hard", n_jobs=2, random_state=0)
    one.fit(X, y)
    two.fit(X, y)
    np.testing.assert_array_equal(one.predict(X_test), two.predict(X_test))
    assert one.lower_bounds_ == two.lower_bounds_


def test_parallel_restarts_fit_their_experts_in_sequence(regimes, monkeypatch):
    """n_jobs goes to the restarts first: nested parallel expert fits on
    busy workers only add joblib's cost (measured twice as slow on 2 cores,
    benchmarks/parallel.py). Workers left over go to the experts."""
    from mixexp import _base, _mstep

    X, _, y, _ = regimes
    asked, run_calls = [], _base.run_calls

    def recording(calls, n_jobs):
        asked.append(n_jobs)
        return run_calls(calls, n_jobs)

    # The restarts are run by the base, the expert fits by the M-step.
    monkeypatch.setattr(_base, "run_calls", recording)
    monkeypatch.setattr(_mstep, "run_calls", recording)
    for n_init, n_jobs, inner in [(2, 2, 1), (2, 3, 3), (1, 2, 2)]:
        asked.clear()
        model = MixtureOfExpertsRegressor(n_init=n_init, n_jobs=n_jobs, random_state=0)
        model.fit(X, y)
        assert asked[0] == n_jobs and len(asked) > 2
        assert set(asked[1:]) == {inner}


def test_same_random_state_same_model(regimes):
    X, X_test, y, _ = regimes
    a = MixtureOfExpertsRegressor(partition="random", random_state=7).fit(X, y)
    b = MixtureOfExpertsRegressor(partition="random", random_state=7).fit(X, y)
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))


def test_verbose_reports_progress(regimes, capsys):
    X, _, y, _ = regimes
    MixtureOfExpertsRegressor(verbose=2, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "Initialization 0" in out
    assert "Iteration 2" in out
    assert "converged" in out


def test_sample_weight_equals_repetition_from_same_start():
    X, y = make_regimes(n_samples=90, n_regimes=2, random_state=1)
    weights = np.random.RandomState(0).randint(0, 4, size=len(y))
    init = StandardScaler().fit_transform(X)[[0, 1]]
    partition = KMeans(n_clusters=2, init=init, n_init=1)
    weighted = MixtureOfExpertsRegressor(n_experts=2, partition=partition, tol=1e-10)
    repeated = MixtureOfExpertsRegressor(n_experts=2, partition=partition, tol=1e-10)
    weighted.fit(X, y, sample_weight=weights)
    repeated.fit(np.repeat(X, weights, axis=0), np.repeat(y, weights))
    np.testing.assert_allclose(weighted.predict(X), repeated.predict(X), rtol=1e-6)
    assert weighted.lower_bound_ == pytest.approx(repeated.lower_bound_, rel=1e-6)


# ---------------------------------------------------------------------------
# scikit-learn integration


def test_pandas_feature_names_and_named_groups(regimes):
    X, X_test, y, _ = regimes
    frame = pd.DataFrame(X, columns=["speed", "load"])
    moe = MixtureOfExpertsRegressor(
        feature_groups=[["speed"], ["speed", "load"]], random_state=0
    ).fit(frame, y)
    assert list(moe.feature_names_in_) == ["speed", "load"]
    assert moe.n_experts_ == 2
    assert [list(g) for g in moe.feature_groups_] == [[0], [0, 1]]
    assert moe.experts_[0].coef_.shape == (1,)
    test_frame = pd.DataFrame(X_test, columns=["speed", "load"])
    assert moe.predict(test_frame).shape == (len(X_test),)
    with pytest.warns(UserWarning, match="feature names"):
        moe.predict(X_test)


def test_pickle_round_trip(blobs):
    X, y = blobs
    moe = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(moe))
    np.testing.assert_array_equal(clone.predict_proba(X), moe.predict_proba(X))
    np.testing.assert_array_equal(clone.predict_gate(X), moe.predict_gate(X))


def test_grid_search_over_the_four_parts():
    X, y = make_regimes(n_samples=240, n_regimes=2, random_state=0)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("moe", MixtureOfExpertsRegressor(n_experts=2, random_state=0)),
        ]
    )
    grid = {
        "moe__gate": ["softmax", "constant"],
        "moe__pooling": ["weighted", "argmax"],
        "moe__training": ["em", "hard"],
        "moe__partition": ["kmeans", "random"],
    }
    search = GridSearchCV(pipe, grid, cv=3, error_score="raise").fit(X, y)
    assert len(search.cv_results_["params"]) == 16
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_params_["moe__gate"] == "softmax"
    assert search.best_score_ > 0.9


class _RecordingRegressor(LinearRegression):
    def fit(self, X, y, sample_weight=None, extra=None):
        self.extra_seen_ = extra
        self.rows_seen_ = X[:, 0].copy()
        return super().fit(X, y, sample_weight=sample_weight)


class _RecordingClassifier(LogisticRegression):
    def fit(self, X, y, sample_weight=None, extra=None):
        self.extra_seen_ = extra
        return super().fit(X, y, sample_weight=sample_weight)


@pytest.mark.parametrize("training", ["em", "hard"])
def test_metadata_routing_reaches_experts_and_gate(regimes, training):
    X, _, y, _ = regimes
    extra = np.arange(len(y))
    with config_context(enable_metadata_routing=True):
        moe = MixtureOfExpertsRegressor(
            _RecordingRegressor().set_fit_request(extra=True),
            gate=_RecordingClassifier().set_fit_request(extra=True),
            n_experts=2,
            training=training,
            random_state=0,
        )
        assert moe.get_metadata_routing().consumes("fit", ["extra"]) == {"extra"}
        moe.fit(X, y, extra=extra)
    seen = [expert.extra_seen_ for expert in moe.experts_]
    for expert in moe.experts_:
        # The metadata follows the rows each expert is fitted on.
        np.testing.assert_array_equal(X[expert.extra_seen_, 0], expert.rows_seen_)
    if training == "hard":
        # Each row goes to exactly one expert.
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), extra)
    gate_seen = moe.gate_.estimator_.extra_seen_
    assert set(gate_seen) <= set(extra) and len(gate_seen) >= len(extra)


def test_extra_fit_params_need_routing(regimes):
    X, _, y, _ = regimes
    with pytest.raises(ValueError, match="enable_metadata_routing"):
        MixtureOfExpertsRegressor().fit(X, y, extra=np.ones(len(y)))


def test_pipeline_expert_receives_weights(regimes):
    X, X_test, y, y_test = regimes
    expert = Pipeline([("scale", StandardScaler()), ("lr", LinearRegression())])
    moe = MixtureOfExpertsRegressor(expert, random_state=0).fit(X, y)
    assert moe.score(X_test, y_test) > 0.97


# ---------------------------------------------------------------------------
# Routing, capacity, out-of-fold E-step, nesting, spread, model selection


@pytest.mark.parametrize("cls", [MixtureOfExpertsRegressor, MixtureOfExpertsClassifier])
def test_top_k_between_argmax_and_weighted(cls, regimes, blobs):
    X, y = (regimes[0], regimes[2]) if cls is MixtureOfExpertsRegressor else blobs
    method = "predict" if cls is MixtureOfExpertsRegressor else "predict_proba"
    fitted = {
        name: getattr(cls(n_experts=3, random_state=0, **params).fit(X, y), method)(X)
        for name, params in {
            "argmax": {"pooling": "argmax"},
            "weighted": {},
            "top1": {"top_k": 1},
            "top2": {"top_k": 2},
            "top3": {"top_k": 3},
        }.items()
    }
    np.testing.assert_array_equal(fitted["top1"], fitted["argmax"])
    np.testing.assert_array_equal(fitted["top3"], fitted["weighted"])
    assert not np.array_equal(fitted["top2"], fitted["weighted"])


def test_top_k_is_validated(regimes):
    X, _, y, _ = regimes
    with pytest.raises(ValueError, match="top_k=4 exceeds"):
        MixtureOfExpertsRegressor(top_k=4).fit(X, y)
    with pytest.raises(ValueError, match="pooling='argmax'"):
        MixtureOfExpertsRegressor(pooling="argmax", top_k=2).fit(X, y)


@pytest.mark.parametrize("overflow", ["next", "drop"])
@pytest.mark.parametrize("factor", [0.8, 1.0, 1.25])
def test_hard_capacity_bounds_every_expert(regimes, overflow, factor):
    X, X_test, y, _ = regimes
    moe = MixtureOfExpertsRegressor(
        training="hard", capacity_factor=factor, overflow=overflow, random_state=0
    ).fit(X, y)
    capacity = int(np.ceil(len(y) / 3 * factor))
    assert np.all(moe.expert_load_ * len(y) <= capacity + 1e-9)
    assert moe.dropped_fraction_ == pytest.approx(1 - moe.expert_load_.sum())
    if factor < 1:
        # The experts' slots cannot hold every row.
        assert moe.dropped_fraction_ >= 1 - 3 * capacity / len(y) - 1e-9
    # Capacity acts on training only: predictions stay row-wise.
    batch = moe.predict(X_test[:20])
    one_by_one = [moe.predict(X_test[i : i + 1])[0] for i in range(20)]
    np.testing.assert_allclose(batch, one_by_one)


def test_soft_capacity_limits_the_rows_each_expert_is_fitted_on(regimes):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(capacity_factor=1.0, random_state=0).fit(X, y)
    capacity = int(np.ceil(len(y) / 3))
    # An expert's weight share cannot exceed its capacity of rows.
    assert np.all(moe.expert_load_ <= capacity / len(y) + 1e-12)
    unlimited = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    assert unlimited.dropped_fraction_ == 0.0
    assert unlimited.expert_load_.sum() == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_out_of_fold_estep_keeps_memorising_experts_honest():
    X, y = make_regimes(n_samples=900, noise=0.3, random_state=0)
    X_train, X_test, y_train, y_test = X[:600], X[600:], y[:600], y[600:]
    tree = DecisionTreeRegressor(random_state=0)  # grows until it memorises
    plain = MixtureOfExpertsRegressor(tree, random_state=0).fit(X_train, y_train)
    oof = MixtureOfExpertsRegressor(tree, cv=5, random_state=0).fit(X_train, y_train)
    # In sample, each tree reproduces its rows, so the noise hits its floor and
    # the model is absurdly sure of itself on new data.
    assert plain.noise_std_.max() < 0.01
    assert oof.noise_std_.min() > 0.1
    assert oof.log_likelihood(X_test, y_test).mean() > -3
    assert plain.log_likelihood(X_test, y_test).mean() < -100


def test_out_of_fold_estep_with_a_splitter(blobs):
    from sklearn.model_selection import KFold

    X, y = blobs
    splitter = KFold(3, shuffle=True, random_state=0)
    moe = MixtureOfExpertsClassifier(n_experts=2, cv=splitter, random_state=0)
    assert moe.fit(X, y).score(X, y) > 0.9


def test_hierarchical_mixture_by_nesting():
    X, y = make_regimes(n_samples=1200, n_regimes=4, random_state=3)
    inner = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    outer = MixtureOfExpertsRegressor(inner, n_experts=2, random_state=0)
    outer.fit(X[:800], y[:800])
    # A single linear fit scores 0.41 here. Which local maximum a nested
    # mixture reaches is a lottery (test R2 from 0.50 to 0.98 over five data
    # seeds, with a fixed or the automatic gate penalty); this one is good.
    assert outer.score(X[800:], y[800:]) > 0.9
    assert all(isinstance(e, MixtureOfExpertsRegressor) for e in outer.experts_)
    # Both levels of gates are there to inspect.
    top = outer.predict_gate(X[:5])
    low = [expert.predict_gate(X[:5]) for expert in outer.experts_]
    assert top.shape == (5, 2) and all(g.shape == (5, 2) for g in low)
    # The nested model's prediction is the top gate pooling the inner ones.
    expected = sum(top[:, k] * e.predict(X[:5]) for k, e in enumerate(outer.experts_))
    np.testing.assert_allclose(outer.predict(X[:5]), expected)
    # Its parameters count is the sum of the levels'.
    n = 800
    assert outer.bic(X[:n], y[:n]) > outer.aic(X[:n], y[:n])


def test_predictive_standard_deviation(regimes):
    X, X_test, y, _ = regimes
    moe = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    mean, std = moe.predict(X_test, return_std=True)
    np.testing.assert_array_equal(mean, moe.predict(X_test))
    gate = moe.predict_gate(X_test)
    f = np.column_stack([e.predict(X_test) for e in moe.experts_])
    var = gate @ moe.noise_std_**2 + np.sum(gate * f**2, axis=1) - mean**2
    np.testing.assert_allclose(std, np.sqrt(var), rtol=1e-6)
    assert np.all(std >= moe.noise_std_.min() - 1e-12)
    # With the most trusted expert alone, the spread is that expert's noise.
    argmax = MixtureOfExpertsRegressor(pooling="argmax", random_state=0).fit(X, y)
    _, std = argmax.predict(X_test, return_std=True)
    np.testing.assert_allclose(std, argmax.noise_std_[argmax.predict_expert(X_test)])


def test_predict_expert_is_the_gate_argmax(regimes):
    X, X_test, y, _ = regimes
    moe = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
    np.testing.assert_array_equal(
        moe.predict_expert(X_test), np.argmax(moe.predict_gate(X_test), axis=1)
    )


def test_bic_finds_the_number_of_regimes(regimes):
    X, _, y, _ = regimes
    bic = {
        k: MixtureOfExpertsRegressor(n_experts=k, n_init=2, random_state=0)
        .fit(X, y)
        .bic(X, y)
        for k in range(1, 6)
    }
    assert min(bic, key=bic.get) == 3


@pytest.mark.parametrize(
    ("gate", "expected"), [("softmax", 2 * 3 + 2 + 3 * 1), ("constant", 2 * 3 + 2 + 1)]
)
def test_bic_and_aic_count_the_free_parameters(regimes, gate, expected):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(n_experts=2, gate=gate, random_state=0).fit(X, y)
    n = len(y)
    log_lik = moe.log_likelihood(X, y).sum()
    assert moe.aic(X, y) == pytest.approx(-2 * log_lik + 2 * expected)
    assert moe.bic(X, y) == pytest.approx(-2 * log_lik + expected * np.log(n))


def test_bic_refuses_models_without_a_parameter_count(regimes, blobs):
    X, _, y, _ = regimes
    trees = MixtureOfExpertsRegressor(
        DecisionTreeRegressor(max_depth=2), random_state=0
    )
    with pytest.raises(ValueError, match="DecisionTreeRegressor"):
        trees.fit(X, y).bic(X, y)
    gate = MixtureOfExpertsRegressor(gate=DecisionTreeClassifier(max_depth=2))
    with pytest.raises(ValueError, match="gate DecisionTreeClassifier"):
        gate.set_params(random_state=0).fit(X, y).aic(X, y)
    Xc, yc = blobs
    logistic = MixtureOfExpertsClassifier(n_experts=2, random_state=0).fit(Xc, yc)
    assert np.isfinite(logistic.bic(Xc, yc))


def test_min_expert_load_keeps_experts_in_use():
    balance = {None: [], 0.1: []}
    for seed in range(4):
        X, y = make_regimes(n_samples=600, n_regimes=2, random_state=seed)
        for floor in balance:
            moe = MixtureOfExpertsRegressor(
                n_experts=5, min_expert_load=floor, max_iter=200, random_state=0
            ).fit(X, y)
            assert 1.0 <= moe.load_balance_ <= 5.0
            balance[floor].append(moe.load_balance_)
            if floor is None:
                assert np.all(moe.n_reseeds_ == 0)
    assert np.mean(balance[0.1]) < np.mean(balance[None]) - 0.2
    with pytest.raises(ValueError, match="min_expert_load"):
        MixtureOfExpertsRegressor(n_experts=5, min_expert_load=0.2).fit(X, y)


def _nested_mixture():
    return MixtureOfExpertsRegressor(n_experts=2, random_state=0)


@pytest.mark.parametrize(
    "mixture, expert",
    [
        (MixtureOfExpertsRegressor, DecisionTreeRegressor(max_depth=4)),
        (MixtureOfExpertsRegressor, RandomForestRegressor(10, max_depth=3)),
        (MixtureOfExpertsRegressor, _nested_mixture()),
        (MixtureOfExpertsClassifier, DecisionTreeClassifier(max_depth=2)),
        (MixtureOfExpertsClassifier, LogisticRegression()),
    ],
    ids=["tree", "forest", "nested", "tree-classifier", "logistic"],
)
def test_soft_em_with_inexact_experts_never_lowers_its_objective(mixture, expert):
    """Experts that do not maximise their weighted likelihood keep their
    previous fit when a refit is worse: soft EM stays monotone (before,
    a depth-4 tree's run dipped by 0.018 and ran to max_iter)."""
    if mixture is MixtureOfExpertsRegressor:
        X, y = make_regimes(n_samples=600, n_regimes=3, random_state=0)
    else:
        X, y = make_xor(n_samples=600, flip=0.1, random_state=0)
    moe = mixture(expert, n_experts=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        moe.fit(X, y)
    assert np.all(moe.n_reseeds_ == 0)
    history = np.asarray(moe.lower_bounds_)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


class _WorseEachFit(RegressorMixin, BaseEstimator):
    """A linear fit whose n-th fit (over all instances) is off by n."""

    fits = 0

    def fit(self, X, y, sample_weight=None):
        self.model_ = LinearRegression().fit(X, y, sample_weight)
        self.offset_ = type(self).fits
        type(self).fits += 1
        return self

    def predict(self, X):
        return self.model_.predict(X) + self.offset_


def test_an_expert_keeps_its_previous_fit_when_its_refit_is_worse():
    X, y = make_regimes(n_samples=400, n_regimes=2, random_state=0)
    _WorseEachFit.fits = 0
    moe = MixtureOfExpertsRegressor(_WorseEachFit(), n_experts=2, max_iter=20)
    with warnings.catch_warnings():
        # The gate keeps sharpening around the frozen experts.
        warnings.simplefilter("ignore", ConvergenceWarning)
        moe.set_params(random_state=0).fit(X, y)
    assert _WorseEachFit.fits >= 2 * moe.n_iter_  # every iteration refits
    # Every refit after the first iteration is worse, and is dropped.
    assert sorted(expert.offset_ for expert in moe.experts_) == [0, 1]
    history = np.asarray(moe.lower_bounds_)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))


def test_non_monotone_em_keeps_its_best_iteration():
    """Hard EM with out-of-fold likelihoods can swing between two states;
    it stops there and keeps the iteration with the highest objective."""
    from sklearn.tree import DecisionTreeClassifier

    from mixexp.datasets import make_xor

    X, y = make_xor(n_samples=600, flip=0.1, random_state=0)
    moe = MixtureOfExpertsClassifier(
        DecisionTreeClassifier(), n_experts=4, training="hard", cv=3, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        moe.fit(X, y)
    assert moe.converged_
    assert moe.lower_bound_ == max(moe.lower_bounds_)
    assert len(moe.lower_bounds_) == moe.n_iter_


# ---------------------------------------------------------------------------
# No process-wide side effects: BLAS thread limits


def _thread_counts():
    return [(pool["filepath"], pool["num_threads"]) for pool in threadpool_info()]


def test_grid_search_in_threads_leaves_the_thread_limits_as_they_were(regimes):
    """mixexp limits BLAS to one thread only around its own kernels: a grid
    search whose fits run side by side in threads leaves every thread pool
    of the process as it found it."""
    X, _, y, _ = regimes
    with threadpool_limits(limits=2, user_api="blas"):
        before = _thread_counts()
        if not any(count == 2 for _, count in before):
            pytest.skip("no BLAS library whose threads can be set")
        for _ in range(2):
            with parallel_backend("threading", n_jobs=2):
                GridSearchCV(
                    MixtureOfExpertsRegressor(random_state=0),
                    {"n_experts": [2, 3]},
                    cv=3,
                ).fit(X[:300], y[:300])
            assert _thread_counts() == before


def test_user_experts_run_with_the_users_thread_limits(regimes):
    """Only mixexp's kernels run at one BLAS thread: a user's expert and a
    classifier gate see the thread count the user set."""
    X, _, y, _ = regimes
    seen = []

    class Recording(LinearRegression):
        def fit(self, X, y, sample_weight=None):
            seen.append(
                {
                    pool["num_threads"]
                    for pool in threadpool_info()
                    if pool["user_api"] == "blas"
                }
            )
            return super().fit(X, y, sample_weight=sample_weight)

    with threadpool_limits(limits=2, user_api="blas"):
        if not any(count == 2 for _, count in _thread_counts()):
            pytest.skip("no BLAS library whose threads can be set")
        MixtureOfExpertsRegressor(Recording(), random_state=0).fit(X, y)
    assert seen and all(counts == {2} for counts in seen)


@pytest.mark.parametrize(
    "expert", [LinearRegression(), DecisionTreeRegressor(max_depth=3)]
)
def test_fits_side_by_side_in_threads_equal_sequential_ones(regimes, expert):
    X, X_test, y, _ = regimes
    models = [
        MixtureOfExpertsRegressor(expert, n_experts=k, random_state=seed)
        for k, seed in [(2, 0), (3, 1), (3, 2), (4, 3)]
    ]
    alone = [clone(model).fit(X, y) for model in models]
    with threadpool_limits(limits=2, user_api="blas"), ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda model: clone(model).fit(X, y), models))
    for a, b in zip(alone, together, strict=True):
        assert a.lower_bounds_ == b.lower_bounds_
        np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))


# ---------------------------------------------------------------------------
# The gate protocol


class _NearestCentroidGate(BaseEstimator):
    """A gate written outside mixexp: trusts each expert by the distance to
    its responsibility-weighted centroid."""

    def __init__(self, width=1.0):
        self.width = width

    def fit(self, X, targets, sample_weight=None):
        weights = np.ones(len(X)) if sample_weight is None else sample_weight
        progress = self._em_start(X, weights, targets.shape[1])
        progress.improve(targets, exact=True)
        self.centroids_ = progress.fitted().centroids_
        return self

    def predict_proba(self, X):
        return np.exp(self._predict_log_proba(X))

    def _predict_log_proba(self, X):
        scores = -((X[:, None, :] - self.centroids_) ** 2).sum(axis=2) / self.width
        return scores - logsumexp(scores, axis=1, keepdims=True)

    def _em_start(self, X, sample_weight, n_experts, **unused):
        return _CentroidFit(clone(self), X, sample_weight)


class _CentroidFit:
    penalty = 0.0

    def __init__(self, gate, X, weights):
        self.gate, self.X, self.weights = gate, X, weights

    def improve(self, targets, exact):
        mass = targets * self.weights[:, None]
        self.gate.centroids_ = mass.T @ self.X / mass.sum(axis=0)[:, None]

    def log_proba(self):
        return self.gate._predict_log_proba(self.X)

    def fitted(self):
        return copy.deepcopy(self.gate)


def test_a_gate_written_outside_mixexp_follows_the_protocol(blobs):
    X, labels = blobs
    y = np.where(labels == 1, 3 * X[:, 0], -2 * X[:, 1]) + 10 * labels
    moe = MixtureOfExpertsRegressor(
        n_experts=3, gate=_NearestCentroidGate(width=4.0), random_state=0
    ).fit(X, y)
    assert isinstance(moe.gate_, _NearestCentroidGate)
    assert moe.gate_.get_params() == {"width": 4.0}
    assert moe.score(X, y) > 0.99
    # Each expert is trusted where its blob is.
    assert sorted(np.unique(moe.predict_expert(X[labels == 1])).tolist()) == [
        moe.predict_expert(X[labels == 1])[0]
    ]
    np.testing.assert_allclose(moe.predict_gate(X).sum(axis=1), 1.0)
    assert np.isfinite(moe.log_likelihood(X, y)).all()
    with pytest.raises(ValueError, match="parameter count"):
        moe.bic(X, y)  # the gate does not count its parameters


@pytest.mark.parametrize(
    "gate", ["softmax", SoftmaxGate(alpha=0.5), "constant", DecisionTreeClassifier()]
)
@pytest.mark.parametrize("training", ["em", "hard"])
def test_the_fitted_gate_reports_only_what_the_user_set(regimes, gate, training):
    X, _, y, _ = regimes
    moe = MixtureOfExpertsRegressor(gate=gate, training=training, random_state=0)
    moe.fit(X, y)
    expected = make_gate(gate).get_params()
    assert {k: repr(v) for k, v in moe.gate_.get_params().items()} == {
        k: repr(v) for k, v in expected.items()
    }
    if isinstance(moe.gate_, ClassifierGate):
        # The random_state the fit drew went to the fitted copy only.
        assert moe.gate_.estimator.random_state is None
        assert moe.gate_.estimator_.random_state is not None
