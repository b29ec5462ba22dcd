"""The lean EM run (mixexp._lean): sums over blocks of rows, no (n, K) array."""

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression, Ridge

from mixexp import MixtureOfExpertsRegressor, _base, _em, _lean, _softmax
from mixexp.datasets import make_regimes
from mixexp.exceptions import CollapsedExpertWarning
from mixexp.partition import initial_responsibilities

ALWAYS, NEVER = 0, 1 << 62


def _fit(monkeypatch, lean, X, y, sample_weight=None, **params):
    """A regressor fitted with the lean run forced on or off."""
    monkeypatch.setattr(
        _lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", ALWAYS if lean else NEVER
    )
    params.setdefault("random_state", 0)
    model = MixtureOfExpertsRegressor(LinearRegression(), **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, sample_weight=sample_weight)


def _regimes(n_samples=600, n_features=3, seed=0):
    return make_regimes(
        n_samples=n_samples,
        n_regimes=3,
        n_features=n_features,
        noise=0.3,
        random_state=seed,
    )


def _assert_same_model(a, b, X, rtol):
    assert a.n_iter_ == b.n_iter_
    assert a.converged_ == b.converged_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(a.predict_gate(X), b.predict_gate(X), atol=rtol)
    np.testing.assert_allclose(a.noise_std_, b.noise_std_, rtol=rtol)
    np.testing.assert_allclose(a.expert_load_, b.expert_load_, rtol=rtol)
    np.testing.assert_allclose(a.load_balance_, b.load_balance_, rtol=rtol)


@pytest.mark.parametrize("partition", ["kmeans", "random", "gmm"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_lean_fit_is_the_in_memory_fit(monkeypatch, partition, weighted):
    X, y = _regimes()
    w = np.random.RandomState(1).uniform(0.5, 2.0, size=y.shape) if weighted else None
    params = {"n_experts": 3, "partition": partition}
    memory = _fit(monkeypatch, False, X, y, w, **params)
    lean = _fit(monkeypatch, True, X, y, w, **params)
    assert memory.converged_
    _assert_same_model(memory, lean, X, rtol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"covariance_type": "spherical"},
        {"gate_features": [0, 1]},
        {"gate": "softmax", "alpha": 0.1},
        {"experts_fit_intercept": False},
    ],
    ids=["spherical", "gate-features", "fixed-alpha", "no-intercept"],
)
def test_a_lean_fit_follows_the_settings(monkeypatch, params):
    X, y = _regimes()
    params = dict(params)
    if params.pop("experts_fit_intercept", True) is False:
        template = LinearRegression(fit_intercept=False)
    else:
        template = LinearRegression()
    if "alpha" in params:
        from mixexp.gating import SoftmaxGate

        params["gate"] = SoftmaxGate(alpha=params.pop("alpha"))
    fits = []
    for lean in (False, True):
        monkeypatch.setattr(
            _lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", ALWAYS if lean else NEVER
        )
        model = MixtureOfExpertsRegressor(
            template, n_experts=3, random_state=0, **params
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(model.fit(X, y))
    _assert_same_model(*fits, X, rtol=1e-6)


def test_a_lean_fit_with_many_experts_takes_in_memory_steps(monkeypatch):
    """Truncated Newton gate steps and SQUAREM: the same path for a few
    iterations (rounding then grows, as between any two summation orders)."""
    X, y = _regimes(n_samples=2000, n_features=20)
    params = {"n_experts": 20, "max_iter": 6, "tol": 0.0}
    memory = _fit(monkeypatch, False, X, y, **params)
    lean = _fit(monkeypatch, True, X, y, **params)
    assert memory.gate_._params.size > 400  # truncated steps
    np.testing.assert_allclose(lean.lower_bound_, memory.lower_bound_, rtol=1e-6)
    np.testing.assert_allclose(lean.predict(X), memory.predict(X), atol=1e-4)


def test_a_lean_fit_keeps_no_array_of_rows_by_experts(monkeypatch):
    n_samples, n_experts = 50_000, 64
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n_samples, 8))  # a gate of truncated steps
    y = np.sin(2 * X[:, 0]) + np.abs(X[:, 1]) + 0.1 * rng.normal(size=n_samples)
    peaks = {}
    for lean in (False, True):
        tracemalloc.start()
        _fit(
            monkeypatch, lean, X, y, n_experts=n_experts, max_iter=2, partition="random"
        )
        peaks[lean] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    one_array = 8 * n_samples * n_experts
    # The probabilities in single precision (half an array) and buffers of
    # a few blocks of rows: no (n, K) array in double precision.
    assert peaks[True] < one_array
    assert peaks[False] > 3 * one_array


def test_the_rule_picks_the_lean_run_for_large_responsibilities(monkeypatch):
    runs = []
    monkeypatch.setattr(_base, "lean_run", lambda *args: runs.append(args) or None)
    X, y = _regimes()
    monkeypatch.setattr(_lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", 8 * 600 * 3 + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
    assert runs == []
    monkeypatch.setattr(_lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", 8 * 600 * 3)
    with pytest.raises(AttributeError):  # the stand-in returned no run
        MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
    assert len(runs) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"training": "hard"},
        {"capacity_factor": 1.5},
        {"cv": 3},
        {"experts": Ridge()},
        {"experts": [LinearRegression(), LinearRegression(), Ridge()]},
        {"feature_groups": [[0, 1], [1, 2], [0, 2]]},
        {"gate": "constant"},
    ],
    ids=["hard", "capacity", "cv", "ridge", "mixed", "groups", "constant-gate"],
)
def test_the_rule_leaves_other_models_in_memory(monkeypatch, params):
    monkeypatch.setattr(_lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", ALWAYS)
    runs = []
    monkeypatch.setattr(_base, "lean_run", lambda *args: runs.append(args) or None)
    X, y = _regimes()
    params = dict(params)
    experts = params.pop("experts", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MixtureOfExpertsRegressor(experts, n_experts=3, random_state=0, **params).fit(
            X, y
        )
    assert runs == []


def test_a_lean_fit_reseeds_as_the_in_memory_fit(monkeypatch):
    X, y = _regimes()
    params = {"n_experts": 4, "min_expert_load": 0.2}
    memory = _fit(monkeypatch, False, X, y, **params)
    lean = _fit(monkeypatch, True, X, y, **params)
    assert memory.n_reseeds_.sum() > 0
    np.testing.assert_array_equal(lean.n_reseeds_, memory.n_reseeds_)
    # A re-seed gives rows wholly to one expert: the in-memory M-step then
    # leaves out the others' negligible rows, which the lean one weighs.
    _assert_same_model(memory, lean, X, rtol=1e-3)


def test_a_collapsed_expert_warns_in_a_lean_fit(monkeypatch):
    # Ten experts for 30 rows of one simple relation: some fall idle.
    rng = np.random.RandomState(9)
    X = rng.uniform(-1, 1, size=(30, 1))
    y = 2 * X[:, 0] + 0.05 * rng.normal(size=30)
    monkeypatch.setattr(_lean, "_LEAN_MIN_RESPONSIBILITY_BYTES", ALWAYS)
    model = MixtureOfExpertsRegressor(n_experts=10, max_iter=40, random_state=9)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(X, y)
    collapsed = [w for w in record if issubclass(w.category, CollapsedExpertWarning)]
    assert (len(collapsed) > 0) == (model.n_reseeds_.sum() > 0)
    assert np.all(np.isfinite(model.predict(X)))


def test_an_expert_far_from_the_centre_gets_its_own_moments(monkeypatch):
    """Moments about the overall centre would lose digits: the expert's own
    pass makes them, as in memory."""
    rng = np.random.RandomState(0)
    near = rng.normal(size=(300, 2))
    far = 3000.0 + rng.normal(size=(300, 2))
    X = np.vstack([near, far])
    y = np.concatenate([near @ [1.0, -1.0], 5000.0 + far @ [2.0, 0.5]])
    y += 0.1 * rng.normal(size=600)
    memory = _fit(monkeypatch, False, X, y, n_experts=2)
    lean = _fit(monkeypatch, True, X, y, n_experts=2)
    _assert_same_model(memory, lean, X, rtol=1e-6)
    assert lean.score(X, y) > 0.999


@pytest.mark.parametrize("partition", ["random", "kmeans", "gmm"])
def test_the_start_gives_the_softened_initial_responsibilities(partition):
    X, _ = _regimes(n_samples=1000)
    w = np.ones(1000)
    expected = _em.soften(
        initial_responsibilities(X, partition, 4, w, np.random.RandomState(7))
    )

    class Context:
        pass

    context = Context()
    context.X = context.X_filled = X
    context.templates = [None] * 4
    context.partition = partition
    context.sample_weight = w
    start = _lean.Start.of(context, np.random.RandomState(7))
    blocks = [start.block(slice(i, min(i + 300, 1000))) for i in range(0, 1000, 300)]
    np.testing.assert_array_equal(np.hstack(blocks).T, expected)
    np.testing.assert_array_equal(start.whole(), expected)


def test_summed_evaluation_is_the_softmax_objective():
    rng = np.random.RandomState(0)
    n, d, K = 1000, 3, 5
    X = rng.normal(size=(n, d)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]
    mean, scale = X.mean(axis=0), X.std(axis=0)
    targets = rng.dirichlet(np.ones(K), size=n)
    scaled = rng.uniform(0.5, 2.0, size=n)
    scaled /= scaled.sum()
    params = rng.normal(size=(d + 1) * K) * 3
    expected_loss, expected_grad = _softmax.softmax_objective(
        params, X, mean, scale, np.ascontiguousarray(targets.T), scaled, 0.3
    )
    probaT32 = np.empty((K, n), dtype=np.float32)
    evaluation = _softmax.summed_softmax_evaluation(
        params, X, mean, scale, scaled, probaT32
    )
    zT = _softmax.standardised_rowsT(X, mean, scale)
    target_sums = zT @ (scaled[:, np.newaxis] * targets)
    loss, grad = _softmax.summed_softmax_objective(params, evaluation, target_sums, 0.3)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-14)
    probaT = _softmax.softmax_probaT(params, X, mean, scale, K)
    np.testing.assert_array_equal(probaT32, probaT.astype(np.float32))
    assert (
        _softmax.summed_softmax_objective(
            params, (evaluation[0], None), target_sums, 0.3
        )[1]
        is None
    )


def test_the_summed_evaluation_zeroes_negligible_probabilities():
    X = np.array([[-50.0], [0.0], [50.0]])
    params = np.array([0.0, 0.0, -2.0, 2.0])  # sharp: tiny probabilities at the ends
    probaT32 = np.empty((2, 3), dtype=np.float32)
    _softmax.summed_softmax_evaluation(
        params, X, np.zeros(1), np.ones(1), np.full(3, 1 / 3), probaT32
    )
    assert probaT32[0, 2] == 0.0 and probaT32[1, 0] == 0.0
    assert probaT32[0, 1] == pytest.approx(0.5)


def test_single_precision_rows_are_the_double_rows_rounded():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(70_000, 3)) * 5 + 2
    mean, scale = X.mean(axis=0), X.std(axis=0)
    np.testing.assert_array_equal(
        _softmax.standardised_rowsT32(X, mean, scale),
        _softmax.standardised_rowsT(X, mean, scale).astype(np.float32),
    )


def test_a_lean_fit_prints_its_iterations(monkeypatch, capsys):
    X, y = _regimes()
    _fit(monkeypatch, True, X, y, n_experts=3, verbose=2, max_iter=3)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 3" in out


def test_clusterer_partition_reaches_the_lean_start(monkeypatch):
    X, y = _regimes()
    params = {
        "n_experts": 3,
        "partition": KMeans(n_clusters=3, n_init=2, random_state=0),
    }
    memory = _fit(monkeypatch, False, X, y, **params)
    lean = _fit(monkeypatch, True, X, y, **params)
    _assert_same_model(memory, lean, X, rtol=1e-6)


def test_lean_restarts_in_parallel_are_the_in_memory_restarts(monkeypatch):
    X, y = _regimes()
    params = {"n_experts": 3, "n_init": 3, "n_jobs": 2, "partition": "random"}
    memory = _fit(monkeypatch, False, X, y, **params)
    lean = _fit(monkeypatch, True, X, y, **params)
    _assert_same_model(memory, lean, X, rtol=1e-6)


def test_a_warm_start_continues_a_lean_fit(monkeypatch):
    X, y = _regimes()
    model = _fit(monkeypatch, True, X, y, n_experts=3, max_iter=5, warm_start=True)
    first = model.lower_bound_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    assert model.lower_bound_ >= first - 1e-9
    assert np.all(np.isfinite(model.predict(X)))
