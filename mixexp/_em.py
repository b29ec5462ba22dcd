"""Pure numerical pieces of the EM algorithm for mixtures of experts.

Nothing here knows about estimators: every function takes arrays and returns
arrays, so each step of EM can be tested (and reasoned about) on its own.

Notation: ``n`` rows, ``K`` experts, ``m`` regression outputs, ``C`` classes,
``w`` the row weights, ``R`` the (n, K) responsibilities.
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


def logsumexp_rows(a):
    """``log(sum(exp(a), axis=1))`` for a 2-D array, overflow-safe.

    The same as ``scipy.special.logsumexp(a, axis=1)``, but on a transposed
    copy: reductions over the short last axis of an (n, K) array are five to
    ten times slower in NumPy than over the first axis of a (K, n) one, and
    this runs on every EM iteration.
    """
    work = np.array(a.T, dtype=np.float64, order="C")  # always a copy
    total, shift = _exp_shifted_columns(work)
    with np.errstate(divide="ignore"):
        return np.log(total) + shift


def _exp_shifted_columns(work):
    """``exp(work - shift)`` in place, each column shifted by its maximum.

    `work` is a (K, n) array; returns the column sums of the exponentials
    and the shifts, so that ``log(sums) + shifts`` is each column's
    logsumexp. A column with no finite maximum is not shifted.
    """
    shift = work.max(axis=0)
    shift[~np.isfinite(shift)] = 0.0
    work -= shift
    np.exp(work, out=work)
    return work.sum(axis=0), shift


def e_step(log_gate, log_likelihood):
    """Posterior responsibilities and per-row log-likelihood of the mixture.

    Parameters
    ----------
    log_gate : ndarray of shape (n, K)
        Log gate probabilities ``log g_k(x_i)``.
    log_likelihood : ndarray of shape (n, K)
        Log expert likelihoods ``log p_k(y_i | x_i)``.

    Returns
    -------
    log_resp : ndarray of shape (n, K)
        Log responsibilities; each row's exponentials sum to 1.
    log_prob : ndarray of shape (n,)
        ``log p(y_i | x_i) = logsumexp_k(log g_k + log p_k)``.
    """
    joint = log_gate + log_likelihood
    log_prob = logsumexp_rows(joint)
    joint -= log_prob[:, np.newaxis]
    return joint, log_prob


def posterior(log_gate, log_likelihood):
    """Responsibilities and per-row log-likelihood, as EM's loop needs them.

    The same quantities as `e_step`, without logarithms of the
    responsibilities: one ``exp`` of an (n, K) array per E-step instead of
    two, on the (K, n) layout (see `logsumexp_rows`).

    Parameters
    ----------
    log_gate : ndarray of shape (n, K)
        Log gate probabilities ``log g_k(x_i)``.
    log_likelihood : ndarray of shape (n, K)
        Log expert likelihoods ``log p_k(y_i | x_i)``.

    Returns
    -------
    resp : ndarray of shape (n, K)
        Responsibilities; each row sums to 1. A transposed view of a
        C-contiguous (K, n) array, so each expert's column is contiguous.
    log_prob : ndarray of shape (n,)
        ``log p(y_i | x_i) = logsumexp_k(log g_k + log p_k)``.
    """
    joint = np.add(log_gate.T, log_likelihood.T, order="C")
    total, shift = _exp_shifted_columns(joint)
    with np.errstate(divide="ignore", invalid="ignore"):
        joint /= total
        log_prob = np.log(total)
    log_prob += shift
    return joint.T, log_prob


def mean_log_likelihood(log_prob, sample_weight):
    """Weighted mean of the per-row log-likelihood."""
    return float(np.dot(sample_weight, log_prob) / sample_weight.sum())


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


def soften(resp, purity=0.8):
    """Pull responsibilities towards uniform so no row is exactly hard.

    A one-hot row keeps ``purity`` of its weight on its own component and
    spreads the rest evenly over the others; soft rows are mixed the same
    way. A gate fitted to exactly hard, separable labels runs to infinite
    coefficients, which locks EM in its first partition; softening avoids
    that without hiding the partition.

    Parameters
    ----------
    resp : ndarray of shape (n, K)
        Rows sum to 1.
    purity : float in (1 / K, 1]

    Returns
    -------
    ndarray of shape (n, K)
        Rows sum to 1.
    """
    n_components = resp.shape[1]
    if n_components == 1:
        return np.ones_like(resp)
    spread = (1.0 - purity) / (n_components - 1)
    return (purity - spread) * resp + spread


def harden(resp):
    """One-hot responsibilities of each row's most responsible component."""
    hard = np.zeros_like(resp)
    hard[np.arange(resp.shape[0]), np.argmax(resp, axis=1)] = 1.0
    return hard


def expert_load(resp, sample_weight):
    """Share of the total weight held by each expert; sums to 1."""
    load = sample_weight @ resp
    return load / load.sum()
