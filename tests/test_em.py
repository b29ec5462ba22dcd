"""Pure EM functions of mixexp._em, checked against independent computations."""

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from mixexp._em import (
    NOISE_VARIANCE_FLOOR,
    PROBA_FLOOR,
    align_proba,
    class_log_likelihood,
    e_step,
    expert_load,
    gaussian_log_likelihood,
    harden,
    mean_log_likelihood,
    noise_floor,
    noise_variance,
    posterior,
    soften,
)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def _random_resp(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


# ---------------------------------------------------------------------------
# e_step and mean_log_likelihood


@pytest.mark.parametrize("n_experts", [1, 2, 5])
def test_e_step_matches_direct_computation(rng, n_experts):
    gate = softmax(rng.normal(size=(20, n_experts)), axis=1)
    lik = np.exp(rng.normal(size=(20, n_experts)))
    log_resp, log_prob = e_step(np.log(gate), np.log(lik))

    joint = gate * lik
    assert log_resp.shape == (20, n_experts)
    assert log_prob.shape == (20,)
    np.testing.assert_allclose(np.exp(log_prob), joint.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        np.exp(log_resp), joint / joint.sum(axis=1, keepdims=True), rtol=1e-12
    )
    np.testing.assert_allclose(np.exp(log_resp).sum(axis=1), 1.0, rtol=1e-12)


def test_e_step_stable_where_naive_exp_underflows():
    log_gate = np.log(np.array([[0.5, 0.5], [0.2, 0.8], [1 / 3, 2 / 3]]))
    log_lik = np.array([[-1e4, -1e4 - 1.0], [-2e4, -2e4], [-1e4, -1e4 - 50.0]])
    joint = log_gate + log_lik
    # The naive computation has nothing left to normalise.
    assert np.all(np.exp(joint) == 0.0)

    log_resp, log_prob = e_step(log_gate, log_lik)

    assert np.all(np.isfinite(log_resp))
    assert np.all(np.isfinite(log_prob))
    resp = np.exp(log_resp)
    # Subtracting numbers near -2e4 leaves an absolute error of a few 1e-12.
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-10)
    # Shifting every joint term of a row by the same constant is exact.
    shifted = np.exp(joint - joint.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        resp, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-10
    )
    expected = joint.max(axis=1) + np.log(shifted.sum(axis=1))
    np.testing.assert_allclose(log_prob, expected, rtol=1e-14)
    # Row 1: equal likelihoods, so the responsibilities are the gate.
    np.testing.assert_allclose(resp[1], [0.2, 0.8])


def test_e_step_responsibility_is_gate_when_likelihoods_are_equal(rng):
    gate = softmax(rng.normal(size=(10, 3)), axis=1)
    lik = np.repeat(rng.normal(size=(10, 1)), 3, axis=1)
    log_resp, log_prob = e_step(np.log(gate), lik)
    np.testing.assert_allclose(np.exp(log_resp), gate, rtol=1e-12)
    np.testing.assert_allclose(log_prob, lik[:, 0], rtol=1e-12)


def test_e_step_zero_gate_probability_gives_zero_responsibility():
    log_gate = np.array([[-np.inf, 0.0], [np.log(0.5), np.log(0.5)]])
    log_lik = np.array([[5.0, -3.0], [-1.0, -2.0]])
    log_resp, log_prob = e_step(log_gate, log_lik)
    resp = np.exp(log_resp)
    np.testing.assert_array_equal(resp[0], [0.0, 1.0])
    assert log_prob[0] == pytest.approx(-3.0)
    expected = 0.5 * np.exp(log_lik[1])
    np.testing.assert_allclose(resp[1], expected / expected.sum())
    assert np.all(np.isfinite(log_prob))


@pytest.mark.parametrize("layout", ["C", "F"])
def test_posterior_is_the_e_step_without_logarithms(rng, layout):
    log_gate = np.log(softmax(rng.normal(size=(30, 4)), axis=1))
    log_lik = rng.normal(scale=50.0, size=(30, 4))  # some rows underflow
    log_lik[0] = [-1e4, -1e4 - 1.0, -np.inf, -1e4 - 700.0]
    log_gate[1, 2] = -np.inf
    log_gate, log_lik = np.asarray(log_gate, order=layout), log_lik
    resp, log_prob = posterior(log_gate, log_lik)
    log_resp, expected_log_prob = e_step(log_gate, log_lik)
    assert resp.shape == (30, 4)
    np.testing.assert_allclose(resp, np.exp(log_resp), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-14)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    assert resp[1, 2] == 0.0 and resp[0, 2] == 0.0
    # Each expert's column is contiguous: the experts' M-step reads columns.
    assert resp[:, 0].flags.c_contiguous


def test_mean_log_likelihood_is_weighted_mean(rng):
    log_prob = rng.normal(size=15)
    weights = rng.uniform(0.5, 2.0, size=15)
    result = mean_log_likelihood(log_prob, weights)
    assert isinstance(result, float)
    assert result == pytest.approx(np.sum(weights * log_prob) / np.sum(weights))
    assert mean_log_likelihood(log_prob, np.ones(15)) == pytest.approx(log_prob.mean())
    # Integer weights equal repeated rows.
    counts = np.array([1, 2, 3] * 5)
    repeated = np.repeat(log_prob, counts)
    assert mean_log_likelihood(log_prob, counts.astype(float)) == pytest.approx(
        repeated.mean()
    )


# ---------------------------------------------------------------------------
# Gaussian likelihood and noise variance


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_gaussian_log_likelihood_matches_scipy(rng, n_outputs):
    n, k = 12, 3
    y = rng.normal(size=(n, n_outputs))
    predictions = [rng.normal(size=(n, n_outputs)) for _ in range(k)]
    variance = rng.uniform(0.1, 3.0, size=(k, n_outputs))

    out = gaussian_log_likelihood(y, predictions, variance)

    assert out.shape == (n, k)
    for j, pred in enumerate(predictions):
        expected = norm.logpdf(y, loc=pred, scale=np.sqrt(variance[j])).sum(axis=1)
        np.testing.assert_allclose(out[:, j], expected, rtol=1e-12)


def test_gaussian_log_likelihood_tiny_variance_stays_finite():
    y = np.array([[0.0], [1.0]])
    out = gaussian_log_likelihood(y, [np.zeros((2, 1))], np.array([[1e-10]]))
    expected = norm.logpdf(y[:, 0], scale=1e-5)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-12)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_noise_variance_is_weighted_mse(rng, n_outputs):
    n, k = 30, 3
    y = rng.normal(size=(n, n_outputs))
    predictions = [y + rng.normal(scale=0.5 * (j + 1), size=y.shape) for j in range(k)]
    resp = _random_resp(rng, n, k)
    weights = rng.uniform(0.5, 2.0, size=n)
    floor = np.full(n_outputs, 1e-8)

    var = noise_variance(y, predictions, resp, weights, floor)

    assert var.shape == (k, n_outputs)
    for j, pred in enumerate(predictions):
        w = weights * resp[:, j]
        expected = np.average((y - pred) ** 2, axis=0, weights=w)
        np.testing.assert_allclose(var[j], expected, rtol=1e-12)


def test_noise_variance_respects_floor(rng):
    y = rng.normal(size=(20, 2))
    exact = [y.copy(), y + 1.0]
    resp = _random_resp(rng, 20, 2)
    floor = np.array([1e-3, 2.0])

    var = noise_variance(y, exact, resp, np.ones(20), floor)

    # Expert 0 is exact: its variance is the floor of each output.
    np.testing.assert_array_equal(var[0], floor)
    # Expert 1 has squared residual 1 everywhere: 1 for output 0, floored to
    # 2 for output 1.
    np.testing.assert_allclose(var[1], [1.0, 2.0])
    assert np.all(var >= floor)


def test_noise_variance_zero_weight_expert_gets_floor(rng):
    y = rng.normal(size=(10, 1))
    predictions = [np.zeros_like(y), np.zeros_like(y)]
    resp = np.column_stack([np.ones(10), np.zeros(10)])
    floor = np.array([0.25])

    var = noise_variance(y, predictions, resp, np.ones(10), floor)

    assert np.all(np.isfinite(var))
    np.testing.assert_allclose(var[0], np.mean(y**2))
    np.testing.assert_array_equal(var[1], floor)


def test_noise_variance_ignores_zero_weight_rows(rng):
    y = rng.normal(size=(10, 1))
    pred = np.zeros_like(y)
    weights = np.r_[np.ones(5), np.zeros(5)]
    var = noise_variance(y, [pred], np.ones((10, 1)), weights, np.array([0.0]))
    np.testing.assert_allclose(var[0], np.mean(y[:5] ** 2))


def test_noise_floor_scales_with_variance_of_y(rng):
    y = rng.normal(size=(50, 2)) * np.array([1.0, 100.0])
    weights = rng.uniform(0.5, 2.0, size=50)

    floor = noise_floor(y, weights)

    mean = np.average(y, axis=0, weights=weights)
    var = np.average((y - mean) ** 2, axis=0, weights=weights)
    np.testing.assert_allclose(floor, NOISE_VARIANCE_FLOOR * var, rtol=1e-12)
    np.testing.assert_allclose(noise_floor(10.0 * y, weights), 100.0 * floor)
    # Shifting y does not change its variance.
    np.testing.assert_allclose(noise_floor(y + 1e3, weights), floor, rtol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.5, 7.0, -300.0])
def test_noise_floor_positive_for_constant_y(value):
    y = np.full((8, 1), value)
    floor = noise_floor(y, np.ones(8))
    assert floor.shape == (1,)
    assert np.all(floor > 0)
    assert floor[0] == pytest.approx(NOISE_VARIANCE_FLOOR * max(value**2, 1.0))


# ---------------------------------------------------------------------------
# Classification likelihood


def test_class_log_likelihood_picks_observed_class(rng):
    n, n_classes = 10, 4
    probas = [softmax(rng.normal(size=(n, n_classes)), axis=1) for _ in range(3)]
    y = rng.randint(n_classes, size=n)

    out = class_log_likelihood(probas, y)

    assert out.shape == (n, 3)
    for k, proba in enumerate(probas):
        expected = [np.log(proba[i, y[i]]) for i in range(n)]
        np.testing.assert_allclose(out[:, k], expected, rtol=1e-12)


def test_class_log_likelihood_floors_zero_probability():
    probas = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.5, 0.5], [0.5, 0.5]])]
    out = class_log_likelihood(probas, np.array([1, 1]))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 0], [np.log(PROBA_FLOOR), 0.0])
    np.testing.assert_allclose(out[:, 1], np.log(0.5))


def test_align_proba_places_columns_and_fills_unseen_classes(rng):
    proba = softmax(rng.normal(size=(6, 2)), axis=1)
    out = align_proba(proba, np.array([3, 1]), n_classes=5)

    assert out.shape == (6, 5)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-12)
    norm_ = 1.0 + 3 * PROBA_FLOOR
    np.testing.assert_allclose(out[:, 3], proba[:, 0] / norm_, rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], proba[:, 1] / norm_, rtol=1e-12)
    for unseen in (0, 2, 4):
        np.testing.assert_allclose(out[:, unseen], PROBA_FLOOR / norm_)


def test_align_proba_identity_when_expert_saw_every_class(rng):
    proba = softmax(rng.normal(size=(5, 3)), axis=1)
    out = align_proba(proba, np.arange(3), n_classes=3)
    np.testing.assert_allclose(out, proba, rtol=1e-10)


def test_align_proba_floors_zero_columns():
    out = align_proba(np.array([[1.0, 0.0]]), np.array([0, 1]), n_classes=2)
    assert out[0, 1] > 0
    assert out[0, 1] == pytest.approx(PROBA_FLOOR, rel=1e-6)
    assert out.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# soften, harden, expert_load


@pytest.mark.parametrize("n_experts", [2, 3, 6])
@pytest.mark.parametrize("purity", [0.6, 0.8, 1.0])
def test_soften_one_hot(n_experts, purity):
    labels = np.arange(2 * n_experts) % n_experts
    hard = np.eye(n_experts)[labels]

    soft = soften(hard, purity=purity)

    assert soft.shape == hard.shape
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(soft[np.arange(len(labels)), labels], purity)
    spread = (1 - purity) / (n_experts - 1)
    np.testing.assert_allclose(soft[hard == 0], spread)
    np.testing.assert_array_equal(np.argmax(soft, axis=1), labels)


def test_soften_soft_rows_keep_summing_to_one(rng):
    resp = _random_resp(rng, 20, 4)
    soft = soften(resp, purity=0.8)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(soft > 0)
    # The mixing is affine: a row is pulled towards uniform, keeping its order.
    np.testing.assert_array_equal(np.argsort(soft, axis=1), np.argsort(resp, axis=1))
    assert np.all(soft.max(axis=1) <= resp.max(axis=1) + 1e-12)


def test_soften_single_expert():
    soft = soften(np.ones((5, 1)), purity=0.8)
    np.testing.assert_array_equal(soft, np.ones((5, 1)))


def test_harden_is_one_hot_of_argmax(rng):
    resp = _random_resp(rng, 15, 4)
    hard = harden(resp)
    assert hard.shape == resp.shape
    np.testing.assert_array_equal(hard.sum(axis=1), 1.0)
    np.testing.assert_array_equal(hard, np.eye(4)[np.argmax(resp, axis=1)])
    # Input is left alone.
    assert not np.array_equal(resp, hard)


def test_harden_then_soften_round_trip(rng):
    resp = _random_resp(rng, 10, 3)
    np.testing.assert_array_equal(harden(soften(harden(resp))), harden(resp))


def test_expert_load_is_weighted_share(rng):
    resp = _random_resp(rng, 25, 3)
    weights = rng.uniform(0.5, 2.0, size=25)
    load = expert_load(resp, weights)
    expected = (weights[:, None] * resp).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(load, expected, rtol=1e-12)
    assert load.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(
        expert_load(np.eye(3)[[0, 0, 1, 2]], np.ones(4)), [0.5, 0.25, 0.25]
    )
