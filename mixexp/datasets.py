"""Generators of small problems that a mixture of experts is made for.

They are used in the examples, the notebooks and the tests: each one has a
structure a single simple model cannot capture but a few local experts and a
linear gate can.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["make_regimes", "make_xor"]


@validate_params(
    {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_regimes": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_features": [Interval(numbers.Integral, 1, None, closed="left")],
        "noise": [Interval(numbers.Real, 0, None, closed="left")],
        "return_regimes": ["boolean"],
        "coef": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_regimes(
    n_samples=1000,
    *,
    n_regimes=3,
    n_features=2,
    noise=0.1,
    return_regimes=False,
    coef=False,
    random_state=None,
):
    """Regression data made of linear regimes in regions of the input space.

    Inputs are uniform on ``[-3, 3]^n_features``. ``n_regimes`` centres are
    drawn in ``[-2, 2]^n_features``; a row belongs to the regime of its
    nearest centre (so a linear softmax gate can separate the regimes
    exactly) and its target is that regime's linear function of the inputs,
    with coefficients and intercept drawn from ``N(0, 2^2)``, plus Gaussian
    noise of scale `noise`.

    Parameters
    ----------
    n_samples : int, default=1000
        Number of rows.
    n_regimes : int, default=3
        Number of linear regimes.
    n_features : int, default=2
        Number of input features.
    noise : float, default=0.1
        Standard deviation of the Gaussian noise added to the targets.
    return_regimes : bool, default=False
        If True, also return the regime index of each row.
    coef : bool, default=False
        If True, also return each regime's true intercept and coefficients
        (as :func:`~sklearn.datasets.make_regression` returns its
        coefficients), to compare fitted experts with.
    random_state : int, RandomState instance or None, default=None
        Seed of the random draws.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        Inputs.
    y : ndarray of shape (n_samples,)
        Targets.
    regimes : ndarray of shape (n_samples,)
        Regime of each row; only when `return_regimes` is True.
    coef : ndarray of shape (n_regimes, n_features + 1)
        Each regime's intercept (column 0) and coefficients (the others):
        regime ``r`` is ``y = coef[r, 0] + X @ coef[r, 1:] + noise``. Only
        when `coef` is True.

    See Also
    --------
    make_xor : Two classes in the XOR pattern, for classification.

    Examples
    --------
    >>> from mixexp.datasets import make_regimes
    >>> X, y, regimes = make_regimes(n_samples=5, return_regimes=True, random_state=0)
    >>> X.shape, y.shape, regimes.shape
    ((5, 2), (5,), (5,))
    >>> X, y, true = make_regimes(n_samples=5, noise=0.0, coef=True, random_state=0)
    >>> true.shape  # an intercept and two slopes per regime
    (3, 3)
    """
    rng = check_random_state(random_state)
    centres = rng.uniform(-2.0, 2.0, size=(n_regimes, n_features))
    slopes = rng.normal(scale=2.0, size=(n_regimes, n_features))
    intercept = rng.normal(scale=2.0, size=n_regimes)
    X = rng.uniform(-3.0, 3.0, size=(n_samples, n_features))
    sq_dist = ((X[:, np.newaxis, :] - centres[np.newaxis]) ** 2).sum(axis=2)
    regimes = np.argmin(sq_dist, axis=1)
    y = np.einsum("ij,ij->i", X, slopes[regimes]) + intercept[regimes]
    y += noise * rng.standard_normal(n_samples)
    out = [X, y]
    if return_regimes:
        out.append(regimes)
    if coef:
        out.append(np.column_stack([intercept, slopes]))
    return tuple(out)


@validate_params(
    {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "flip": [Interval(numbers.Real, 0, 1, closed="both")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_xor(n_samples=400, *, flip=0.0, random_state=None):
    """Two classes in the XOR pattern of the four quadrants of a square.

    Inputs are uniform on ``[-1, 1]^2``; the class is 1 where the two
    inputs have the same sign. No single linear classifier does better than
    chance on it, but one linear classifier per quadrant (or per half-plane)
    with a gate that finds the quadrants does.

    Parameters
    ----------
    n_samples : int, default=400
        Number of rows.
    flip : float, default=0.0
        Share of labels flipped at random (label noise).
    random_state : int, RandomState instance or None, default=None
        Seed of the random draws.

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
        Inputs.
    y : ndarray of shape (n_samples,)
        Class labels in {0, 1}.

    See Also
    --------
    make_regimes : Linear regimes in regions of the inputs, for regression.

    Examples
    --------
    >>> from mixexp.datasets import make_xor
    >>> X, y = make_xor(n_samples=4, random_state=0)
    >>> y.tolist() == ((X[:, 0] * X[:, 1]) > 0).astype(int).tolist()
    True
    """
    rng = check_random_state(random_state)
    X = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    flipped = rng.uniform(size=n_samples) < flip
    y[flipped] = 1 - y[flipped]
    return X, y
