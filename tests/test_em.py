"""Pure EM functions of mixexp._em, checked against independent computations."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from mixexp._em import expert_shares, harden, mean_log_likelihood, posterior, soften


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def _random_resp(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


# ---------------------------------------------------------------------------
# posterior (the E-step) and mean_log_likelihood


@pytest.mark.parametrize("n_experts", [1, 2, 5])
def test_posterior_matches_direct_computation(rng, n_experts):
    gate = softmax(rng.normal(size=(20, n_experts)), axis=1)
    lik = np.exp(rng.normal(size=(20, n_experts)))
    resp, log_prob = posterior(np.log(gate), np.log(lik))

    joint = gate * lik
    assert resp.shape == (20, n_experts)
    assert log_prob.shape == (20,)
    np.testing.assert_allclose(np.exp(log_prob), joint.sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(
        resp, joint / joint.sum(axis=1, keepdims=True), rtol=1e-12
    )
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("layout", ["transposed", "rows"])
def test_posterior_may_overwrite_the_likelihoods(rng, layout):
    """With overwrite=True the responsibilities take the likelihoods' memory
    where its layout allows (no other (n, K) array), and are the same."""
    log_gate = np.log(softmax(rng.normal(size=(30, 4)), axis=1))
    log_lik = (
        rng.normal(size=(4, 30)).T
        if layout == "transposed"
        else rng.normal(size=(30, 4))
    )
    expected = posterior(log_gate, log_lik.copy(order="K"))
    resp, log_prob = posterior(log_gate, log_lik, overwrite=True)
    np.testing.assert_array_equal(resp, expected[0])
    np.testing.assert_array_equal(log_prob, expected[1])
    assert np.shares_memory(resp, log_lik) == (layout == "transposed")


def test_posterior_stable_where_naive_exp_underflows():
    log_gate = np.log(np.array([[0.5, 0.5], [0.2, 0.8], [1 / 3, 2 / 3]]))
    log_lik = np.array([[-1e4, -1e4 - 1.0], [-2e4, -2e4], [-1e4, -1e4 - 50.0]])
    joint = log_gate + log_lik
    # The naive computation has nothing left to normalise.
    assert np.all(np.exp(joint) == 0.0)

    resp, log_prob = posterior(log_gate, log_lik)

    assert np.all(np.isfinite(resp))
    assert np.all(np.isfinite(log_prob))
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


def test_posterior_responsibility_is_gate_when_likelihoods_are_equal(rng):
    gate = softmax(rng.normal(size=(10, 3)), axis=1)
    lik = np.repeat(rng.normal(size=(10, 1)), 3, axis=1)
    resp, log_prob = posterior(np.log(gate), lik)
    np.testing.assert_allclose(resp, gate, rtol=1e-12)
    np.testing.assert_allclose(log_prob, lik[:, 0], rtol=1e-12)


def test_posterior_zero_gate_probability_gives_zero_responsibility():
    log_gate = np.array([[-np.inf, 0.0], [np.log(0.5), np.log(0.5)]])
    log_lik = np.array([[5.0, -3.0], [-1.0, -2.0]])
    resp, log_prob = posterior(log_gate, log_lik)
    np.testing.assert_array_equal(resp[0], [0.0, 1.0])
    assert log_prob[0] == pytest.approx(-3.0)
    expected = 0.5 * np.exp(log_lik[1])
    np.testing.assert_allclose(resp[1], expected / expected.sum())
    assert np.all(np.isfinite(log_prob))


@pytest.mark.parametrize("layout", ["C", "F"])
def test_posterior_equals_scipy_logsumexp_on_any_layout(rng, layout):
    log_gate = np.log(softmax(rng.normal(size=(30, 4)), axis=1))
    log_lik = rng.normal(scale=50.0, size=(30, 4))  # some rows underflow
    log_lik[0] = [-1e4, -1e4 - 1.0, -np.inf, -1e4 - 700.0]
    log_gate[1, 2] = -np.inf
    log_gate = np.asarray(log_gate, order=layout)
    resp, log_prob = posterior(log_gate, log_lik)
    expected_log_prob = logsumexp(log_gate + log_lik, axis=1)
    assert resp.shape == (30, 4)
    np.testing.assert_allclose(log_prob, expected_log_prob, rtol=1e-14)
    np.testing.assert_allclose(
        resp,
        np.exp(log_gate + log_lik - expected_log_prob[:, np.newaxis]),
        rtol=1e-12,
        atol=1e-300,
    )
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
# soften, harden, expert_shares


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


def test_expert_shares_are_weighted_shares(rng):
    resp = _random_resp(rng, 25, 3)
    weights = rng.uniform(0.5, 2.0, size=25)
    shares = expert_shares(resp, weights)
    expected = (weights[:, None] * resp).sum(axis=0) / weights.sum()
    np.testing.assert_allclose(shares, expected, rtol=1e-12)
    assert shares.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(
        expert_shares(np.eye(3)[[0, 0, 1, 2]], np.ones(4)), [0.5, 0.25, 0.25]
    )
    # A row left out of every expert (a capacity's dropped row) counts in
    # the total weight, not in any share.
    dropped = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(expert_shares(dropped, np.ones(4)), [0.25, 0.5])
