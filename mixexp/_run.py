"""One EM run: the loop of M- and E-steps, as plain functions of plain data.

The estimator (``_base.py``) validates the data and the parameters into a
``FitContext``; a run needs nothing else, so restarts can go to any joblib
worker without the estimator. A run alternates

- the experts' M-step (``_mstep.py``), the likelihood family's scales
  (``_likelihood.py``) and the gate's M-step (the gate protocol,
  ``gating.py``);
- the E-step (``_em.py``), then the re-seeding of starved experts
  (``_reseed.py``) and the gate targets and expert weights of the next
  M-step, capacity included (``routing.py``);

until it converges (``_convergence.py``) or reaches ``max_iter``.
"""

import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from mixexp import _em
from mixexp._accelerate import (
    Squarem,
    linear_of_standardised,
    standardised_linear,
)
from mixexp._convergence import (
    abandons_an_expert,
    assignment_settled,
    objective_converged,
    objective_plateaued,
)
from mixexp._linear import _shallow_copy, is_plain_linear_regression
from mixexp._mstep import fit_experts, keep_better_fits, out_of_fold_outputs
from mixexp._penalty import expert_priors
from mixexp._reseed import reseed, starving_experts
from mixexp._utils import MAX_SEED, runs_in_parallel, single_threaded_blas
from mixexp.gating import _standardisation
from mixexp.partition import initial_responsibilities
from mixexp.routing import _training_weights

# Fewest gate parameters, (features + 1) x experts, for which EM is
# accelerated (see _accelerates). On benchmarks/accelerate.py's small cases
# the gain depends on the data more than on the size: where EM creeps (the
# smooth surface, 10 or 20 features) SQUAREM cut the time by 15-45% at
# every size measured, 22 parameters and up; on make_regimes data, where
# EM mostly settles within 10 to 30 iterations, it changed the time by
# less than 15% either way at every size, 6 to 88 parameters. Small
# models, the size of the examples, keep plain EM. A fit over chunks
# (_chunked.py) follows the same rule, and so the same steps.
_ACCELERATE_MIN_GATE_PARAMETERS = 40


@dataclass
class FitContext:
    """Everything an EM run needs: the validated data and the settings.

    Plain data and plain functions, never the estimator, so that restarts
    and expert fits can run in any worker.
    """

    X: np.ndarray
    X_filled: np.ndarray  # X, its missing values (if any) by column means
    X_gate: np.ndarray  # the gate's columns of X
    y: np.ndarray  # (n, m) targets of the likelihood
    y_fit: np.ndarray  # targets as the experts are fitted on them
    X_parts: list  # each expert's columns
    sample_weight: np.ndarray
    likelihood: object  # the family, see _likelihood.py
    templates: list  # unfitted experts
    takes_weights: list
    fit_one: object  # fit(estimator, X, y, sample_weight, params) -> fitted
    outputs_of: object  # see _base._BaseMixtureOfExperts._outputs_function
    routed: dict  # metadata for the experts and the gate
    splits: list  # (train, test) folds of the out-of-fold E-step, or None
    n_jobs: object  # for the experts of an M-step
    keep_checkpoint: bool  # of the gate's fit, for a warm start to continue
    partition: object
    training: str
    capacity_factor: object
    overflow: str
    min_expert_load: object
    max_iter: int
    tol: float
    verbose: int

    def expert_params(self, k):
        params = self.routed["experts"]
        return params[k] if len(params) > 1 else params[0]


@dataclass
class EMRun:
    """One EM run's state; once it ends, its fitted model."""

    experts: list = None
    gate: object = None  # the gate's fit in progress; a fitted gate when done
    checkpoint: object = None  # of the gate's fit (see gating's protocol)
    scale: object = None  # the likelihood family's scales
    # What the experts' last M-step weights were, summed: each expert's
    # share of the row weight, and the share of rows no expert took (a
    # capacity's). The weights themselves are not kept: (n, K) each.
    expert_load: np.ndarray = None
    dropped_fraction: float = 0.0
    start: np.ndarray = None  # responsibilities to start from; run_em takes them
    history: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    n_reseeds: np.ndarray = None
    reseeded_at: int = -1
    # routing.load_balance of the fitted gate on the training rows, when
    # the run measured it (else the estimator does, from the gate).
    load_balance: float = None

    @property
    def lower_bound(self):
        return self.history[-1] if self.history else -np.inf


def single_run(context, gate_template, init, seed, body=None):
    """One EM run from a fresh initial partition (runs in a worker).

    `body(context, gate_template, init, seed)` runs it: by default the run
    of this module, or the run on sums (``_lean.lean_run``).
    """
    with single_threaded_blas.kept():
        return (body or _single_run)(context, gate_template, init, seed)


def _single_run(context, gate_template, init, seed):
    if context.verbose:
        print(f"Initialization {init}")
    rng = np.random.RandomState(seed)
    n_experts = len(context.templates)
    resp = initial_responsibilities(
        context.X_filled, context.partition, n_experts, context.sample_weight, rng
    )
    # Softened for every training mode: soft EM starts from it, and hard
    # EM keeps its argmax while capacity routing needs its ranking.
    # Laid out as the E-step's responsibilities are (each expert's column
    # contiguous), which the gate and the experts' M-step read along.
    resp = np.asfortranarray(_em.soften(resp))
    gate = gate_template._em_start(
        context.X_gate,
        context.sample_weight,
        n_experts,
        random_state=rng,
        fit_params=context.routed["gate"],
    )
    run = EMRun(gate=gate, start=resp)
    del resp  # run_em frees it once the first M-step has used it
    return run_em(context, run, rng)


def run_em(context, run, rng):
    """Alternate M- and E-steps from the responsibilities ``run.start``.

    At most one set of (n, K) responsibilities is held at a time (two under
    hard EM and out-of-fold E-steps, which compare an iteration's with the
    last): the gate's M-step runs first, and each iteration's weights are
    freed once the experts and their scales are fitted on them, before the
    E-step makes the next.
    """
    n_experts = len(context.templates)
    seeds = rng.randint(MAX_SEED, size=n_experts)
    if context.n_jobs != 1 and not runs_in_parallel(context.n_jobs):
        # Resolved once per run, in the worker that runs it: joblib's check
        # of its active backend costs as much as a small expert's fit.
        context = replace(context, n_jobs=1)
    w = context.sample_weight
    hard = context.training == "hard"
    one_expert_per_row = context.training != "em"  # hard EM, and "fixed"
    run.n_reseeds = np.zeros(n_experts, dtype=int)
    resp, run.start = run.start, None
    next_weights = _next_weights(context, run, resp, None, one_expert_per_row)
    del resp
    max_iter = 1 if context.training == "fixed" else context.max_iter
    # Hard EM and out-of-fold E-steps are not monotone: they may cycle or
    # dip, so the iteration with the highest objective is kept.
    keep_best = hard or context.splits is not None
    best = None
    accelerated = None
    if _accelerates(context, run):
        accelerated = Acceleration.of_context(context)
    before_last_mstep = None
    previous_outputs = None  # of run.experts, when some are inexact
    start = time.perf_counter()
    for n_iter in range(1, max_iter + 1):
        targets, mstep = next_weights  # the gate's targets, the experts' weights
        del next_weights
        # The gate's M-step first: it needs nothing else of this iteration,
        # and its fit then never holds memory beside the experts' outputs.
        with warnings.catch_warnings():
            # A capped gate fit is a generalised EM step, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            run.gate.improve(targets, exact=one_expert_per_row)
        del targets
        experts = fit_experts(context, mstep, seeds, run.experts)
        if context.splits is None:
            outputs = context.outputs_of(experts, context.X_parts)
            previous_outputs = keep_better_fits(
                context, mstep, experts, outputs, run.experts, previous_outputs
            )
        else:
            outputs = out_of_fold_outputs(context, mstep, seeds, experts)
        family = context.likelihood
        expert_weights = w @ mstep
        priors = expert_priors(
            experts, context.templates, expert_weights, w.sum(), family.name
        )
        with single_threaded_blas:
            scale = family.fit_scale(context.y, outputs, mstep, w, priors)
        expert_penalty = family.penalty(priors, scale)
        load = expert_weights / w.sum(), _dropped_fraction(context, mstep, w)
        # Only hard EM and out-of-fold E-steps look at these weights again.
        fitted_on = mstep if keep_best else None
        del mstep
        with single_threaded_blas:
            log_lik = family.log_likelihood(context.y, outputs, scale)
        del outputs  # n x K x outputs: free before the E-step allocates
        resp, log_prob, objective = _posterior(
            context, run.gate, log_lik, expert_penalty
        )
        del log_lik
        if accelerated is not None and accelerated.squarem.add(
            accelerated.point(run.gate, experts, scale)
        ):
            # The E-steps at the jump need their memory; a refused jump
            # makes them again.
            del resp, log_prob
            experts, scale, resp, log_prob, objective = _jump(
                context, run.gate, accelerated, experts, scale, priors, objective
            )

        previous = run.history[-1] if run.history else None
        run.history.append(objective)
        run.experts, run.scale, run.n_iter = experts, scale, n_iter
        run.expert_load, run.dropped_fraction = load
        if context.verbose >= 2:
            report_iteration(n_iter, start, objective, previous)
        if context.training == "fixed":
            run.converged = True
            break
        wasted = keep_best and abandons_an_expert(resp, fitted_on, w)
        next_weights = _next_weights(context, run, resp, log_prob, one_expert_per_row)
        del resp
        if accelerated is not None and run.reseeded_at == n_iter:
            # The next M-step is not EM's step from the last point.
            accelerated.squarem.restart()
        if keep_best and not wasted and (best is None or objective > best.lower_bound):
            best = EMRun(
                experts=experts,
                gate=run.gate.fitted(),
                checkpoint=_checkpoint(run.gate, context),
                scale=scale,
                expert_load=load[0],
                dropped_fraction=load[1],
                history=list(run.history),
                n_iter=n_iter,
            )
        run.converged = (
            run.reseeded_at != n_iter
            and (
                objective_converged(objective, previous, context.tol)
                or (
                    hard
                    and assignment_settled(
                        next_weights[1], fitted_on, before_last_mstep
                    )
                )
                # Experts whose penalty or fit is not exact (trees, k-NN,
                # boosting) make EM approximate: its objective may wander
                # instead of settling, and a run stops once it stops rising.
                # A re-seed starts a new climb: only its iterations count.
                or (
                    expert_penalty is None
                    and objective_plateaued(
                        run.history[max(run.reseeded_at, 0) :], context.tol
                    )
                )
            )
        )
        if run.converged:
            break
        if hard:  # only hard EM looks for a 2-cycle
            before_last_mstep = fitted_on
        del fitted_on
    run.gate, run.checkpoint = run.gate.fitted(), _checkpoint(run.gate, context)
    if best is not None and best.lower_bound > run.lower_bound:
        run.experts, run.gate, run.scale = best.experts, best.gate, best.scale
        run.checkpoint = best.checkpoint
        run.expert_load, run.dropped_fraction = best.expert_load, best.dropped_fraction
        run.n_iter, run.history = best.n_iter, best.history
    if context.verbose:
        report_end(run, start)
    return run


def report_iteration(n_iter, start, objective, previous):
    """The line ``verbose >= 2`` prints at the end of an iteration."""
    change = np.nan if previous is None else objective - previous
    lapse = time.perf_counter() - start
    print(
        f"  Iteration {n_iter}\t time lapse {lapse:.5f}s\t "
        f"objective change {change:.5g}"
    )


def report_end(run, start):
    """The line ``verbose`` prints at the end of a run."""
    state = "converged" if run.converged else "did not converge"
    lapse = time.perf_counter() - start
    print(
        f"Initialization {state}. time lapse {lapse:.5f}s\t "
        f"objective {run.lower_bound:.5f}"
    )


def _accelerates(context, run):
    """Whether EM is accelerated (SQUAREM, see ``_accelerate.py``).

    Only where EM's parameters are a plain vector that fixes the E-step:
    soft EM of single-target plain LinearRegression experts with Gaussian
    noise (a variance each, extrapolated in log space) and a softmax gate,
    neither out-of-fold E-steps nor a capacity; and only with a gate of
    `_ACCELERATE_MIN_GATE_PARAMETERS` or more.
    """
    return plain_soft_em(context) and accelerable(
        context.templates, context.likelihood, run.gate, context.X_gate.shape[1]
    )


def plain_soft_em(context):
    """Soft EM of single-target experts, without out-of-fold E-steps, a
    capacity or expert fit parameters (see `_accelerates` and
    ``_lean.runs_lean``)."""
    return (
        context.training == "em"
        and context.splits is None
        and context.capacity_factor is None
        and context.y_fit.ndim == 1  # one target: each coef_ of shape (d,)
        and all(not context.expert_params(k) for k in range(len(context.templates)))
    )


def linear_gaussian(templates, family):
    """Plain LinearRegression experts with Gaussian noise of one variance
    each: their M-step and scales follow from weighted moments."""
    return (
        family.name == "gaussian"
        and family.covariance_type in ("diag", "spherical")
        and all(is_plain_linear_regression(template) for template in templates)
    )


def accelerable(templates, family, gate, n_gate_features):
    """What a soft EM run accelerated in memory or over chunks must have: its
    experts, family and gate (see `_accelerates`)."""
    return (
        (n_gate_features + 1) * len(templates) >= _ACCELERATE_MIN_GATE_PARAMETERS
        and hasattr(gate, "move_to")
        and linear_gaussian(templates, family)
    )


class Acceleration:
    """SQUAREM's state in a run, and EM's point as one vector.

    The point holds the gate's (standardised) parameters, each expert's
    linear function on standardised X and y, and the log-variances, so
    that the length of a jump, measured on it, does not depend on the units
    of X or y.

    Parameters
    ----------
    y_variance : float
        The weighted variance of y.
    units : list of (mean, scale) pairs
        Each expert's standardisation of its columns.
    floor : ndarray
        The family's smallest noise variance.
    """

    def __init__(self, y_variance, units, floor):
        self.squarem = Squarem()
        self.y_scale = float(np.sqrt(y_variance)) if y_variance > 0 else 1.0
        self.units = units
        self.floor = floor

    @classmethod
    def of_context(cls, context):
        w = context.sample_weight
        y = context.y[:, 0]
        variance = np.average((y - np.average(y, weights=w)) ** 2, weights=w)
        units = {}
        for X in context.X_parts:
            if id(X) not in units:
                units[id(X)] = _standardisation(X, w)
        return cls(
            variance, [units[id(X)] for X in context.X_parts], context.likelihood.floor
        )

    def point(self, gate, experts, scale):
        """EM's point at `gate`, `experts` and `scale`."""
        parts = [gate.params.ravel()]
        for expert, (mean, x_scale) in zip(experts, self.units, strict=True):
            parts.append(
                standardised_linear(
                    expert.coef_, expert.intercept_, mean, x_scale, self.y_scale
                )
            )
        parts.append(np.log(np.ravel(scale)))
        return np.concatenate(parts)

    def move(self, point, gate, experts, scale):
        """The gate moved to `point`; new experts and scales there."""
        size = gate.params.size
        gate.move_to(point[:size].reshape(gate.params.shape))
        moved = []
        for expert, (mean, x_scale) in zip(experts, self.units, strict=True):
            end = size + mean.shape[0] + 1
            twin = _shallow_copy(expert)
            twin.coef_, intercept = linear_of_standardised(
                point[size:end], mean, x_scale, self.y_scale
            )
            # Without an intercept, the one the points share (0) is kept
            # as it is, not as rounding leaves it.
            twin.intercept_ = intercept if expert.fit_intercept else 0.0
            moved.append(twin)
            size = end
        variances = np.exp(point[size:]).reshape(scale.shape)
        return moved, np.maximum(variances, np.mean(self.floor))


def _jump(context, gate, accelerated, experts, scale, priors, objective):
    """The E-step at SQUAREM's jump, kept if it scores at least EM's point.

    Shorter steps are tried when it does not. Returns the experts, scales,
    responsibilities, per-row log-likelihood and objective of the point EM
    goes on from: the jump's, or (the gate moved back) EM's own, whose
    `objective` is given.
    """
    squarem = accelerated.squarem
    em_params = gate.params
    for step in squarem.steps():
        point = squarem.point_at(step)
        moved_experts, moved_scale = accelerated.move(point, gate, experts, scale)
        resp, log_prob, moved_objective = _e_step(
            context, gate, moved_experts, moved_scale, priors
        )
        if moved_objective >= objective:
            squarem.settle(step)
            return moved_experts, moved_scale, resp, log_prob, moved_objective
        del resp, log_prob
    gate.move_to(em_params)
    squarem.settle(None)
    resp, log_prob, _ = _e_step(context, gate, experts, scale, priors)
    return experts, scale, resp, log_prob, objective


def _e_step(context, gate, experts, scale, priors):
    """Responsibilities, per-row log-likelihood and objective at a point."""
    family = context.likelihood
    outputs = context.outputs_of(experts, context.X_parts)
    with single_threaded_blas:
        log_lik = family.log_likelihood(context.y, outputs, scale)
    del outputs
    return _posterior(context, gate, log_lik, family.penalty(priors, scale))


def _posterior(context, gate, log_lik, expert_penalty):
    """The E-step from the experts' log-likelihoods (overwritten): the
    responsibilities, per-row log-likelihood and the objective."""
    w = context.sample_weight
    with single_threaded_blas:
        resp, log_prob = _em.posterior(gate.log_proba(), log_lik, overwrite=True)
    penalty = gate.penalty + (expert_penalty or 0.0)
    return resp, log_prob, _em.mean_log_likelihood(log_prob, w) - penalty / w.sum()


def _next_weights(context, run, resp, log_prob, one_expert_per_row):
    """The next M-step's gate targets and expert weights, from `resp` with
    the starved experts re-seeded."""
    return _training_weights(
        _reseed_starving(context, run, resp, log_prob),
        one_expert_per_row,
        context.capacity_factor,
        context.overflow,
    )


def _dropped_fraction(context, mstep, sample_weight):
    """The share of the row weight no expert was fitted on (a capacity's)."""
    if context.capacity_factor is None:
        return 0.0
    dropped = mstep.sum(axis=1) == 0
    return sample_weight[dropped].sum() / sample_weight.sum()


def _checkpoint(progress, context):
    """The gate's checkpoint, when a warm start may continue from it."""
    if context.keep_checkpoint and hasattr(progress, "checkpoint"):
        return progress.checkpoint()
    return None


def _reseed_starving(context, run, resp, log_prob, starving=None):
    """`resp` with the starved experts (`starving`, or those
    `starving_experts` finds) re-seeded (see ``_reseed.py``)."""
    if starving is None:
        starving = starving_experts(
            resp, context.sample_weight, run.n_reseeds, context.min_expert_load
        )
    if starving.size == 0:
        return resp
    run.reseeded_at = run.n_iter
    resp, reseeded = reseed(
        resp,
        starving,
        log_prob,
        context.X_filled,
        context.sample_weight,
        context.min_expert_load,
    )
    run.n_reseeds[reseeded] += 1
    return resp
