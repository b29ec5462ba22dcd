"""Pure numerical pieces of the EM algorithm for mixtures of experts.

Nothing here knows about estimators: every function takes arrays and returns
arrays, so each step of EM can be tested (and reasoned about) on its own. The
per-expert log-likelihoods the E-step combines come from the likelihood
families of ``_likelihood.py``.

Notation: ``n`` rows, ``K`` experts, ``w`` the row weights, ``R`` the (n, K)
responsibilities.
"""

import numpy as np

from mixexp._utils import exp_floored


def posterior(log_gate, log_likelihood, overwrite=False):
    """The E-step: responsibilities and per-row log-likelihood of the mixture.

    ``log R_ik = log g_k(x_i) + log p_k(y_i | x_i) - log p(y_i | x_i)``, with
    ``log p(y_i | x_i) = logsumexp_k(log g_k(x_i) + log p_k(y_i | x_i))``,
    shifted by each row's largest term so that nothing overflows. Computed
    on the (K, n) layout: reductions over the experts then run along
    contiguous memory, vectorised over the rows (benchmarks/kernels.py), and
    one ``exp`` of an (n, K) array is made, not two.

    Parameters
    ----------
    log_gate : ndarray of shape (n, K)
        Log gate probabilities ``log g_k(x_i)``.
    log_likelihood : ndarray of shape (n, K)
        Log expert likelihoods ``log p_k(y_i | x_i)``.
    overwrite : bool, default=False
        Whether `log_likelihood` may be overwritten: when it is a transposed
        view of a C-contiguous (K, n) array (as the likelihood families
        return it), the responsibilities are then computed in its memory,
        without allocating another (n, K) array.

    Returns
    -------
    resp : ndarray of shape (n, K)
        Responsibilities; each row sums to 1 (a row of zero probability under
        every expert gives NaN). A transposed view of a C-contiguous (K, n)
        array, so each expert's column is contiguous.
    log_prob : ndarray of shape (n,)
        ``log p(y_i | x_i)``.
    """
    joint = log_likelihood.T
    if overwrite and joint.flags.c_contiguous and joint.flags.writeable:
        joint += log_gate.T
    else:
        joint = np.add(log_gate.T, joint, order="C")
    shift = joint.max(axis=0)
    shift[~np.isfinite(shift)] = 0.0  # a row of -inf: log_prob is -inf
    joint -= shift
    exp_floored(joint, out=joint)
    total = joint.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        joint /= total
        log_prob = np.log(total)
    log_prob += shift
    return joint.T, log_prob


def mean_log_likelihood(log_prob, sample_weight):
    """Weighted mean of the per-row log-likelihood."""
    return float(np.dot(sample_weight, log_prob) / sample_weight.sum())


def expert_shares(resp, sample_weight):
    """Each expert's share of the total row weight under `resp`.

    ``sum_i w_i R_ik / sum_i w_i``: the shares sum to 1 when every row of
    `resp` does, and to less when rows were left out of every expert (a
    capacity's dropped rows).
    """
    return sample_weight @ resp / sample_weight.sum()


def soften(resp, purity=0.8, out=None):
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
    out : ndarray of shape (n, K), default=None
        Receives the result (may be `resp` itself: no (n, K) copy).

    Returns
    -------
    ndarray of shape (n, K)
        Rows sum to 1.
    """
    n_components = resp.shape[1]
    if out is None:
        out = np.empty_like(resp)
    if n_components == 1:
        out[:] = 1.0
        return out
    spread = (1.0 - purity) / (n_components - 1)
    np.multiply(resp, purity - spread, out=out)
    out += spread
    return out


def one_hot(labels, n_components):
    """Responsibilities of one component per row: ``labels`` (n,) as (n, K)."""
    hard = np.zeros((labels.shape[0], n_components))
    hard[np.arange(labels.shape[0]), labels] = 1.0
    return hard


def harden(resp):
    """One-hot responsibilities of each row's most responsible component."""
    hard = np.zeros_like(resp)
    hard[np.arange(resp.shape[0]), np.argmax(resp, axis=1)] = 1.0
    return hard
