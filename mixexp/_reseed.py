"""Re-seeding experts that EM starves: pure functions of the responsibilities.

An expert whose share of the responsibility falls to about zero has
collapsed: it explains nothing, and its M-step would divide by (almost)
zero. It is given rows again: those the mixture explains worst, or, to keep
every expert above ``min_expert_load``, half of the busiest expert's rows.
"""

import numpy as np

from mixexp._em import expert_shares, soften

# An expert whose share of the responsibility falls below this many rows'
# worth of weight has collapsed.
_COLLAPSED_ROWS = 1e-3

MAX_RESEEDS_PER_EXPERT = 3


def collapsed(shares, n_samples):
    """Which experts' shares (see ``expert_shares``) count as collapsed."""
    return shares < _COLLAPSED_ROWS / n_samples


def starving_experts(resp, sample_weight, n_reseeds, min_expert_load):
    """Experts to re-seed: collapsed (or below `min_expert_load`), and not
    yet re-seeded `MAX_RESEEDS_PER_EXPERT` times.

    Returns
    -------
    ndarray of int
        Their indices, in increasing order.
    """
    return starving_of_shares(
        expert_shares(resp, sample_weight), resp.shape[0], n_reseeds, min_expert_load
    )


def starving_of_shares(shares, n_samples, n_reseeds, min_expert_load):
    """`starving_experts` from the experts' shares of the row weight."""
    below = collapsed(shares, n_samples)
    if min_expert_load is not None:
        below |= shares < min_expert_load
    return np.flatnonzero(below & (n_reseeds < MAX_RESEEDS_PER_EXPERT))


def reseed(resp, experts, log_prob, X, sample_weight, min_expert_load):
    """Responsibilities with `experts` given rows again.

    A collapsed expert gets the rows the mixture explains worst: if some
    structure is left unexplained, that is where it is. With
    `min_expert_load`, an expert takes half of the busiest expert's rows
    instead, split along their principal axis, so that the gate can learn
    the split and both experts stay in use. No expert is left empty.

    Parameters
    ----------
    resp : ndarray of shape (n_samples, n_experts)
    experts : ndarray of int
        The experts to re-seed (see `starving_experts`).
    log_prob : ndarray of shape (n_samples,) or None
        The mixture's per-row log-likelihood; None before the first E-step,
        when rows are ranked by how undecided their responsibilities are.
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    min_expert_load : float or None

    Returns
    -------
    resp : ndarray of shape (n_samples, n_experts)
        A new array; the re-seeded rows are softened one-hot rows.
    reseeded : ndarray of int
        The experts that got rows (one with none to take is skipped).
    """
    n_samples, n_experts = resp.shape
    resp = resp.copy(order="K")  # each expert's column kept contiguous
    owners = np.argmax(resp, axis=1)
    reseeded = []
    for k in experts:
        if min_expert_load is None:
            rows = _worst_explained_rows(
                owners, log_prob, resp, max(1, n_samples // n_experts)
            )
        else:
            busiest = np.argmax(
                np.bincount(owners, weights=sample_weight, minlength=n_experts)
            )
            rows = _half_along_principal_axis(
                X, np.flatnonzero(owners == busiest), sample_weight
            )
        if rows.size == 0:
            continue
        owners[rows] = k
        one_hot = np.zeros((rows.size, n_experts))
        one_hot[:, k] = 1.0
        resp[rows] = soften(one_hot)
        reseeded.append(k)
    return resp, np.array(reseeded, dtype=int)


def _worst_explained_rows(owners, log_prob, resp, quota):
    """Up to `quota` rows the mixture explains worst, leaving no expert empty.

    Rows are ranked by the mixture's log-likelihood when there is one, else
    (before the first E-step) by how undecided their responsibilities are.
    """
    score = log_prob if log_prob is not None else resp.max(axis=1)
    counts = np.bincount(owners, minlength=resp.shape[1])
    rows = []
    for i in np.argsort(score, kind="stable"):
        if len(rows) == quota:
            break
        if counts[owners[i]] > 1:
            counts[owners[i]] -= 1
            rows.append(i)
    return np.array(rows, dtype=int)


def _half_along_principal_axis(X, rows, sample_weight):
    """The rows on the far side of the weighted median of their first PC."""
    if rows.size < 2:
        return np.array([], dtype=int)
    w = sample_weight[rows]
    centred = X[rows] - np.average(X[rows], axis=0, weights=w)
    axis = np.linalg.svd(centred * np.sqrt(w)[:, np.newaxis], full_matrices=False)[2][0]
    projection = centred @ axis
    return rows[projection > np.median(projection)]
