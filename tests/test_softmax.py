"""Pure numerics of the softmax gate (mixexp._softmax), checked against
independent computations."""

import numpy as np
import pytest
from scipy.optimize import approx_fprime, check_grad
from scipy.special import log_softmax

from mixexp import _softmax
from mixexp._softmax import (
    newton_minimise,
    softmax_hessian,
    softmax_objective,
    softmax_probaT,
)


def _objective_reference(params, Xs, targets, weights, alpha):
    """Loss of softmax_objective written from its definition."""
    n_features, n_experts = Xs.shape[1], targets.shape[1]
    coef = params.reshape(n_features + 1, n_experts)
    log_p = log_softmax(Xs @ coef[1:] + coef[0], axis=1)
    cross_entropy = -np.sum(weights[:, None] * targets * log_p)
    return (cross_entropy + 0.5 * alpha * np.sum(coef[1:] ** 2)) / weights.sum()


def _objective(params, Xs, targets, weights, alpha):
    """softmax_objective called from the natural (n, K) layout."""
    total = weights.sum()
    n_features = Xs.shape[1]
    return softmax_objective(
        params,
        Xs,
        np.zeros(n_features),
        np.ones(n_features),
        np.ascontiguousarray(targets.T),
        weights / total,
        alpha / total,
    )


# ---------------------------------------------------------------------------
# softmax_objective


@pytest.mark.parametrize("alpha", [0.0, 0.7, 25.0])
def test_softmax_objective_loss_and_gradient(alpha):
    rng = np.random.RandomState(2)
    n, d, k = 30, 3, 4
    Xs = rng.normal(size=(n, d))
    targets = rng.dirichlet(np.ones(k), size=n)
    weights = rng.uniform(0.2, 3.0, size=n)
    params = rng.normal(size=(d + 1) * k)
    args = (Xs, targets, weights, alpha)

    loss, grad = _objective(params, *args)

    assert grad.shape == params.shape
    assert loss == pytest.approx(_objective_reference(params, *args), rel=1e-12)

    def func(p):
        return _objective(p, *args)[0]

    def jac(p):
        return _objective(p, *args)[1]

    assert check_grad(func, jac, params, epsilon=1e-7) < 1e-5
    numeric = approx_fprime(params, lambda p: _objective_reference(p, *args), 1e-7)
    np.testing.assert_allclose(grad, numeric, atol=1e-5)


def test_softmax_objective_penalty_spares_intercept():
    rng = np.random.RandomState(3)
    Xs = rng.normal(size=(10, 2))
    targets = rng.dirichlet(np.ones(2), size=10)
    weights = np.ones(10)
    params = np.zeros((3, 2))
    params[0] = [5.0, -5.0]  # intercept only
    loss0, grad0 = _objective(params.ravel(), Xs, targets, weights, 0.0)
    loss1, grad1 = _objective(params.ravel(), Xs, targets, weights, 10.0)
    assert loss1 == pytest.approx(loss0, rel=1e-14)
    np.testing.assert_allclose(grad1, grad0, rtol=1e-14)
    params[1:] = 1.0
    loss2, _ = _objective(params.ravel(), Xs, targets, weights, 10.0)
    loss3, _ = _objective(params.ravel(), Xs, targets, weights, 0.0)
    assert loss2 - loss3 == pytest.approx(0.5 * 10.0 * 4 / 10, rel=1e-10)


@pytest.mark.parametrize("n_samples", [40, 1000])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_softmax_hessian_is_the_derivative_of_the_gradient(
    alpha, n_samples, monkeypatch
):
    # 1000 rows are summed in blocks of 256 rows, the last one partial.
    monkeypatch.setattr(_softmax, "_HESSIAN_BLOCK_SIZE", 256 * 16)
    rng = np.random.RandomState(0)
    n_features, n_experts = 3, 4
    X = rng.normal(size=(n_samples, n_features)) * [1.0, 5.0, 0.1] + 2.0
    mean, scale = X.mean(axis=0), X.std(axis=0)
    targetsT = rng.dirichlet(np.ones(n_experts), size=n_samples).T.copy()
    scaled = rng.uniform(0.5, 1.5, n_samples)
    scaled /= scaled.sum()
    params = 0.5 * rng.normal(size=(n_features + 1) * n_experts)
    args = (X, mean, scale, targetsT, scaled, alpha)
    probaT = softmax_probaT(params, X, mean, scale, n_experts)
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, alpha)
    step = 1e-6
    numeric = np.empty_like(hessian)
    for j in range(params.size):
        shift = np.zeros_like(params)
        shift[j] = step
        numeric[:, j] = (
            softmax_objective(params + shift, *args)[1]
            - softmax_objective(params - shift, *args)[1]
        ) / (2 * step)
    np.testing.assert_allclose(hessian, numeric, atol=1e-8)
    np.testing.assert_array_equal(hessian, hessian.T)
    assert np.linalg.eigvalsh(hessian).min() > -1e-12


def test_a_poor_step_with_an_old_hessian_does_not_count():
    """Capped at one step (as inside EM), a step taken with an old, wrong
    curvature that does poorly is followed by one with the Hessian
    recomputed; a step with a good old curvature is the only one."""
    hessian = np.diag([1.0, 100.0])

    def objective(x):
        return 0.5 * x @ hessian @ x, hessian @ x

    start = np.array([1.0, 1.0])
    wrong = (np.ones(2), np.eye(2))  # as if the Hessian were the identity
    right = (np.array([1.0, 100.0]), np.eye(2))
    params, n_iter, converged, curvature = newton_minimise(
        objective, start, lambda x: hessian, 1, 1e-12, wrong
    )
    assert n_iter == 2 and converged
    np.testing.assert_allclose(params, 0.0, atol=1e-12)
    np.testing.assert_allclose(curvature[0], [1.0, 100.0])
    params, n_iter, _, curvature = newton_minimise(
        objective, start, lambda x: pytest.fail("recomputed"), 1, 1e-12, right
    )
    assert n_iter == 1 and curvature is right
    np.testing.assert_allclose(params, 0.0, atol=1e-12)
