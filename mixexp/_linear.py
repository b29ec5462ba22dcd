"""The M-step of a linear-regression expert by weighted normal equations.

An EM iteration refits every expert on the same rows with new weights. For
:class:`~sklearn.linear_model.LinearRegression` experts, scikit-learn's fit
solves each weighted least-squares problem by an SVD of the rescaled rows
(LAPACK ``gelsd``), about ten times the cost of forming the ``d x d``
weighted Gram matrix when ``n >> d``, plus validation and copies made anew
at each call. Here the same minimiser comes from the Gram matrix of the
centred, correlation-scaled columns and its eigendecomposition, and the
result is an ordinary fitted ``LinearRegression``.

The normal equations square the condition number of the centred, scaled
columns. Directions whose eigenvalue falls below ``1000 d eps`` times the
largest are treated as rank-deficient and get no weight (the least-squares
solution of minimum norm in the scaled coordinates), so an ill-conditioned
expert gives predictions as accurate as the data pin down, not noise.
"""

import numpy as np
from sklearn.linear_model import LinearRegression

__all__ = ["fit_linear_regression", "is_plain_linear_regression"]

# Relative eigenvalue (per feature) of the scaled Gram matrix below which a
# direction counts as rank-deficient: rounding leaves eigenvalues of about
# eps times the largest where the columns are exactly dependent, so the cut
# sits a thousand times above that, at singular values about 1e-6 of the
# largest.
_RANK_TOLERANCE = 1e3 * np.finfo(float).eps


def is_plain_linear_regression(estimator):
    """Whether `estimator` is a ``LinearRegression`` this module can fit.

    Subclasses may change ``fit``, and ``positive=True`` is a constrained
    problem: both keep scikit-learn's own fit.
    """
    return type(estimator) is LinearRegression and not estimator.positive


def fit_linear_regression(estimator, X, y, sample_weight):
    """Fit `estimator` (a plain LinearRegression) by weighted least squares.

    Parameters
    ----------
    estimator : LinearRegression
        Unfitted; its ``fit_intercept`` is honoured.
    X : ndarray of shape (n_samples, n_features)
        Finite float64 inputs.
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights with a positive sum.

    Returns
    -------
    estimator : LinearRegression
        With ``coef_``, ``intercept_``, ``rank_``, ``singular_`` and
        ``n_features_in_`` set as ``LinearRegression.fit`` sets them.
    """
    n_samples, n_features = X.shape
    weights = np.ones(n_samples) if sample_weight is None else sample_weight
    targets = y.reshape(n_samples, -1)
    root = np.sqrt(weights)[:, np.newaxis]
    if estimator.fit_intercept:
        total = weights.sum()
        x_mean = weights @ X / total
        y_mean = weights @ targets / total
        design = X - x_mean  # the one copy of the rows
    else:
        x_mean = np.zeros(n_features)
        y_mean = np.zeros(targets.shape[1])
        design = X.copy()
    design *= root
    response = (targets - y_mean) * root

    gram = design.T @ design
    moment = design.T @ response
    if estimator.fit_intercept:
        # A constant column centres to rounding noise, not to zero: drop it
        # (the intercept carries it) rather than fit the noise. Its weighted
        # spread is on the Gram matrix's diagonal.
        constant = np.sqrt(np.diag(gram) / total) <= 1e-12 * np.abs(x_mean)
        gram[constant, :] = 0.0
        gram[:, constant] = 0.0
        moment[constant] = 0.0
    scale = np.sqrt(np.diag(gram))
    scale[scale == 0.0] = 1.0
    values, vectors = np.linalg.eigh(gram / np.outer(scale, scale))
    keep = values > _RANK_TOLERANCE * n_features * max(values[-1], 0.0)
    values, vectors = values[keep], vectors[:, keep]
    coef = vectors @ ((vectors.T @ (moment / scale[:, np.newaxis])) / values[:, None])
    coef /= scale[:, np.newaxis]  # (n_features, n_targets)
    intercept = y_mean - x_mean @ coef

    estimator.n_features_in_ = n_features
    estimator.rank_ = int(keep.sum())
    estimator.singular_ = np.sqrt(np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None))
    if y.ndim == 1:
        estimator.coef_ = coef[:, 0]
        estimator.intercept_ = float(intercept[0]) if estimator.fit_intercept else 0.0
    else:
        estimator.coef_ = np.ascontiguousarray(coef.T)
        estimator.intercept_ = intercept if estimator.fit_intercept else 0.0
    return estimator
