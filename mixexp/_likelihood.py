"""Likelihood families: the statistical model of each expert's output.

EM scores each expert by ``log p_k(y | x)``, the log-likelihood of the
observed target under that expert's predictive distribution. The family
says what that distribution is, given the expert's output: its mean
prediction for regression, its class probabilities for classification.
The regression families are those of the generalised linear models whose
scikit-learn estimators fit them by weighted maximum likelihood, so that
each family's M-step is the expert's own weighted ``fit``:

========== ============================ =================== ==============
family     ``p_k(y | x)``, mean ``mu``  scale (M-step)      exact experts
========== ============================ =================== ==============
gaussian   Normal(mu, Sigma_k)          covariance          LinearRegression,
                                                            Ridge
laplace    Laplace(mu, b_k)             mean absolute       QuantileRegressor
                                        residual            (quantile=0.5)
poisson    Poisson(mu)                  none                PoissonRegressor
gamma      Gamma(mean mu, shape 1/phi)  dispersion phi_k    GammaRegressor
========== ============================ =================== ==============

The likelihood seam
-------------------
A family is an object with

``name``
    The family's name, as the estimators' ``likelihood`` parameter says it.
``fit_scale(y, outputs, resp, sample_weight, priors=None)``
    The M-step of the family's scale parameters (a covariance, a
    dispersion; ``None`` for a family without one), given the experts'
    outputs and the (n, K) weights ``resp``; floored where a scale could
    collapse. `priors` (see ``_penalty.py``) lets an expert's Gaussian
    prior enter the Gaussian scale's M-step.
``log_likelihood(y, outputs, scale)``
    The (n, K) per-row, per-expert ``log p_k(y_i | x_i)``.
``n_parameters(scale)``
    How many free parameters the scales add (for ``bic`` and ``aic``).
``variance(output, scale, k)``
    The predictive variance of expert ``k``, per row and output, for
    ``predict(return_std=True)``.
``penalty(priors, scale)``
    The experts' penalties in log-likelihood units, or None when one is
    not known (see ``_penalty.py``).
``attributes(scale, y_ndim, n_experts)``
    The public fitted attributes that report the family and its scales
    (for example ``noise_std_``).

``y`` is the (n, m) array of targets (class indices for a classifier),
``outputs`` a list (or dict) of the K experts' outputs, each (n, m) or
(n, C). A family holds only what it is configured with (a floor); the
scales it fits are returned, never stored. The estimators choose the family
(``_likelihood_for``) and hold no noise maths themselves.
"""

import numpy as np
from scipy.linalg import cho_factor, solve_triangular
from scipy.special import digamma, gammaln, polygamma

# Smallest probability an expert may give to the observed class. It keeps the
# log-likelihood finite when an expert never saw a class (or is certain and
# wrong) without changing any probability a fitted model can resolve.
PROBA_FLOOR = 1e-12

# Relative floor of the noise variance, as a share of the variance of each
# output: noise-free data (or an expert left with a handful of rows) would
# otherwise send a noise scale to zero and the log-likelihood to infinity.
NOISE_VARIANCE_FLOOR = 1e-6

# Smallest mean a Poisson or Gamma expert may predict, relative to the mean
# of y: an expert that does not use a log link (a tree, a linear model under
# an explicit family) may predict zero or less, where these laws have no
# density.
MEAN_FLOOR = 1e-10

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_LOG_2PI = np.log(2.0 * np.pi)


class GaussianLikelihood:
    """Gaussian noise around each expert's prediction.

    Expert ``k`` predicts ``f_k(x)``; ``y`` is ``f_k(x)`` plus Gaussian noise
    of covariance ``Sigma_k``, structured as scikit-learn's
    :class:`~sklearn.mixture.GaussianMixture` structures its components'
    (the scale has the shape of its ``covariances_``):

    - ``"diag"``: independent outputs, one variance per expert and output,
      (K, m), each floored;
    - ``"full"``: one covariance matrix per expert, (K, m, m);
    - ``"tied"``: one covariance matrix shared by the experts, (m, m);
    - ``"spherical"``: one variance per expert, shared by its outputs, (K,),
      floored.

    The full and tied matrices get the floor added to their diagonal, as
    GaussianMixture adds ``reg_covar``; the variances are clipped at it.

    Parameters
    ----------
    floor : ndarray of shape (m,)
        Smallest variance allowed per output (see :func:`noise_floor`).
    covariance_type : {"diag", "full", "tied", "spherical"}, default="diag"
    """

    name = "gaussian"

    def __init__(self, floor, covariance_type="diag"):
        self.floor = floor
        self.covariance_type = covariance_type

    @classmethod
    def for_targets(cls, y, sample_weight, covariance_type="diag"):
        """The family with its floor set from the targets' spread."""
        return cls(noise_floor(y, sample_weight), covariance_type)

    def fit_scale(self, y, outputs, resp, sample_weight, priors=None):
        scatters = _prior_scatters(priors, len(outputs))
        if self.covariance_type == "diag":
            return noise_variance(y, outputs, resp, sample_weight, self.floor, scatters)
        if self.covariance_type == "spherical":
            var = noise_variance(y, outputs, resp, sample_weight, self.floor, scatters)
            return np.maximum(var.mean(axis=1), self.floor.mean())
        totals, scatter = residual_scatter(y, outputs, resp, sample_weight)
        return self.scale_from_scatter(totals, scatter, priors)

    def scale_from_scatter(self, totals, scatter, priors=None):
        """`fit_scale` from each expert's weight total and residual scatter.

        For a fit whose residuals are summed elsewhere (over the chunks of a
        dask array, see ``_chunked.py``); `totals` and `scatter` are as
        :func:`residual_scatter` returns them, and `scatter` is modified.
        """
        for k, prior in enumerate(_prior_scatters(priors, len(totals))):
            if prior is not None:
                scatter[k] += prior
        if self.covariance_type in ("diag", "spherical"):
            variances = np.diagonal(scatter, axis1=1, axis2=2)
            var = np.tile(self.floor, (len(totals), 1))
            given = totals > 0
            var[given] = variances[given] / totals[given, np.newaxis]
            var = np.maximum(var, self.floor)
            if self.covariance_type == "diag":
                return var
            return np.maximum(var.mean(axis=1), self.floor.mean())
        if self.covariance_type == "tied":
            total = totals.sum()
            cov = (
                scatter.sum(axis=0) / total if total > 0 else np.zeros_like(scatter[0])
            )
            return _add_to_diagonal(cov, self.floor)
        cov = np.zeros_like(scatter)
        given = totals > 0
        cov[given] = scatter[given] / totals[given, np.newaxis, np.newaxis]
        return _add_to_diagonal(cov, self.floor)

    def log_likelihood(self, y, outputs, scale):
        if self.covariance_type == "diag":
            return gaussian_log_likelihood(y, outputs, scale)
        if self.covariance_type == "spherical":
            return gaussian_log_likelihood(
                y, outputs, np.repeat(scale[:, np.newaxis], y.shape[1], axis=1)
            )
        return gaussian_full_log_likelihood(y, outputs, self._full(scale, len(outputs)))

    def _full(self, scale, n_experts):
        if self.covariance_type == "tied":
            return np.broadcast_to(scale, (n_experts, *scale.shape))
        return scale

    def _variances(self, scale):
        """The (K, m) marginal variance of each expert's outputs."""
        m = self.floor.shape[0]
        if self.covariance_type == "diag":
            return scale
        if self.covariance_type == "spherical":
            return np.repeat(scale[:, np.newaxis], m, axis=1)
        if self.covariance_type == "tied":
            return np.diagonal(scale)[np.newaxis, :]
        return np.diagonal(scale, axis1=1, axis2=2)

    def n_parameters(self, scale):
        m = self.floor.shape[0]
        per_matrix = m * (m + 1) // 2
        return {
            "diag": scale.size,
            "spherical": scale.size,
            "tied": per_matrix,
            "full": scale.shape[0] * per_matrix,
        }[self.covariance_type]

    def variance(self, output, scale, k):
        variances = self._variances(scale)
        return np.broadcast_to(variances[min(k, variances.shape[0] - 1)], output.shape)

    def penalty(self, priors, scale):
        if priors is None:
            return 0.0
        total = 0.0
        for k, prior in enumerate(priors):
            if prior is None:
                return None
            if isinstance(prior, np.ndarray):  # a Gaussian prior's scatter
                total += 0.5 * _trace_solve(self._covariance_of(scale, k), prior)
            else:
                total += prior
        return total

    def _covariance_of(self, scale, k):
        """Expert `k`'s noise covariance, as an (m, m) matrix."""
        if self.covariance_type == "full":
            return scale[k]
        if self.covariance_type == "tied":
            return scale
        return np.diag(self._variances(scale)[k])

    def attributes(self, scale, y_ndim, n_experts):
        variances = self._variances(scale)
        std = np.sqrt(np.broadcast_to(variances, (n_experts, variances.shape[1])))
        return {
            "likelihood_": self.name,
            "noise_std_": std[:, 0] if y_ndim == 1 else std,
            "covariances_": scale,
        }


class LaplaceLikelihood:
    """Laplace noise around each expert's prediction: least absolute errors.

    ``log p_k(y | x) = -log(2 b_k) - |y - f_k(x)| / b_k``, independent across
    outputs. The scale ``b`` (K, m) is the expert's weighted mean absolute
    residual, floored; the M-step of ``f_k`` is a weighted median
    regression (:class:`~sklearn.linear_model.QuantileRegressor` with
    ``quantile=0.5``).

    Parameters
    ----------
    floor : ndarray of shape (m,)
        Smallest scale allowed per output.
    """

    name = "laplace"

    def __init__(self, floor):
        self.floor = floor

    @classmethod
    def for_targets(cls, y, sample_weight):
        return cls(np.sqrt(noise_floor(y, sample_weight)))

    def fit_scale(self, y, outputs, resp, sample_weight, priors=None):
        scale = np.empty((len(outputs), y.shape[1]))
        for k, pred in enumerate(outputs):
            weights = resp[:, k] * sample_weight
            total = weights.sum()
            scale[k] = weights @ np.abs(y - pred) / total if total > 0 else 0.0
        return np.maximum(scale, self.floor)

    def log_likelihood(self, y, outputs, scale):
        out = np.empty((len(outputs), y.shape[0]))
        for k, pred in enumerate(outputs):
            b = scale[k]
            out[k] = -np.sum(np.abs(y - pred) / b + np.log(2.0 * b), axis=1)
        return out.T

    def n_parameters(self, scale):
        return scale.size

    def variance(self, output, scale, k):
        return np.broadcast_to(2.0 * scale[k] ** 2, output.shape)

    def penalty(self, priors, scale):
        return _penalty_in_log_likelihood_units(priors)

    def attributes(self, scale, y_ndim, n_experts):
        return {"likelihood_": self.name, "dispersion_": _per_output(scale, y_ndim)}


class PoissonLikelihood:
    """Poisson counts around each expert's predicted mean.

    ``log p_k(y | x) = y log mu - mu - log(y!)``, with ``mu = f_k(x)``
    (floored at ``MEAN_FLOOR`` times the mean of y), summed over outputs.
    No scale: the variance is the mean.

    Parameters
    ----------
    mean_floor : float
        Smallest mean an expert may predict.
    """

    name = "poisson"

    def __init__(self, mean_floor):
        self.mean_floor = mean_floor

    @classmethod
    def for_targets(cls, y, sample_weight):
        return cls(_mean_floor(y, sample_weight))

    def fit_scale(self, y, outputs, resp, sample_weight, priors=None):
        return None

    def log_likelihood(self, y, outputs, scale):
        log_factorial = gammaln(y + 1.0)
        out = np.empty((len(outputs), y.shape[0]))
        for k, pred in enumerate(outputs):
            mu = np.maximum(pred, self.mean_floor)
            out[k] = np.sum(y * np.log(mu) - mu - log_factorial, axis=1)
        return out.T

    def n_parameters(self, scale):
        return 0

    def variance(self, output, scale, k):
        return np.maximum(output, self.mean_floor)

    def penalty(self, priors, scale):
        return _penalty_in_log_likelihood_units(priors)

    def attributes(self, scale, y_ndim, n_experts):
        return {"likelihood_": self.name}


class GammaLikelihood:
    """Gamma-distributed positive targets around each expert's mean.

    Expert ``k``'s law has mean ``mu = f_k(x)`` (floored) and shape
    ``1 / phi_k``: ``log p = a log(a y / mu) - a y / mu - log y - lgamma(a)``
    with ``a = 1 / phi_k``, so its variance is ``phi_k mu^2``. The
    dispersion ``phi`` (K, m) is the maximum-likelihood one given the means,
    the root of ``log a - digamma(a) = mean(y / mu - log(y / mu) - 1)``,
    floored.

    Parameters
    ----------
    floor : ndarray of shape (m,)
        Smallest dispersion allowed per output.
    mean_floor : float
        Smallest mean an expert may predict.
    """

    name = "gamma"

    def __init__(self, floor, mean_floor):
        self.floor = floor
        self.mean_floor = mean_floor

    @classmethod
    def for_targets(cls, y, sample_weight):
        mean = np.average(y, axis=0, weights=sample_weight)
        var = np.average((y - mean) ** 2, axis=0, weights=sample_weight)
        relative = np.where(var > 0, var / mean**2, 1.0)
        return cls(NOISE_VARIANCE_FLOOR * relative, _mean_floor(y, sample_weight))

    def fit_scale(self, y, outputs, resp, sample_weight, priors=None):
        deviance = np.zeros((len(outputs), y.shape[1]))
        for k, pred in enumerate(outputs):
            weights = resp[:, k] * sample_weight
            total = weights.sum()
            if total > 0:
                ratio = y / np.maximum(pred, self.mean_floor)
                deviance[k] = weights @ (ratio - np.log(ratio) - 1.0) / total
        return np.maximum(gamma_dispersion(deviance), self.floor)

    def log_likelihood(self, y, outputs, scale):
        log_y = np.log(y)
        out = np.empty((len(outputs), y.shape[0]))
        for k, pred in enumerate(outputs):
            shape = 1.0 / scale[k]
            ratio = y / np.maximum(pred, self.mean_floor)
            out[k] = np.sum(
                shape * (np.log(shape) + np.log(ratio) - ratio)
                - log_y
                - gammaln(shape),
                axis=1,
            )
        return out.T

    def n_parameters(self, scale):
        return scale.size

    def variance(self, output, scale, k):
        return scale[k] * np.maximum(output, self.mean_floor) ** 2

    def penalty(self, priors, scale):
        return _penalty_in_log_likelihood_units(priors)

    def attributes(self, scale, y_ndim, n_experts):
        return {"likelihood_": self.name, "dispersion_": _per_output(scale, y_ndim)}


class CategoricalLikelihood:
    """Each expert's class probabilities, at the observed class.

    The expert's ``predict_proba`` (aligned to the global classes, see
    :func:`align_proba`) is its predictive distribution; there is no scale.
    """

    name = "categorical"

    def fit_scale(self, y, outputs, resp, sample_weight, priors=None):
        return None

    def log_likelihood(self, y, outputs, scale):
        return class_log_likelihood(outputs, y)

    def n_parameters(self, scale):
        return 0

    def variance(self, output, scale, k):
        raise TypeError("A categorical likelihood has no predictive variance.")

    def penalty(self, priors, scale):
        return _penalty_in_log_likelihood_units(priors)

    def attributes(self, scale, y_ndim, n_experts):
        return {}


def _penalty_in_log_likelihood_units(priors):
    """Sum of the experts' penalties; None if one is unknown or Gaussian.

    A Gaussian prior (an ndarray scatter, see ``_penalty.py``) is in the
    units of a Gaussian likelihood: under another family its expert's fit
    does not maximise the family's penalised likelihood.
    """
    if priors is None:
        return 0.0
    if any(p is None or isinstance(p, np.ndarray) for p in priors):
        return None
    return float(sum(priors))


def _prior_scatters(priors, n_experts):
    """The Gaussian priors' scatter matrices (None where an expert has none)."""
    if priors is None:
        return [None] * n_experts
    return [p if isinstance(p, np.ndarray) else None for p in priors]


def _per_output(scale, y_ndim):
    return scale[:, 0] if y_ndim == 1 else scale


def _mean_floor(y, sample_weight):
    mean = np.average(y.mean(axis=1), weights=sample_weight)
    return MEAN_FLOOR * max(float(mean), 1.0)


def _add_to_diagonal(cov, floor):
    cov = np.array(cov, dtype=np.float64)
    diagonal = np.einsum("...ii->...i", cov)
    diagonal += floor
    return cov


def _trace_solve(cov, scatter):
    """``trace(cov^-1 scatter)`` for a symmetric positive definite `cov`."""
    factor = cho_factor(cov, lower=True)
    half = solve_triangular(factor[0], scatter, lower=True)
    return float(np.trace(solve_triangular(factor[0], half.T, lower=True)))


def gamma_dispersion(deviance):
    """Maximum-likelihood Gamma dispersion ``1 / a`` from the mean deviance.

    Solves ``log a - digamma(a) = d`` (``d >= 0`` the weighted mean of
    ``y / mu - log(y / mu) - 1``) by Newton's method on ``log a``, from the
    closed-form approximation ``a = (3 - d + sqrt((d - 3)^2 + 24 d)) / (12 d)``
    (Minka, "Estimating a Gamma distribution", 2002), which is within 1.5%
    of the root; four steps reach machine precision. ``d = 0`` (a perfect
    fit) gives dispersion 0, for the caller to floor.
    """
    d = np.asarray(deviance, dtype=np.float64)
    dispersion = np.zeros_like(d)
    positive = d > 0
    d = d[positive]
    shape = (3.0 - d + np.sqrt((d - 3.0) ** 2 + 24.0 * d)) / (12.0 * d)
    for _ in range(4):
        gap = np.log(shape) - digamma(shape) - d
        slope = 1.0 - shape * polygamma(1, shape)  # d gap / d log(shape)
        shape *= np.exp(-gap / slope)
    dispersion[positive] = 1.0 / shape
    return dispersion


def residual_scatter(y, predictions, resp, sample_weight):
    """Each expert's weighted residual scatter matrix and weight total.

    Returns
    -------
    totals : ndarray of shape (K,)
        ``sum_i w_i r_ik``.
    scatter : ndarray of shape (K, m, m)
        ``sum_i w_i r_ik (y_i - f_k(x_i)) (y_i - f_k(x_i))^T``.
    """
    n_outputs = y.shape[1]
    totals = np.empty(len(predictions))
    scatter = np.empty((len(predictions), n_outputs, n_outputs))
    for k, pred in enumerate(predictions):
        weights = resp[:, k] * sample_weight
        residual = y - pred
        totals[k] = weights.sum()
        scatter[k] = (residual * weights[:, np.newaxis]).T @ residual
    return totals, scatter


def gaussian_full_log_likelihood(y, predictions, covariances):
    """Log density of ``y`` under each expert's multivariate Gaussian law.

    Parameters
    ----------
    y : ndarray of shape (n, m)
    predictions : list of K ndarrays of shape (n, m)
    covariances : ndarray of shape (K, m, m)
        Symmetric positive definite.

    Returns
    -------
    ndarray of shape (n, K)
    """
    n_outputs = y.shape[1]
    out = np.empty((len(predictions), y.shape[0]))
    for k, pred in enumerate(predictions):
        lower = cho_factor(covariances[k], lower=True)[0]
        # Mahalanobis distances through the Cholesky factor, as
        # GaussianMixture computes them: no inverse is formed.
        standardised = solve_triangular(lower, (y - pred).T, lower=True)
        log_det = 2.0 * np.sum(np.log(np.diagonal(lower)))
        out[k] = -0.5 * (
            np.einsum("ji,ji->i", standardised, standardised)
            + log_det
            + n_outputs * _LOG_2PI
        )
    return out.T


def gaussian_log_likelihood(y, predictions, noise_variance):
    """Log density of ``y`` under each expert's Gaussian predictive law.

    Parameters
    ----------
    y : ndarray of shape (n, m)
    predictions : list of K ndarrays of shape (n, m)
        Each expert's mean prediction.
    noise_variance : ndarray of shape (K, m)

    Returns
    -------
    ndarray of shape (n, K)
        ``sum_j log N(y_ij; f_kj(x_i), sigma_kj^2)``; outputs are independent
        given the expert.
    """
    # Filled expert by expert as (K, n), returned as an (n, K) view.
    n_outputs = y.shape[1]
    out = np.empty((len(predictions), y.shape[0]))
    for k, pred in enumerate(predictions):
        var = noise_variance[k]
        if n_outputs == 1:  # no sum over a length-1 axis: one pass less
            sq = np.subtract(y[:, 0], pred[:, 0], out=out[k])
            sq *= sq
            sq *= 1.0 / var[0]
        else:
            sq = np.subtract(y, pred)
            sq **= 2
            sq /= var
            np.sum(sq, axis=1, out=out[k])
        out[k] += np.sum(np.log(var)) + n_outputs * _LOG_2PI
        out[k] *= -0.5
    return out.T


def noise_variance(y, predictions, resp, sample_weight, floor, priors=None):
    """Weighted mean squared residual of each expert, floored (M-step).

    Parameters
    ----------
    y : ndarray of shape (n, m)
    predictions : list of K ndarrays of shape (n, m)
    resp : ndarray of shape (n, K)
    sample_weight : ndarray of shape (n,)
    floor : ndarray of shape (m,)
        Smallest variance allowed per output.
    priors : list of K (m, m) ndarrays or None, default=None
        Each expert's Gaussian-prior scatter (a ridge penalty, see
        ``_penalty.py``), whose diagonal adds to its squared residuals.

    Returns
    -------
    ndarray of shape (K, m)
        The maximiser of the expected complete (penalised) log-likelihood
        over the noise variances, subject to the floor. An expert with no
        weight at all gets the floor.
    """
    var = np.empty((len(predictions), y.shape[1]))
    for k, pred in enumerate(predictions):
        weights = resp[:, k] * sample_weight
        total = weights.sum()
        if total > 0:
            squares = weights @ (y - pred) ** 2
            if priors is not None and priors[k] is not None:
                squares += np.diagonal(priors[k])
            var[k] = squares / total
        else:
            var[k] = floor
    return np.maximum(var, floor)


def noise_floor(y, sample_weight):
    """Per-output variance floor: a small share of the variance of ``y``."""
    mean = np.average(y, axis=0, weights=sample_weight)
    var = np.average((y - mean) ** 2, axis=0, weights=sample_weight)
    return noise_floor_of(mean, var)


def noise_floor_of(mean, var):
    """`noise_floor` from the targets' weighted mean and variance."""
    scale = np.where(var > 0, var, np.maximum(mean**2, 1.0))
    return NOISE_VARIANCE_FLOOR * scale


def class_log_likelihood(probas, y_encoded):
    """Log probability each expert gives to the observed class.

    Parameters
    ----------
    probas : list of K ndarrays of shape (n, C)
        Each expert's class probabilities, columns aligned to the global
        classes.
    y_encoded : ndarray of shape (n,)
        Observed classes as indices into the columns.

    Returns
    -------
    ndarray of shape (n, K)
    """
    rows = np.arange(y_encoded.shape[0])
    picked = np.column_stack([p[rows, y_encoded] for p in probas])
    return np.log(np.maximum(picked, PROBA_FLOOR))


def align_proba(proba, expert_classes, n_classes):
    """Place an expert's ``predict_proba`` columns under the global classes.

    Classes the expert never saw get the floor probability, then each row is
    renormalised, so the result always has ``n_classes`` columns summing to 1.

    Parameters
    ----------
    proba : ndarray of shape (n, len(expert_classes))
    expert_classes : ndarray of int
        Global class indices of the expert's columns.
    n_classes : int

    Returns
    -------
    ndarray of shape (n, n_classes)
    """
    full = np.full((proba.shape[0], n_classes), PROBA_FLOOR)
    full[:, expert_classes] = np.maximum(proba, PROBA_FLOOR)
    full /= full.sum(axis=1, keepdims=True)
    return full
