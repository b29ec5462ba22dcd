"""The numerics of online EM (mixexp/_online.py), function by function."""

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LinearRegression, Ridge, SGDRegressor
from sklearn.neighbors import KNeighborsRegressor

from mixexp import _online
from mixexp._linear import fit_linear_regressions
from mixexp._softmax import standardised_rowsT
from mixexp.gating import ConstantGate, SoftmaxGate


def test_step_size_follows_the_schedule():
    assert _online.step_size(1, 10.0, 0.7) == pytest.approx(11.0**-0.7)
    steps = [_online.step_size(t, 10.0, 0.7) for t in range(1, 300)]
    assert np.all(np.diff(steps) < 0) and 0 < steps[-1] < steps[0] < 1
    # decay 1 and offset 1: 1 / (t + 1), the running mean of equal batches
    assert [_online.step_size(t, 1.0, 1.0) for t in (1, 2, 3)] == [1 / 2, 1 / 3, 1 / 4]
    assert _online.step_size(5, 10.0, 0.0) == 1.0


def test_blend_mixes_arrays_and_tuples():
    a, b = np.array([1.0, 3.0]), np.array([3.0, 7.0])
    np.testing.assert_allclose(_online.blend(a, b, 0.25), [1.5, 4.0])
    pair = _online.blend((a, 2.0), (b, 4.0), 0.5)
    np.testing.assert_allclose(pair[0], [2.0, 5.0])
    assert pair[1] == 3.0


def _weighted_rows(rng, n, offset=0.0):
    X = rng.normal(size=(n, 3)) + offset
    y = np.column_stack(
        [X @ [1.0, -2.0, 0.5] + rng.normal(size=n), X[:, 0] + rng.normal(size=n)]
    )
    return X, y, rng.uniform(0.1, 1.0, size=n)


def _statistics_of_halves(X, y, r, n_first):
    """Running statistics of two batches, merged exactly (rho = 1/2 for
    halves of equal weight)."""
    first = _online.linear_statistics(X[:n_first], y[:n_first], r[:n_first] / n_first)
    n_second = X.shape[0] - n_first
    second = _online.linear_statistics(
        X[n_first:], y[n_first:], r[n_first:] / n_second, first.centre
    )
    return first.blend(second, 0.5)


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_linear_solution_is_the_weighted_least_squares_fit(fit_intercept, offset):
    rng = np.random.RandomState(0)
    X, y, r = _weighted_rows(rng, 400, offset)
    stats = _statistics_of_halves(X, y, r, 200)
    coef, intercept, rank, _ = _online.linear_solution(
        stats, 3, fit_intercept, None, 400.0
    )
    reference = LinearRegression(fit_intercept=fit_intercept).fit(X, y, sample_weight=r)
    # Without an intercept, rows far from the origin make the normal
    # equations ill-conditioned (1e8 here): a few digits go.
    np.testing.assert_allclose(coef.T, reference.coef_, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(intercept, reference.intercept_, rtol=1e-7, atol=1e-6)
    assert rank == 3


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_penalty_weighs_against_the_rows_seen(fit_intercept):
    # Batch EM fits a Ridge expert on its weights rescaled to the mixture's
    # total N: the online solution from statistics of N rows is that fit.
    rng = np.random.RandomState(1)
    X, y, r = _weighted_rows(rng, 300)
    stats = _statistics_of_halves(X, y, r, 150)
    alpha = np.array([50.0, 5.0])
    coef, intercept, _, _ = _online.linear_solution(
        stats, 3, fit_intercept, alpha, 300.0
    )
    for j in range(2):
        reference = Ridge(alpha=alpha[j], fit_intercept=fit_intercept).fit(
            X, y[:, j], sample_weight=r * 300 / r.sum()
        )
        np.testing.assert_allclose(coef[:, j], reference.coef_, rtol=1e-6)
        np.testing.assert_allclose(intercept[j], reference.intercept_, atol=1e-6)


def test_linear_solution_of_dependent_columns_is_batch_ems():
    # The minimum-norm solution in scaled coordinates, as batch EM's
    # normal equations give it (mixexp/_linear.py).
    rng = np.random.RandomState(2)
    x = rng.normal(size=200)
    X = np.column_stack([x, 2 * x, rng.normal(size=200)])
    y = (x + X[:, 2] + 0.1 * rng.normal(size=200))[:, np.newaxis]
    stats = _online.linear_statistics(X, y, np.full(200, 1 / 200))
    coef, _, rank, _ = _online.linear_solution(stats, 3, True, None, 200.0)
    (reference,) = fit_linear_regressions([LinearRegression()], [X], y, [None], [None])
    assert rank == 2
    np.testing.assert_allclose(coef[:, 0], reference.coef_[0], rtol=1e-6)


def test_fitted_linear_expert_predicts_as_its_class():
    rng = np.random.RandomState(3)
    X, y, r = _weighted_rows(rng, 100)
    stats = _online.linear_statistics(X, y[:, :1], r / 100)
    coef, intercept, rank, singular = _online.linear_solution(
        stats, 3, True, None, 100.0
    )
    expert = _online.fitted_linear_expert(
        LinearRegression(), coef, intercept, 1, rank, singular
    )
    reference = LinearRegression().fit(X, y[:, 0], sample_weight=r)
    np.testing.assert_allclose(expert.predict(X), reference.predict(X), rtol=1e-8)
    assert expert.coef_.shape == (3,) and isinstance(expert.intercept_, float)
    ridge = _online.fitted_linear_expert(Ridge(), coef, intercept, 1)
    assert ridge.predict(X).shape == (100,)


def test_update_kind_reads_the_expert():
    assert _online.update_kind(LinearRegression()) == "statistics"
    assert _online.update_kind(Ridge(alpha=2.0)) == "statistics"
    assert _online.update_kind(Ridge(positive=True)) is None
    assert _online.update_kind(LinearRegression(positive=True)) is None
    assert _online.update_kind(SGDRegressor()) == "partial_fit"
    assert _online.update_kind(KNeighborsRegressor()) is None


def _gate_problem(seed=0, n=300, n_experts=3):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 2)) * [1.0, 5.0] + [0.0, 3.0]
    scores = np.column_stack([X[:, 0], -X[:, 0], 0.2 * X[:, 1]])[:, :n_experts]
    targets = np.exp(scores - logsumexp(scores, axis=1, keepdims=True))
    weights = rng.uniform(0.5, 1.5, size=n)
    mean = np.average(X, axis=0, weights=weights)
    scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
    return X, targets, weights, mean, scale


def _cross_entropy(params, X, mean, scale, targets, weights):
    z = standardised_rowsT(X, mean, scale).T
    scores = z @ params
    loss = logsumexp(scores, axis=1) - np.sum(targets * scores, axis=1)
    return weights @ loss / weights.sum()


def test_bohning_surrogate_majorises_the_cross_entropy():
    X, targets, weights, mean, scale = _gate_problem()
    rng = np.random.RandomState(1)
    start = rng.normal(size=(3, 3))
    curvature, linear = _online.softmax_surrogate_statistics(
        start, X, mean, scale, targets, weights
    )
    np.testing.assert_allclose(linear.sum(axis=1), 0.0, atol=1e-12)
    P = np.eye(3) - 1 / 3

    def surrogate(theta):
        return 0.25 * np.trace(theta.T @ curvature @ theta @ P) + np.sum(linear * theta)

    at_start = _cross_entropy(start, X, mean, scale, targets, weights)
    for _ in range(20):
        theta = start + rng.normal(scale=2.0, size=start.shape)
        rise = _cross_entropy(theta, X, mean, scale, targets, weights) - at_start
        assert rise <= surrogate(theta) - surrogate(start) + 1e-10


def test_repeated_surrogate_steps_reach_the_gate_fit():
    # MM on one batch: each step lowers the penalised cross-entropy, and
    # the steps converge to the Newton solution of SoftmaxGate.
    X, targets, weights, mean, scale = _gate_problem()
    alpha = 1.0
    gate = SoftmaxGate(alpha=alpha, tol=1e-10).fit(X, targets, sample_weight=weights)
    np.testing.assert_allclose(gate._mean, mean)
    penalty = alpha / weights.sum()

    def objective(theta):
        loss = _cross_entropy(theta, X, mean, scale, targets, weights)
        return loss + 0.5 * penalty * np.sum(theta[1:] ** 2)

    theta = np.zeros((3, 3))
    previous = objective(theta)
    for _ in range(300):
        stats = _online.softmax_surrogate_statistics(
            theta, X, mean, scale, targets, weights
        )
        theta = _online.softmax_surrogate_minimiser(*stats, penalty)
        current = objective(theta)
        assert current <= previous + 1e-12
        previous = current
    np.testing.assert_allclose(theta.sum(axis=1), 0.0, atol=1e-10)
    np.testing.assert_allclose(
        np.exp(_online_log_proba(theta, X, mean, scale)),
        gate.predict_proba(X),
        atol=1e-5,
    )


def _online_log_proba(theta, X, mean, scale):
    scores = standardised_rowsT(X, mean, scale).T @ theta
    return scores - logsumexp(scores, axis=1, keepdims=True)


def test_surrogate_minimiser_ignores_a_constant_feature():
    X, targets, weights, _, _ = _gate_problem()
    X = np.column_stack([X, np.full(X.shape[0], 4.0)])
    mean, scale = X.mean(axis=0), np.r_[X[:, :2].std(axis=0), 1.0]
    stats = _online.softmax_surrogate_statistics(
        np.zeros((4, 3)), X, mean, scale, targets, weights
    )
    theta = _online.softmax_surrogate_minimiser(*stats, 0.0)
    assert np.all(np.isfinite(theta))
    np.testing.assert_allclose(theta[3], 0.0, atol=1e-12)


def test_gates_update_without_changing_themselves():
    X, targets, weights, _, _ = _gate_problem()
    softmax = SoftmaxGate(alpha=1.0).fit(X, targets.argmax(axis=1))
    params = softmax._params.copy()
    updated, state = softmax._partial_update(X, targets, weights, None, 1.0, 300.0)
    np.testing.assert_array_equal(softmax._params, params)
    assert updated is not softmax and updated.predict_proba(X).shape == (300, 3)
    again, _ = updated._partial_update(X, targets, weights, state, 0.5, 600.0)
    np.testing.assert_allclose(again.predict_proba(X).sum(axis=1), 1.0)

    constant = ConstantGate().fit(X, np.zeros(300, dtype=int) + [0, 1, 2] * 100)
    shares = np.average(targets, axis=0, weights=weights)
    seeded, state = constant._partial_update(X, targets, weights, None, 1.0, 300.0)
    np.testing.assert_allclose(seeded.proportions_, shares)
    np.testing.assert_allclose(constant.proportions_, 1 / 3)
    half, _ = seeded._partial_update(X, np.eye(3)[[0] * 300], weights, state, 0.5, 1)
    np.testing.assert_allclose(half.proportions_, (shares + np.eye(3)[0]) / 2)


def test_blend_scale_is_the_running_weighted_mean():
    rng = np.random.RandomState(4)
    residual = rng.normal(size=(400, 1)) * 3
    resp = rng.uniform(size=(400, 2))
    resp /= resp.sum(axis=1, keepdims=True)

    def variance(rows):
        return np.array(
            [resp[rows, k] @ residual[rows] ** 2 / resp[rows, k].sum() for k in (0, 1)]
        )

    def shares(rows):
        return resp[rows].sum(axis=0) / len(rows)

    first, second = np.arange(200), np.arange(200, 400)
    blended = _online.blend_scale(
        variance(first), variance(second), shares(first), shares(second), 0.5
    )
    np.testing.assert_allclose(blended, variance(np.arange(400)))
    tied = _online.blend_scale(
        np.eye(2), 3 * np.eye(2), shares(first), shares(second), 0.25, False
    )
    np.testing.assert_allclose(tied, 1.5 * np.eye(2))
    assert _online.blend_scale(None, None, None, None, 0.5) is None
