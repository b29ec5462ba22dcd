"""Gates: models of which expert to trust for an input.

A gate is fitted on *soft targets*: an (n_samples, n_experts) matrix whose
rows are probability vectors (the EM responsibilities), with optional row
weights. Every gate here accepts hard labels too (a 1-D array of expert
indices), so it can be used and inspected on its own.

- :class:`SoftmaxGate`: multinomial logistic regression on the soft targets
  (the classic gate of Jordan and Jacobs), L2-penalised, solved by Newton
  steps with an analytic Hessian (with many experts, truncated Newton steps
  that never form it), warm-started across EM iterations.
- :class:`ConstantGate`: mixing proportions only, the same for every input
  (a finite mixture of regressions).
- :class:`ClassifierGate`: any scikit-learn classifier with
  ``predict_proba`` and ``sample_weight``, fitted on the soft targets by
  stacking one weighted copy of the rows per expert.

The gate protocol
-----------------
A mixture's EM loop talks to its gate through these methods alone, and
names no gate class. An unfitted gate has

``_em_start(X, sample_weight, n_experts, *, random_state, fit_params, init)``
    Begin fitting the gate inside one EM run on the validated training
    inputs ``X`` with row weights ``sample_weight``; return the *fit in
    progress*, which owns every piece of solver state (kept Hessians, the
    standardisation of ``X``, cached evaluations) for the run's duration.
    ``random_state`` is the run's ``RandomState``: a gate that needs seeds
    draws them from it (None: seed nothing). ``fit_params`` is the metadata
    routed to the gate (a dict). ``init`` is where a mixture's warm start
    begins: a fitted gate, or a ``checkpoint()`` of an earlier fit in
    progress; None to start afresh. A gate ignores an ``init`` it cannot
    use.

The fit in progress has

``improve(targets, exact)``
    The gate's M-step on (n_samples, n_experts) soft targets ``T``: raise
    the penalised weighted log-likelihood of the targets,
    ``sum_i w_i sum_k T_ik log g_k(x_i) - penalty``, or maximise it when
    ``exact`` is True (hard EM, ``training="fixed"``, a standalone fit). A
    generalised step that only raises it is what soft EM needs.
``log_proba()``
    The (n_samples, n_experts) log gate probabilities on the training rows
    at the current parameters.
``penalty``
    The penalty (on the scale of the summed log-likelihood) at the current
    parameters; EM reports the log-likelihood less this. 0.0 for none.
``fitted()``
    A fitted gate at the current parameters that holds none of the fit's
    state: the mixture's ``gate_``.
``checkpoint()`` (optional)
    The fit's state without its data (the parameters and the solver's
    curvature), which ``_em_start(init=...)`` takes to continue exactly
    where this fit stopped: a mixture with ``warm_start=True`` keeps it
    between fits, so that five fits of one EM iteration each are one fit of
    five. Without it, a warm start begins from the fitted gate.

A fitted gate has ``_predict_log_proba(X)``, its (n, n_experts) log
probabilities on validated inputs, and may have ``_n_parameters()``, its
number of free parameters for ``bic`` and ``aic`` (None: not countable),
and ``_partial_update(X, targets, sample_weight, state, rho, n_seen)``,
one step of online EM (a mixture's ``partial_fit``, see
``mixexp/_online.py``): it blends the batch's statistics into its running
``state`` (None: seed them from this batch) with step size ``rho``, and
returns the updated fitted gate and the new state, leaving itself as it
was; ``n_seen`` is the row weight seen so far, against which a penalty is
set. A gate without it cannot be trained by ``partial_fit``.
"""

import copy
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    has_fit_parameter,
    validate_data,
)

from mixexp import _online, _softmax
from mixexp._em import expert_shares
from mixexp._utils import MAX_SEED, set_random_states, single_threaded_blas, take_rows

__all__ = ["ClassifierGate", "ConstantGate", "SoftmaxGate"]

# Rows whose target weight for an expert is below this share are left out of
# the stacked copy for that expert in ClassifierGate: they would cost a copy
# of the row and change nothing measurable.
_NEGLIGIBLE_TARGET = 1e-8

# Above this many parameters ((n_features + 1) * n_experts) the softmax gate
# takes truncated Newton steps (in EM's M-steps and in a full solve):
# conjugate gradients on products with the Hessian, preconditioned by the
# experts' diagonal blocks of it, instead of the Hessian itself, which costs
# n ((n_features + 1) K)^2 and an eigendecomposition growing with the cube of
# the parameters (see ``_softmax.truncated_newton_direction``). The evidence
# re-estimate of alpha then reads the same blocks. benchmarks/kernels.py
# (item 9) times both paths on 20,000 rows: per iteration truncated steps
# are the faster from about 150 parameters (20 features) or 200 (5
# features), but fits to convergence took as long with either up to 336
# parameters, the exact steps needing fewer iterations; from 504 the
# truncated steps are 1.5 times faster.
_TRUNCATED_NEWTON_MIN_PARAMETERS = 400

# Conjugate-gradient products per truncated Newton step, and the relative
# residual at which they stop earlier.
_CG_MAX_ITER = 10
_CG_RTOL = 0.01

# The experts' blocks of the Hessian (the preconditioner, and the evidence's
# curvature) are recomputed after this many truncated Newton steps, or as
# soon as a solve they preconditioned needed all _CG_MAX_ITER products.
_BLOCKS_MAX_AGE = 3

# Newton steps of the softmax gate in one inexact M-step (soft EM). One step
# per EM iteration (a generalised M-step: it raises the objective, which is
# all EM needs) costs a gradient or two, and took fewer EM iterations than
# solving the gate to convergence each time: a fully solved gate sharpens
# its boundaries early, and sharp responsibilities move slowly (on
# make_regimes data, 3,000 to 20,000 rows, 24 to 40 iterations against 26 to
# over 500 at tol=1e-6), and often in a worse local maximum (mean
# log-likelihood -1.1 and -1.7 against -0.73 at 5,000 and 3,000 rows from
# the same k-means start). A step taken with an old Hessian that did poorly
# does not count towards the cap (see ``_softmax.newton_minimise``).
_NEWTON_STEPS_PER_IMPROVE = 1

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


_FIT_DOC = """Fit the gate to expert labels or soft targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_experts)
            Expert indices, or soft targets whose rows sum to 1.
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights; ``None`` gives every row weight 1.{fit_params}

        Returns
        -------
        self : object
            The fitted gate.
        """


class _BaseGate(BaseEstimator):
    """What every gate of this module shares: a standalone fit through the
    gate protocol, and predictions from ``_predict_log_proba``."""

    _parameter_constraints: dict = {}

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        return self._fit_standalone(X, y, sample_weight, {})

    fit.__doc__ = _FIT_DOC.format(fit_params="")

    def _fit_standalone(self, X, y, sample_weight, fit_params):
        """Validate, solve the gate in full on the targets, keep the result.

        The fit in progress comes from `_standalone_start`; the fitted state
        it ends with becomes this gate's.
        """
        X = validate_data(self, X, reset=True, dtype=np.float64)
        targets = _as_soft_targets(y, X.shape[0])
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        progress = self._standalone_start(X, weights, targets.shape[1], fit_params)
        progress.improve(targets, exact=True)
        parameters = self.get_params(deep=False)
        for name, value in vars(progress.fitted()).items():
            if name not in parameters:
                setattr(self, name, value)
        return self

    def _n_parameters(self):
        return None

    def predict_log_proba(self, X):
        """Log gate probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs, as for :meth:`predict_proba`.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_experts)
            Natural logarithm of `predict_proba`, computed stably; an expert
            the gate never trusts gets the log of the smallest positive
            float.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._predict_log_proba(X)

    def predict_proba(self, X):
        """Gate probabilities: how much each expert is trusted on each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to weigh the experts on.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_experts)
            One column per expert; rows sum to 1.
        """
        return np.exp(self.predict_log_proba(X))

    def predict(self, X):
        """Index of the most trusted expert per row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Rows to route; each goes to one expert.

        Returns
        -------
        experts : ndarray of int of shape (n_samples,)
            The argmax of `predict_proba`; ties go to the lower index.
        """
        return np.argmax(self.predict_log_proba(X), axis=1)


class SoftmaxGate(_BaseGate):
    """Multinomial logistic gate fitted on soft targets.

    The gate models ``g_k(x) = softmax(x @ coef_ + intercept_)_k``. It is
    fitted by minimising the weighted cross-entropy between the targets and
    ``g(x)`` plus ``alpha / 2`` times the squared norm of the coefficients on
    standardised features, by Newton steps with a backtracking line search.
    Inside EM each fit is warm-started from the previous one and reuses the
    previous Hessian while its steps keep doing well; under soft EM a
    mixture takes one Newton step per iteration (two when a step with an
    old Hessian did poorly: the second one recomputes it). Above 400
    parameters (``(n_features + 1) * n_experts``) a step is a truncated
    Newton step instead: conjugate gradients on products with the exact
    Hessian, preconditioned by each expert's own block of it, so that its
    cost grows with the number of experts, not with its square. Every step
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

    def _standalone_start(self, X, weights, n_experts, fit_params):
        init = self if self.warm_start and hasattr(self, "_params") else None
        return _SoftmaxFit(
            self, X, weights, n_experts, init=init, reuse=self.warm_start, warn=True
        )

    def _em_start(self, X, sample_weight, n_experts, *, init=None, **unused):
        # Nothing to seed and no metadata to take.
        return _SoftmaxFit(self, X, sample_weight, n_experts, init=init)

    def _predict_log_proba(self, X):
        # On the (K, n) layout (see mixexp/_softmax.py), without a
        # standardised copy of X; returned as an (n, K) view.
        return _softmax.softmax_log_probaT(self._params, X, self._mean, self._scale).T

    def _n_parameters(self):
        # Softmax is blind to a shift shared by every expert's parameters.
        return (self.n_features_in_ + 1) * (self.classes_.shape[0] - 1)

    def _partial_update(self, X, targets, sample_weight, state, rho, n_seen):
        # A stochastic MM step on Böhning's bound, on this gate's
        # standardisation (kept from its fit), with its penalty alpha_ (kept
        # too: an evidence re-estimate needs the Hessian of all the data).
        batch = _online.softmax_surrogate_statistics(
            self._params, X, self._mean, self._scale, targets, sample_weight
        )
        state = batch if state is None else _online.blend(state, batch, rho)
        params = _online.softmax_surrogate_minimiser(*state, self.alpha_ / n_seen)
        gate = copy.copy(self)
        gate._params = params
        gate.coef_ = params[1:] / self._scale[:, np.newaxis]
        gate.intercept_ = params[0] - self._mean @ gate.coef_
        gate.penalty_ = _penalty_of(self.alpha_, params)
        return gate, state


@dataclass(frozen=True)
class _SoftmaxCheckpoint:
    """A softmax fit's state without its data (see ``_SoftmaxFit.checkpoint``)."""

    gate: SoftmaxGate  # fitted: the parameters, the standardisation, alpha
    curvature: tuple
    curvature_penalty: float
    data_hessian: np.ndarray


def _penalty_of(alpha, params):
    """The softmax gate's L2 penalty at `params`: its coefficients', not its
    intercepts'."""
    return 0.5 * alpha * float(np.sum(params[1:] ** 2))


def _standardisation(X, weights):
    """Weighted mean and scale of each feature (scale 1 where constant)."""
    mean = np.average(X, axis=0, weights=weights)
    return _standardisation_of(
        mean, np.average((X - mean) ** 2, axis=0, weights=weights)
    )


def _standardisation_of(mean, variance):
    """`_standardisation` from each feature's weighted mean and variance."""
    scale = np.sqrt(variance)
    scale[~(scale > 1e-12 * np.maximum(np.abs(mean), 1.0))] = 1.0
    return mean, scale


class _SoftmaxFit:
    """A :class:`SoftmaxGate` being fitted on one X: the fit in progress.

    It holds the gate's parameters on the standardised features and the
    solver's state: the standardisation of X, the last Hessian and its
    eigendecomposition, the last evaluation of the scores on X, and, with
    ``alpha="auto"``, the current penalty. Inside EM each M-step continues
    from the last (`reuse`): it starts from the previous parameters and
    reuses the previous curvature while its steps keep doing well, and the
    E-step's gate probabilities come from the last evaluation.

    Parameters
    ----------
    gate : SoftmaxGate
        Its parameters (`alpha`, `max_iter`, `tol`) are read, never set.
    X : ndarray of shape (n_samples, n_features)
    weights : ndarray of shape (n_samples,)
    n_experts : int
    init : SoftmaxGate or _SoftmaxCheckpoint, default=None
        A fitted gate to start from, or a checkpoint of an earlier fit to
        continue (its curvature too, when X has the same standardisation);
        ignored unless of the same number of features and experts.
    reuse : bool, default=True
        Continue each solve from the last one, keeping its curvature and
        evaluations (EM, and a warm-started standalone fit). Without it each
        solve of ``alpha="auto"``'s alternation starts from zero, so that
        where a standalone fit settles does not depend on the path.
    warn : bool, default=False
        Warn when a full solve does not converge (a standalone fit).
    """

    def __init__(
        self, gate, X, weights, n_experts, *, init=None, reuse=True, warn=False
    ):
        self.gate = gate
        self.X = X
        self.weights = weights
        self.n_experts = n_experts
        self.reuse = reuse
        self.warn = warn
        self.total = weights.sum()
        self.mean, self.scale = _standardisation(X, weights)
        self.params = None  # (n_features + 1, n_experts), standardised
        self.alpha = None  # None until the first penalty is known
        self.gamma = None
        self.penalty = 0.0
        self.n_iter = 0
        self._curvature = self._curvature_penalty = self._data_hessian = None
        self._data_hessian_at = None  # the raveled params of _data_hessian
        self._hessian_at_zero = None  # the data Hessian where all params are 0
        self._evaluated = None  # (raveled params, softmax_evaluation there)
        self.truncated = (X.shape[1] + 1) * n_experts > _TRUNCATED_NEWTON_MIN_PARAMETERS
        self._blocks = None  # (raveled params, block_curvature there)
        self._blocks_age, self._cg_solved = 0, True
        self._zT = None  # the standardised rows, once truncated steps need them
        self._zT32 = None
        checkpoint = init if isinstance(init, _SoftmaxCheckpoint) else None
        if checkpoint is not None:
            init = checkpoint.gate
        if (
            isinstance(init, SoftmaxGate)
            and hasattr(init, "_params")
            and init._params.shape == (X.shape[1] + 1, n_experts)
        ):
            same_scaling = np.array_equal(init._mean, self.mean) and np.array_equal(
                init._scale, self.scale
            )
            self.params = init._params if same_scaling else self._rescaled(init)
            self.alpha = init.alpha_
            if checkpoint is not None and same_scaling:
                self._curvature = checkpoint.curvature
                self._curvature_penalty = checkpoint.curvature_penalty
                self._data_hessian = checkpoint.data_hessian

    def _rescaled(self, init):
        """`init`'s gate function, in this fit's standardised coordinates."""
        coef = init._params[1:] / init._scale[:, np.newaxis]
        intercept = init._params[0] - init._mean @ coef
        return np.vstack(
            [intercept + self.mean @ coef, coef * self.scale[:, np.newaxis]]
        )

    # ------------------------------------------------------------------
    # The gate protocol.

    def improve(self, targets, exact):
        """Fit on `targets`: in full, or by a capped number of Newton steps.

        Capped (`exact` False, soft EM), it is a generalised M-step: every
        step lowers the penalised cross-entropy. With ``alpha="auto"`` the
        penalty is then re-estimated once, and otherwise until it settles.
        """
        max_steps = None if exact else _NEWTON_STEPS_PER_IMPROVE
        with single_threaded_blas:
            if self.gate.alpha != "auto":
                self.alpha, self.gamma = float(self.gate.alpha), None
                self._fit_penalised(targets, max_steps, self.warn)
                return
            # A fit that continues a previous one (EM's later M-steps, or a
            # warm start) may only relax the penalty, by 5% or more at a
            # time: a smaller penalty can only raise the penalised objective
            # at the current gate, so EM's objective never goes down, and
            # alpha settles. A first fit finds its fixed point freely.
            first = self.alpha is None
            if first and max_steps is not None:
                # EM's first M-step: the level of alpha comes from the gate
                # solved in full (after one step from zero its coefficients
                # are still small, and alpha would come out far too high);
                # the step EM takes is then one step from zero at that level
                # (a gate solved in full would sharpen EM's first
                # responsibilities).
                self.alpha = self._fit_auto(targets, None, first=True, warn=False)
                self.params = self._curvature = self._data_hessian = None
                self._data_hessian_at = None
                self._evaluated = None
                self._fit_penalised(targets, max_steps, self.warn)
            else:
                self.alpha = self._fit_auto(targets, max_steps, first, self.warn)
            self.penalty = _penalty_of(self.alpha, self.params)

    def log_proba(self):
        evaluation = self._evaluation_at(self.params.ravel())
        if evaluation is not None:  # the last Newton step's, at these params
            # Normalised where they are, so that the E-step allocates no
            # (n, K) array for them: the evaluation means the same, as only
            # scores less log_norm matter. Read-only, for the next step's
            # evaluation will be made in this memory.
            scores, _, log_norm = evaluation
            scores -= log_norm
            log_norm[:] = 0.0
            log_probaT = scores.view()
            log_probaT.flags.writeable = False
            return log_probaT.T
        with single_threaded_blas:
            return _softmax.softmax_log_probaT(
                self.params, self.X, self.mean, self.scale
            ).T

    def fitted(self):
        gate = clone(self.gate)
        params = self.params
        gate._params, gate._mean, gate._scale = params, self.mean, self.scale
        gate.coef_ = params[1:] / self.scale[:, np.newaxis]
        gate.intercept_ = params[0] - self.mean @ gate.coef_
        gate.penalty_ = self.penalty
        gate.alpha_ = self.alpha
        gate.gamma_ = self.gamma
        gate.n_iter_ = self.n_iter
        gate.classes_ = np.arange(self.n_experts)
        gate.n_features_in_ = self.mean.shape[0]
        return gate

    def checkpoint(self):
        return _SoftmaxCheckpoint(
            self.fitted(), self._curvature, self._curvature_penalty, self._data_hessian
        )

    # ------------------------------------------------------------------
    # Solvers.

    def _fit_auto(self, targets, max_steps, first, warn):
        """Alternate fits and evidence re-estimates; return the next alpha.

        Under a step cap (EM), one fit and one re-estimate.
        """
        alpha = _AUTO_ALPHA_START if first else self.alpha
        capped = max_steps is not None
        for _ in range(1 if capped else _AUTO_ALPHA_MAX_ROUNDS):
            self.alpha = alpha
            self._fit_penalised(targets, max_steps, warn)
            new = self._evidence_update(fresh=not capped)
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

    def _evidence_update(self, fresh=False):
        """The evidence re-estimate of alpha at the current fit, clipped.

        Inside EM the eigendecomposition of the last Newton step is reused
        (computed at nearby parameters: an approximation that costs
        nothing); a standalone fit (`fresh`) computes the Hessian at the
        solution, so that where it settles does not depend on the path.
        """
        if self.truncated:
            return self._clipped_alpha(*self._block_evidence())
        curvature, penalty_scale = self._curvature, self._curvature_penalty
        if fresh or curvature is None or penalty_scale is None:
            penalty_scale = self.alpha / self.total
            flat = self.params.ravel()
            if self._data_hessian_at is not None and np.array_equal(
                self._data_hessian_at, flat
            ):
                # A solve that took no step since (its alpha barely moved):
                # the Hessian there is the one kept.
                hessian = _softmax.add_penalty(
                    self._data_hessian, penalty_scale, self.n_experts
                )
            else:
                hessian = self._hessian_at(flat, penalty_scale)
            curvature = _softmax.pseudo_inverse_factors(hessian)
            if self.reuse:
                self._curvature, self._curvature_penalty = curvature, penalty_scale
        if curvature[0].size == 0:
            return None
        return self._clipped_alpha(
            *_softmax.evidence_alpha(
                self.params, curvature, penalty_scale, self.n_experts
            )
        )

    def _clipped_alpha(self, new, gamma):
        self.gamma = gamma
        if new is None:  # no coefficients left: the data support none
            return _AUTO_ALPHA_MAX
        return float(np.clip(new, _AUTO_ALPHA_MIN, _AUTO_ALPHA_MAX))

    def _block_evidence(self):
        """`_softmax.block_evidence_alpha` at the current parameters."""
        scaled = self.weights / self.total
        flat = self.params.ravel()
        blocks = self._blocks_at(flat, self._probaT_at(flat), scaled)
        return _softmax.block_evidence_alpha(
            self.params, blocks, self.alpha / self.total
        )

    def _fit_penalised(self, targets, max_steps, warn):
        """Minimise the penalised cross-entropy at the current alpha."""
        n_features, n_experts = self.mean.shape[0], self.n_experts
        start = np.zeros((n_features + 1, n_experts))
        previous = self.params
        if self.reuse and previous is not None:
            start = previous
        # Weights over their total: the solver's tolerances do not depend on
        # the number of rows. Not kept between M-steps (an n-vector).
        scaled = None if self.weights is None else self.weights / self.total
        penalty_scale = self.alpha / self.total
        objective = self._objective_function(targets, scaled, penalty_scale)

        def hessian(flat):
            return self._hessian_at(flat, penalty_scale)

        if self.truncated:
            flat, n_iter, converged = self._truncated_newton_steps(
                objective,
                start.ravel(),
                penalty_scale,
                scaled,
                self.gate.max_iter if max_steps is None else max_steps,
            )
        else:
            curvature = None
            if start is previous:
                curvature = self._remembered_curvature(penalty_scale)
            max_iter = self.gate.max_iter
            if max_steps is not None:
                max_iter = min(max_iter, max_steps)
            flat, n_iter, converged, curvature = _softmax.newton_minimise(
                objective, start.ravel(), hessian, max_iter, self.gate.tol, curvature
            )
            if self.reuse:
                self._curvature, self._curvature_penalty = curvature, penalty_scale
        if warn and not converged:
            warnings.warn(
                f"SoftmaxGate did not converge in max_iter={self.gate.max_iter} "
                "iterations; increase max_iter or alpha.",
                ConvergenceWarning,
                stacklevel=5,
            )
        self.params = flat.reshape(n_features + 1, n_experts)
        self.penalty = _penalty_of(self.alpha, self.params)
        self.n_iter = n_iter

    def _objective_function(self, targets, scaled, penalty_scale):
        """``objective(flat, gradient=True) -> (loss, grad)`` on `targets`."""
        X, mean, scale, n_experts = self.X, self.mean, self.scale, self.n_experts
        targetsT = np.ascontiguousarray(targets.T)

        def objective(flat, gradient=True):
            evaluation = self._evaluation_at(flat)
            if evaluation is None:
                # The last evaluation's two (n, K) arrays, no longer needed,
                # take the new one (a line search only moves forward).
                buffers = None
                if self._evaluated is not None:
                    buffers = self._evaluated[1][:2]
                self._evaluated = None
                evaluation = _softmax.softmax_evaluation(
                    flat, X, mean, scale, n_experts, self._zT, buffers
                )
                del buffers
                if self.reuse:
                    # EM's next E-step and next gate step start from here.
                    self._evaluated = (flat, evaluation)
            return _softmax.softmax_objective(
                flat,
                X,
                mean,
                scale,
                targetsT,
                scaled,
                penalty_scale,
                evaluation,
                gradient,
            )

        return objective

    def _truncated_newton_steps(
        self, objective, flat, penalty_scale, scaled, max_steps
    ):
        """Truncated Newton steps with a backtracking line search.

        Each step solves ``H D = g`` by conjugate gradients on products with
        the exact Hessian, preconditioned by the experts' diagonal blocks
        of it (kept for the evidence re-estimate that follows), at most
        `_CG_MAX_ITER` products.
        """
        loss, grad = objective(flat)
        for n_iter in range(1, max_steps + 1):
            if np.max(np.abs(grad)) < self.gate.tol:
                return flat, n_iter - 1, True
            probaT = self._probaT_at(flat)
            factors = _softmax.block_factors(
                self._blocks_at(flat, probaT, scaled), penalty_scale
            )
            direction, self._cg_solved = _softmax.truncated_newton_direction(
                grad,
                self._standardised_rowsT(np.float32),
                probaT,
                scaled,
                penalty_scale,
                factors,
                _CG_MAX_ITER,
                _CG_RTOL,
            )
            del probaT
            self._blocks_age += 1
            slope = float(grad @ direction)
            if not slope > 0:
                return flat, n_iter - 1, True
            # The last step's gradient is not needed: EM's next M-step
            # starts from new targets.
            last = n_iter == max_steps
            length = 1.0
            while True:
                trial = flat - length * direction
                trial_loss, trial_grad = objective(trial, gradient=not last)
                if trial_loss <= loss - 1e-4 * length * slope:
                    break
                length *= 0.5
                if length < 1e-10:  # no decrease left within precision
                    return flat, n_iter, True
            flat, loss, grad = trial, trial_loss, trial_grad
        # The last step's gradient is unknown: the solve is not known to have
        # converged.
        return flat, max_steps, False

    def _blocks_at(self, flat, probaT, scaled):
        """`_softmax.block_curvature` at `flat`, or the kept blocks.

        Kept blocks serve (as the preconditioner, and for the evidence)
        until `_BLOCKS_MAX_AGE` steps have used them, or a conjugate
        gradient solve they preconditioned ran out of products: then they
        are recomputed where the fit stands.
        """
        kept = self._blocks
        if kept is not None and (
            np.array_equal(kept[0], flat)
            or (self._blocks_age < _BLOCKS_MAX_AGE and self._cg_solved)
        ):
            return kept[1]
        blocks = _softmax.block_curvature(
            self._standardised_rowsT(np.float32), probaT, scaled
        )
        self._blocks, self._blocks_age = (flat, blocks), 0
        return blocks

    def _standardised_rowsT(self, dtype=np.float64):
        """The standardised rows (d + 1, n), made once per fit (and once in
        single precision, for the Hessian-vector products)."""
        if self._zT is None:
            self._zT = _softmax.standardised_rowsT(self.X, self.mean, self.scale)
        if dtype == np.float64:
            return self._zT
        if self._zT32 is None:
            self._zT32 = self._zT.astype(np.float32)
        return self._zT32

    def _probaT_at(self, flat):
        evaluation = self._evaluation_at(flat)
        if evaluation is not None:
            return evaluation[1]
        return _softmax.softmax_probaT(
            flat, self.X, self.mean, self.scale, self.n_experts
        )

    def _evaluation_at(self, flat):
        """The remembered `softmax_evaluation` at `flat`, if any."""
        cached = self._evaluated
        if cached is not None and np.array_equal(cached[0], flat):
            return cached[1]
        return None

    def _hessian_at(self, flat, penalty_scale):
        """`softmax_hessian` at `flat` (`_sampled_hessian`), plus the penalty.

        With `reuse` the Hessian of the cross-entropy alone is kept for
        `_remembered_curvature`.
        """
        if flat.any():
            data_hessian = self._sampled_hessian(flat)
        else:  # EM's first M-step starts from zero twice (see `improve`)
            if self._hessian_at_zero is None:
                self._hessian_at_zero = self._sampled_hessian(flat)
            data_hessian = self._hessian_at_zero
        if self.reuse:
            self._data_hessian, self._data_hessian_at = data_hessian, flat.copy()
        return _softmax.add_penalty(data_hessian, penalty_scale, self.n_experts)

    def _sampled_hessian(self, flat):
        """The cross-entropy's Hessian at `flat` over `hessian_sample`'s rows."""
        rows = _softmax.hessian_sample(self.X.shape[0])
        weights = self.weights[rows]
        total = weights.sum()
        if not total > 0:  # no weight in the sample: all rows, then
            rows, weights, total = slice(None), self.weights, self.total
        X = self.X[rows]
        evaluation = self._evaluation_at(flat)
        if evaluation is None:
            probaT = _softmax.softmax_probaT(
                flat, X, self.mean, self.scale, self.n_experts
            )
        else:
            probaT = evaluation[1][:, rows]
        return _softmax.softmax_hessian(
            X, self.mean, self.scale, probaT, weights / total, 0.0
        )

    def _remembered_curvature(self, penalty_scale):
        """The last Hessian's eigendecomposition, at penalty `penalty_scale`.

        Under ``alpha="auto"`` EM re-estimates the penalty at every M-step
        (often halving it while the gate sharpens); only the penalty's
        (diagonal) term of the kept Hessian is then updated, an
        eigendecomposition that costs next to nothing beside the Hessian
        itself, a pass over every row for every pair of experts.
        """
        if self._curvature_penalty == penalty_scale:
            return self._curvature
        if self._curvature is None or self._data_hessian is None:
            return None
        return _softmax.pseudo_inverse_factors(
            _softmax.add_penalty(self._data_hessian, penalty_scale, self.n_experts)
        )

    # ------------------------------------------------------------------
    # Accelerated EM (see mixexp/_accelerate.py).

    def move_to(self, params):
        """Put the gate at `params` (standardised), at the current penalty.

        The kept curvature and evaluation stay: the next step starts from
        `params` with the curvature of nearby ones, as after any step.
        """
        self.params = params
        self.penalty = _penalty_of(self.alpha, params)


class ConstantGate(_BaseGate):
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
        ``arange(n_experts)``, one per proportion.
    n_features_in_ : int
        Number of features of `X` in `fit` (only its rows count).
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

    def _standalone_start(self, X, weights, n_experts, fit_params):
        return self._em_start(X, weights, n_experts)

    def _em_start(self, X, sample_weight, n_experts, **unused):
        # The M-step is exact: nothing to start from, seed or route.
        return _ConstantFit(self, X, sample_weight, n_experts)

    def _predict_log_proba(self, X):
        return _constant_log_proba(self.proportions_, X.shape[0])

    def _n_parameters(self):
        return self.classes_.shape[0] - 1

    def _partial_update(self, X, targets, sample_weight, state, rho, n_seen):
        # The proportions are the running mean responsibilities.
        shares = expert_shares(targets, sample_weight)
        state = shares if state is None else _online.blend(state, shares, rho)
        gate = copy.copy(self)
        gate.proportions_ = state / state.sum()
        return gate, state


def _constant_log_proba(proportions, n_samples):
    log_prop = _log_proba_from_proba(proportions)
    return np.broadcast_to(log_prop, (n_samples, log_prop.shape[0])).copy()


class _ConstantFit:
    """A :class:`ConstantGate` being fitted: its mixing proportions.

    The M-step is exact: each proportion is the expert's weighted mean
    target.
    """

    penalty = 0.0

    def __init__(self, gate, X, weights, n_experts):
        self.gate = gate
        self.weights = weights
        self.n_samples, self.n_features = X.shape
        self.n_experts = n_experts
        self.proportions = None

    def improve(self, targets, exact):
        self.proportions = expert_shares(targets, self.weights)

    def log_proba(self):
        return _constant_log_proba(self.proportions, self.n_samples)

    def fitted(self):
        gate = clone(self.gate)
        gate.proportions_ = self.proportions
        gate.penalty_ = 0.0
        gate.classes_ = np.arange(self.n_experts)
        gate.n_features_in_ = self.n_features
        return gate


class ClassifierGate(_BaseGate):
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
        ``arange(n_experts)``: the classifier's classes are the experts.
    n_features_in_ : int
        Number of features the classifier was fitted on.
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

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        check_gate_classifier(self.estimator, "estimator")
        return self._fit_standalone(X, y, sample_weight, fit_params)

    fit.__doc__ = _FIT_DOC.format(
        fit_params="""
        **fit_params : dict
            Per-row arrays passed on to the classifier's ``fit``, repeated
            with the rows."""
    )

    def _standalone_start(self, X, weights, n_experts, fit_params):
        return _ClassifierFit(
            self, X, weights, n_experts, clone(self.estimator), fit_params
        )

    def _em_start(
        self,
        X,
        sample_weight,
        n_experts,
        *,
        random_state=None,
        fit_params=None,
        init=None,
    ):
        # Within EM the same clone is refitted at each step, so classifiers
        # with warm_start can use it; a warm start continues the last one.
        if isinstance(init, ClassifierGate) and hasattr(init, "estimator_"):
            estimator = copy.deepcopy(init.estimator_)
        else:
            estimator = clone(self.estimator)
            if random_state is not None:
                # A randomised gate (a tree with max_features, a forest) must
                # be seeded for the fit to be reproducible.
                set_random_states(estimator, random_state.randint(MAX_SEED))
        return _ClassifierFit(
            self, X, sample_weight, n_experts, estimator, fit_params or {}
        )

    def _predict_log_proba(self, X):
        fitted = self._constant if self._constant is not None else self.estimator_
        return _classifier_log_proba(fitted, X, self.classes_.shape[0])


def _classifier_log_proba(classifier, X, n_experts):
    """A fitted classifier's log probabilities, one column per expert."""
    proba = classifier.predict_proba(X)
    full = np.zeros((X.shape[0], n_experts))
    full[:, classifier.classes_.astype(int)] = proba
    return _log_proba_from_proba(full)


class _ClassifierFit:
    """A :class:`ClassifierGate` being fitted: its classifier, refitted in
    place at every M-step (so that a classifier with ``warm_start`` can use
    its last fit).

    Soft targets are stacked copies of the rows, one per expert, labelled by
    the expert and weighted by the row weight times the target; the
    classifier's weighted log-loss on them is the cross-entropy against the
    targets, so every M-step is a full (exact) fit.
    """

    penalty = 0.0

    def __init__(self, gate, X, weights, n_experts, estimator, fit_params):
        self.gate = gate
        self.X = X
        self.weights = weights
        self.n_experts = n_experts
        self.estimator = estimator
        self.fit_params = fit_params
        self.constant = None  # a DummyClassifier, when one expert has all

    def improve(self, targets, exact):
        X = self.X
        n_samples = X.shape[0]
        stacked_weight = targets * self.weights[:, np.newaxis]
        keep = stacked_weight > _NEGLIGIBLE_TARGET * stacked_weight.max()
        rows, labels = np.nonzero(keep)
        params = {
            key: take_rows(value, rows, n_samples)
            for key, value in self.fit_params.items()
        }
        if np.unique(labels).shape[0] < 2:
            # One expert holds all the weight: most classifiers refuse a
            # single class, and the answer (probability 1) needs no model.
            self.constant = DummyClassifier(strategy="prior").fit(X[rows], labels)
        else:
            self.constant = None
            with single_threaded_blas.lifted():  # the user's classifier
                self.estimator.fit(
                    X[rows],
                    labels,
                    sample_weight=stacked_weight[rows, labels],
                    **params,
                )

    def log_proba(self):
        fitted = self.constant if self.constant is not None else self.estimator
        with single_threaded_blas.lifted():
            return _classifier_log_proba(fitted, self.X, self.n_experts)

    def checkpoint(self):
        return self.fitted()

    def fitted(self):
        gate = clone(self.gate)
        gate.estimator_ = copy.deepcopy(self.estimator)
        gate._constant = self.constant
        gate.penalty_ = 0.0
        gate.classes_ = np.arange(self.n_experts)
        gate.n_features_in_ = self.X.shape[1]
        return gate


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
    """A fresh, unfitted gate for the mixture's ``gate`` parameter.

    A string names a gate of this module; an object with ``_em_start``
    follows the gate protocol (see the module's docstring) and is cloned;
    any other object is a classifier, wrapped in a :class:`ClassifierGate`.
    """
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
    if hasattr(gate, "_em_start"):
        return clone(gate)
    check_gate_classifier(gate, "gate")
    return ClassifierGate(clone(gate))


def routed_classifier(gate):
    """The classifier of a ``gate`` parameter that metadata is routed to.

    None for the gates of the protocol other than a ClassifierGate: they
    take no metadata.
    """
    if isinstance(gate, ClassifierGate):
        return gate.estimator
    if isinstance(gate, str) or hasattr(gate, "_em_start"):
        return None
    return gate
