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
from scipy.sparse.linalg import LinearOperator
from sklearn.utils.fixes import _sparse_linalg_cg

from mixexp._utils import exp_floored, pair_products, symmetric_from_pairs

# Entries per block ((n_features + 1) * n_experts by a block of rows) when the
# softmax gate's Hessian is summed: large enough for fast matrix products,
# small enough for each block to stay in cache (2 MiB).
_HESSIAN_BLOCK_SIZE = 2**18

# The exact Newton steps' Hessian is summed over a systematic sample of
# about this many rows (every step-th row, the step n // this, so at least
# this many rows, and all of them below twice this many): its cost, n (K (d +
# 1))^2 / 2, would otherwise grow with n, and the Hessian only shapes a step
# that a line search on the exact objective then checks (subsampled Newton
# methods: Byrd, Chin, Neveitt and Nocedal 2011). benchmarks/kernels.py,
# item 11: default fits to convergence on 100,000 rows with 8 and 16 experts
# ran 1.3 and 1.6 times faster with 20,000 rows than with all of them, in as
# many iterations or fewer, to a lower_bound_ within 4e-4 of theirs (the
# paths differ; 10,000 rows ended higher at 16 experts).
_HESSIAN_SAMPLE_ROWS = 20_000


# Gate probabilities below this count as zero in the products of the gate's
# curvature (`softmax_hessian`, `block_curvature`, the Hessian-vector
# products): their terms there would be about 1e-20 of the others, and
# products of such numbers fall to subnormal numbers, on which arithmetic
# runs many times slower.
_NEGLIGIBLE_PROBABILITY = 1e-20


def _block_rows(width, n_samples):
    """Rows of a block whose (width, rows) arrays hold about
    `_HESSIAN_BLOCK_SIZE` entries (at least 256 rows, at most all)."""
    return min(max(256, _HESSIAN_BLOCK_SIZE // width), n_samples)


def softmax_scoresT(coef, X, mean, scale, zT=None, out=None):
    """Linear scores of each expert, less each row's largest, as (K, n).

    `coef` holds the intercepts (first row) and the coefficients on the
    standardised features; the standardisation is folded into them, so X is
    used as it is, or the standardised rows `zT` (`standardised_rowsT`)
    when a fit has made them. The shift keeps ``exp`` from overflowing.
    `out`, a C-contiguous (K, n) array, receives the scores.
    """
    if zT is not None:
        scores = np.matmul(np.ascontiguousarray(coef.T), zT, out=out)
    else:
        raw = coef[1:] / scale[:, np.newaxis]
        scores = np.matmul(raw.T, X.T, out=out)
        scores += (coef[0] - mean @ raw)[:, np.newaxis]
    scores -= scores.max(axis=0)
    return scores


def softmax_log_probaT(coef, X, mean, scale):
    """Log gate probabilities at `coef` (shaped as the parameters), as (K, n)."""
    scores = softmax_scoresT(coef, X, mean, scale)
    scores -= _log_sum_exp(scores)
    return scores


def _log_sum_exp(scores):
    """``log sum_k exp(scores)`` for (K, n) `scores`, their exponentials
    made a block of rows at a time: no (K, n) temporary to allocate."""
    n_experts, n_samples = scores.shape
    block_rows = _block_rows(n_experts, n_samples)
    exps = np.empty((n_experts, block_rows))
    log_norm = np.empty(n_samples)
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        block = exp_floored(scores[:, start:stop], out=exps[:, : stop - start])
        np.log(block.sum(axis=0), out=log_norm[start:stop])
    return log_norm


def softmax_evaluation(params, X, mean, scale, n_experts, zT=None, out=None):
    """What the gate's loss needs from its parameters, whatever the targets.

    `out`, two C-contiguous (K, n) arrays (an evaluation no longer needed),
    receives the scores and the probabilities: large arrays allocated anew
    at every evaluation cost their first touch of every page.

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
    scores_out, proba_out = (None, None) if out is None else out
    scores = softmax_scoresT(
        params.reshape(-1, n_experts), X, mean, scale, zT, scores_out
    )
    probaT = exp_floored(scores, out=proba_out)
    norm = probaT.sum(axis=0)
    probaT /= norm
    return scores, probaT, np.log(norm)


def softmax_objective(
    params,
    X,
    mean,
    scale,
    targetsT,
    scaled,
    penalty_scale,
    evaluation=None,
    gradient=True,
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
    gradient : bool, default=True
        Whether to compute the gradient (None in its place otherwise): a
        line search's last trial needs only the loss.

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
    if not gradient:
        return loss, None
    # Summed over blocks of rows: no (K, n) array of residuals is allocated.
    n_samples, n_experts = X.shape[0], targetsT.shape[0]
    block_rows = _block_rows(n_experts, n_samples)
    residual = np.empty((n_experts, block_rows))
    grad = np.zeros_like(coef)
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        r = np.subtract(
            probaT[:, start:stop],
            targetsT[:, start:stop],
            out=residual[:, : stop - start],
        )
        r *= scaled[start:stop]
        grad[0] += r.sum(axis=1)
        grad[1:] += X[start:stop].T @ r.T
    grad[1:] = (grad[1:] - np.outer(mean, grad[0])) / scale[:, np.newaxis]
    grad[1:] += penalty_scale * coef[1:]
    return loss, grad.ravel()


class SummedEvaluation:
    """The gate's loss terms that do not depend on the targets, summed over
    blocks of rows, its probabilities kept in single precision.

    Against soft targets ``T`` whose rows sum to one the cross-entropy is
    ``sum_i s_i lse_i - sum_ik s_i T_ik z_ik``, with ``lse_i = log sum_k
    exp(z_ik)``; the second term is linear in the parameters,
    ``<params, Z^T S T>``, so that the targets enter a fit only through that
    (d + 1, K) matrix (`summed_softmax_objective`). Blocks of rows added in
    turn (`add`) sum the first term and its gradient ``Z^T S P`` (`result`);
    no (K, n) array is made in double precision. The E-step of a fit that
    keeps no (n, K) array adds its blocks here too: the next M-step's first
    evaluation is then known.

    Parameters
    ----------
    params : ndarray of shape ((n_features + 1) * n_experts,)
    mean, scale : ndarray of shape (n_features,)
    scaled : ndarray of shape (n_samples,)
        Row weights divided by their total.
    probaT32 : ndarray of shape (n_experts, n_samples), float32
        Receives the gate probabilities, those below
        `_NEGLIGIBLE_PROBABILITY` set to zero, for the products with the
        Hessian (`truncated_newton_direction`, `block_curvature`).
    gradient : bool, default=True
    block_rows : int, default=None
        The most rows a block will have (default: all).
    """

    def __init__(
        self, params, mean, scale, scaled, probaT32, gradient=True, block_rows=None
    ):
        n_experts, n_samples = probaT32.shape
        coef = params.reshape(-1, n_experts)
        self.raw = np.ascontiguousarray((coef[1:] / scale[:, np.newaxis]).T)
        self.offset = (coef[0] - mean @ self.raw.T)[:, np.newaxis]
        self.mean, self.scale = mean, scale
        self.scaled, self.probaT32 = scaled, probaT32
        block_rows = n_samples if block_rows is None else block_rows
        self.scores = np.empty((n_experts, block_rows))
        self.exps = np.empty((n_experts, block_rows))
        self.log_norm_sum = 0.0
        self.grad = np.zeros_like(coef) if gradient else None

    def add(self, block, X):
        """Add the rows `block` (a slice), whose inputs are `X`; return their
        log gate probabilities, (K, m), valid until the next block."""
        m = X.shape[0]
        scores = np.matmul(self.raw, X.T, out=self.scores[:, :m])
        scores += self.offset
        top = scores.max(axis=0)
        scores -= top
        probaT = exp_floored(scores, out=self.exps[:, :m])
        norm = probaT.sum(axis=0)
        probaT /= norm
        log_norm = np.log(norm)
        s = self.scaled[block]
        self.log_norm_sum += float(s @ (log_norm + top))
        kept = self.probaT32[:, block]
        kept[:] = probaT
        if probaT.min() < _NEGLIGIBLE_PROBABILITY:
            np.multiply(kept, kept >= _NEGLIGIBLE_PROBABILITY, out=kept)
        if self.grad is not None:
            self.grad[0] += probaT @ s
            self.grad[1:] += (X.T * s) @ probaT.T
        scores -= log_norm
        return scores

    def result(self):
        """``(sum_i s_i lse_i, Z^T S P)``, the gradient on the standardised
        rows ``z_i = [1, (x_i - mean) / scale]`` (None without it)."""
        grad = self.grad
        if grad is not None:
            grad = grad.copy()
            grad[1:] = (grad[1:] - np.outer(self.mean, grad[0])) / self.scale[
                :, np.newaxis
            ]
        return self.log_norm_sum, grad


def summed_softmax_evaluation(params, X, mean, scale, scaled, probaT32, gradient=True):
    """`SummedEvaluation` over all the rows of `X`, a block at a time."""
    n_samples = X.shape[0]
    n_experts = probaT32.shape[0]
    block_rows = _block_rows(n_experts, n_samples)
    evaluation = SummedEvaluation(
        params, mean, scale, scaled, probaT32, gradient, block_rows
    )
    for start in range(0, n_samples, block_rows):
        block = slice(start, min(start + block_rows, n_samples))
        evaluation.add(block, X[block])
    return evaluation.result()


def summed_softmax_objective(params, evaluation, target_sums, penalty_scale):
    """`softmax_objective` from a `summed_softmax_evaluation` and the
    targets' sums ``Z^T S T`` (shaped as the parameters).

    Returns
    -------
    loss : float
    grad : ndarray of shape (params.size,) or None
    """
    log_norm_sum, grad = evaluation
    coef = params.reshape(target_sums.shape)
    loss = log_norm_sum - float(np.sum(coef * target_sums))
    loss += 0.5 * penalty_scale * float(np.sum(coef[1:] ** 2))
    if grad is None:
        return loss, None
    grad = grad - target_sums
    grad[1:] += penalty_scale * coef[1:]
    return loss, grad.ravel()


def standardised_rowsT32(X, mean, scale):
    """`standardised_rowsT` in single precision, made a block of rows at a
    time (the double-precision rows are never held whole)."""
    n_samples, n_features = X.shape
    zT = np.empty((n_features + 1, n_samples), dtype=np.float32)
    block_rows = _block_rows(n_features + 1, n_samples)
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        zT[:, start:stop] = standardised_rowsT(X[start:stop], mean, scale)
    return zT


def softmax_probaT(params, X, mean, scale, n_experts):
    """Gate probabilities at `params`, as an (n_experts, n_samples) array."""
    scores = softmax_scoresT(params.reshape(-1, n_experts), X, mean, scale)
    exp_floored(scores, out=scores)
    scores /= scores.sum(axis=0)
    return scores


def hessian_sample(n_samples):
    """The rows the exact Newton steps' Hessian is summed over: a slice.

    Every ``n_samples // _HESSIAN_SAMPLE_ROWS``-th row (all rows below twice
    that many); a fit over chunks takes the same rows by their global index.
    """
    return slice(None, None, max(1, n_samples // _HESSIAN_SAMPLE_ROWS))


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
    block_rows = _block_rows(size, n_samples)
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
        # A sharp gate's tiny probabilities would make the products below
        # run on subnormal numbers, tens of times slower, for terms that
        # count nothing (benchmarks/kernels.py, item 12).
        np.multiply(
            weighted[:, :m],
            probaT[:, start:stop] >= _NEGLIGIBLE_PROBABILITY,
            out=weighted[:, :m],
        )
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


# ----------------------------------------------------------------------
# Many experts: truncated Newton steps.
#
# The Hessian's cost, n (K (d + 1))^2, is what makes many experts slow. A
# Newton step needs only the Hessian's action on a few directions: conjugate
# gradients solve for it with products ``H D`` (`hessian_vector`, two matrix
# products the size of the scores, n K (d + 1)), preconditioned by the
# experts' own diagonal blocks of H (`block_curvature`, n K (d + 1)^2 / 2).


def standardised_rowsT(X, mean, scale):
    """The rows ``z_i = [1, (x_i - mean) / scale]`` as columns: (d + 1, n).

    Made once per fit where many experts make the gate's passes over the
    rows the larger cost (`hessian_vector`, `block_curvature`): their
    products then run on contiguous rows of one array, with nothing to
    standardise on the way.
    """
    zT = np.empty((X.shape[1] + 1, X.shape[0]))
    zT[0] = 1.0
    np.subtract(X.T, mean[:, np.newaxis], out=zT[1:])
    zT[1:] /= scale[:, np.newaxis]
    return zT


def block_curvature(zT, probaT, scaled):
    """Each expert's diagonal block of the cross-entropy's Hessian.

    ``H_kk = sum_i s_i p_ik (1 - p_ik) z_i z_i^T`` over the standardised
    rows `zT` (`standardised_rowsT`), for every k at once: per block of
    rows, the products ``z_ia z_ib`` (a <= b) are formed once and one matrix
    product with the (K, rows) weights gives every expert's block. It costs
    ``n K (d + 1) (d + 2) / 2`` multiply-adds, not the full Hessian's
    ``n (K (d + 1))^2``.

    The products run in single precision, twice as fast: the blocks only
    precondition conjugate gradients on the exact Hessian
    (`truncated_newton_direction`), and count the well-determined
    directions for the evidence.

    Returns
    -------
    ndarray of shape (n_experts, n_features + 1, n_features + 1)
    """
    width, n_samples = zT.shape
    n_experts = probaT.shape[0]
    n_pairs = width * (width + 1) // 2
    block_rows = _block_rows(n_pairs, n_samples)
    z32 = np.empty((width, block_rows), dtype=np.float32)
    pairs = np.empty((n_pairs, block_rows), dtype=np.float32)
    weights = np.empty((n_experts, block_rows), dtype=np.float32)
    curvature = np.empty((n_experts, block_rows))
    sums = np.zeros((n_experts, n_pairs))
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        m = stop - start
        z = z32[:, :m]
        z[:] = zT[:, start:stop]
        pair_products(z, pairs[:, :m])
        p = probaT[:, start:stop]
        c = np.subtract(1.0, p, out=curvature[:, :m])
        c *= p
        c *= scaled[start:stop]
        # Products with such terms would run on subnormal float32 numbers,
        # many times slower, for terms that count nothing. A product with
        # the mask zeroes them several times faster than an assignment
        # through it where many are tiny, as on a sharp gate, at about 1.5
        # times its cost where none is (benchmarks/kernels.py, item 13).
        np.multiply(c, p >= _NEGLIGIBLE_PROBABILITY, out=c)
        weights[:, :m] = c
        sums += weights[:, :m] @ pairs[:, :m].T
    return symmetric_from_pairs(sums, width)


def block_factors(blocks, penalty_scale):
    """Eigenpairs of each expert's block plus the penalty, (values, vectors).

    Directions of (relative) eigenvalue below 1e-12 get no step: their
    values are set to infinity.
    """
    matrices = blocks.copy()
    width = blocks.shape[1]
    diagonal = np.arange(1, width)
    matrices[:, diagonal, diagonal] += penalty_scale
    values, vectors = np.linalg.eigh(matrices)
    top = np.maximum(values[:, -1:], 0.0)
    values = np.where(values > 1e-12 * top, values, np.inf)
    return values, vectors


def block_direction(grad, factors):
    """``blockdiag(H_kk + c P)^-1 grad``: each expert's Newton step alone."""
    values, vectors = factors
    n_experts, width = values.shape
    G = grad.reshape(width, n_experts).T  # (K, d + 1)
    coords = np.einsum("kab,ka->kb", vectors, G) / values
    return np.einsum("kab,kb->ak", vectors, coords).ravel()


def block_evidence_alpha(params, blocks, penalty_scale):
    """The evidence re-estimate of the penalty from each expert's block.

    As `evidence_alpha`, with the eigenvalues of the Hessian on the
    coefficients modelled from each expert's own block (intercept profiled
    out), without the coupling between experts. The coupling removes one
    expert's worth of directions (the shift shared by every expert, to
    which the softmax is blind) and stiffens the others: ``gamma = (K - 1)
    / K sum_k sum_j h_kj / (h_kj + c)`` with ``h_kj = K / (K - 1)`` times
    the block's eigenvalues. This is exact for two experts (whose Hessian
    is ``[[A, -A], [-A, A]]``) and for a gate that gives every expert the
    same probability everywhere.

    Returns
    -------
    alpha : float or None
        None when the coefficients are all zero.
    gamma : float
    """
    n_experts, width, _ = blocks.shape
    if n_experts < 2:
        return None, 0.0
    intercept = blocks[:, :1, :1]
    safe = np.where(intercept > 0, intercept, 1.0)
    cross = blocks[:, 1:, :1]
    profiled = blocks[:, 1:, 1:] - cross @ np.swapaxes(cross, 1, 2) / safe
    values = np.linalg.eigvalsh(profiled) * (n_experts / (n_experts - 1))
    values = np.where(values > 1e-12 * np.maximum(values[:, -1:], 0.0), values, 0.0)
    share = values / (values + penalty_scale) if penalty_scale > 0 else values > 0
    gamma = float(np.sum(share)) * (n_experts - 1) / n_experts
    gamma = min(max(gamma, 0.0), float((width - 1) * (n_experts - 1)))
    norm2 = float(np.sum(params[1:] ** 2))
    if not norm2 > 0:
        return None, gamma
    return gamma / norm2, gamma


def hessian_vector(direction, zT, probaT, scaled, penalty_scale):
    """The Hessian of `softmax_objective` times a direction, without the Hessian.

    ``H D = sum_i s_i z_i (p_i * (u_i - p_i^T u_i))^T + c P D`` with
    ``u_i = D^T z_i`` the change of row i's scores along D: two matrix
    products the size of the scores, n K (d + 1) each, on the standardised
    rows `zT` (`standardised_rowsT`), and three passes over (K, rows)
    arrays, summed over blocks of rows so that these stay in cache. The row
    weights ``s_i`` (`scaled`, or one float when all rows weigh the same)
    weigh the rows of the last product, (d + 1) wide, not the (K, rows)
    arrays: no (K, n) array of weighted probabilities is needed. The
    products run in the precision of `zT` and `probaT`: single precision in
    `truncated_newton_direction`, where the products only guide conjugate
    gradients.
    """
    width, n_samples = zT.shape
    n_experts = probaT.shape[0]
    step = direction.reshape(width, n_experts)
    stepT = np.ascontiguousarray(step.T, dtype=zT.dtype)
    block_rows = _block_rows(n_experts, n_samples)
    change = np.empty((n_experts, block_rows), dtype=zT.dtype)
    alike = np.ndim(scaled) == 0
    weighted = None if alike else np.empty((width, block_rows), dtype=zT.dtype)
    total = np.zeros((width, n_experts))
    for start in range(0, n_samples, block_rows):
        stop = min(start + block_rows, n_samples)
        z = zT[:, start:stop]
        p = probaT[:, start:stop]
        u = np.matmul(stepT, z, out=change[:, : stop - start])
        u -= np.einsum("ki,ki->i", p, u)
        u *= p
        if not alike:
            z = np.multiply(z, scaled[start:stop], out=weighted[:, : stop - start])
        total += z @ u.T
    if alike:
        total *= scaled
    total[1:] += penalty_scale * step[1:]
    return total.ravel()


def truncated_newton_direction(
    grad, zT, probaT, scaled, penalty_scale, factors, max_iter, rtol
):
    """An approximate Newton step ``H^-1 grad`` by preconditioned conjugate
    gradients.

    The products with H are `hessian_vector`'s; the preconditioner is each
    expert's own block (`block_direction` with `factors`, the
    `block_factors` at `penalty_scale`). The solve stops after `max_iter`
    products or at relative residual `rtol`. Started from zero, every
    iterate of conjugate gradients is a descent direction (Steihaug 1983),
    so a truncated solve still lowers the objective along it.

    `probaT` in single precision is taken as it is, its negligible
    probabilities already zero (`summed_softmax_evaluation` keeps it so):
    no (K, n) copy is made.
    """
    shape = (grad.size, grad.size)
    # Single precision: the products guide the solve, the line search that
    # follows checks the step on the exact objective.
    zT32 = zT if zT.dtype == np.float32 else zT.astype(np.float32)
    probaT32 = probaT
    if probaT.dtype != np.float32:
        probaT32 = probaT.astype(np.float32)
        # Products with such probabilities would fall below float32's
        # smallest normal number and run on subnormal numbers, many times
        # slower, for terms that count nothing.
        np.multiply(probaT32, probaT32 >= _NEGLIGIBLE_PROBABILITY, out=probaT32)
    row_weights = scaled[0] if np.all(scaled == scaled[0]) else scaled
    row_weights = np.asarray(row_weights, dtype=np.float32)

    def hessian_times(direction):
        return hessian_vector(direction, zT32, probaT32, row_weights, penalty_scale)

    def precondition(residual):
        return block_direction(residual, factors)

    # scikit-learn's shim names the relative tolerance as scipy >= 1.12 does
    # (`tol` before), for the scipy >= 1.10 supported here.
    step, info = _sparse_linalg_cg(
        LinearOperator(shape, matvec=hessian_times, dtype=float),
        grad,
        rtol=rtol,
        atol=0.0,
        maxiter=max_iter,
        M=LinearOperator(shape, matvec=precondition, dtype=float),
    )
    return step, info == 0
