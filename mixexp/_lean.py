"""Soft EM of linear experts under a softmax gate, by sums over blocks of rows.

With least-squares experts, Gaussian noise and a softmax gate, an M-step
needs the responsibilities ``R`` only through sums over the rows:

- each expert's weighted moments of its columns and its target: the
  normal equations it is solved from and, a quadratic form in the same
  moments, the residual scatter its noise variance follows from;
- the gate's cross-entropy against targets whose rows sum to one,
  ``sum_i s_i lse_i(theta) - <theta, Z^T S R>``: the targets enter only
  through the (d + 1, K) matrix ``Z^T S R``, whatever the step
  (``_softmax.summed_softmax_evaluation``).

So the E-step runs a block of rows at a time, and each block's
responsibilities are summed into those statistics and dropped: no (n, K)
array outlives a block. The gate keeps its probabilities and the
standardised rows in single precision for the products with its Hessian,
as the in-memory truncated steps use them: ``4 (K + d + 1)`` bytes a row,
the largest memory of a fit.

The steps are ``_run.run_em``'s (gate, experts, scales, SQUAREM, re-seeds),
taken from the same quantities summed in another order, with two
departures:

- an expert's M-step weighs every row by its responsibility, where the
  in-memory M-step leaves out rows below
  ``_mstep._NEGLIGIBLE_RESPONSIBILITY`` to skip them (nothing is skipped
  here, so nothing is gained by leaving them out); an expert keeps its
  last fit only when its responsibilities sum to zero;
- a re-seed (rare) makes the (n, K) responsibilities of its iteration.

`runs_lean` says which fits run here.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from mixexp import _em, _softmax
from mixexp._convergence import objective_converged
from mixexp._likelihood import _LOG_2PI
from mixexp._linear import (
    centred_pair_features,
    least_squares_from_moments,
    moments_from_pair_sums,
    pair_sums_width,
    weighted_moments,
)
from mixexp._penalty import expert_priors
from mixexp._reseed import starving_of_shares
from mixexp._run import (
    Acceleration,
    EMRun,
    _accelerates,
    _checkpoint,
    _reseed_starving,
    linear_gaussian,
    plain_soft_em,
    report_end,
    report_iteration,
)
from mixexp.gating import SoftmaxGate, _SoftmaxFit
from mixexp.partition import initial_partition

__all__ = ["lean_run", "runs_lean"]

# A fit that can run lean does from this many bytes of (n, K)
# responsibilities in double precision (n K >= 2^20). benchmarks/scale.py
# --lean-rule times fits of 10 iterations both ways, d = 20: from this size
# the lean run took 0.77 to 1.01 times as long (100,000 rows and 16 to 64
# experts, 30,000 and 64), below it 0.97 to 1.29 times (10,000 to 100,000
# rows, 4 to 64 experts); on 30,000 rows and more its peak memory was 2.1
# to 4.7 times X, the in-memory run's 2.3 to 14.8.
_LEAN_MIN_RESPONSIBILITY_BYTES = 2**23

# Entries (experts x rows) of one block of the E-step: its (K, rows) arrays
# stay in cache while they are combined.
_BLOCK_ENTRIES = 2**16

# Bytes of one block's products of the rows' columns (`centred_pair_features`).
_PAIR_BLOCK_BYTES = 2**24


def runs_lean(context, gate_template):
    """Whether a fit from a fresh start runs here rather than in ``run_em``.

    It must be soft EM of single-target plain LinearRegression experts that
    all see the same columns, with Gaussian noise (one variance each) and a
    softmax gate, without out-of-fold E-steps, a capacity or expert fit
    parameters; and its (n, K) responsibilities must take at least
    `_LEAN_MIN_RESPONSIBILITY_BYTES` in double precision.
    """
    n_samples, n_experts = context.X.shape[0], len(context.templates)
    return (
        isinstance(gate_template, SoftmaxGate)
        and plain_soft_em(context)
        and linear_gaussian(context.templates, context.likelihood)
        and all(X is context.X_parts[0] for X in context.X_parts)
        and 8 * n_samples * n_experts >= _LEAN_MIN_RESPONSIBILITY_BYTES
    )


# ----------------------------------------------------------------------
# The gate.


class LeanSoftmaxFit(_SoftmaxFit):
    """A :class:`SoftmaxGate` fitted on the targets' sums ``Z^T S R``.

    The solver is ``_SoftmaxFit``'s (its Newton or truncated Newton steps,
    kept curvature and evidence updates); an evaluation is a pass over
    blocks of rows (``_softmax.SummedEvaluation``) that keeps only the
    probabilities, in single precision, for the Hessian's products. Its
    targets are the (d + 1, K) sums (`Sums.gate`), not (n, K)
    responsibilities. The E-step's pass evaluates the gate where the next
    M-step starts (`remember`).
    """

    def __init__(self, gate, X, weights, n_experts):
        super().__init__(gate, X, weights, n_experts)
        self._probaT32 = None
        self._known = None  # (raveled params, SummedEvaluation.result there)

    def probaT32(self):
        """The (K, n) single-precision buffer of the gate probabilities."""
        if self._probaT32 is None:
            shape = (self.n_experts, self.X.shape[0])
            self._probaT32 = np.empty(shape, dtype=np.float32)
        return self._probaT32

    def remember(self, flat, evaluation):
        """`evaluation`, made at `flat` with `probaT32` filled there."""
        self._known = (flat.copy(), evaluation)

    def _evaluation_at(self, flat):
        return None  # nothing of the (n, K) evaluation is kept in double

    def _known_at(self, flat, gradient):
        known = self._known
        if known is None or not np.array_equal(known[0], flat):
            return None
        if gradient and known[1][1] is None:
            return None
        return known[1]

    def _objective_function(self, targets, scaled, penalty_scale):
        def objective(flat, gradient=True):
            evaluation = self._known_at(flat, gradient)
            if evaluation is None:
                evaluation = self._summed_evaluation(flat, scaled, gradient)
            return _softmax.summed_softmax_objective(
                flat, evaluation, targets, penalty_scale
            )

        return objective

    def _summed_evaluation(self, flat, scaled, gradient):
        self._known = None  # the buffer is overwritten
        evaluation = _softmax.summed_softmax_evaluation(
            flat, self.X, self.mean, self.scale, scaled, self.probaT32(), gradient
        )
        self.remember(flat, evaluation)
        return evaluation

    def _probaT_at(self, flat):
        if self._known_at(flat, gradient=False) is None:
            self._summed_evaluation(flat, self.weights / self.total, gradient=False)
        return self._probaT32

    def _standardised_rowsT(self, dtype=np.float32):
        if self._zT32 is None:
            self._zT32 = _softmax.standardised_rowsT32(self.X, self.mean, self.scale)
        return self._zT32


# ----------------------------------------------------------------------
# Sums over the rows.


@dataclass
class Sums:
    """What an E-step gives the next M-step.

    ``load`` sums each expert's weights ``w_i r_ik``; ``gate`` is ``Z^T S
    R`` on the gate's standardised rows, ``S`` the weights over their total;
    ``moments`` each expert's ``(scatter, total, mean)`` of its columns and
    target (see ``_linear.weighted_moments``), None for an expert of no
    weight; ``log_likelihood`` sums ``w_i log p(y_i | x_i)`` (an E-step's).
    """

    load: np.ndarray
    gate: np.ndarray
    moments: list
    log_likelihood: float = None


@dataclass
class Rows:
    """The fit's rows, and what every pass over them shares."""

    X: np.ndarray  # the experts' columns
    X_gate: np.ndarray
    y: np.ndarray  # (n, 1)
    w: np.ndarray
    total: float
    scaled: np.ndarray  # w / total, as the gate's fit scales them
    centre: np.ndarray  # of the experts' columns and the target
    gate_mean: np.ndarray
    gate_scale: np.ndarray
    block_rows: int

    @classmethod
    def of(cls, context, gate):
        X, y, w = context.X_parts[0], context.y, context.sample_weight
        n_samples = X.shape[0]
        total = float(w.sum())
        centre = np.concatenate([w @ X, w @ y]) / total
        n_sums = pair_sums_width(X.shape[1] + y.shape[1])
        n_experts = len(context.templates)
        block_rows = min(
            max(256, _BLOCK_ENTRIES // n_experts),
            max(256, _PAIR_BLOCK_BYTES // (8 * n_sums)),
            n_samples,
        )
        return cls(
            X,
            context.X_gate,
            y,
            w,
            total,
            w / total,
            centre,
            gate.mean,
            gate.scale,
            block_rows,
        )

    def blocks(self):
        n_samples = self.X.shape[0]
        for start in range(0, n_samples, self.block_rows):
            yield slice(start, min(start + self.block_rows, n_samples))


class _Summer:
    """Sums of `Sums` over blocks of rows, under their responsibilities."""

    def __init__(self, rows, n_experts):
        self.rows = rows
        width = rows.X.shape[1] + rows.y.shape[1]
        self.width = width
        self.moments = np.zeros((n_experts, pair_sums_width(width)))
        self.gate = np.zeros((n_experts, rows.X_gate.shape[1]))
        self.features = np.empty((pair_sums_width(width), rows.block_rows))
        self.weighted = np.empty((n_experts, rows.block_rows))
        self.log_likelihood = 0.0

    def add(self, block, respT):
        """Add the rows `block`, whose responsibilities are `respT` (K, m)."""
        rows = self.rows
        m = respT.shape[1]
        weighted = np.multiply(respT, rows.w[block], out=self.weighted[:, :m])
        features = centred_pair_features(
            rows.X[block], rows.y[block], rows.centre, self.features[:, :m]
        )
        self.moments += weighted @ features.T
        self.gate += weighted @ rows.X_gate[block]

    def sums(self, missing_moments):
        """The `Sums`; `missing_moments(ks)` gives the moments of the experts
        whose sums about the overall centre lose too many digits."""
        rows = self.rows
        load = self.moments[:, 0].copy()
        moments = moments_from_pair_sums(self.moments, self.width, rows.centre)
        lost = [k for k, m in enumerate(moments) if m is None and load[k] > 0]
        if lost:
            for k, moment in zip(lost, missing_moments(lost), strict=True):
                moments[k] = moment
        gate = np.empty((rows.X_gate.shape[1] + 1, load.shape[0]))
        gate[0] = load
        gate[1:] = (self.gate.T - np.outer(rows.gate_mean, load)) / rows.gate_scale[
            :, np.newaxis
        ]
        gate /= rows.total
        return Sums(load, gate, moments, self.log_likelihood)


def _own_moments(rows, columns):
    """Moments of experts from their own (n,) responsibility columns."""
    intercepts = np.ones(len(columns), dtype=bool)
    return weighted_moments(
        [rows.X] * len(columns),
        rows.y,
        list(columns),
        [None] * len(columns),
        intercepts,
        rows.w,
    )


def responsibility_sums(rows, resp):
    """`Sums` of given (n, K) responsibilities (no log-likelihood)."""
    summer = _Summer(rows, resp.shape[1])
    for block in rows.blocks():
        summer.add(block, resp[block].T)
    return summer.sums(lambda ks: _own_moments(rows, [resp[:, k] for k in ks]))


@dataclass
class Point:
    """A model EM stands at: what an E-step needs of it."""

    gate_params: np.ndarray  # (d_gate + 1, K), standardised
    coefT: np.ndarray  # (K, d)
    intercept: np.ndarray  # (K,)
    variance: np.ndarray  # (K,)

    @classmethod
    def of(cls, gate, experts, scale):
        return cls(
            gate.params,
            np.stack([e.coef_ for e in experts]),
            np.array([e.intercept_ for e in experts], dtype=float),
            np.reshape(scale, (len(experts), -1))[:, 0].astype(float),
        )


def block_posterior(rows, point, block, evaluation=None):
    """One block's responsibilities (K, m) and log-likelihood per row.

    With `evaluation` (a ``_softmax.SummedEvaluation`` at the point's gate)
    the block is added to it too.
    """
    X_gate = rows.X_gate[block]
    if evaluation is None:
        log_gateT = _softmax.softmax_log_probaT(
            point.gate_params, X_gate, rows.gate_mean, rows.gate_scale
        )
    else:
        log_gateT = evaluation.add(block, X_gate)
    log_likT = np.matmul(point.coefT, rows.X[block].T)
    log_likT += point.intercept[:, np.newaxis]
    np.subtract(rows.y[block, 0], log_likT, out=log_likT)
    log_likT *= log_likT
    log_likT *= (1.0 / point.variance)[:, np.newaxis]
    log_likT += (np.log(point.variance) + _LOG_2PI)[:, np.newaxis]
    log_likT *= -0.5
    resp, log_prob = _em.posterior(log_gateT.T, log_likT.T, overwrite=True)
    return resp.T, log_prob


def e_step_sums(rows, point, gate):
    """The E-step at `point`, summed: its `Sums`, log-likelihood included.

    The pass also evaluates `gate` (at the point's parameters) for the
    next M-step, which starts there.
    """
    flat = point.gate_params.ravel()
    evaluation = _softmax.SummedEvaluation(
        flat,
        rows.gate_mean,
        rows.gate_scale,
        rows.scaled,
        gate.probaT32(),
        gradient=True,
        block_rows=rows.block_rows,
    )
    summer = _Summer(rows, point.coefT.shape[0])
    for block in rows.blocks():
        respT, log_prob = block_posterior(rows, point, block, evaluation)
        summer.log_likelihood += float(rows.w[block] @ log_prob)
        summer.add(block, respT)
    gate.remember(flat, evaluation.result())
    return summer.sums(lambda ks: _own_moments(rows, _columns(rows, point, ks)))


def log_likelihood_at(rows, point):
    """The E-step's log-likelihood alone (``sum_i w_i log p(y_i | x_i)``),
    as `e_step_sums` sums it: a jump's trial needs no more."""
    log_likelihood = 0.0
    for block in rows.blocks():
        log_prob = block_posterior(rows, point, block)[1]
        log_likelihood += float(rows.w[block] @ log_prob)
    return log_likelihood


def _columns(rows, point, ks):
    """The responsibility columns `ks` at `point`, (n,) each."""
    columns = np.empty((len(ks), rows.X.shape[0]))
    for block in rows.blocks():
        columns[:, block] = block_posterior(rows, point, block)[0][ks]
    return list(columns)


def responsibilities(rows, point):
    """The (n, K) responsibilities and per-row log-likelihood at `point`
    (for a re-seed), laid out as the in-memory E-step's."""
    n_samples, n_experts = rows.X.shape[0], point.coefT.shape[0]
    respT = np.empty((n_experts, n_samples))
    log_prob = np.empty(n_samples)
    for block in rows.blocks():
        respT[:, block], log_prob[block] = block_posterior(rows, point, block)
    return respT.T, log_prob


def gate_load_balance(gate, X_gate, block_rows):
    """`routing.load_balance` of a fitted gate on `X_gate`, a block of rows
    at a time."""
    n_samples = X_gate.shape[0]
    dispatched = proba_sum = 0.0
    for start in range(0, n_samples, block_rows):
        proba = np.exp(gate._predict_log_proba(X_gate[start : start + block_rows]))
        n_experts = proba.shape[1]
        dispatched = dispatched + np.bincount(
            np.argmax(proba, axis=1), minlength=n_experts
        )
        proba_sum = proba_sum + proba.sum(axis=0)
    return n_experts * float((dispatched / n_samples) @ (proba_sum / n_samples))


# ----------------------------------------------------------------------
# The start.


class Start:
    """The initial partition's softened responsibilities, a block of rows
    at a time, equal to those ``_run.single_run`` starts from.

    ``partition="random"`` draws its rows block by block (the same draws
    as at once), and a partition into clusters makes each block's from the
    labels: neither holds (n, K) responsibilities. A clusterer's
    probabilities are held, softened in place.
    """

    def __init__(self, kind, value, n_samples, n_experts, state):
        self.kind, self.value = kind, value
        self.n_samples, self.n_experts = n_samples, n_experts
        self.state = state  # the generator's, before the random draws
        self.rng = None
        if kind == "random":
            self.rng = np.random.RandomState()
            self.rng.set_state(state)
        if kind == "proba":
            _em.soften(value, out=value)

    @classmethod
    def of(cls, context, rng):
        """The start of `context`'s partition, drawn from `rng` as
        ``partition.initial_responsibilities`` draws (a random start's
        rows are drawn as the blocks are asked for)."""
        n_samples, n_experts = context.X.shape[0], len(context.templates)
        kind, value = initial_partition(
            context.X_filled,
            context.partition,
            n_experts,
            context.sample_weight,
            rng,
        )
        return cls(kind, value, n_samples, n_experts, rng.get_state())

    def block(self, block):
        """The rows `block` (consecutive, in order), as (K, m)."""
        if self.kind == "proba":
            return self.value[block].T
        if self.kind == "random":
            m = block.stop - block.start
            resp = self.rng.dirichlet(np.ones(self.n_experts), size=m)
            return _em.soften(resp, out=resp).T
        hard = _em.one_hot(self.value[block], self.n_experts)
        return _em.soften(hard, out=hard).T

    def whole(self):
        """All rows, (n, K): for a re-seed at the start (rare)."""
        if self.kind == "proba":
            return self.value
        if self.kind == "random":
            rng = np.random.RandomState()
            rng.set_state(self.state)
            draws = rng.dirichlet(np.ones(self.n_experts), size=self.n_samples)
            return _em.soften(draws, out=draws)
        hard = _em.one_hot(self.value, self.n_experts)
        return _em.soften(hard, out=hard)

    def columns(self, ks):
        """The responsibility columns `ks`, (n,) each."""
        whole = self.whole()
        return [whole[:, k].copy() for k in ks]


# ----------------------------------------------------------------------
# One EM run.


def lean_run(context, gate_template, init, seed):
    """One EM run from a fresh initial partition, on sums (the `body` of
    ``_run.single_run``)."""
    if context.verbose:
        print(f"Initialization {init}")
    rng = np.random.RandomState(seed)
    n_experts = len(context.templates)
    w = context.sample_weight
    # The gate's standardisation first: its temporaries never meet the
    # start's responsibilities.
    gate = LeanSoftmaxFit(gate_template, context.X_gate, w, n_experts)
    rows = Rows.of(context, gate)
    run = EMRun(gate=gate, n_reseeds=np.zeros(n_experts, dtype=int))
    sums = _start_sums(context, run, rows, rng)
    accelerated = None
    if _accelerates(context, run):
        accelerated = Acceleration.of_context(context)
    start = time.perf_counter()
    for n_iter in range(1, context.max_iter + 1):
        with warnings.catch_warnings():
            # A capped gate fit is a generalised EM step, not a failure.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gate.improve(sums.gate, exact=False)
        experts, scale, expert_penalty = _experts_step(context, sums, run.experts)
        load = sums.load / rows.total
        if accelerated is not None and accelerated.squarem.add(
            accelerated.point(gate, experts, scale)
        ):
            # The trials need only their log-likelihood; the sums of the
            # products of the rows, the larger cost, are made once, where
            # EM goes on from.
            log_likelihood = log_likelihood_at(rows, Point.of(gate, experts, scale))
            objective = _objective(rows, gate, log_likelihood, expert_penalty)
            experts, scale, objective = _jump(
                rows, gate, accelerated, (experts, scale, objective), expert_penalty
            )
        else:
            objective = None
        sums = e_step_sums(rows, Point.of(gate, experts, scale), gate)
        if objective is None:
            objective = _objective(rows, gate, sums.log_likelihood, expert_penalty)
        previous = run.history[-1] if run.history else None
        run.history.append(objective)
        run.experts, run.scale, run.n_iter = experts, scale, n_iter
        run.expert_load, run.dropped_fraction = load, 0.0
        if context.verbose >= 2:
            report_iteration(n_iter, start, objective, previous)
        starving = _starving(context, run, rows, sums)
        if starving.size:
            resp, log_prob = responsibilities(rows, Point.of(gate, experts, scale))
            resp = _reseed_starving(context, run, resp, log_prob, starving)
            sums = responsibility_sums(rows, resp)
            del resp, log_prob
            if accelerated is not None:
                # The next M-step is not EM's step from the last point.
                accelerated.squarem.restart()
        # Least-squares experts' penalty is known (zero): EM is exact and
        # its objective settles, with no plateau rule as in ``run_em``.
        run.converged = run.reseeded_at != n_iter and objective_converged(
            objective, previous, context.tol
        )
        if run.converged:
            break
    run.gate, run.checkpoint = gate.fitted(), _checkpoint(gate, context)
    run.load_balance = gate_load_balance(run.gate, context.X_gate, rows.block_rows)
    if context.verbose:
        report_end(run, start)
    return run


def _start_sums(context, run, rows, rng):
    """The `Sums` of the initial partition, its starving experts re-seeded."""
    # No seeds are drawn for the experts: plain LinearRegression takes none.
    initial = Start.of(context, rng)
    summer = _Summer(rows, len(context.templates))
    for block in rows.blocks():
        summer.add(block, initial.block(block))
    sums = summer.sums(lambda ks: _own_moments(rows, initial.columns(ks)))
    starving = _starving(context, run, rows, sums)
    if starving.size:
        resp = _reseed_starving(context, run, initial.whole(), None, starving)
        sums = responsibility_sums(rows, resp)
    return sums


def _starving(context, run, rows, sums):
    return starving_of_shares(
        sums.load / rows.total,
        rows.X.shape[0],
        run.n_reseeds,
        context.min_expert_load,
    )


def _experts_step(context, sums, previous):
    """The experts' M-step and the family's scales, from the sums.

    An expert of no weight keeps its last fit (its variance falls to the
    floor); before any, it is fitted on all rows, as ``fit_experts`` does.
    """
    templates, family = context.templates, context.likelihood
    n_experts = len(templates)
    empty = [k for k in range(n_experts) if sums.moments[k] is None]
    moments = list(sums.moments)
    if empty:
        everyone = weighted_moments(
            [context.X_parts[0]],
            context.y,
            [None],
            [None],
            np.ones(1, dtype=bool),
            context.sample_weight,
        )[0]
        for k in empty:
            moments[k] = everyone
    scatter, total, mean = (np.stack(part) for part in zip(*moments, strict=True))
    experts, residual = least_squares_from_moments(
        templates, (scatter, total, mean), 1, 1
    )
    if previous is not None:
        for k in empty:
            experts[k] = previous[k]
    total_weight = context.sample_weight.sum()
    priors = expert_priors(experts, templates, sums.load, total_weight, family.name)
    scale = family.scale_from_scatter(sums.load.copy(), residual, priors)
    return experts, scale, family.penalty(priors, scale)


def _objective(rows, gate, log_likelihood, expert_penalty):
    penalty = gate.penalty + expert_penalty
    return (log_likelihood - penalty) / rows.total


def _jump(rows, gate, accelerated, em_point, expert_penalty):
    """SQUAREM's jump, kept if it scores at least EM's point (as
    ``_run._jump``): the experts, scales and objective EM goes on from,
    the gate moved there. EM's own point, `em_point`, stands otherwise."""
    experts, scale, objective = em_point
    squarem = accelerated.squarem
    em_params = gate.params
    for step in squarem.steps():
        moved_experts, moved_scale = accelerated.move(
            squarem.point_at(step), gate, experts, scale
        )
        log_likelihood = log_likelihood_at(
            rows, Point.of(gate, moved_experts, moved_scale)
        )
        moved_objective = _objective(rows, gate, log_likelihood, expert_penalty)
        if moved_objective >= objective:
            squarem.settle(step)
            return moved_experts, moved_scale, moved_objective
    gate.move_to(em_params)
    squarem.settle(None)
    return em_point
