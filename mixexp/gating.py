"""Gates: models of which expert to trust for an input.

A gate is fitted on *soft targets*: an (n_samples, n_experts) matrix whose
rows are probability vectors (the EM responsibilities), with optional row
weights. Every gate here accepts hard labels too (a 1-D array of expert
indices), so it can be used and inspected on its own.

- :class:`SoftmaxGate`: multinomial logistic regression on the soft targets
  (the classic gate of Jordan and Jacobs), L2-penalised, solved by Newton
  steps with an analytic Hessian, warm-started across EM iterations.
- :class:`ConstantGate`: mixing proportions only, the same for every input
  (a finite mixture of regressions).
- :class:`ClassifierGate`: any scikit-learn classifier with
  ``predict_proba`` and ``sample_weight``, fitted on the soft targets by
  stacking one weighted copy of the rows per expert.
"""

import numbers
import warnings

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    has_fit_parameter,
    validate_data,
)

from mixexp._utils import take_rows

__all__ = ["ClassifierGate", "ConstantGate", "SoftmaxGate"]

# Rows whose target weight for an expert is below this share are left out of
# the stacked copy for that expert in ClassifierGate: they would cost a copy
# of the row and change nothing measurable.
_NEGLIGIBLE_TARGET = 1e-8

# Above this many parameters ((n_features + 1) * n_experts) the softmax gate
# is fitted by L-BFGS instead of Newton steps: a Hessian costs about
# (n_features + 1) * n_experts / 4 gradients and its eigendecomposition grows
# with the cube of the parameters. Measured on 100,000 x 20 regime data, EM
# with Newton steps and a reused Hessian took 0.42 / 0.90 / 2.9 s per
# iteration at 8 / 16 / 32 experts (168 / 336 / 672 parameters), against
# 0.90 / 2.6 / 6.1 s with L-BFGS solves.
_NEWTON_MAX_PARAMETERS = 1000

# alpha="auto": the evidence re-estimate of the penalty starts from
# _AUTO_ALPHA_START and stays within [_AUTO_ALPHA_MIN, _AUTO_ALPHA_MAX]. Inside
# EM a re-estimate that lowers alpha by less than _AUTO_ALPHA_MIN_CHANGE is
# not made, so that EM can settle (experts such as trees would otherwise keep
# it moving); a standalone fit alternates solves and re-estimates at most
# _AUTO_ALPHA_MAX_ROUNDS times.
_AUTO_ALPHA_START = 1e-3
_AUTO_ALPHA_MIN = 1e-6
_AUTO_ALPHA_MAX = 1e3
_AUTO_ALPHA_MIN_CHANGE = 0.05
_AUTO_ALPHA_MAX_ROUNDS = 100

# Entries per block ((n_features + 1) * n_experts by a block of rows) when the
# softmax gate's Hessian is summed: large enough for fast matrix products,
# small enough for each block to stay in cache (2 MiB).
_HESSIAN_BLOCK_SIZE = 2**18


def _as_soft_targets(y, n_samples):
    """Turn labels or soft targets into an (n, K) target matrix."""
    y = np.asarray(y)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) and not np.all(y == np.round(y)):
            raise ValueError(
                "A gate's targets must be expert indices (integers) or an "
                "(n_samples, n_experts) matrix of soft targets."
            )
        labels = y.astype(int)
        if labels.min() < 0:
            raise ValueError("Expert indices in a gate's targets must be >= 0.")
        targets = np.zeros((n_samples, labels.max() + 1))
        targets[np.arange(n_samples), labels] = 1.0
        return targets
    if y.ndim != 2 or y.shape[0] != n_samples:
        raise ValueError(
            f"Soft targets must have shape (n_samples, n_experts) with "
            f"n_samples={n_samples}; got shape {y.shape}."
        )
    targets = np.asarray(y, dtype=float)
    if not np.all(np.isfinite(targets)) or np.any(targets < 0):
        raise ValueError("Soft targets must be finite and non-negative.")
    if not np.allclose(targets.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("Each row of the soft targets must sum to 1.")
    return targets


def _log_proba_from_proba(proba):
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(proba, np.finfo(float).tiny))


def _shifted_scoresT(coef, X, mean, scale):
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


def _softmax_evaluation(params, X, mean, scale, n_experts):
    """What the gate's loss needs from its parameters, whatever the targets.

    Returns
    -------
    scores : ndarray of shape (n_experts, n_samples)
        Linear scores less each row's largest (see `_shifted_scoresT`).
    probaT : ndarray of shape (n_experts, n_samples)
        Gate probabilities, transposed.
    log_norm : ndarray of shape (n_samples,)
        ``log sum_k exp(scores)``, so that ``scores - log_norm`` are the log
        gate probabilities.
    """
    scores = _shifted_scoresT(params.reshape(-1, n_experts), X, mean, scale)
    probaT = np.exp(scores)
    norm = probaT.sum(axis=0)
    probaT /= norm
    return scores, probaT, np.log(norm)


def _softmax_objective(
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
        `_softmax_evaluation` at `params`, when it is already known.

    Notes
    -----
    With targets summing to one, ``loss_i = log sum_k exp(z_ik) -
    sum_k T_ik z_ik`` and ``d loss_i / d z_ik = P_ik - T_ik``. Everything
    runs on (n_experts, n_samples) arrays: reductions over the experts are
    then vectorised over the rows, five to ten times faster than over the
    short last axis of (n_samples, n_experts) arrays, and this function is
    called many times per EM step.
    """
    coef = params.reshape(X.shape[1] + 1, targetsT.shape[0])
    if evaluation is None:
        evaluation = _softmax_evaluation(params, X, mean, scale, targetsT.shape[0])
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


def _softmax_probaT(params, X, mean, scale, n_experts):
    """Gate probabilities at `params`, as an (n_experts, n_samples) array."""
    scores = _shifted_scoresT(params.reshape(-1, n_experts), X, mean, scale)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=0)
    return scores


def _softmax_hessian(X, mean, scale, probaT, scaled, penalty_scale):
    """Hessian of `_softmax_objective` in its parameters.

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
    return _add_penalty(hessian, penalty_scale, n_experts)


def _add_penalty(hessian, penalty_scale, n_experts):
    """`hessian` plus the L2 penalty's curvature on the coefficients (a copy)."""
    hessian = hessian.copy()
    penalised = np.arange(n_experts, hessian.shape[0])  # not the intercepts
    hessian[penalised, penalised] += penalty_scale
    return hessian


def _newton_minimise(objective, start, hessian, max_iter, tol, curvature=None):
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
            curvature = _pseudo_inverse_factors(hessian(params))
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


def _pseudo_inverse_factors(hessian):
    """Eigenvalues and eigenvectors of a PSD matrix, without its null space.

    The softmax is blind to shifts shared by every expert (and, without a
    penalty, to any direction the data do not pin down): those directions
    get no step.
    """
    values, vectors = np.linalg.eigh(hessian)
    keep = values > 1e-12 * max(values[-1], 0.0)
    return values[keep], np.ascontiguousarray(vectors[:, keep])


def _evidence_alpha(params, curvature, penalty_scale, n_experts):
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
        `_softmax_objective` (the weights divided by their total), in the
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


class SoftmaxGate(BaseEstimator):
    """Multinomial logistic gate fitted on soft targets.

    The gate models ``g_k(x) = softmax(x @ coef_ + intercept_)_k``. It is
    fitted by minimising the weighted cross-entropy between the targets and
    ``g(x)`` plus ``alpha / 2`` times the squared norm of the coefficients on
    standardised features, by Newton steps with a backtracking line search.
    Inside EM each fit is warm-started from the previous one and reuses the
    previous Hessian while its steps keep doing well; under soft EM a
    mixture takes one Newton step per iteration (two when a step with an
    old Hessian did poorly: the second one recomputes it). Every step
    lowers the objective, so a capped fit is still a generalised EM step.

    Parameters
    ----------
    alpha : float or "auto", default="auto"
        L2 penalty on the coefficients of the standardised features, on the
        scale of the summed (not averaged) cross-entropy, like ``1 / C`` in
        :class:`~sklearn.linear_model.LogisticRegression`.

        ``"auto"`` lets the data set it, by MacKay's evidence re-estimate
        ``alpha = gamma / ||W||^2`` (``gamma`` the number of coefficients
        the data determine well, see `gamma_`): small where the experts'
        regions are sharp and well supported, large where the gate would
        only fit noise. A fit alternates solves and re-estimates until
        alpha settles (starting from 1e-3). Inside EM, alpha is re-estimated
        once per M-step; after the first M-step (and in a warm-started
        refit) it may only decrease, by at least 5% at a time, so that the
        penalised objective EM reports never goes down. It stays within
        ``[1e-6, 1e3]``.

        A number fixes the penalty: ``alpha=0`` is the unpenalised
        maximum-likelihood gate (the one R's flexmix and mixtools fit),
        which can run to very large coefficients when the experts' regions
        are separable; a small fixed value such as 1e-3 keeps them finite
        while letting the gate be sharp, at the risk of an overfitted gate
        on small, noisy data.
    max_iter : int, default=100
        Maximum number of Newton steps per fit.
    tol : float, default=1e-6
        Tolerance on the largest entry of the gradient (of the
        cross-entropy averaged over the weights).
    warm_start : bool, default=False
        Start from the previous solution when fitted again on data with the
        same number of features and experts.

    Attributes
    ----------
    coef_ : ndarray of shape (`n_features_in_`, n_experts)
        Coefficients on the original (unstandardised) features.
    intercept_ : ndarray of shape (n_experts,)
    penalty_ : float
        The penalty term ``alpha_ / 2 * ||W||^2`` at the solution (on the
        standardised scale), so that a mixture can report the penalised
        objective EM maximises.
    alpha_ : float
        The penalty in use: `alpha`, or its last re-estimate with
        ``alpha="auto"`` (the one the next warm-started fit starts from).
    gamma_ : float or None
        With ``alpha="auto"``, the number of coefficients the data
        determine well at the last re-estimate (between 0 and
        ``n_features * n_experts``); None otherwise.
    n_iter_ : int
        Newton steps of the last fit.
    classes_ : ndarray of shape (n_experts,)
        ``arange(n_experts)``: the gate's outputs are expert indices.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when `X` has feature names that are all strings.

    See Also
    --------
    ConstantGate : Mixing proportions that do not depend on the input.
    ClassifierGate : Any probabilistic classifier as a gate.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.gating import SoftmaxGate
    >>> X = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> targets = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.1, 0.9]])
    >>> gate = SoftmaxGate(alpha=0.0).fit(X, targets)
    >>> gate.predict_proba([[-3.0], [3.0]]).round(2)
    array([[0.97, 0.03],
           [0.03, 0.97]])
    """

    _parameter_constraints: dict = {
        "alpha": [Interval(numbers.Real, 0, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
    }

    def __init__(self, alpha="auto", *, max_iter=100, tol=1e-6, warm_start=False):
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start

    def fit(self, X, y, sample_weight=None):
        """Fit the gate to expert labels or soft targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_experts)
            Expert indices, or soft targets whose rows sum to 1.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights; ``None`` gives every row weight 1.

        Returns
        -------
        self : SoftmaxGate
            The fitted gate.
        """
        self._validate_params()
        X = validate_data(self, X, reset=True, dtype=np.float64)
        targets = _as_soft_targets(y, X.shape[0])
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self._clear_cache()  # X may be new data, or the same array changed
        self._curvature = self._data_hessian = None
        if not self.warm_start:
            self.alpha_ = None
        self._fit(X, targets, weights, warn=True)
        self._clear_cache()  # nor may X change under a cached evaluation
        return self

    def _fit(self, X, targets, weights, warn, max_steps=None):
        """Fit on validated arrays (the EM loop calls this directly).

        EM passes `max_steps` to take a capped number of Newton steps (a
        generalised M-step); with ``alpha="auto"`` the penalty is then
        re-estimated once, and otherwise until it settles.
        """
        if self.alpha != "auto":
            self.alpha_, self.gamma_ = float(self.alpha), None
            return self._fit_penalised(X, targets, weights, warn, max_steps)
        # A fit that continues a previous one (EM's later M-steps, or a
        # warm start) may only relax the penalty, by 5% or more at a time: a
        # smaller penalty can only raise the penalised objective at the
        # current gate, so EM's objective never goes down, and alpha
        # settles. A first fit finds its fixed point freely.
        first = getattr(self, "alpha_", None) is None
        capped = max_steps is not None
        if first and capped:
            # EM's first M-step: the level of alpha comes from the gate
            # solved in full (after one step from zero its coefficients are
            # still small, and alpha would come out far too high); the step
            # EM takes is then one step from zero at that level (a gate
            # solved in full would sharpen EM's first responsibilities).
            alpha = self._fit_auto(X, targets, weights, False, None, first=True)
            self.alpha_ = alpha
            self._params = self._curvature = self._data_hessian = None
            self._evaluated = None
            self._fit_penalised(X, targets, weights, warn, max_steps)
        else:
            alpha = self._fit_auto(X, targets, weights, warn, max_steps, first)
        self.alpha_ = alpha
        self.penalty_ = 0.5 * alpha * float(np.sum(self._params[1:] ** 2))
        return self

    def _fit_auto(self, X, targets, weights, warn, max_steps, first):
        """Alternate fits and evidence re-estimates; return the next alpha.

        Under a step cap (EM), one fit and one re-estimate.
        """
        alpha = _AUTO_ALPHA_START if first else self.alpha_
        capped = max_steps is not None
        for _ in range(1 if capped else _AUTO_ALPHA_MAX_ROUNDS):
            self.alpha_ = alpha
            self._fit_penalised(X, targets, weights, warn, max_steps)
            new = self._evidence_update(X, weights, fresh=not capped)
            if new is None:
                break
            if first:
                settled = abs(np.log(new / alpha)) < 1e-6
            else:
                settled = new > (1 - _AUTO_ALPHA_MIN_CHANGE) * alpha
            if settled:
                break
            alpha = new
        return alpha

    def _evidence_update(self, X, weights, fresh=False):
        """The evidence re-estimate of alpha at the current fit, clipped.

        Inside EM the eigendecomposition of the last Newton step is reused
        (computed at nearby parameters: an approximation that costs
        nothing); a standalone fit (`fresh`) computes the Hessian at the
        solution, so that where it settles does not depend on the path.
        """
        n_experts = self._params.shape[1]
        total = weights.sum()
        curvature = getattr(self, "_curvature", None)
        penalty_scale = getattr(self, "_curvature_penalty", None)
        if fresh or curvature is None or penalty_scale is None:
            penalty_scale = self.alpha_ / total
            hessian = self._hessian_at(
                self._params.ravel(),
                X,
                self._mean,
                self._scale,
                weights / total,
                penalty_scale,
            )
            curvature = _pseudo_inverse_factors(hessian)
            if self.warm_start:
                self._curvature, self._curvature_penalty = curvature, penalty_scale
        if curvature[0].size == 0:
            return None
        new, self.gamma_ = _evidence_alpha(
            self._params, curvature, penalty_scale, n_experts
        )
        if new is None:  # no coefficients left: the data support none
            return _AUTO_ALPHA_MAX
        return float(np.clip(new, _AUTO_ALPHA_MIN, _AUTO_ALPHA_MAX))

    def _fit_penalised(self, X, targets, weights, warn, max_steps):
        """Minimise the penalised cross-entropy at ``alpha_``.

        Inside one EM run X never changes, so its standardisation (and the
        curvature of the last Newton step) is computed once and reused (with
        ``warm_start``).
        """
        n_features, n_experts = X.shape[1], targets.shape[1]
        mean, scale = self._standardise(X, weights)
        total = weights.sum()

        start = np.zeros((n_features + 1, n_experts))
        previous = getattr(self, "_params", None)
        if self.warm_start and previous is not None and previous.shape == start.shape:
            start = previous
        targetsT = np.ascontiguousarray(targets.T)
        scaled = weights / total
        penalty_scale = self.alpha_ / total

        def objective(flat):
            evaluation = self._evaluation_at(flat, X, mean, scale)
            if evaluation is None:
                self._evaluated = None  # two (n, K) arrays: free them first
                evaluation = _softmax_evaluation(flat, X, mean, scale, n_experts)
                if self.warm_start:
                    # EM's next E-step and next gate step start from here.
                    self._evaluated = (X, mean, scale, flat, evaluation)
            return _softmax_objective(
                flat, X, mean, scale, targetsT, scaled, penalty_scale, evaluation
            )

        def hessian(flat):
            return self._hessian_at(flat, X, mean, scale, scaled, penalty_scale)

        if (n_features + 1) * n_experts <= _NEWTON_MAX_PARAMETERS:
            curvature = None
            if start is previous:
                curvature = self._remembered_curvature(penalty_scale, n_experts)
            max_iter = self.max_iter
            if max_steps is not None:
                max_iter = min(max_iter, max_steps)
            flat, n_iter, converged, curvature = _newton_minimise(
                objective, start.ravel(), hessian, max_iter, self.tol, curvature
            )
            if self.warm_start:
                self._curvature, self._curvature_penalty = curvature, penalty_scale
        else:
            self._curvature = self._data_hessian = None
            # Too many parameters for the Hessian to pay off: quasi-Newton,
            # solved in full (a few L-BFGS steps would not be enough).
            result = minimize(
                objective,
                start.ravel(),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-12},
            )
            flat, n_iter = result.x, int(result.nit)
            converged = result.success or n_iter < self.max_iter
        if warn and not converged:
            warnings.warn(
                f"SoftmaxGate did not converge in max_iter={self.max_iter} "
                "iterations; increase max_iter or alpha.",
                ConvergenceWarning,
                stacklevel=3,
            )
        params = flat.reshape(n_features + 1, n_experts)
        self._params = params
        self._mean, self._scale = mean, scale
        self.coef_ = params[1:] / scale[:, np.newaxis]
        self.intercept_ = params[0] - mean @ self.coef_
        self.penalty_ = 0.5 * self.alpha_ * float(np.sum(params[1:] ** 2))
        self.n_iter_ = n_iter
        self.classes_ = np.arange(n_experts)
        return self

    def _hessian_at(self, flat, X, mean, scale, scaled, penalty_scale):
        """`_softmax_hessian` at `flat`, from the remembered probabilities
        when the last evaluation was there.

        With ``warm_start`` the Hessian of the cross-entropy alone is kept
        for `_remembered_curvature`.
        """
        n_experts = flat.size // (X.shape[1] + 1)
        evaluation = self._evaluation_at(flat, X, mean, scale)
        if evaluation is None:
            probaT = _softmax_probaT(flat, X, mean, scale, n_experts)
        else:
            probaT = evaluation[1]
        data_hessian = _softmax_hessian(X, mean, scale, probaT, scaled, 0.0)
        if self.warm_start:
            self._data_hessian = data_hessian
        return _add_penalty(data_hessian, penalty_scale, n_experts)

    def _remembered_curvature(self, penalty_scale, n_experts):
        """The last Hessian's eigendecomposition, at penalty `penalty_scale`.

        Under ``alpha="auto"`` EM re-estimates the penalty at every M-step
        (often halving it while the gate sharpens); only the penalty's
        (diagonal) term of the kept Hessian is then updated, an
        eigendecomposition that costs next to nothing beside the Hessian
        itself, a pass over every row for every pair of experts.
        """
        curvature = getattr(self, "_curvature", None)
        if getattr(self, "_curvature_penalty", None) == penalty_scale:
            return curvature
        data_hessian = getattr(self, "_data_hessian", None)
        if curvature is None or data_hessian is None:
            return None
        return _pseudo_inverse_factors(
            _add_penalty(data_hessian, penalty_scale, n_experts)
        )

    def _evaluation_at(self, flat, X, mean, scale):
        """The remembered `_softmax_evaluation` at `flat` on `X`, if any."""
        cached = getattr(self, "_evaluated", None)
        if (
            cached is not None
            and cached[0] is X
            and cached[1] is mean
            and cached[2] is scale
            and np.array_equal(cached[3], flat)
        ):
            return cached[4]
        return None

    def _standardise(self, X, weights):
        """Weighted mean and scale of each feature.

        Reused while EM refits on the same X (with ``warm_start``).
        """
        cache = getattr(self, "_standardised", None)
        if (
            cache is not None
            and cache[0] is X
            and (cache[1] is weights or np.array_equal(cache[1], weights))
        ):
            return cache[2:]
        mean = np.average(X, axis=0, weights=weights)
        scale = np.sqrt(np.average((X - mean) ** 2, axis=0, weights=weights))
        scale[~(scale > 1e-12 * np.maximum(np.abs(mean), 1.0))] = 1.0
        if self.warm_start:
            self._standardised = (X, weights, mean, scale)
        return mean, scale

    def _clear_cache(self):
        # Only the reference to the training data goes: the curvature (a
        # small matrix) stays, so that a warm-started refit continues exactly
        # where the last one stopped.
        self._standardised = None
        self._evaluated = None

    def __getstate__(self):
        # The caches hold the training data and (n, K) arrays: never pickle
        # (or deep-copy) them.
        state = super().__getstate__()
        state.pop("_standardised", None)
        state.pop("_evaluated", None)
        return state

    def predict_log_proba(self, X):
        """Log gate probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            Natural logarithm of `predict_proba`, computed stably.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._predict_log_proba(X)

    def _predict_log_proba(self, X):
        # On the (K, n) layout (see _softmax_objective), without a
        # standardised copy of X; returned as an (n, K) view. Inside EM, the
        # gate's last step has just computed the scores on X.
        evaluation = self._evaluation_at(
            self._params.ravel(), X, self._mean, self._scale
        )
        if evaluation is not None:
            scores, _, log_norm = evaluation
            return (scores - log_norm).T
        scores = _shifted_scoresT(self._params, X, self._mean, self._scale)
        norm = np.exp(scores).sum(axis=0)
        scores -= np.log(norm)
        return scores.T

    def predict_proba(self, X):
        """Gate probabilities: how much each expert is trusted on each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            The softmax of the linear scores; rows sum to 1.
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Index of the most trusted expert per row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,)
            The argmax of `predict_proba`; ties go to the lower index.
        """
        return np.argmax(self.predict_log_proba(X), axis=1)


class ConstantGate(BaseEstimator):
    """Mixing proportions: the same gate probabilities for every input.

    With this gate a mixture of experts is a finite mixture of regressions
    (or of classifiers): ``pi_k`` is the weighted mean responsibility of
    expert ``k``, which is the exact M-step.

    Attributes
    ----------
    proportions_ : ndarray of shape (n_experts,)
        Mixing proportions; they sum to 1.
    penalty_ : float
        Always 0.0 (the proportions are not penalised).
    classes_ : ndarray of shape (n_experts,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when `X` has feature names that are all strings.

    See Also
    --------
    SoftmaxGate : Gate probabilities that depend on the input.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.gating import ConstantGate
    >>> gate = ConstantGate().fit(np.zeros((4, 1)), [0, 0, 0, 1])
    >>> gate.proportions_
    array([0.75, 0.25])
    """

    def fit(self, X, y, sample_weight=None):
        """Fit the mixing proportions to labels or soft targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Only its number of rows and features is used.
        y : array-like of shape (n_samples,) or (n_samples, n_experts)
            Expert indices, or soft targets whose rows sum to 1.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights; ``None`` gives every row weight 1.

        Returns
        -------
        self : ConstantGate
            The fitted gate.
        """
        X = validate_data(self, X, reset=True, dtype=np.float64)
        targets = _as_soft_targets(y, X.shape[0])
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return self._fit(X, targets, weights, warn=True)

    def _fit(self, X, targets, weights, warn):
        self.proportions_ = weights @ targets / weights.sum()
        self.penalty_ = 0.0
        self.classes_ = np.arange(targets.shape[1])
        return self

    def predict_log_proba(self, X):
        """Log mixing proportions, the same for every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; only their number of rows is used.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            ``log(proportions_)`` repeated on every row.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._predict_log_proba(X)

    def _predict_log_proba(self, X):
        log_prop = _log_proba_from_proba(self.proportions_)
        return np.broadcast_to(log_prop, (X.shape[0], log_prop.shape[0])).copy()

    def predict_proba(self, X):
        """Mixing proportions, the same for every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; only their number of rows is used.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            `proportions_` repeated on every row.
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Index of the largest mixing proportion, for every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs; only their number of rows is used.

        Returns
        -------
        ndarray of shape (n_samples,)
            The same expert index on every row.
        """
        return np.argmax(self.predict_log_proba(X), axis=1)


class ClassifierGate(BaseEstimator):
    """Any probabilistic classifier as a gate, fitted on soft targets.

    Most classifiers only take hard labels. Soft targets ``T`` are turned
    into hard labels with weights: row ``i`` is repeated once per expert
    ``k``, labelled ``k`` and weighted ``w_i * T_ik``. Minimising the
    classifier's weighted log-loss on these copies is minimising the
    cross-entropy against the soft targets, which is the gate's M-step.
    Copies with negligible weight are left out.

    Parameters
    ----------
    estimator : classifier
        Must have ``predict_proba`` and take ``sample_weight`` in ``fit``.
        It is cloned; the fitted copy is ``estimator_``.

    Attributes
    ----------
    estimator_ : classifier
        The fitted clone.
    penalty_ : float
        Always 0.0 (the classifier's own regularisation is not reported).
    classes_ : ndarray of shape (n_experts,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined only when `X` has feature names that are all strings.

    See Also
    --------
    SoftmaxGate : The built-in linear gate, fitted exactly on soft targets.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from mixexp.gating import ClassifierGate
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> targets = np.array([[1.0, 0.0], [0.9, 0.1], [0.1, 0.9], [0.0, 1.0]])
    >>> gate = ClassifierGate(DecisionTreeClassifier(max_depth=1, random_state=0))
    >>> gate.fit(X, targets).predict([[0.5], [2.5]])
    array([0, 1])
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict_proba"])],
    }

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the classifier to expert labels or soft targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_experts)
            Expert indices, or soft targets whose rows sum to 1.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights; ``None`` gives every row weight 1.
        **fit_params : dict
            Per-row arrays passed on to the classifier's ``fit``, repeated
            with the rows.

        Returns
        -------
        self : ClassifierGate
            The fitted gate.
        """
        self._validate_params()
        check_gate_classifier(self.estimator, "estimator")
        X = validate_data(self, X, reset=True, dtype=np.float64)
        targets = _as_soft_targets(y, X.shape[0])
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        self.estimator_ = clone(self.estimator)
        return self._fit(X, targets, weights, warn=True, **fit_params)

    def _fit(self, X, targets, weights, warn, **fit_params):
        n_samples, n_experts = targets.shape
        stacked_weight = targets * weights[:, np.newaxis]
        keep = stacked_weight > _NEGLIGIBLE_TARGET * stacked_weight.max()
        rows, labels = np.nonzero(keep)
        params = {
            key: take_rows(value, rows, n_samples) for key, value in fit_params.items()
        }
        # Within EM the same clone is refitted at each step (fit() makes a
        # fresh one), so classifiers with warm_start can use it.
        if getattr(self, "estimator_", None) is None:
            self.estimator_ = clone(self.estimator)
        estimator = self.estimator_
        if np.unique(labels).shape[0] < 2:
            # One expert holds all the weight: most classifiers refuse a
            # single class, and the answer (probability 1) needs no model.
            estimator = DummyClassifier(strategy="prior")
            self._constant = estimator.fit(X[rows], labels)
        else:
            self._constant = None
            estimator.fit(
                X[rows], labels, sample_weight=stacked_weight[rows, labels], **params
            )
        self.penalty_ = 0.0
        self.classes_ = np.arange(n_experts)
        return self

    def predict_log_proba(self, X):
        """Log gate probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            Natural logarithm of `predict_proba`; an expert the classifier
            never predicts gets the log of the smallest positive float.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._predict_log_proba(X)

    def _predict_log_proba(self, X):
        fitted = self._constant if self._constant is not None else self.estimator_
        proba = fitted.predict_proba(X)
        full = np.zeros((X.shape[0], self.classes_.shape[0]))
        full[:, fitted.classes_.astype(int)] = proba
        return _log_proba_from_proba(full)

    def predict_proba(self, X):
        """Gate probabilities: how much each expert is trusted on each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            The classifier's class probabilities, one column per expert;
            rows sum to 1.
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Index of the most trusted expert per row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,)
            The argmax of `predict_proba`; ties go to the lower index.
        """
        return np.argmax(self.predict_log_proba(X), axis=1)


def check_gate_classifier(estimator, name):
    """Refuse a classifier that cannot serve as a gate, saying why."""
    if not hasattr(estimator, "predict_proba"):
        raise TypeError(
            f"The {name} {estimator!r} cannot be a gate: it has no "
            "predict_proba. Use a probabilistic classifier, 'softmax' or "
            "'constant'."
        )
    if not has_fit_parameter(estimator, "sample_weight"):
        raise TypeError(
            f"The {name} {estimator!r} cannot be a gate: its fit does not take "
            "sample_weight, which is how soft targets are passed. Use a "
            "classifier that does, 'softmax' or 'constant'."
        )


def make_gate(gate):
    """A fresh, unfitted gate object for the mixture's ``gate`` parameter."""
    if isinstance(gate, str):
        if gate == "softmax":
            return SoftmaxGate()
        if gate == "constant":
            return ConstantGate()
        raise ValueError(
            f"gate={gate!r} is not a known gate; use 'softmax', 'constant', a "
            "SoftmaxGate/ConstantGate instance or a classifier with "
            "predict_proba."
        )
    if isinstance(gate, (SoftmaxGate, ConstantGate, ClassifierGate)):
        return clone(gate)
    check_gate_classifier(gate, "gate")
    return ClassifierGate(clone(gate))
