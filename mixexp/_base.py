"""Shared estimator logic of the mixtures of experts: parameters, EM loop.

The public classes in ``_classes.py`` fill in what differs between
regression and classification (targets, expert outputs, likelihoods,
pooling); the numerics live in ``_em.py``, the gates in ``gating.py`` and the
initial partitions in ``partition.py``.
"""

import copy
import numbers
import time
import warnings
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from joblib import effective_n_jobs
from sklearn import config_context, get_config
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    _fit_context,
    clone,
    is_classifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    process_routing,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    _num_samples,
    check_is_fitted,
    has_fit_parameter,
    validate_data,
)

from mixexp import _em
from mixexp._linear import fit_linear_regressions, is_plain_linear_regression
from mixexp._utils import limit_blas_threads, run_calls, runs_in_parallel, take_rows
from mixexp.exceptions import CollapsedExpertWarning
from mixexp.gating import ClassifierGate, ConstantGate, SoftmaxGate, make_gate
from mixexp.partition import (
    check_partition,
    initial_responsibilities,
    resolve_feature_groups,
)
from mixexp.routing import capacity_assign, expert_capacity, load_balance, top_k_weights

# An expert whose share of the responsibility falls below this many rows'
# worth of weight has collapsed: it explains nothing, and its M-step would
# divide by (almost) zero. It is re-seeded on the rows the mixture explains
# worst.
_COLLAPSED_ROWS = 1e-3
_MAX_RESEEDS_PER_EXPERT = 3

# A row whose responsibility for an expert is below this is left out of that
# expert's fit. Its weight would change the expert's parameters by about
# this relative amount (far below any tolerance here), while leaving it out
# saves a copy and a pass of the row per expert and iteration.
_NEGLIGIBLE_RESPONSIBILITY = 1e-8

# Newton steps of the softmax gate per EM iteration (see _gate_step_limit).
_GATE_NEWTON_STEPS_PER_ITERATION = 1


@dataclass
class _Solution:
    """One EM run's fitted state, kept apart until the run wins."""

    experts: list
    gate: object
    noise_variance: object
    resp: np.ndarray
    mstep: np.ndarray = None
    history: list = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    n_reseeds: np.ndarray = None
    reseeded_at: int = -1

    @property
    def lower_bound(self):
        return self.history[-1] if self.history else -np.inf


class _BaseMixtureOfExperts(MetaEstimatorMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class of the mixture-of-experts estimators (EM training)."""

    _parameter_constraints: dict = {
        "expert": [HasMethods(["fit", "predict"]), list, None],
        "n_experts": [Interval(numbers.Integral, 1, None, closed="left")],
        "gate": [
            StrOptions({"softmax", "constant"}),
            HasMethods(["fit", "predict_proba"]),
        ],
        "partition": [StrOptions({"kmeans", "gmm", "random"}), HasMethods(["fit"])],
        "feature_groups": [list, tuple, None],
        "training": [StrOptions({"em", "hard", "fixed"})],
        "pooling": [StrOptions({"weighted", "argmax"})],
        "top_k": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "capacity_factor": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "overflow": [StrOptions({"next", "drop"})],
        "cv": ["cv_object"],
        "min_expert_load": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
    }

    @abstractmethod
    def __init__(
        self,
        expert=None,
        *,
        n_experts=3,
        gate="softmax",
        partition="kmeans",
        feature_groups=None,
        training="em",
        pooling="weighted",
        top_k=None,
        capacity_factor=None,
        overflow="next",
        cv=None,
        min_expert_load=None,
        max_iter=100,
        tol=1e-4,
        n_init=1,
        warm_start=False,
        random_state=None,
        n_jobs=None,
        verbose=0,
    ):
        self.expert = expert
        self.n_experts = n_experts
        self.gate = gate
        self.partition = partition
        self.feature_groups = feature_groups
        self.training = training
        self.pooling = pooling
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.overflow = overflow
        self.cv = cv
        self.min_expert_load = min_expert_load
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------
    # Hooks filled in by the regressor and the classifier.

    @abstractmethod
    def _default_expert(self):
        """The expert used when ``expert=None``."""

    @abstractmethod
    def _check_expert(self, expert, name):
        """Raise if `expert` lacks what this kind of mixture needs."""

    @abstractmethod
    def _validate_targets(self, y, reset):
        """Targets for the likelihood and for the experts' fit, as a pair."""

    @abstractmethod
    def _expert_outputs(self, experts, X_parts):
        """Per-expert outputs on X: predictions (n, m) or probabilities (n, C)."""

    @abstractmethod
    def _fit_noise(self, y, outputs, resp, sample_weight, floor):
        """Noise variances (regression) or None (classification)."""

    @abstractmethod
    def _expert_log_likelihood(self, y, outputs, noise_variance):
        """(n, K) log-likelihood of the observed targets under each expert."""

    # ------------------------------------------------------------------
    # Parameters resolved at fit time.

    def _expert_templates(self):
        """Unfitted expert templates, one per expert (not yet cloned)."""
        if isinstance(self.expert, list):
            if len(self.expert) == 0:
                raise ValueError("expert is an empty list; give at least one expert.")
            templates = list(self.expert)
            for k, est in enumerate(templates):
                if not (hasattr(est, "fit") and hasattr(est, "predict")):
                    raise TypeError(
                        f"expert[{k}]={est!r} is not an estimator: it needs fit and "
                        "predict."
                    )
        else:
            template = self._default_expert() if self.expert is None else self.expert
            n_experts = (
                len(self.feature_groups)
                if self.feature_groups is not None
                else self.n_experts
            )
            templates = [template] * n_experts
        if self.feature_groups is not None and len(self.feature_groups) != len(
            templates
        ):
            raise ValueError(
                f"expert is a list of {len(templates)} estimators but feature_groups "
                f"has {len(self.feature_groups)} groups; give one group per expert."
            )
        return templates

    def _check_templates(self, templates, sample_weight_is_uniform):
        for k, est in enumerate(templates):
            name = f"expert[{k}]" if isinstance(self.expert, list) else "expert"
            self._check_expert(est, name)
            if _supports_sample_weight(est):
                continue
            if self.training == "em":
                raise ValueError(
                    f"{name}={est!r} does not accept sample_weight in fit, which soft "
                    "EM needs to pass the responsibilities. Use training='hard' "
                    "(each row goes to one expert) or an expert that takes "
                    "sample_weight."
                )
            if not sample_weight_is_uniform:
                raise ValueError(
                    f"{name}={est!r} does not accept sample_weight in fit, so it "
                    "cannot honour the sample_weight passed to fit."
                )

    # ------------------------------------------------------------------
    # Fitting.

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the experts and the gate by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs. A pandas DataFrame keeps its column names, which
            `feature_groups` may then use.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights. They multiply the responsibilities in
            every expert's and the gate's fit, and weight the log-likelihood.
        **fit_params : dict
            Further fit parameters for the experts and the gate, routed by
            their requests. Only with metadata routing enabled
            (``sklearn.set_config(enable_metadata_routing=True)``).

        Returns
        -------
        self : object
            The fitted mixture.
        """
        state = dict(vars(self))
        try:
            return self._fit(X, y, sample_weight, fit_params)
        except BaseException:
            # Fit is atomic: a failed refit leaves the previous model intact.
            vars(self).clear()
            vars(self).update(state)
            raise

    def _fit(self, X, y, sample_weight, fit_params):
        if isinstance(self.n_experts, (bool, np.bool_)):
            raise TypeError(
                f"n_experts must be an int, got {self.n_experts!r} (a bool)."
            )
        check_partition(self.partition)
        _check_X_y_shapes(X, y)
        routed = self._route_fit_params(fit_params)
        warm = self.warm_start and hasattr(self, "experts_")
        previous_n_features = getattr(self, "n_features_in_", None)
        X, y = validate_data(
            self,
            X,
            y,
            reset=True,
            dtype=np.float64,
            multi_output=True,
            y_numeric=self._y_numeric,
        )
        if warm and X.shape[1] != previous_n_features:
            raise ValueError(
                f"warm_start=True continues the previous fit, which had "
                f"{previous_n_features} features; X has {X.shape[1]}. Set "
                "warm_start=False to start afresh."
            )
        y, y_fit = self._validate_targets(y, reset=True)
        n_samples = X.shape[0]
        sample_weight = _validate_sample_weight(sample_weight, X)

        templates = self._expert_templates()
        n_experts = len(templates)
        if n_experts > n_samples:
            raise ValueError(
                f"n_experts={n_experts} must be <= n_samples={n_samples}: each "
                "expert needs rows to learn from."
            )
        self._check_templates(templates, np.all(sample_weight == sample_weight[0]))
        self._check_routing_params(n_experts)
        gate_template = make_gate(self.gate)

        if self.feature_groups is None:
            groups = None
            X_parts = [X] * n_experts
        else:
            groups = resolve_feature_groups(
                self.feature_groups,
                X.shape[1],
                getattr(self, "feature_names_in_", None),
            )
            X_parts = [X[:, g] for g in groups]

        rng = check_random_state(self.random_state)
        splits = None
        if self.cv is not None:
            cv = check_cv(self.cv, y_fit, classifier=is_classifier(self))
            splits = list(cv.split(X, y_fit))
        context = _FitContext(
            X=X,
            y=y,
            y_fit=y_fit,
            X_parts=X_parts,
            sample_weight=sample_weight,
            noise_floor=self._noise_floor(y, sample_weight),
            # Unfitted clones: an expert is fitted on a fresh copy of its
            # prototype at every EM step.
            templates=[clone(template) for template in templates],
            takes_weights=[_supports_sample_weight(t) for t in templates],
            routed=routed,
            splits=splits,
            n_jobs=self._expert_n_jobs(warm),
        )

        # An EM step is many passes over (n, K) arrays and small matrix
        # products: threaded BLAS only adds synchronisation (measured 4x
        # slower per iteration on 2 busy cores). Parallelism comes from n_jobs.
        with limit_blas_threads(1):
            if warm:
                solution = self._warm_solution(context)
                best = self._run_em(context, solution, rng)
            else:
                # One seed per initialisation, drawn up front, so that the runs
                # can go in parallel and give the same result as in sequence.
                seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_init)
                runs = run_calls(
                    [
                        (self._single_run, (context, gate_template, init, seed))
                        for init, seed in enumerate(seeds)
                    ],
                    self.n_jobs,
                )
                best = max(runs, key=lambda run: run.lower_bound)

        if not best.converged and self.training != "fixed":
            warnings.warn(
                f"The best of {1 if warm else self.n_init} EM run(s) did not "
                f"converge in max_iter={self.max_iter} iterations (last change of "
                f"the mean log-likelihood above tol={self.tol}). Increase max_iter "
                "or tol, or try other initial partitions (n_init).",
                ConvergenceWarning,
                stacklevel=4,  # the caller of fit
            )
        if np.any(best.n_reseeds > 0) and self.min_expert_load is None:
            warnings.warn(
                f"Experts {np.flatnonzero(best.n_reseeds).tolist()} collapsed (their "
                "share of the responsibility fell to about zero) and were re-seeded "
                "on the rows the mixture explained worst; n_reseeds_ counts the "
                "re-seeds. Consider fewer experts.",
                CollapsedExpertWarning,
                stacklevel=4,
            )

        self.experts_ = best.experts
        self.gate_ = best.gate
        self.feature_groups_ = groups
        self.n_experts_ = n_experts
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = list(best.history)
        total = sample_weight.sum()
        self.expert_load_ = sample_weight @ best.mstep / total
        dropped = best.mstep.sum(axis=1) == 0
        self.dropped_fraction_ = sample_weight[dropped].sum() / total
        self.load_balance_ = load_balance(np.exp(best.gate._predict_log_proba(X)))
        self.n_reseeds_ = best.n_reseeds
        self._noise_variance = best.noise_variance
        self._store_noise(best.noise_variance)
        return self

    def _noise_floor(self, y, sample_weight):
        return None

    def _store_noise(self, noise_variance):
        pass

    def _route_fit_params(self, fit_params):
        """Split the extra fit parameters between the experts and the gate."""
        n_templates = len(self.expert) if isinstance(self.expert, list) else 1
        if not get_config().get("enable_metadata_routing", False):
            if fit_params:
                raise ValueError(
                    f"{type(self).__name__}.fit got unexpected arguments "
                    f"{sorted(fit_params)}. Extra fit parameters reach the experts "
                    "and the gate only through metadata routing: call "
                    "sklearn.set_config(enable_metadata_routing=True) and set their "
                    "requests (for example expert.set_fit_request(...))."
                )
            return {"experts": [{}] * n_templates, "gate": {}}
        routed = process_routing(self, "fit", **fit_params)
        if isinstance(self.expert, list):
            experts = [routed[f"expert_{k}"].fit for k in range(n_templates)]
        else:
            experts = [routed["expert"].fit]
        gate = routed["gate"].fit if _routed_gate(self.gate) is not None else {}
        return {"experts": experts, "gate": gate}

    def _expert_params(self, context, k):
        params = context.routed["experts"]
        return params[k] if len(params) > 1 else params[0]

    def _check_routing_params(self, n_experts):
        if self.top_k is not None:
            if self.top_k > n_experts:
                raise ValueError(
                    f"top_k={self.top_k} exceeds the number of experts {n_experts}."
                )
            if self.pooling == "argmax" and self.top_k != 1:
                raise ValueError(
                    f"pooling='argmax' keeps one expert, but top_k={self.top_k}: use "
                    "pooling='weighted' with top_k, or top_k=None."
                )
        if self.min_expert_load is not None and self.min_expert_load >= 1 / n_experts:
            raise ValueError(
                f"min_expert_load={self.min_expert_load} cannot be met by "
                f"{n_experts} experts: it must be below 1 / n_experts."
            )

    def _expert_n_jobs(self, warm):
        """Workers for the experts of an M-step, given those of the restarts.

        Restarts that run in parallel fit their experts one after another,
        unless workers are left over once every restart has one (a cluster
        with more workers than restarts): nested parallel fits on busy
        workers only add joblib's cost (twice as slow on 2 cores,
        benchmarks/parallel.py).
        """
        if warm or self.n_init == 1:
            return self.n_jobs
        return self.n_jobs if effective_n_jobs(self.n_jobs) > self.n_init else 1

    def _single_run(self, context, gate_template, init, seed):
        """One EM run from a fresh initial partition."""
        if self.verbose:
            print(f"Initialization {init}")
        rng = np.random.RandomState(seed)
        solution = self._initial_solution(context, gate_template, rng)
        return self._run_em(context, solution, rng)

    def _assign(self, posterior, context):
        """Gate targets and M-step weights from the posterior responsibilities.

        Soft EM uses the posterior itself; hard EM each row's most responsible
        expert. A capacity then limits the rows each expert is fitted on:
        under hard EM by Switch rules (rows beyond an expert's capacity go to
        their next choice or are dropped), under soft EM by keeping each
        expert's most responsible rows.
        """
        if self.training == "em":
            targets = posterior
            if self.capacity_factor is None:
                return targets, targets
            n_samples, n_experts = posterior.shape
            capacity = expert_capacity(n_samples, n_experts, self.capacity_factor)
            mstep = np.zeros_like(posterior)
            if capacity >= n_samples:
                return targets, posterior
            top = np.argpartition(-posterior, capacity - 1, axis=0)[:capacity]
            columns = np.arange(n_experts)[np.newaxis, :]
            mstep[top, columns] = posterior[top, columns]
            return targets, mstep
        hard = _em.harden(posterior)
        if self.capacity_factor is None:
            return hard, hard
        n_samples, n_experts = posterior.shape
        capacity = expert_capacity(n_samples, n_experts, self.capacity_factor)
        assignment = capacity_assign(posterior, capacity, self.overflow)
        kept = np.flatnonzero(assignment >= 0)
        mstep = np.zeros_like(posterior)
        mstep[kept, assignment[kept]] = 1.0
        targets = hard.copy()
        targets[kept] = mstep[kept]
        return targets, mstep

    def _initial_solution(self, context, gate_template, rng):
        """Responsibilities from the partition and a fresh gate."""
        n_experts = len(context.templates)
        resp = initial_responsibilities(
            context.X, self.partition, n_experts, context.sample_weight, rng
        )
        # Softened for every training mode: soft EM starts from it, and hard
        # EM keeps its argmax while capacity routing needs its ranking.
        resp = _em.soften(resp)
        gate = clone(gate_template)
        if isinstance(gate, SoftmaxGate):
            gate.set_params(warm_start=True)
        elif isinstance(gate, ClassifierGate):
            # A randomised gate (a tree with max_features, a forest) must be
            # seeded for the fit to be reproducible.
            _set_random_states(gate.estimator, rng.randint(np.iinfo(np.int32).max))
        return _Solution(
            experts=None,
            gate=gate,
            noise_variance=None,
            resp=resp,
            n_reseeds=np.zeros(n_experts, dtype=int),
        )

    def _warm_solution(self, context):
        """Responsibilities of the previous model on the new data (warm start)."""
        gate = copy.deepcopy(self.gate_)
        outputs = self._expert_outputs(self.experts_, context.X_parts)
        noise = self._noise_variance
        log_lik = self._expert_log_likelihood(context.y, outputs, noise)
        log_resp, _ = _em.e_step(gate._predict_log_proba(context.X), log_lik)
        resp = np.exp(log_resp)
        return _Solution(
            experts=self.experts_,
            gate=gate,
            noise_variance=noise,
            resp=resp,
            n_reseeds=np.zeros(len(context.templates), dtype=int),
        )

    def _run_em(self, context, solution, rng):
        """Alternate M- and E-steps from `solution.resp` until convergence."""
        n_experts = len(context.templates)
        seeds = rng.randint(np.iinfo(np.int32).max, size=n_experts)
        w = context.sample_weight
        posterior = self._reseed_collapsed(solution, solution.resp, None, context)
        solution.resp = None  # an (n, K) array: set again when EM stops
        targets, mstep = self._assign(posterior, context)
        max_iter = 1 if self.training == "fixed" else self.max_iter
        # Hard EM and out-of-fold E-steps are not monotone: they may cycle or
        # dip, so the iteration with the highest objective is kept.
        keep_best = self.training == "hard" or context.splits is not None
        floor = _COLLAPSED_ROWS / w.shape[0]  # an expert's share, collapsed
        best = None
        before_last_mstep = None
        previous_outputs = None  # of solution.experts, when some are inexact
        start = time.perf_counter()
        for n_iter in range(1, max_iter + 1):
            experts = self._fit_experts(context, mstep, seeds, solution.experts)
            if context.splits is None:
                outputs = self._expert_outputs(experts, context.X_parts)
                previous_outputs = self._keep_better_fits(
                    context, mstep, experts, outputs, solution.experts, previous_outputs
                )
            else:
                outputs = self._out_of_fold_outputs(context, mstep, seeds, experts)
            noise = self._fit_noise(context.y, outputs, mstep, w, context.noise_floor)
            gate = solution.gate
            with warnings.catch_warnings():
                # A capped gate fit is a generalised EM step, not a failure.
                warnings.simplefilter("ignore", ConvergenceWarning)
                gate._fit(
                    context.X,
                    targets,
                    w,
                    warn=False,
                    **_gate_step_limit(gate, self.training),
                    **context.routed["gate"],
                )
            log_lik = self._expert_log_likelihood(context.y, outputs, noise)
            del outputs  # n x K x outputs: free before the E-step allocates
            resp, log_prob = _em.posterior(gate._predict_log_proba(context.X), log_lik)
            del log_lik
            objective = _em.mean_log_likelihood(log_prob, w) - gate.penalty_ / w.sum()

            previous = solution.history[-1] if solution.history else None
            solution.history.append(objective)
            solution.experts, solution.noise_variance = experts, noise
            solution.n_iter, solution.mstep = n_iter, mstep
            if self.verbose >= 2:
                change = np.nan if previous is None else objective - previous
                lapse = time.perf_counter() - start
                print(
                    f"  Iteration {n_iter}\t time lapse {lapse:.5f}s\t "
                    f"objective change {change:.5g}"
                )
            if self.training == "fixed":
                solution.converged = True
                break
            # An iteration whose E-step took all the rows away from an expert
            # fitted on some is not kept as the best: that expert explains
            # nothing, yet this iteration's gate still trusts it somewhere.
            wasted = keep_best and bool(
                np.any((_shares(resp, w) < floor) & (_shares(mstep, w) >= floor))
            )
            posterior = self._reseed_collapsed(solution, resp, log_prob, context)
            next_targets, next_mstep = self._assign(posterior, context)
            better = best is None or objective > best.history[-1]
            if keep_best and better and not wasted:
                best = _Solution(
                    experts=experts,
                    gate=copy.deepcopy(gate),
                    noise_variance=noise,
                    resp=posterior,
                    mstep=mstep,
                    history=list(solution.history),
                    n_iter=n_iter,
                )
            reseeded = solution.reseeded_at == n_iter
            solution.converged = not reseeded and (
                (previous is not None and abs(objective - previous) < self.tol)
                or (
                    # The assignment stopped changing, or swings between two.
                    self.training == "hard"
                    and (
                        np.array_equal(next_mstep, mstep)
                        or (
                            before_last_mstep is not None
                            and np.array_equal(next_mstep, before_last_mstep)
                        )
                    )
                )
            )
            if solution.converged:
                break
            if self.training == "hard":  # only hard EM looks for a 2-cycle
                before_last_mstep = mstep
            targets, mstep = next_targets, next_mstep
        solution.resp = posterior
        if best is not None and best.history[-1] > solution.history[-1]:
            solution.experts, solution.gate = best.experts, best.gate
            solution.noise_variance, solution.resp = best.noise_variance, best.resp
            solution.mstep, solution.n_iter = best.mstep, best.n_iter
            solution.history = best.history
        if isinstance(solution.gate, SoftmaxGate):
            solution.gate._clear_cache()
        if self.verbose:
            state = "converged" if solution.converged else "did not converge"
            lapse = time.perf_counter() - start
            print(
                f"Initialization {state}. time lapse {lapse:.5f}s\t "
                f"objective {solution.lower_bound:.5f}"
            )
        return solution

    def _keep_better_fits(
        self, context, mstep, experts, outputs, previous, previous_outputs
    ):
        """Give back its previous fit to an expert whose refit is worse.

        EM raises its objective only if each M-step raises the expected
        complete log-likelihood of every expert, ``sum_i w_i r_ik log
        p_k(y_i | x_i)``. Weighted least squares (a plain LinearRegression)
        maximises it; most other experts do not: a tree, a forest or a
        nested mixture runs its own heuristic or local search, and its refit
        on new weights can land somewhere worse than where it was. Such an
        expert keeps its previous fit when that one scores higher on the
        current weights, which makes the step a generalised M-step. Without
        this, a mixture of nested mixtures was seen cycling through three
        states forever, its objective rising and falling by 0.9.

        `experts` and `outputs` are updated in place.

        Returns
        -------
        list or None
            The outputs to pass as `previous_outputs` next time: `outputs`
            when some expert is inexact, else None (nothing is kept).
        """
        inexact = [
            k
            for k, expert in enumerate(experts)
            if not is_plain_linear_regression(expert)
        ]
        if not inexact:
            return None
        if previous is None:
            return outputs
        if previous_outputs is None:  # a warm start's experts
            previous_outputs = self._expert_outputs(previous, context.X_parts)
        w = context.sample_weight
        for k in inexact:
            if experts[k] is previous[k]:
                continue  # not refitted: no rows (see _fit_experts)
            pair = [outputs[k], previous_outputs[k]]
            weights = np.repeat(mstep[:, k, np.newaxis], 2, axis=1)
            noise = self._fit_noise(context.y, pair, weights, w, context.noise_floor)
            log_lik = self._expert_log_likelihood(context.y, pair, noise)
            refit, kept = (w * mstep[:, k]) @ log_lik
            if kept > refit:
                experts[k], outputs[k] = previous[k], previous_outputs[k]
        return outputs

    def _out_of_fold_outputs(self, context, mstep, seeds, experts):
        """Each row's expert outputs from experts fitted without its fold."""
        outputs = None
        for train, test in context.splits:
            held_out = mstep.copy()
            held_out[test] = 0.0
            fold_experts = self._fit_experts(
                context, held_out, seeds, experts, train_rows=train
            )
            fold_outputs = self._expert_outputs(
                fold_experts, [part[test] for part in context.X_parts]
            )
            if outputs is None:
                n_samples = context.X.shape[0]
                outputs = [np.empty((n_samples, out.shape[1])) for out in fold_outputs]
            for full, part in zip(outputs, fold_outputs, strict=True):
                full[test] = part
        return outputs

    def _reseed_collapsed(self, solution, resp, log_prob, context):
        """Re-seed experts whose share of the responsibility is too small.

        An expert that collapsed (share about zero) gets the rows the mixture
        explains worst: if some structure is left unexplained, that is where
        it is. An expert below `min_expert_load` instead takes half of the
        busiest expert's rows, split along their principal axis, so that the
        gate can learn the split and both experts stay in use.
        """
        w = context.sample_weight
        share = _shares(resp, w)
        floor = _COLLAPSED_ROWS / resp.shape[0]
        if self.min_expert_load is not None:
            floor = max(floor, self.min_expert_load)
        starving = np.flatnonzero(
            (share < floor) & (solution.n_reseeds < _MAX_RESEEDS_PER_EXPERT)
        )
        if starving.size == 0:
            return resp
        solution.reseeded_at = solution.n_iter
        n_samples, n_experts = resp.shape
        resp = resp.copy()
        owners = np.argmax(resp, axis=1)
        for k in starving:
            if self.min_expert_load is None:
                rows = _worst_explained_rows(
                    owners, log_prob, resp, max(1, n_samples // n_experts)
                )
            else:
                busiest = np.argmax(np.bincount(owners, weights=w, minlength=n_experts))
                rows = _half_along_principal_axis(
                    context.X, np.flatnonzero(owners == busiest), w
                )
            if rows.size == 0:
                continue
            owners[rows] = k
            one_hot = np.zeros((rows.size, n_experts))
            one_hot[:, k] = 1.0
            resp[rows] = _em.soften(one_hot)
            solution.n_reseeds[k] += 1
        return resp

    def _fit_experts(self, context, resp, seeds, previous, train_rows=None):
        """M-step for the experts: each fitted on its weighted (or own) rows.

        Rows whose responsibility for an expert is negligible are left out
        of that expert's fit: this is what makes an EM iteration cost about
        one fit on all rows rather than one per expert, once the experts
        have specialised. Plain linear experts are solved together (see
        ``fit_linear_regressions``), unless the fits run in parallel.
        """
        w = context.sample_weight
        negligible = _NEGLIGIBLE_RESPONSIBILITY * w
        calls, owners, linear = [], [], []
        for k, template in enumerate(context.templates):
            share = resp[:, k]
            weights = w * share
            rows = np.flatnonzero(weights > negligible)
            if train_rows is not None:
                rows = np.intersect1d(rows, train_rows)
            if rows.size == 0 and previous is not None:
                continue  # keeps the previous fit (the gate gives it ~0)
            if rows.size == 0:
                # No rows even after re-seeding (more experts than distinct
                # rows): a fit on all rows keeps the expert defined, and the
                # gate, which learns it explains nothing, gives it ~0.
                share, weights, rows = np.ones_like(w), w, np.arange(w.shape[0])
            rows = None if rows.size == w.size else rows
            params = self._expert_params(context, k)
            if not params and is_plain_linear_regression(template):
                # The responsibilities (a view), not the weights: the linear
                # fit weights its own rows only, so that no (n, K) array of
                # weights is held while the experts are fitted together.
                linear.append((k, share, rows))
                continue
            # fit checked that the weights are uniform for experts that take
            # none.
            weights = weights if context.takes_weights[k] else None
            calls.append(
                (
                    _fit_expert,
                    (
                        self,
                        k,
                        template,
                        context.X_parts[k],
                        context.y_fit,
                        weights,
                        rows,
                        params,
                        seeds[k],
                    ),
                )
            )
            owners.append(k)  # one expert, fitted alone
        groups = (
            [linear]
            if linear and not runs_in_parallel(context.n_jobs)
            else [[job] for job in linear]
        )
        for group in groups:
            ks = [k for k, _, _ in group]
            calls.append(
                (
                    _fit_experts_by_normal_equations,
                    (
                        ks,
                        [context.templates[k] for k in ks],
                        [context.X_parts[k] for k in ks],
                        context.y_fit,
                        [share for _, share, _ in group],
                        [rows for _, _, rows in group],
                        w,
                    ),
                )
            )
            owners.append(ks)  # a list of experts, fitted together
        experts = list(previous) if previous is not None else [None] * resp.shape[1]
        for owner, fitted in zip(owners, run_calls(calls, context.n_jobs), strict=True):
            if isinstance(owner, list):
                for k, expert in zip(owner, fitted, strict=True):
                    experts[k] = expert
            else:
                experts[owner] = fitted
        return experts

    def _fit_one(self, estimator, X, y, sample_weight, params):
        """Fit one expert clone; the classifier overrides it for one-class rows."""
        _fit_weighted(estimator, X, y, sample_weight, params)
        return estimator

    # ------------------------------------------------------------------
    # Prediction helpers.

    def _check_predict_X(self, X):
        check_is_fitted(self)
        _check_2d(X)
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _X_parts(self, X):
        if self.feature_groups_ is None:
            return [X] * self.n_experts_
        return [X[:, g] for g in self.feature_groups_]

    def _pooling_weights(self, X):
        """Per-row weights of each expert in the pooled prediction."""
        gate = np.exp(self.gate_._predict_log_proba(X))
        if self.pooling == "argmax":
            return top_k_weights(gate, 1)
        if self.top_k is not None:
            return top_k_weights(gate, self.top_k)
        return gate

    def predict_gate(self, X):
        """Gate probabilities: how much each expert is trusted on each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_experts_)
            Rows sum to 1.
        """
        X = self._check_predict_X(X)
        return np.exp(self.gate_._predict_log_proba(X))

    def predict_expert(self, X):
        """Index of the most trusted expert for each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,)
            ``argmax_k g_k(x)``; ties go to the lower index.
        """
        return np.argmax(self.predict_gate(X), axis=1)

    def log_likelihood(self, X, y):
        """Per-row log-likelihood ``log p(y | x)`` of the fitted mixture.

        Natural logarithm. Its weighted mean over the training data is
        `lower_bound_` (less the gate's penalty, if any).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Observed targets (class labels for the classifier).

        Returns
        -------
        ndarray of shape (n_samples,)
            ``log sum_k g_k(x_i) p_k(y_i | x_i)`` for each row.
        """
        check_is_fitted(self)
        X, y = validate_data(
            self,
            X,
            y,
            reset=False,
            dtype=np.float64,
            multi_output=True,
            y_numeric=self._y_numeric,
        )
        y, _ = self._validate_targets(y, reset=False)
        outputs = self._expert_outputs(self.experts_, self._X_parts(X))
        log_lik = self._expert_log_likelihood(y, outputs, self._noise_variance)
        return _em.e_step(self.gate_._predict_log_proba(X), log_lik)[1]

    # ------------------------------------------------------------------
    # Model selection.

    def _n_parameters(self):
        """Free parameters: experts, noise scales and gate (identifiable)."""
        check_is_fitted(self)
        total = self._n_noise_parameters()
        for k, expert in enumerate(self.experts_):
            count = self._n_expert_parameters(expert)
            if count is None:
                raise ValueError(
                    f"bic and aic need a parameter count, which is not defined for "
                    f"expert {k} ({type(expert).__name__}): use linear experts "
                    "(with coef_ and intercept_) or compare models by "
                    "cross-validated log_likelihood instead."
                )
            total += count
        n_experts = self.n_experts_
        if isinstance(self.gate_, SoftmaxGate):
            total += (self.n_features_in_ + 1) * (n_experts - 1)
        elif isinstance(self.gate_, ConstantGate):
            total += n_experts - 1
        else:
            raise ValueError(
                f"bic and aic need a parameter count, which is not defined for the "
                f"gate {type(self.gate_.estimator_).__name__}: use gate='softmax' "
                "or 'constant', or compare models by cross-validated "
                "log_likelihood instead."
            )
        return int(total)

    def bic(self, X, y):
        """Bayesian information criterion on the given data; lower is better.

        ``-2 log L + p log n``, with ``log L = log_likelihood(X, y).sum()``
        and ``p`` the number of free parameters: each linear expert's
        coefficients and intercepts, the noise scales (regression), and the
        gate's identifiable coefficients (``(n_features + 1) (n_experts - 1)``
        for the softmax gate, ``n_experts - 1`` for the constant one).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Observed targets (class labels for the classifier).

        Returns
        -------
        float
            The criterion; compare it between models fitted to the same data.
        """
        log_lik = self.log_likelihood(X, y)
        n_params = self._n_parameters()
        return float(-2 * log_lik.sum() + n_params * np.log(log_lik.shape[0]))

    def aic(self, X, y):
        """Akaike information criterion on the given data; lower is better.

        ``-2 log L + 2 p``; see :meth:`bic` for ``log L`` and ``p``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Observed targets (class labels for the classifier).

        Returns
        -------
        float
            The criterion; compare it between models fitted to the same data.
        """
        log_lik = self.log_likelihood(X, y).sum()
        return float(-2 * log_lik + 2 * self._n_parameters())

    # ------------------------------------------------------------------
    # scikit-learn integration.

    def get_metadata_routing(self):
        """Metadata routing of this mixture: to the experts and the gate.

        ``sample_weight`` is consumed by the mixture itself: it always reaches
        the experts and the gate multiplied by the responsibilities. Other
        fit parameters reach the experts and a classifier gate that request
        them.

        Returns
        -------
        routing : MetadataRouter
            A :class:`~sklearn.utils.metadata_routing.MetadataRouter` that
            maps ``fit`` to the experts' and the gate's ``fit``.
        """
        router = MetadataRouter(owner=self.__class__.__name__).add_self_request(self)
        mapping = MethodMapping().add(caller="fit", callee="fit")
        if isinstance(self.expert, list):
            for k, est in enumerate(self.expert):
                router.add(**{f"expert_{k}": est}, method_mapping=mapping)
        else:
            expert = self._default_expert() if self.expert is None else self.expert
            router.add(expert=expert, method_mapping=mapping)
        if _routed_gate(self.gate) is not None:
            router.add(gate=_routed_gate(self.gate), method_mapping=mapping)
        return router

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags


@dataclass
class _FitContext:
    """The validated inputs every EM step needs (one per call to fit)."""

    X: np.ndarray
    y: np.ndarray
    y_fit: np.ndarray
    X_parts: list
    sample_weight: np.ndarray
    noise_floor: object
    templates: list
    takes_weights: list
    routed: dict
    splits: list = None
    n_jobs: object = None  # for the experts of an M-step


def _shares(resp, sample_weight):
    """Each expert's share of the total weight under responsibilities `resp`."""
    return sample_weight @ resp / sample_weight.sum()


def _ndim(a):
    """Number of dimensions of an array-like, or None if it has none."""
    ndim = getattr(a, "ndim", None)
    if ndim is None:
        try:
            ndim = np.asarray(a).ndim
        except (ValueError, TypeError):  # ragged: validate_data says why
            return None
    return ndim


def _check_2d(X):
    """Refuse a 1-D X with a message that says how to reshape it.

    Returns the number of dimensions of X (None if it has none).
    """
    ndim = _ndim(X)
    if ndim == 1:
        raise ValueError(
            "X must be 2-D, of shape (n_samples, n_features); got a 1-D array. "
            "Reshape your data with X.reshape(-1, 1) if it is a single feature, "
            "or X.reshape(1, -1) if it is a single row."
        )
    return ndim


def _check_X_y_shapes(X, y):
    """Refuse X and y that cannot pair up, naming both, before validation.

    scikit-learn's own checks say the same in terms of samples and arrays;
    these messages say which argument is at fault and how to fix it.
    """
    ndim = _check_2d(X)
    if sp.issparse(y):
        raise TypeError(
            "Sparse data was passed for y, but dense data is required. Use "
            "y.toarray() to convert it to a dense numpy array."
        )
    if ndim != 2:
        return
    n_rows = _num_samples(X)
    if n_rows == 0:
        shape = getattr(X, "shape", None) or np.asarray(X).shape
        raise ValueError(f"X has 0 rows (shape={shape}); at least 1 is required.")
    if y is not None and (_ndim(y) or 0) >= 1 and _num_samples(y) != n_rows:
        raise ValueError(
            f"X has {n_rows} rows but y has {_num_samples(y)}. Pass one target "
            "per row of X."
        )


def _validate_sample_weight(sample_weight, X):
    sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64)
    if np.any(sample_weight < 0):
        raise ValueError("sample_weight must be non-negative.")
    if not sample_weight.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row needs weight.")
    return sample_weight


def _gate_step_limit(gate, training):
    """Keyword that caps the softmax gate's Newton steps in one M-step.

    Under soft EM, one Newton step per EM iteration (a generalised M-step:
    it raises the objective, which is all EM needs) costs a gradient or two,
    and measured fewer EM iterations than solving the gate to convergence
    each time: a fully solved gate sharpens its boundaries early, and sharp
    responsibilities move slowly (on make_regimes data, 3,000 to 20,000
    rows, 24 to 40 iterations against 26 to over 500 at tol=1e-6), and
    often in a worse local maximum (mean log-likelihood -1.1 and -1.7
    against -0.73 at 5,000 and 3,000 rows from the same k-means start,
    with the gate solved until a step gained less than tol). A step taken
    with an old Hessian that did poorly does not count towards the cap (see
    ``_newton_minimise``). Hard EM stops when the assignment stops changing
    and "fixed" fits the gate once, so there the gate is solved in full.
    """
    if training == "em" and isinstance(gate, SoftmaxGate):
        return {"max_steps": _GATE_NEWTON_STEPS_PER_ITERATION}
    return {}


def _routed_gate(gate):
    """The classifier inside the gate that metadata is routed to, if any."""
    if isinstance(gate, ClassifierGate):
        return gate.estimator
    if isinstance(gate, (str, SoftmaxGate, ConstantGate)):
        return None
    return gate


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


def _supports_sample_weight(estimator):
    if isinstance(estimator, Pipeline):
        return _supports_sample_weight(estimator.steps[-1][1])
    return has_fit_parameter(estimator, "sample_weight")


def _fit_weighted(estimator, X, y, sample_weight, params):
    """``fit`` with the row weights, wherever the estimator takes them."""
    if sample_weight is None:
        return estimator.fit(X, y, **params)
    if isinstance(estimator, Pipeline) and not has_fit_parameter(
        estimator, "sample_weight"
    ):
        last = estimator.steps[-1][0]
        if get_config().get("enable_metadata_routing", False):
            return estimator.fit(X, y, sample_weight=sample_weight, **params)
        return estimator.fit(
            X, y, **{f"{last}__sample_weight": sample_weight}, **params
        )
    return estimator.fit(X, y, sample_weight=sample_weight, **params)


def _set_random_states(estimator, seed):
    """Seed every unset ``random_state`` of an estimator (and its children)."""
    to_set = {
        key: int(seed)
        for key, value in estimator.get_params(deep=True).items()
        if (key == "random_state" or key.endswith("__random_state"))
        and (value is None or isinstance(value, np.random.RandomState))
    }
    if to_set:
        estimator.set_params(**to_set)


def _fit_expert(mixture, k, template, X, y, weights, rows, params, seed):
    """Fit a clone of expert `k` on its rows and weights (runs in a worker)."""
    n_samples = X.shape[0]
    if rows is not None:
        X, y = X[rows], y[rows]
        weights = None if weights is None else weights[rows]
        params = {
            key: take_rows(value, rows, n_samples) for key, value in params.items()
        }
    try:
        estimator = clone(template)
        _set_random_states(estimator, seed)
        # X and y were checked finite once in fit; the experts need not
        # check them again at every EM step.
        with config_context(assume_finite=True):
            return mixture._fit_one(estimator, X, y, weights, params)
    except Exception as exc:
        _raise_naming_experts(exc, [k], template)


def _fit_experts_by_normal_equations(
    ks, templates, X_parts, y, weights, rows, sample_weight
):
    """Fit plain LinearRegression experts `ks` together (runs in a worker).

    The same minimiser as LinearRegression.fit, several times faster when
    refitted at every EM step (see mixexp/_linear.py); nothing to seed.
    """
    try:
        return fit_linear_regressions(
            templates, X_parts, y, weights, rows, sample_weight
        )
    except Exception as exc:
        _raise_naming_experts(exc, ks, templates[0])


def _raise_naming_experts(exc, ks, template):
    """Re-raise `exc` with a message that names the experts that failed."""
    which = f"expert {ks[0]}" if len(ks) == 1 else f"experts {ks}"
    message = f"{which} ({type(template).__name__}) failed to fit: {exc}"
    try:
        raised = type(exc)(message)
    except Exception:
        raised = None
    if raised is None:
        exc.add_note(message)
        raise exc
    raise raised from exc
