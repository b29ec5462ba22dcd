"""Pure numerics of the softmax gate: objective, Hessian, Newton steps, evidence.

Nothing here holds state: every function takes arrays and returns arrays.
:class:`mixexp.gating.SoftmaxGate` and its fit in progress call them.

Notation: ``n`` rows, ``d`` features, ``K`` experts. The parameters are
``(d + 1, K)``: the intercepts (first row) and the coefficients on the
standardised features ``(X - mean) / scale``, raveled in that order. Arrays
indexed by expert are laid out as (K, n): reductions over the experts then
run along contiguous memory, vectorised over the rows (see
``benchmarks/kernels.py`` for what the layout is worth).
"""

import numpy as np

# Entries per block ((n_features + 1) * n_experts by a block of rows) when the
# softmax gate's Hessian is summed: large enough for fast matrix products,
# small enough for each block to stay in cache (2 MiB).
_HESSIAN_BLOCK_SIZE = 2**18


def softmax_scoresT(coef, X, mean, scale):
    """Linear scores of each expert, less each row's largest, as (K, n).

    `coef` holds the intercepts (first row) and the coefficients on the
    standardised features; the standardisation is folded into them, so X is
    used as it is. The shift keeps ``exp`` from overflowing.
    """
    raw = coef[1:] / scale[:, np.newaxis]
    scores = raw.T @ X.T
    scores += (coef[0] - mean @ raw)[:, np.newaxis]
    scores -= scores.max(axis=0)
    return scores


def softmax_log_probaT(coef, X, mean, scale):
    """Log gate probabilities at `coef` (shaped as the parameters), as (K, n)."""
    scores = softmax_scoresT(coef, X, mean, scale)
    scores -= np.log(np.exp(scores).sum(axis=0))
    return scores


def softmax_evaluation(params, X, mean, scale, n_experts):
    """What the gate's loss needs from its parameters, whatever the targets.

    Returns
    -------
    scores : ndarray of shape (n_experts, n_samples)
        Linear scores less each row's largest (see `softmax_scoresT`).
    probaT : ndarray of shape (n_experts, n_samples)
        Gate probabilities, transposed.
    log_norm : ndarray of shape (n_samples,)
        ``log sum_k exp(scores)``, so that ``scores - log_norm`` are the log
        gate probabilities.
    """
    scores = softmax_scoresT(params.reshape(-1, n_experts), X, mean, scale)
    probaT = np.exp(scores)
    norm = probaT.sum(axis=0)
    probaT /= norm
    return scores, probaT, np.log(norm)


def softmax_objective(
    params, X, mean, scale, targetsT, scaled, penalty_scale, evaluation=None
):
    """Weighted cross-entropy against soft targets plus L2 penalty, and grad.

    Parameters
    ----------
    params : ndarray of shape ((n_features + 1) * n_experts,)
        Intercepts (first row) and coefficients on the standardised
        features ``(X - mean) / scale``, raveled.
    X : ndarray of shape (n_samples, n_features)
        Inputs, not standardised: the standardisation is folded into the
        parameters, so no standardised copy of X is ever made.
    mean, scale : ndarray of shape (n_features,)
    targetsT : ndarray of shape (n_experts, n_samples)
        Soft targets, transposed; columns sum to 1.
    scaled : ndarray of shape (n_samples,)
        Row weights divided by their total, so that the optimiser's
        tolerances do not depend on the number of rows.
    penalty_scale : float
        ``alpha / total weight``.
    evaluation : tuple, default=None
        `softmax_evaluation` at `params`, when it is already known.

    Notes
    -----
    With targets summing to one, ``loss_i = log sum_k exp(z_ik) -
    sum_k T_ik z_ik`` and ``d loss_i / d z_ik = P_ik - T_ik``. Everything
    runs on (n_experts, n_samples) arrays: reductions over the experts are
    then vectorised over the rows, several times faster than over the short
    last axis of (n_samples, n_experts) arrays (benchmarks/kernels.py), and
    this function is called many times per EM step.
    """
    coef = params.reshape(X.shape[1] + 1, targetsT.shape[0])
    if evaluation is None:
        evaluation = softmax_evaluation(params, X, mean, scale, targetsT.shape[0])
    scores, probaT, log_norm = evaluation
    cross = np.einsum("ki,ki->i", targetsT, scores)
    loss = scaled @ (log_norm - cross)
    loss += 0.5 * penalty_scale * np.sum(coef[1:] ** 2)
    residual = probaT - targetsT
    residual *= scaled
    grad = np.empty_like(coef)
    grad[0] = residual.sum(axis=1)
    grad[1:] = (X.T @ residual.T - np.outer(mean, grad[0])) / scale[:, np.newaxis]
    grad[1:] += penalty_scale * coef[1:]
    return loss, grad.ravel()


def softmax_probaT(params, X, mean, scale, n_experts):
    """Gate probabilities at `params`, as an (n_experts, n_samples) array."""
    scores = softmax_scoresT(params.reshape(-1, n_experts), X, mean, scale)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0)
    return scores


def softmax_hessian(X, mean, scale, probaT, scaled, penalty_scale):
    """Hessian of `softmax_objective` in its parameters.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Inputs, not standardised.
    mean, scale : ndarray of shape (n_features,)
    probaT : ndarray of shape (n_experts, n_samples)
        Gate probabilities at the current parameters, transposed.
    scaled : ndarray of shape (n_samples,)
        Row weights divided by their total.
    penalty_scale : float

    Returns
    -------
    ndarray of shape ((n_features + 1) * n_experts, (n_features + 1) * n_experts)
        Positive semi-definite; its null space holds the shifts that add the
        same vector to every expert's parameters (softmax is blind to them).

    Notes
    -----
    With ``z_i`` the standardised row and a leading 1, the Hessian is
    ``sum_i w_i (diag(p_i) - p_i p_i^T) kron z_i z_i^T``. The second term is
    ``Q^T Q`` for the rows ``q_i = sqrt(w_i) z_i kron p_i``: one symmetric
    rank-update per block of rows, a matrix product wide enough to run at
    the machine's speed, on blocks small enough to stay in cache. The first
    term costs nothing more: as each ``p_i`` sums to one, the blocks
    ``(k, l)`` of ``Q^T Q`` summed over ``l`` give expert k's diagonal block
    ``sum_i w_i p_ik z_i z_i^T``, and the Hessian's diagonal block is that
    sum over ``l != k`` alone (no cancellation where ``p_ik`` is near 1).
    """
    n_samples, n_features = X.shape
    n_experts = probaT.shape[0]
    width = n_features + 1
    size = width * n_experts
    # Blocks of rows, transposed: every pass runs along contiguous memory.
    block_rows = min(max(256, _HESSIAN_BLOCK_SIZE // size), n_samples)
    outer = np.zeros((size, size))  # ordered (feature, expert) as the params
    zT = np.empty((width, block_rows))
    zT[0] = 1.0
    weighted = np.empty((n_experts, block_rows))
    rows_q = np.empty((width, n_experts, block_rows))
    root = np.sqrt(scaled)
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        m = stop - start
        z = zT[:, :m]
        np.subtract(X[start:stop].T, mean[:, np.newaxis], out=z[1:])
        z[1:] /= scale[:, np.newaxis]
        np.multiply(probaT[:, start:stop], root[start:stop], out=weighted[:, :m])
        q = np.multiply(z[:, np.newaxis, :], weighted[:, :m], out=rows_q[:, :, :m])
        q = q.reshape(size, m)
        outer += q @ q.T
    outer_blocks = outer.reshape(width, n_experts, width, n_experts)
    others = 1.0 - np.eye(n_experts)
    diagonal = np.einsum("akbl,kl->akb", outer_blocks, others)
    hessian = -outer
    blocks = hessian.reshape(width, n_experts, width, n_experts)
    for k in range(n_experts):
        blocks[:, k, :, k] = diagonal[:, k, :]
    hessian = (hessian + hessian.T) / 2  # exactly symmetric, despite rounding
    return add_penalty(hessian, penalty_scale, n_experts)


def add_penalty(hessian, penalty_scale, n_experts):
    """`hessian` plus the L2 penalty's curvature on the coefficients (a copy)."""
    hessian = hessian.copy()
    penalised = np.arange(n_experts, hessian.shape[0])  # not the intercepts
    hessian[penalised, penalised] += penalty_scale
    return hessian


def newton_minimise(objective, start, hessian, max_iter, tol, curvature=None):
    """Minimise a smooth convex function by Newton-type steps with backtracking.

    The Hessian is costly (a weighted Gram matrix per pair of experts) and,
    inside EM, changes little from one fit to the next. So a step uses the
    last `curvature` it was given or computed (an eigendecomposition of the
    Hessian), and the Hessian is recomputed only when that step does poorly:
    when the line search has to shorten it, or when it cuts the gradient by
    less than a factor of four. Such a poor step is kept but does not count
    towards `max_iter`: the next step, with the Hessian refreshed, does.
    Inside EM, where `max_iter` is 1, an M-step thus always ends with a
    step that did well or used a fresh Hessian. (Counting the poor step
    instead made EM alternate good and poor iterations while the gate's
    boundaries sharpen: on the 5,000-row flexmix benchmark data, 25 EM
    iterations instead of 15 to reach the same log-likelihood.) Every
    accepted step lowers the objective (Armijo's condition), so a capped run
    is a generalised M-step.

    Returns
    -------
    params : ndarray
    n_iter : int
        Steps taken, counted or not.
    converged : bool
        Whether the largest gradient entry fell below `tol` (or the objective
        stopped decreasing within floating-point precision).
    curvature : tuple of ndarray
        The eigendecomposition last used, for the next call.
    """
    params = start
    loss, grad = objective(params)
    fresh = False
    n_iter = n_counted = 0
    while n_counted < max_iter:
        if np.max(np.abs(grad)) < tol:
            return params, n_iter, True, curvature
        if curvature is None:
            curvature = pseudo_inverse_factors(hessian(params))
            fresh = True
        values, vectors = curvature
        if values.size == 0:
            return params, n_iter, True, curvature
        n_iter += 1
        direction = vectors @ ((vectors.T @ grad) / values)
        slope = grad @ direction
        step = 1.0
        while True:
            trial = params - step * direction
            trial_loss, trial_grad = objective(trial)
            if trial_loss <= loss - 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-10:
                if fresh:  # no decrease left within floating-point precision
                    return params, n_iter, True, curvature
                break
        if step < 1e-10:  # a stale Hessian misled the step: refresh it
            n_iter -= 1  # no step was taken
            curvature, fresh = None, False
            continue
        decrease = loss - trial_loss
        poor = step < 1.0 or np.max(np.abs(trial_grad)) > 0.25 * np.max(np.abs(grad))
        params, loss, grad = trial, trial_loss, trial_grad
        if decrease <= 1e-15 * max(abs(loss), 1.0) and fresh:
            return params, n_iter, True, curvature
        if poor and not fresh:
            curvature = None  # and this step does not count
        else:
            n_counted += 1
        fresh = False
    return params, n_iter, np.max(np.abs(grad)) < tol, curvature


def pseudo_inverse_factors(hessian):
    """Eigenvalues and eigenvectors of a PSD matrix, without its null space.

    The softmax is blind to shifts shared by every expert (and, without a
    penalty, to any direction the data do not pin down): those directions
    get no step.
    """
    values, vectors = np.linalg.eigh(hessian)
    keep = values > 1e-12 * max(values[-1], 0.0)
    return values[keep], np.ascontiguousarray(vectors[:, keep])


def evidence_alpha(params, curvature, penalty_scale, n_experts):
    """MacKay's evidence re-estimate of the gate's L2 penalty.

    ``alpha = gamma / ||W||^2``, with ``W`` the coefficients on standardised
    features and ``gamma = sum_j lambda_j / (lambda_j + alpha)`` the number
    of coefficients the data determine well (``lambda_j`` the eigenvalues of
    the cross-entropy's Hessian on the coefficients; MacKay 1992, "The
    evidence framework applied to classification networks").

    Parameters
    ----------
    params : ndarray of shape (n_features + 1, n_experts)
        Intercepts (first row) and coefficients.
    curvature : tuple of ndarray
        ``(values, vectors)``: the kept eigenpairs of the Hessian of
        `softmax_objective` (the weights divided by their total), in the
        parameters' (feature, expert) order.
    penalty_scale : float
        ``alpha / total weight`` in that Hessian.
    n_experts : int

    Returns
    -------
    alpha : float or None
        None when ``W`` is zero.
    gamma : float

    Notes
    -----
    ``gamma = p - alpha trace(A^-1)`` over the coefficients, ``A`` the
    penalised Hessian of the summed cross-entropy with the intercepts
    profiled out; with ``A = total * H`` that trace is ``penalty_scale *
    sum_j ||V_Wj||^2 / h_j`` over the eigenpairs ``(h_j, V_j)`` of ``H``.
    A shift shared by every expert's coefficients has ``h_j = penalty_scale``
    and counts zero, and the directions dropped as null count zero too.
    """
    values, vectors = curvature
    on_coef = vectors[n_experts:]  # the coefficient rows, not the intercepts
    share = np.einsum("ij,ij->j", on_coef, on_coef)
    gamma = float(share @ (1.0 - penalty_scale / values))
    gamma = min(max(gamma, 0.0), float(on_coef.shape[0]))
    norm2 = float(np.sum(params[1:] ** 2))
    if not norm2 > 0:
        return None, gamma
    return gamma / norm2, gamma
