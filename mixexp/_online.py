"""Online EM for streams: the numerics of ``partial_fit``.

Each call of ``partial_fit`` is one step of the online EM algorithm of
Cappé and Moulines (2009), "On-line expectation-maximization algorithm for
latent data models" (JRSS B 71(3)): an E-step on the batch with the current
model, a stochastic update of running statistics with a decreasing step size

    rho_t = (learning_offset + t) ** -learning_decay,

and an M-step from the running statistics. The running statistics are
averages per unit of row weight, blended as
``s_t = (1 - rho_t) s_{t-1} + rho_t s(batch)``: within a batch the rows
count by their weight, and each batch enters with the step size of its
call, whatever its size (with ``learning_decay=1`` and
``learning_offset=1``, ``rho_t = 1 / (t + 1)`` and the statistics are the
plain mean over equally weighted batches). With
``learning_decay`` in (0.5, 1] the steps sum to infinity and their squares
do not, which is what the convergence theory asks for; scikit-learn's
LatentDirichletAllocation uses the same schedule and defaults (0.7, 10).

What is kept, part by part:

- **linear experts** (plain ``LinearRegression``, ``Ridge``): the weighted
  moments of their columns and targets, ``E[w r_k]``, ``E[w r_k z]`` and
  ``E[w r_k z z^T]`` with ``z = [x, y] - c`` (`LinearStatistics`), about a
  centre ``c`` fixed at the first step (the first batch's mean), so that
  data far from the origin do not cancel digits when the centred Gram
  matrix is formed. The M-step solves the normal equations from them
  (`linear_solution`). A Ridge's ``alpha`` is set against the statistics
  of all the weight seen so far, ``N`` (every call's ``sample_weight``,
  passes over the same rows included): the coefficients solve
  ``(N C_xx + alpha I) b = N C_xy``, which is what batch EM's M-step solves
  on ``N`` rows (there the expert's weights are rescaled to the mixture's
  total, ``_penalty.py``), so the online fit tends to the batch fit of the
  whole stream, not to a fit penalised as if the stream were one batch;
- **experts with their own** ``partial_fit`` (SGD, MLP, naive Bayes): no
  statistics; each step calls it on the batch with ``sample_weight = w *
  r_k`` (its own learning rate plays the role of ``rho``);
- **the softmax gate**: a stochastic majorisation-minimisation step
  (Mairal 2013; for softmax-gated mixtures of experts, Tran, Nguyen, Fort
  et al. 2026, arXiv 2601.19811). The cross-entropy of each row is
  majorised by Böhning's quadratic bound, whose curvature
  ``1/2 (I - 11^T / K) kron z z^T`` does not depend on the parameters; the
  running averages of that curvature and of the bounds' linear terms
  define an averaged quadratic surrogate, minimised in closed form (with
  the gate's L2 penalty, ``alpha / N``): `softmax_surrogate_statistics`,
  `softmax_surrogate_minimiser`. The bound's curvature is the softest
  gate's: where the experts' regions are separable the step sharpens a
  gate more slowly than batch EM's Newton steps do (benchmarks/online.py).
  The constant gate's proportions are the running mean responsibilities;
- **the likelihood family's scales** (noise variance, dispersion): each
  expert's batch estimate, blended with the running one in proportion to
  the expert's weight in each (`blend_scale`): for the Gaussian and
  Laplace scales, which are weighted means, this is the running weighted
  mean of the residuals' squares or absolute values.

The first step seeds the statistics from its batch (``rho = 1``); the
estimator starts it from a fitted model (its own ``fit`` on the first
batch, or the model a previous ``fit`` left).
"""

import copy
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge

from mixexp import _em
from mixexp._linear import _shallow_copy, _solve_normal_equations
from mixexp._mstep import _raise_naming_experts
from mixexp._penalty import expert_priors
from mixexp._softmax import softmax_probaT, standardised_rowsT
from mixexp._utils import set_random_states, single_threaded_blas

# A row whose responsibility for an expert is below this share of its weight
# is left out of that expert's partial_fit, as in batch EM's M-step
# (``_mstep._NEGLIGIBLE_RESPONSIBILITY``): it would change nothing
# measurable and costs a copy of the row.
_NEGLIGIBLE_RESPONSIBILITY = 1e-8

# An expert whose running weight per unit of the stream's weight falls
# below this keeps its last fit: its normal equations would be all
# rounding noise.
_STARVED_SHARE = 1e-12

# Relative eigenvalue of the gate's surrogate curvature below which a
# direction is left unchanged by the M-step (a constant feature, or a
# direction no row has explored yet): as `_linear._RANK_TOLERANCE`.
_RANK_TOLERANCE = 1e3 * np.finfo(float).eps


def step_size(n_steps, learning_offset, learning_decay):
    """The weight of the next batch: ``(learning_offset + t) ** -learning_decay``.

    Parameters
    ----------
    n_steps : int
        Steps already taken, ``t``; the seeding step counts as one.
    learning_offset : float
        Down-weights the early batches: the larger, the slower the step
        size falls from its first value.
    learning_decay : float
        How fast the steps shrink; in (0.5, 1] for Cappé and Moulines'
        convergence theory.

    Returns
    -------
    float
        In (0, 1] when ``learning_offset + t >= 1``.
    """
    return float((learning_offset + n_steps) ** -learning_decay)


def blend(running, batch, rho):
    """``(1 - rho) * running + rho * batch``, for arrays or tuples of them."""
    if isinstance(running, tuple):
        return tuple(blend(r, b, rho) for r, b in zip(running, batch, strict=True))
    return (1.0 - rho) * running + rho * batch


# ---------------------------------------------------------------------------
# Linear experts: running sufficient statistics.


@dataclass(frozen=True)
class LinearStatistics:
    """One linear expert's running moments, per unit of row weight.

    ``z = [x, y] - centre`` stacks the expert's columns and the targets.
    """

    centre: np.ndarray  # (p + m,)
    total: float  # E[w r]
    first: np.ndarray  # (p + m,) E[w r z]
    second: np.ndarray  # (p + m, p + m) E[w r z z^T]

    def blend(self, batch, rho):
        return LinearStatistics(
            self.centre,
            *blend(
                (self.total, self.first, self.second),
                (batch.total, batch.first, batch.second),
                rho,
            ),
        )


def linear_statistics(X, y, weights, centre=None):
    """A batch's moments of one linear expert (see `LinearStatistics`).

    Parameters
    ----------
    X : ndarray of shape (n, p)
        The expert's columns.
    y : ndarray of shape (n, m)
    weights : ndarray of shape (n,)
        Row weight times responsibility, divided by the batch's total row
        weight (so the moments are per unit of weight).
    centre : ndarray of shape (p + m,), default=None
        The reference point of the moments; None: the weighted mean of
        ``[X, y]`` (under the row weights ``weights`` are made of).

    Returns
    -------
    LinearStatistics
    """
    z = np.hstack([X, y])
    if centre is None:
        total = weights.sum()
        centre = weights @ z / total if total > 0 else z.mean(axis=0)
    z -= centre
    weighted = z * weights[:, np.newaxis]
    with single_threaded_blas:
        second = z.T @ weighted
    return LinearStatistics(centre, float(weights.sum()), weighted.sum(axis=0), second)


def linear_solution(stats, n_features, fit_intercept, alpha, n_seen):
    """The weighted least-squares (or ridge) expert of running statistics.

    Parameters
    ----------
    stats : LinearStatistics
    n_features : int
        ``p``, the expert's columns (the first ``p`` entries of ``z``).
    fit_intercept : bool
    alpha : None or ndarray of shape (m,)
        None: least squares, the minimum-norm solution where the columns
        are dependent (as LinearRegression); else a ridge penalty per
        target, against ``n_seen`` rows (see the module's docstring).
    n_seen : float
        The weight the statistics stand for.

    Returns
    -------
    coef : ndarray of shape (p, m)
    intercept : ndarray of shape (m,)
    rank, singular : int and ndarray, or None
        As ``LinearRegression`` reports them (least squares only).
    """
    p = n_features
    mean = stats.first / stats.total
    if fit_intercept:
        # The spread about the expert's own mean, from moments about the
        # centre: exact, with a cancellation of |mean|^2 / variance only.
        cov = stats.second / stats.total - np.outer(mean, mean)
        location = mean + stats.centre
    else:
        c = stats.centre
        cov = (
            stats.second / stats.total
            + (np.outer(mean, c) + np.outer(c, mean))
            + np.outer(c, c)
        )
        location = np.zeros_like(c)
    cov = (cov + cov.T) / 2
    weight = n_seen * stats.total
    gram, moment = weight * cov[:p, :p], weight * cov[:p, p:]
    coef, rank, singular = _solve_normal_equations(
        gram[np.newaxis],
        moment[np.newaxis],
        np.array([weight]),
        location[np.newaxis, :p],
        np.array([fit_intercept]),
    )
    coef, rank, singular = coef[0], int(rank[0]), singular[0]
    if alpha is not None:
        # In batch EM a Ridge expert is fitted on weights rescaled to the
        # mixture's total: its Gram matrix is N C_xx whatever its share.
        # alpha=0 keeps the minimum-norm least-squares solution.
        scaled = n_seen * cov[:p, :p]
        for j in np.flatnonzero(alpha > 0):
            coef[:, j] = np.linalg.solve(
                scaled + alpha[j] * np.eye(p), n_seen * cov[:p, p + j]
            )
        rank = singular = None
    intercept = location[p:] - location[:p] @ coef
    return coef, intercept, rank, singular


def fitted_linear_expert(template, coef, intercept, y_ndim, rank=None, singular=None):
    """A fitted copy of `template` (LinearRegression or Ridge) with `coef`."""
    expert = _shallow_copy(template)
    expert.n_features_in_ = coef.shape[0]
    if y_ndim == 1:
        expert.coef_ = coef[:, 0].copy()
        expert.intercept_ = float(intercept[0]) if template.fit_intercept else 0.0
    else:
        expert.coef_ = np.ascontiguousarray(coef.T)
        expert.intercept_ = intercept if template.fit_intercept else 0.0
    if rank is not None:
        expert.rank_, expert.singular_ = rank, singular
    else:
        expert.n_iter_ = None
    return expert


def linear_alpha(template, n_outputs):
    """The ridge penalty of a linear `template` per target; None for none.

    Raises ValueError when the template is not a linear expert whose
    statistics this module keeps (see `update_kind`).
    """
    if type(template) is LinearRegression:
        return None
    alpha = np.asarray(template.alpha, dtype=float).ravel()
    if alpha.size not in (1, n_outputs):
        raise ValueError(
            f"Ridge(alpha=...) has {alpha.size} penalties for {n_outputs} targets."
        )
    return np.broadcast_to(alpha, (n_outputs,))


def update_kind(template):
    """How ``partial_fit`` updates an expert: ``"statistics"``,
    ``"partial_fit"`` or None (it cannot).

    Plain LinearRegression and Ridge (not ``positive``, a constrained fit;
    subclasses may change ``fit``) are solved from running sufficient
    statistics; any other estimator with a ``partial_fit`` that takes
    ``sample_weight`` updates itself.
    """
    if type(template) in (LinearRegression, Ridge) and not template.positive:
        return "statistics"
    if hasattr(template, "partial_fit"):
        return "partial_fit"
    return None


# ---------------------------------------------------------------------------
# The softmax gate: stochastic MM on Böhning's bound.


def softmax_surrogate_statistics(params, X, mean, scale, targets, weights):
    """A batch's terms of the gate's quadratic surrogate at `params`.

    For each row, with ``z = [1, (x - mean) / scale]``, gate probabilities
    ``p`` and targets ``t``, Böhning's bound majorises the cross-entropy
    ``ell(theta)`` around ``theta_0`` by

        ell(theta_0) + tr(G^T D) + 1/4 tr(D^T z z^T D P),

    with ``D = theta - theta_0``, ``G = z (p - t)^T`` and
    ``P = I - 11^T / K``. As a function of ``theta`` that is
    ``1/4 tr(theta^T A theta P) + tr(b^T theta)`` plus a constant, with
    ``A = z z^T`` and ``b = G - 1/2 A theta_0 P``: averaged over the rows,
    the curvature ``A`` and the linear term ``b`` are all that is kept.

    Parameters
    ----------
    params : ndarray of shape (d + 1, K)
        The gate's intercepts and coefficients on the standardised features.
    X : ndarray of shape (n, d)
    mean, scale : ndarray of shape (d,)
        The gate's standardisation.
    targets : ndarray of shape (n, K)
        Responsibilities; rows sum to 1.
    weights : ndarray of shape (n,)
        Row weights.

    Returns
    -------
    curvature : ndarray of shape (d + 1, d + 1)
        ``E[w z z^T] / E[w]``.
    linear : ndarray of shape (d + 1, K)
        ``E[w b] / E[w]``; its rows sum to zero (softmax is blind to a shift
        shared by every expert).
    """
    n_experts = params.shape[1]
    scaled = weights / weights.sum()
    with single_threaded_blas:
        zT = standardised_rowsT(X, mean, scale)
        residualT = softmax_probaT(params.ravel(), X, mean, scale, n_experts)
        residualT -= targets.T
        weighted_zT = zT * scaled
        curvature = weighted_zT @ zT.T
        gradient = weighted_zT @ residualT.T
    centred = params - params.mean(axis=1, keepdims=True)  # theta_0 P
    return curvature, gradient - 0.5 * curvature @ centred


def softmax_surrogate_minimiser(curvature, linear, penalty_scale):
    """The parameters that minimise the averaged surrogate plus the penalty.

    Minimises ``1/4 tr(theta^T A theta P) + tr(b^T theta) + penalty_scale / 2
    ||theta[1:]||^2`` (the intercepts unpenalised). Among the minimisers,
    which differ by a shift shared by the experts, the one whose rows sum
    to zero, where ``theta P = theta``: the stationarity condition is then
    ``(A / 2 + penalty_scale E) theta = -b`` (``E`` the identity less its
    intercept entry), whose solution has rows summing to zero because
    ``b``'s do. Directions of negligible curvature (a feature that has not
    varied) get no weight.

    Parameters
    ----------
    curvature : ndarray of shape (d + 1, d + 1)
    linear : ndarray of shape (d + 1, K)
    penalty_scale : float
        ``alpha / N``: the gate's penalty per unit of the weight seen.

    Returns
    -------
    ndarray of shape (d + 1, K)
    """
    matrix = 0.5 * curvature
    matrix[np.arange(1, matrix.shape[0]), np.arange(1, matrix.shape[0])] += (
        penalty_scale
    )
    values, vectors = eigh(matrix)
    keep = values > _RANK_TOLERANCE * matrix.shape[0] * max(values[-1], 0.0)
    inverse = np.divide(1.0, values, out=np.zeros_like(values), where=keep)
    return -(vectors * inverse) @ (vectors.T @ linear)


# ---------------------------------------------------------------------------
# Likelihood scales.


def blend_scale(running, batch, running_shares, batch_shares, rho, per_expert=True):
    """Blend each expert's scale in proportion to its weight on each side.

    ``(1 - rho) s_k scale_k + rho t_k batch_k``, divided by the sum of the
    two weights, with ``s_k`` the running and ``t_k`` the batch's share of
    the weight of expert ``k``. For a scale that is a weighted mean (the
    Gaussian variance, the Laplace scale) this is the running weighted mean;
    a Gamma dispersion, a function of the mean deviance, is blended as it
    is (close once the experts have settled). A scale shared by the experts
    (a tied covariance, `per_expert` False) is blended with weight `rho`.

    Returns None for a family without scales.
    """
    if running is None or batch is None:
        return None
    if not per_expert:
        return blend(running, batch, rho)
    old = (1.0 - rho) * running_shares
    new = rho * batch_shares
    total = old + new
    shape = (-1,) + (1,) * (np.ndim(running) - 1)
    old_share = np.divide(old, total, out=np.ones_like(old), where=total > 0)
    old_share = old_share.reshape(shape)
    return old_share * running + (1.0 - old_share) * batch


# ---------------------------------------------------------------------------
# One step.


@dataclass(frozen=True)
class OnlineState:
    """The running statistics of a mixture trained by ``partial_fit``."""

    n_steps: int  # steps taken, the seeding step included
    n_seen: float  # the row weight seen, every call's
    shares: np.ndarray  # (K,) E[w r_k] / E[w]
    linear: tuple  # per expert: LinearStatistics, or None
    gate: object  # the gate's own statistics (its `_partial_update`)


@dataclass(frozen=True)
class OnlineBatch:
    """One batch, validated, and what a step needs to read it."""

    X_parts: list  # each expert's columns
    X_gate: np.ndarray  # the gate's columns
    y: np.ndarray  # (n, m) targets of the likelihood
    y_fit: np.ndarray  # targets as the experts are fitted on them
    y_ndim: int  # of the targets the experts were first fitted on
    sample_weight: np.ndarray
    classes: object  # the encoded classes for a classifier's experts, or None


def partial_step(
    experts, gate, scale, state, batch, templates, family, outputs_of, rho, seeds
):
    """One online EM step on `batch`; returns the new model and statistics.

    Nothing is modified in place: the experts that update themselves are
    copied first, so a failure leaves the caller's model as it was.

    Parameters
    ----------
    experts : list
        The fitted experts.
    gate : fitted gate
        With ``_partial_update`` (SoftmaxGate, ConstantGate).
    scale : object
        The likelihood family's scales.
    state : OnlineState or None
        None seeds the statistics from this batch (``rho`` is then 1).
    batch : OnlineBatch
    templates : list
        The unfitted experts (their parameters: penalty, intercept).
    family : likelihood family (see ``_likelihood.py``)
    outputs_of : callable
        ``outputs_of(experts, X_parts)``: the experts' outputs.
    rho : float
        The step size.
    seeds : ndarray of int of shape (K,)
        For experts that must start afresh (a classifier expert fitted on
        fewer classes than the mixture has).

    Returns
    -------
    experts, gate, scale : the updated model
    state : OnlineState
    log_prob : ndarray of shape (n,)
        The batch's log-likelihood under the model before the step.
    """
    w = batch.sample_weight
    total = w.sum()
    # E-step with the current model.
    outputs = outputs_of(experts, batch.X_parts)
    with single_threaded_blas:
        log_lik = family.log_likelihood(batch.y, outputs, scale)
        resp, log_prob = _em.posterior(
            gate._predict_log_proba(batch.X_gate), log_lik, overwrite=True
        )
    del outputs, log_lik
    resp = np.ascontiguousarray(resp)
    batch_shares = w @ resp / total
    n_seen = total if state is None else state.n_seen + total
    shares = batch_shares if state is None else blend(state.shares, batch_shares, rho)

    experts = list(experts)
    linear = []
    for k, template in enumerate(templates):
        weights = w * resp[:, k]
        kept = None if state is None else state.linear[k]
        if update_kind(template) == "statistics":
            expert, stats = _linear_step(
                experts[k], template, kept, batch, k, weights / total, rho, n_seen
            )
            experts[k] = expert
            linear.append(stats)
            continue
        linear.append(None)
        rows = np.flatnonzero(weights > _NEGLIGIBLE_RESPONSIBILITY * w)
        if rows.size:
            experts[k] = _own_partial_fit(
                experts[k], template, batch, k, rows, weights, seeds[k]
            )

    # The family's scales, as batch EM fits them after the experts.
    outputs = outputs_of(experts, batch.X_parts)
    priors = expert_priors(experts, templates, w @ resp, n_seen, family.name)
    with single_threaded_blas:
        batch_scale = family.fit_scale(batch.y, outputs, resp, w, priors)
    del outputs
    if state is None:
        new_scale = batch_scale
    else:
        tied = getattr(family, "covariance_type", None) == "tied"
        new_scale = blend_scale(
            scale, batch_scale, state.shares, batch_shares, rho, per_expert=not tied
        )

    gate, gate_state = gate._partial_update(
        batch.X_gate, resp, w, None if state is None else state.gate, rho, n_seen
    )
    new_state = OnlineState(
        n_steps=1 if state is None else state.n_steps + 1,
        n_seen=n_seen,
        shares=shares,
        linear=tuple(linear),
        gate=gate_state,
    )
    return experts, gate, new_scale, new_state, log_prob


def _linear_step(expert, template, kept, batch, k, weights, rho, n_seen):
    """Blend a linear expert's statistics with the batch's; solve them."""
    X, y = batch.X_parts[k], batch.y_fit.reshape(batch.y_fit.shape[0], -1)
    if kept is None:
        stats = linear_statistics(X, y, weights)
    else:
        stats = kept.blend(linear_statistics(X, y, weights, kept.centre), rho)
    if not stats.total > _STARVED_SHARE:
        return expert, stats  # no weight to solve for: the last fit stays
    alpha = linear_alpha(template, y.shape[1])
    coef, intercept, rank, singular = linear_solution(
        stats, X.shape[1], template.fit_intercept, alpha, n_seen
    )
    return (
        fitted_linear_expert(template, coef, intercept, batch.y_ndim, rank, singular),
        stats,
    )


def _own_partial_fit(expert, template, batch, k, rows, weights, seed):
    """An updated copy of an expert, from its own ``partial_fit``.

    A classifier expert must know every class of the mixture: one that
    does not (fitted on rows of fewer classes, or a constant stand-in)
    starts afresh from its template.
    """
    classes = batch.classes
    known = getattr(expert, "classes_", None)
    if not hasattr(expert, "partial_fit") or (
        classes is not None
        and (known is None or not np.array_equal(np.asarray(known), classes))
    ):
        expert = clone(template)
        set_random_states(expert, seed)
    else:
        expert = copy.deepcopy(expert)
    extra = {} if classes is None else {"classes": classes}
    try:
        with single_threaded_blas.lifted():  # the user's expert, the user's threads
            expert.partial_fit(
                batch.X_parts[k][rows],
                batch.y_fit[rows],
                sample_weight=weights[rows],
                **extra,
            )
    except Exception as exc:
        _raise_naming_experts(exc, [k], template)
    return expert
