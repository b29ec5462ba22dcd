"""Generators of mixexp.datasets."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from mixexp.datasets import make_regimes, make_xor

# ---------------------------------------------------------------------------
# make_regimes


@pytest.mark.parametrize(
    ("n_samples", "n_regimes", "n_features"), [(1, 1, 1), (50, 3, 2), (80, 4, 5)]
)
def test_make_regimes_shapes(n_samples, n_regimes, n_features):
    X, y = make_regimes(
        n_samples, n_regimes=n_regimes, n_features=n_features, random_state=0
    )
    assert X.shape == (n_samples, n_features)
    assert y.shape == (n_samples,)
    assert X.dtype == np.float64
    assert y.dtype == np.float64

    X2, y2, regimes = make_regimes(
        n_samples,
        n_regimes=n_regimes,
        n_features=n_features,
        return_regimes=True,
        random_state=0,
    )
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    assert regimes.shape == (n_samples,)
    assert np.issubdtype(regimes.dtype, np.integer)
    assert regimes.min() >= 0
    assert regimes.max() < n_regimes


def test_make_regimes_returns_the_coefficients_that_make_y():
    X, y, regimes, coef = make_regimes(
        300,
        n_regimes=4,
        n_features=3,
        noise=0.0,
        return_regimes=True,
        coef=True,
        random_state=2,
    )
    assert coef.shape == (4, 4)
    np.testing.assert_allclose(
        y, coef[regimes, 0] + np.einsum("ij,ij->i", X, coef[regimes, 1:])
    )
    # The same draws as without coef=True.
    X2, y2 = make_regimes(300, n_regimes=4, n_features=3, noise=0.0, random_state=2)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


def test_make_regimes_inputs_in_range():
    X, _ = make_regimes(500, n_features=3, random_state=1)
    assert X.min() >= -3.0
    assert X.max() <= 3.0
    # Uniform inputs spread over the whole cube.
    assert X.min() < -2.9
    assert X.max() > 2.9


def test_make_regimes_reproducible():
    first = make_regimes(60, return_regimes=True, random_state=3)
    again = make_regimes(60, return_regimes=True, random_state=3)
    from_rng = make_regimes(
        60, return_regimes=True, random_state=np.random.RandomState(3)
    )
    other = make_regimes(60, return_regimes=True, random_state=4)
    for a, b, c in zip(first, again, from_rng, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.allclose(first[0], other[0])


@pytest.mark.parametrize("n_features", [1, 2, 3])
def test_make_regimes_each_regime_is_exactly_linear(n_features):
    X, y, regimes = make_regimes(
        300,
        n_regimes=3,
        n_features=n_features,
        noise=0.0,
        return_regimes=True,
        random_state=0,
    )
    for r in np.unique(regimes):
        rows = regimes == r
        assert rows.sum() > n_features + 1
        fit = LinearRegression().fit(X[rows], y[rows])
        assert fit.score(X[rows], y[rows]) == pytest.approx(1.0, abs=1e-10)
    # ...but one line for all rows is not.
    assert LinearRegression().fit(X, y).score(X, y) < 0.99


def test_make_regimes_noise_has_the_given_scale():
    X, y, regimes = make_regimes(
        4000, n_regimes=2, noise=0.5, return_regimes=True, random_state=0
    )
    for r in np.unique(regimes):
        rows = regimes == r
        fit = LinearRegression().fit(X[rows], y[rows])
        residual = y[rows] - fit.predict(X[rows])
        assert residual.std() == pytest.approx(0.5, rel=0.05)


def test_make_regimes_regimes_are_nearest_centre_cells():
    """A linear softmax gate separates the regimes exactly (Voronoi cells)."""
    X, _, regimes = make_regimes(400, n_regimes=3, return_regimes=True, random_state=2)
    assert len(np.unique(regimes)) == 3
    clf = LogisticRegression(C=1e6, max_iter=5000).fit(X, regimes)
    assert clf.score(X, regimes) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_samples": 2.5}, "n_samples"),
        ({"n_regimes": 0}, "n_regimes"),
        ({"n_features": 0}, "n_features"),
        ({"noise": -0.1}, "noise"),
        ({"return_regimes": "yes"}, "return_regimes"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_make_regimes_invalid_parameters(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        make_regimes(**kwargs)


# ---------------------------------------------------------------------------
# make_xor


def test_make_xor_shapes_and_labels():
    X, y = make_xor(100, random_state=0)
    assert X.shape == (100, 2)
    assert y.shape == (100,)
    assert set(np.unique(y)) == {0, 1}
    assert X.min() >= -1.0
    assert X.max() <= 1.0


def test_make_xor_sign_rule_without_noise():
    X, y = make_xor(300, flip=0.0, random_state=1)
    same_sign = (X[:, 0] > 0) == (X[:, 1] > 0)
    np.testing.assert_array_equal(y, same_sign.astype(int))
    # Roughly balanced, and no linear classifier does much better than chance.
    assert 0.4 < y.mean() < 0.6
    assert LogisticRegression().fit(X, y).score(X, y) < 0.7


def test_make_xor_flip_one_inverts_labels():
    X, y = make_xor(200, flip=1.0, random_state=2)
    X0, y0 = make_xor(200, flip=0.0, random_state=2)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, 1 - y0)


def test_make_xor_flip_share():
    X, y = make_xor(5000, flip=0.2, random_state=3)
    clean = (X[:, 0] * X[:, 1] > 0).astype(int)
    assert np.mean(y != clean) == pytest.approx(0.2, abs=0.02)


def test_make_xor_reproducible():
    a = make_xor(50, flip=0.3, random_state=5)
    b = make_xor(50, flip=0.3, random_state=np.random.RandomState(5))
    c = make_xor(50, flip=0.3, random_state=6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_samples": 0}, "n_samples"),
        ({"flip": -0.1}, "flip"),
        ({"flip": 1.5}, "flip"),
        ({"random_state": 1.5}, "random_state"),
    ],
)
def test_make_xor_invalid_parameters(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter"):
        make_xor(**kwargs)
