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


# ---------------------------------------------------------------------------
# Many experts: the Hessian's action, its experts' blocks, truncated Newton


def _gate_problem(seed=0, n_samples=700, n_features=3, n_experts=5):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n_samples, n_features)) * [1.0, 4.0, 0.2] + 1.5
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scaled = rng.uniform(0.5, 1.5, n_samples)
    scaled /= scaled.sum()
    params = rng.normal(size=(n_features + 1) * n_experts)
    probaT = softmax_probaT(params, X, mean, scale, n_experts)
    targetsT = rng.dirichlet(np.ones(n_experts), size=n_samples).T.copy()
    return X, mean, scale, scaled, params, probaT, targetsT


@pytest.mark.parametrize("penalty_scale", [0.0, 0.01])
def test_hessian_vector_is_the_hessian_times_the_direction(penalty_scale):
    X, mean, scale, scaled, params, probaT, _ = _gate_problem()
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, penalty_scale)
    rng = np.random.RandomState(1)
    for _ in range(3):
        direction = rng.normal(size=params.size)
        np.testing.assert_allclose(
            _softmax.hessian_vector(
                direction,
                _softmax.standardised_rowsT(X, mean, scale),
                probaT,
                scaled,
                penalty_scale,
            ),
            hessian @ direction,
            rtol=1e-10,
            atol=1e-13,
        )
        single = _softmax.hessian_vector(
            direction,
            _softmax.standardised_rowsT(X, mean, scale).astype(np.float32),
            probaT.astype(np.float32),
            scaled.astype(np.float32),
            penalty_scale,
        )
        np.testing.assert_allclose(single, hessian @ direction, rtol=1e-4, atol=1e-6)


def test_log_probabilities_summed_over_blocks_of_rows(monkeypatch):
    from scipy.special import log_softmax

    monkeypatch.setattr(_softmax, "_HESSIAN_BLOCK_SIZE", 5 * 300)  # blocks
    X, mean, scale, _, params, _, _ = _gate_problem()
    coef = params.reshape(-1, 5)
    scores = (X - mean) / scale @ coef[1:] + coef[0]
    np.testing.assert_allclose(
        _softmax.softmax_log_probaT(coef, X, mean, scale),
        log_softmax(scores, axis=1).T,
        rtol=1e-12,
        atol=1e-12,
    )


def test_hessian_vector_takes_one_weight_for_rows_alike():
    X, mean, scale, _, params, probaT, _ = _gate_problem()
    scaled = np.full(X.shape[0], 1.0 / X.shape[0])
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, 0.01)
    direction = np.random.RandomState(2).normal(size=params.size)
    zT = _softmax.standardised_rowsT(X, mean, scale)
    np.testing.assert_allclose(
        _softmax.hessian_vector(direction, zT, probaT, scaled[0], 0.01),
        hessian @ direction,
        rtol=1e-10,
        atol=1e-13,
    )


def test_block_curvature_is_each_experts_diagonal_block(monkeypatch):
    # 700 rows in blocks of about 90 rows: the last one partial.
    monkeypatch.setattr(_softmax, "_HESSIAN_BLOCK_SIZE", 900)
    X, mean, scale, scaled, _, probaT, _ = _gate_problem()
    n_experts, width = probaT.shape[0], X.shape[1] + 1
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, 0.0)
    blocks = hessian.reshape(width, n_experts, width, n_experts)
    expected = np.stack([blocks[:, k, :, k] for k in range(n_experts)])
    got = _softmax.block_curvature(
        _softmax.standardised_rowsT(X, mean, scale), probaT, scaled
    )
    # Single-precision products: agreement to float32's precision.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got, np.swapaxes(got, 1, 2))


def test_block_direction_solves_each_experts_block():
    X, mean, scale, scaled, params, probaT, _ = _gate_problem()
    n_experts, width = probaT.shape[0], X.shape[1] + 1
    blocks = _softmax.block_curvature(
        _softmax.standardised_rowsT(X, mean, scale), probaT, scaled
    )
    penalty_scale = 0.01
    rng = np.random.RandomState(2)
    grad = rng.normal(size=params.size)
    step = _softmax.block_direction(
        grad, _softmax.block_factors(blocks, penalty_scale)
    ).reshape(width, n_experts)
    G = grad.reshape(width, n_experts)
    penalty = np.diag(np.r_[0.0, np.full(width - 1, penalty_scale)])
    for k in range(n_experts):
        np.testing.assert_allclose(
            (blocks[k] + penalty) @ step[:, k], G[:, k], rtol=1e-9, atol=1e-12
        )


def test_truncated_newton_direction_solves_the_newton_system():
    """With products enough, conjugate gradients give the Newton step; with
    one, a descent direction."""
    X, mean, scale, scaled, params, probaT, targetsT = _gate_problem()
    penalty_scale = 0.01
    _, grad = softmax_objective(params, X, mean, scale, targetsT, scaled, penalty_scale)
    blocks = _softmax.block_curvature(
        _softmax.standardised_rowsT(X, mean, scale), probaT, scaled
    )
    factors = _softmax.block_factors(blocks, penalty_scale)
    zT = _softmax.standardised_rowsT(X, mean, scale)
    args = (zT, probaT, scaled, penalty_scale, factors)
    step, _ = _softmax.truncated_newton_direction(grad, *args, 200, 1e-6)
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, penalty_scale)
    # Single-precision products: the step solves the system to about
    # float32's precision.
    np.testing.assert_allclose(hessian @ step, grad, rtol=1e-4, atol=1e-6)
    short, solved = _softmax.truncated_newton_direction(grad, *args, 1, 1e-12)
    assert not solved
    assert grad @ short > 0
    assert not np.allclose(short, step)


def _exact_and_block_evidence(X, mean, scale, scaled, probaT, params, penalty):
    """`evidence_alpha` from the Hessian, and `block_evidence_alpha`."""
    n_experts = probaT.shape[0]
    hessian = softmax_hessian(X, mean, scale, probaT, scaled, penalty)
    exact = _softmax.evidence_alpha(
        params, _softmax.pseudo_inverse_factors(hessian), penalty, n_experts
    )
    blocks = _softmax.block_curvature(
        _softmax.standardised_rowsT(X, mean, scale), probaT, scaled
    )
    return exact, _softmax.block_evidence_alpha(params, blocks, penalty)


@pytest.mark.parametrize("penalty_scale", [1e-4, 0.05])
def test_block_evidence_is_exact_for_two_experts(penalty_scale):
    """With two experts the Hessian is [[A, -A], [-A, A]] kron-wise, with
    the eigenvalues of 2 A on its non-null directions: the block model's."""
    X, mean, scale, scaled, _, probaT, _ = _gate_problem(n_experts=2)
    rng = np.random.RandomState(3)
    params = rng.normal(size=(X.shape[1] + 1, 2))
    exact, modelled = _exact_and_block_evidence(
        X, mean, scale, scaled, probaT, params, penalty_scale
    )
    assert 0 < modelled[1] <= X.shape[1]
    np.testing.assert_allclose(modelled, exact, rtol=1e-5)


def test_block_evidence_is_exact_for_a_uniform_gate():
    X, mean, scale, scaled, _, _, _ = _gate_problem(n_experts=4)
    probaT = np.full((4, X.shape[0]), 0.25)
    rng = np.random.RandomState(4)
    params = rng.normal(size=(X.shape[1] + 1, 4))
    exact, modelled = _exact_and_block_evidence(
        X, mean, scale, scaled, probaT, params, 0.02
    )
    np.testing.assert_allclose(modelled, exact, rtol=1e-5)


def test_scores_from_the_standardised_rows_equal_the_folded_ones():
    X, mean, scale, _, params, _, _ = _gate_problem()
    coef = params.reshape(X.shape[1] + 1, -1)
    np.testing.assert_allclose(
        _softmax.softmax_scoresT(
            coef, X, mean, scale, _softmax.standardised_rowsT(X, mean, scale)
        ),
        _softmax.softmax_scoresT(coef, X, mean, scale),
        atol=1e-12,
    )


@pytest.mark.parametrize(
    "n_samples, step", [(100, 1), (39_999, 1), (40_000, 2), (100_000, 5)]
)
def test_hessian_sample_takes_every_step_th_row(n_samples, step):
    rows = _softmax.hessian_sample(n_samples)
    assert rows.step == step
    assert np.arange(n_samples)[rows].size >= min(n_samples, 20_000)


def test_sampled_hessian_is_close_to_the_hessian_of_all_rows():
    rng = np.random.default_rng(0)
    n_samples, n_features, n_experts = 100_000, 3, 4
    X = rng.normal(size=(n_samples, n_features))
    params = rng.normal(size=(n_features + 1) * n_experts)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    probaT = _softmax.softmax_probaT(params, X, mean, scale, n_experts)
    weights = rng.uniform(0.5, 1.5, size=n_samples)
    full = softmax_hessian(X, mean, scale, probaT, weights / weights.sum(), 0.0)
    rows = _softmax.hessian_sample(n_samples)
    sampled = softmax_hessian(
        X[rows], mean, scale, probaT[:, rows], weights[rows] / weights[rows].sum(), 0.0
    )
    error = np.linalg.norm(sampled - full) / np.linalg.norm(full)
    assert error < 0.03
