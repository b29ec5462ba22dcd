"""Likelihood families: the statistical model of each expert's output.

EM scores each expert by ``log p_k(y | x)``, the log-likelihood of the
observed target under that expert's predictive distribution. The family
says what that distribution is, given the expert's output: its mean
prediction for regression, its class probabilities for classification.

The likelihood seam
-------------------
A family is an object with

``fit_scale(y, outputs, resp, sample_weight)``
    The M-step of the family's scale parameters (a noise variance, a
    dispersion; ``None`` for a family without one), given the experts'
    outputs and the (n, K) weights ``resp``; floored where a scale could
    collapse.
``log_likelihood(y, outputs, scale)``
    The (n, K) per-row, per-expert ``log p_k(y_i | x_i)``.
``n_parameters(scale)``
    How many free parameters the scales add (for ``bic`` and ``aic``).
``variance(output, scale_k)``
    The predictive variance of one expert, per row and output, for
    ``predict(return_std=True)``.
``attributes(scale, y_ndim)``
    The public fitted attributes that report the scales (for example
    ``noise_std_``).

``y`` is the (n, m) array of targets (class indices for a classifier),
``outputs`` a list (or dict) of the K experts' outputs, each (n, m) or
(n, C). A family holds only what it is configured with (a floor); the
scales it fits are returned, never stored. The estimators choose the family
(``_likelihood_for``) and hold no noise maths themselves.
"""

import numpy as np

# Smallest probability an expert may give to the observed class. It keeps the
# log-likelihood finite when an expert never saw a class (or is certain and
# wrong) without changing any probability a fitted model can resolve.
PROBA_FLOOR = 1e-12

# Relative floor of the noise variance, as a share of the variance of each
# output: noise-free data (or an expert left with a handful of rows) would
# otherwise send a noise scale to zero and the log-likelihood to infinity.
NOISE_VARIANCE_FLOOR = 1e-6

_LOG_2PI = np.log(2.0 * np.pi)


class GaussianLikelihood:
    """Independent Gaussian noise around each expert's prediction.

    Expert ``k`` predicts ``f_k(x)``; output ``j`` is ``f_kj(x)`` plus
    Gaussian noise of variance ``sigma_kj^2``, independent across outputs.
    The scale is the (K, m) array of variances, each the expert's weighted
    mean squared residual, floored.

    Parameters
    ----------
    floor : ndarray of shape (m,)
        Smallest variance allowed per output (see :func:`noise_floor`).
    """

    def __init__(self, floor):
        self.floor = floor

    @classmethod
    def for_targets(cls, y, sample_weight):
        """The family with its floor set from the targets' spread."""
        return cls(noise_floor(y, sample_weight))

    def fit_scale(self, y, outputs, resp, sample_weight):
        return noise_variance(y, outputs, resp, sample_weight, self.floor)

    def log_likelihood(self, y, outputs, scale):
        return gaussian_log_likelihood(y, outputs, scale)

    def n_parameters(self, scale):
        return scale.size

    def variance(self, output, scale_k):
        return np.broadcast_to(scale_k, output.shape)

    def attributes(self, scale, y_ndim):
        std = np.sqrt(scale)
        return {"noise_std_": std[:, 0] if y_ndim == 1 else std}


class CategoricalLikelihood:
    """Each expert's class probabilities, at the observed class.

    The expert's ``predict_proba`` (aligned to the global classes, see
    :func:`align_proba`) is its predictive distribution; there is no scale.
    """

    def fit_scale(self, y, outputs, resp, sample_weight):
        return None

    def log_likelihood(self, y, outputs, scale):
        return class_log_likelihood(outputs, y)

    def n_parameters(self, scale):
        return 0

    def variance(self, output, scale_k):
        raise TypeError("A categorical likelihood has no predictive variance.")

    def attributes(self, scale, y_ndim):
        return {}


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


def noise_variance(y, predictions, resp, sample_weight, floor):
    """Weighted mean squared residual of each expert, floored (M-step).

    Parameters
    ----------
    y : ndarray of shape (n, m)
    predictions : list of K ndarrays of shape (n, m)
    resp : ndarray of shape (n, K)
    sample_weight : ndarray of shape (n,)
    floor : ndarray of shape (m,)
        Smallest variance allowed per output.

    Returns
    -------
    ndarray of shape (K, m)
        The maximiser of the expected complete log-likelihood over the noise
        variances, subject to the floor. An expert with no weight at all gets
        the floor.
    """
    var = np.empty((len(predictions), y.shape[1]))
    for k, pred in enumerate(predictions):
        weights = resp[:, k] * sample_weight
        total = weights.sum()
        if total > 0:
            var[k] = weights @ (y - pred) ** 2 / total
        else:
            var[k] = floor
    return np.maximum(var, floor)


def noise_floor(y, sample_weight):
    """Per-output variance floor: a small share of the variance of ``y``."""
    mean = np.average(y, axis=0, weights=sample_weight)
    var = np.average((y - mean) ** 2, axis=0, weights=sample_weight)
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
