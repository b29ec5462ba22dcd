"""Likelihood families of mixexp._likelihood, against independent computations."""

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import norm

from mixexp._likelihood import (
    NOISE_VARIANCE_FLOOR,
    PROBA_FLOOR,
    CategoricalLikelihood,
    GaussianLikelihood,
    align_proba,
    class_log_likelihood,
    gaussian_log_likelihood,
    noise_floor,
    noise_variance,
)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def _random_resp(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


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
# The families behind the likelihood seam


def test_gaussian_family_scale_is_the_floored_weighted_variance(rng):
    y = rng.normal(size=(50, 2)) * [1.0, 10.0]
    predictions = [y + rng.normal(size=y.shape), y.copy()]  # the second is exact
    resp = _random_resp(rng, 50, 2)
    weights = rng.uniform(0.5, 2.0, size=50)
    family = GaussianLikelihood.for_targets(y, weights)
    np.testing.assert_allclose(family.floor, noise_floor(y, weights))
    scale = family.fit_scale(y, predictions, resp, weights)
    assert scale.shape == (2, 2)
    np.testing.assert_allclose(
        scale, noise_variance(y, predictions, resp, weights, family.floor)
    )
    np.testing.assert_array_equal(scale[1], family.floor)  # exact: floored
    np.testing.assert_allclose(
        family.log_likelihood(y, predictions, scale),
        gaussian_log_likelihood(y, predictions, scale),
    )
    assert family.n_parameters(scale) == 4  # one variance per expert and output
    np.testing.assert_array_equal(
        family.variance(predictions[0], scale, 0), np.tile(scale[0], (50, 1))
    )


@pytest.mark.parametrize(("y_ndim", "shape"), [(1, (3,)), (2, (3, 1))])
def test_gaussian_family_reports_noise_std_in_the_shape_of_y(y_ndim, shape):
    scale = np.array([[4.0], [9.0], [0.25]])
    attributes = GaussianLikelihood(np.array([1e-6])).attributes(scale, y_ndim, 3)
    assert list(attributes) == ["likelihood_", "noise_std_", "covariances_"]
    assert attributes["likelihood_"] == "gaussian"
    assert attributes["covariances_"] is scale  # GaussianMixture's (K, m)
    assert attributes["noise_std_"].shape == shape
    np.testing.assert_allclose(attributes["noise_std_"].ravel(), [2.0, 3.0, 0.5])


def test_categorical_family_has_no_scale(rng):
    probas = [_random_resp(rng, 20, 3) for _ in range(2)]
    y = rng.randint(3, size=20)
    family = CategoricalLikelihood()
    scale = family.fit_scale(y, probas, _random_resp(rng, 20, 2), np.ones(20))
    assert scale is None
    assert family.n_parameters(scale) == 0
    assert family.attributes(scale, 1, 2) == {}
    np.testing.assert_allclose(
        family.log_likelihood(y, probas, scale), class_log_likelihood(probas, y)
    )
    with pytest.raises(TypeError, match="no predictive variance"):
        family.variance(probas[0], scale, 0)
