"""The EM estimator base: parameters, the fit, restarts, warm start, routing.

The base orchestrates. What it calls lives apart, so that each part can be
read and tested on its own:

- ``_classes.py``: the public estimators, which say what differs between
  regression and classification (targets, expert outputs, the likelihood
  family);
- ``_run.py``: one EM run, a plain function of the validated data;
- ``_em.py``: the E-step; ``_likelihood.py``: the likelihood families;
- ``_mstep.py``: the experts' M-step; ``gating.py``: the gates, behind the
  gate protocol (the module's docstring);
- ``_reseed.py``: re-seeding starved experts; ``_convergence.py``: when a
  run stops; ``routing.py``: pooling weights and training capacity;
- ``partition.py``: the initial responsibilities; ``_validation.py``: the
  checks that parameter constraints cannot express;
- ``_online.py``: one step of online EM, for ``partial_fit``.
"""

import inspect
import numbers
import warnings
from abc import ABCMeta, abstractmethod

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    _fit_context,
    clone,
    is_classifier,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import (
    MetadataRouter,
    MethodMapping,
    _raise_for_params,
    _routing_enabled,
    process_routing,
)
from sklearn.utils.validation import (
    _check_feature_names,
    _check_n_features,
    check_is_fitted,
    validate_data,
)

from mixexp import _em
from mixexp._chunked import (
    ChunkedRows,
    ChunkedSetup,
    check_chunked_data,
    check_chunked_settings,
    chunked_family,
    chunked_run,
    is_dask_collection,
    lazy_rows,
    summarise,
)
from mixexp._lean import lean_run, runs_lean
from mixexp._mstep import supports_sample_weight
from mixexp._online import OnlineBatch, partial_step, step_size, update_kind
from mixexp._run import EMRun, FitContext, run_em, single_run
from mixexp._utils import MAX_SEED, run_calls, single_threaded_blas
from mixexp._validation import (
    check_2d,
    check_expert_weights,
    check_n_experts,
    check_routing_params,
    check_sample_weight,
    check_X_y_shapes,
    expert_templates,
)
from mixexp.exceptions import CollapsedExpertWarning
from mixexp.gating import ConstantGate, SoftmaxGate, make_gate, routed_classifier
from mixexp.partition import resolve_feature_groups, resolve_gate_features
from mixexp.routing import load_balance, top_k_weights

# What each setting that partial_fit cannot follow is refused for, and the
# value it needs: (parameter, value partial_fit takes, why).
_ONLINE_SETTINGS = (
    (
        "training",
        "em",
        "online EM is soft EM, and hard EM and a fixed partition need all the "
        "rows at once",
    ),
    (
        "cv",
        None,
        "the out-of-fold E-step refits every expert once per fold, on rows a "
        "stream does not keep",
    ),
    (
        "capacity_factor",
        None,
        "an expert's capacity is a share of all the rows of an M-step, which "
        "a stream does not have",
    ),
    (
        "min_expert_load",
        None,
        "re-seeding an expert needs the rows the mixture explains worst, "
        "which a stream does not keep",
    ),
)


class _BaseMixtureOfExperts(MetaEstimatorMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class of the mixture-of-experts estimators (EM training)."""

    _parameter_constraints: dict = {
        "expert": [HasMethods(["fit", "predict"]), list, None],
        "n_experts": [Interval(numbers.Integral, 1, None, closed="left")],
        "gate": [
            StrOptions({"softmax", "constant"}),
            HasMethods(["fit", "predict_proba"]),
        ],
        "partition": [
            StrOptions({"kmeans", "gmm", "random"}),
            HasMethods(["fit_predict"]),
            HasMethods(["fit", "predict_proba"]),
        ],
        "feature_groups": [list, tuple, None],
        "gate_features": ["array-like", numbers.Integral, str, None],
        "training": [StrOptions({"em", "hard", "fixed"})],
        "pooling": [StrOptions({"weighted", "argmax"})],
        "top_k": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "capacity_factor": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "overflow": [StrOptions({"next", "drop"})],
        "cv": ["cv_object"],
        "min_expert_load": [Interval(numbers.Real, 0, 1, closed="left"), None],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "learning_decay": [Interval(numbers.Real, 0, 1, closed="both")],
        "learning_offset": [Interval(numbers.Real, 1.0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "random_state": ["random_state"],
        "n_jobs": [numbers.Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        expert=None,
        *,
        n_experts=3,
        gate="softmax",
        partition="kmeans",
        feature_groups=None,
        gate_features=None,
        training="em",
        pooling="weighted",
        top_k=None,
        capacity_factor=None,
        overflow="next",
        cv=None,
        min_expert_load=None,
        max_iter=100,
        tol=1e-4,
        learning_decay=0.7,
        learning_offset=10.0,
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
        self.gate_features = gate_features
        self.training = training
        self.pooling = pooling
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.overflow = overflow
        self.cv = cv
        self.min_expert_load = min_expert_load
        self.max_iter = max_iter
        self.tol = tol
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
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
    def _validate_targets(self, y, reset, classes=None):
        """Targets for the likelihood and for the experts' fit, as a pair.

        `classes` (a classifier's, on reset) are the labels to learn when
        they are not all in `y` (the first call of ``partial_fit``).
        """

    @abstractmethod
    def _likelihood_for(self, templates, y, sample_weight):
        """The likelihood family of the experts (see ``_likelihood.py``)."""

    @abstractmethod
    def _outputs_function(self):
        """``f(experts, X_parts, used=None)``: the experts' outputs on X.

        Predictions (n, m) or class probabilities (n, C), as a list, or a
        dict over the `used` experts. A plain function, so that the fit's
        data stays free of the estimator.
        """

    @abstractmethod
    def _n_expert_parameters(self, expert):
        """Free parameters of a fitted expert, or None if not countable."""

    # ------------------------------------------------------------------
    # Fitting.

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y, sample_weight=None, **fit_params):
        """Fit the experts and the gate by EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs. A pandas DataFrame keeps its column names, which
            `feature_groups` may then use. A dask array chunked along its
            rows is never gathered: EM runs over its chunks, on the active
            dask scheduler, for the experts whose M-step is a sum over rows
            (see the user guide's "Beyond memory").
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets (a dask array of X's row chunks, with a dask X).
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
            with single_threaded_blas.kept():
                return self._fit(X, y, sample_weight, fit_params)
        except BaseException:
            # Fit is atomic: a failed refit leaves the previous model intact.
            vars(self).clear()
            vars(self).update(state)
            raise

    def _fit(self, X, y, sample_weight, fit_params, classes=None):
        if any(map(is_dask_collection, (X, y, sample_weight))):
            return self._fit_chunked(X, y, sample_weight, fit_params)
        check_n_experts(self.n_experts)
        check_X_y_shapes(X, y)
        routed = self._route_fit_params(fit_params)
        warm = self.warm_start and hasattr(self, "experts_")
        previous_n_features = getattr(self, "n_features_in_", None)
        X, y = self._validate_X_y(X, y, reset=True)
        if warm and X.shape[1] != previous_n_features:
            raise ValueError(
                f"warm_start=True continues the previous fit, which had "
                f"{previous_n_features} features; X has {X.shape[1]}. Set "
                "warm_start=False to start afresh."
            )
        y, y_fit = self._validate_targets(y, reset=True, classes=classes)
        sample_weight = check_sample_weight(sample_weight, X)
        context, groups, gate_columns = self._prepare(
            X, y, y_fit, sample_weight, routed, warm
        )
        if warm and not np.array_equal(
            np.arange(X.shape[1]) if gate_columns is None else gate_columns,
            np.arange(X.shape[1])
            if self.gate_features_ is None
            else self.gate_features_,
        ):
            raise ValueError(
                "warm_start=True continues the previous fit, whose gate saw other "
                "columns than gate_features selects now. Set warm_start=False to "
                "start afresh."
            )
        gate_template = make_gate(self.gate)

        rng = check_random_state(self.random_state)
        if warm:
            # Responsibilities of the previous model on the new data.
            run = EMRun(
                experts=self.experts_,
                scale=self._scale,
                start=self._posterior(context.X, context.X_parts, context.y)[0],
            )
            run.gate = gate_template._em_start(
                context.X_gate,
                sample_weight,
                len(context.templates),
                random_state=rng,
                fit_params=context.routed["gate"],
                init=self.gate_
                if self._gate_checkpoint is None
                else self._gate_checkpoint,
            )
            best = run_em(context, run, rng)
        else:
            # One seed per initialisation, drawn up front, so that the runs
            # can go in parallel and give the same result as in sequence.
            seeds = rng.randint(MAX_SEED, size=self.n_init)
            body = lean_run if runs_lean(context, gate_template) else None
            calls = [
                (single_run, (context, gate_template, init, seed, body))
                for init, seed in enumerate(seeds)
            ]
            best = max(run_calls(calls, self.n_jobs), key=lambda run: run.lower_bound)

        if not best.converged and self.training != "fixed":
            self._warn_unconverged(1 if warm else self.n_init, stacklevel=5)
        if np.any(best.n_reseeds > 0) and self.min_expert_load is None:
            warnings.warn(
                f"Experts {np.flatnonzero(best.n_reseeds).tolist()} collapsed (their "
                "share of the responsibility fell to about zero) and were re-seeded "
                "on the rows the mixture explained worst; n_reseeds_ counts the "
                "re-seeds. Consider fewer experts.",
                CollapsedExpertWarning,
                stacklevel=4,
            )
        self.feature_groups_ = groups
        self.gate_features_ = gate_columns
        self._store(best, context, y_fit.ndim)
        return self

    def _warn_unconverged(self, n_runs, stacklevel):
        warnings.warn(
            f"The best of {n_runs} EM run(s) did not "
            f"converge in max_iter={self.max_iter} iterations (last change of "
            f"the mean log-likelihood above tol={self.tol}). Increase max_iter "
            "or tol, or try other initial partitions (n_init).",
            ConvergenceWarning,
            stacklevel=stacklevel,  # the caller of fit
        )

    def _fit_chunked(self, X, y, sample_weight, fit_params):
        """`fit` over the row chunks of dask arrays (see ``_chunked.py``)."""
        check_n_experts(self.n_experts)
        if fit_params:
            raise ValueError(
                f"Fit parameters {sorted(fit_params)} cannot be routed to the "
                "experts or the gate of a fit on dask arrays; fit without them, "
                "or pass NumPy arrays."
            )
        X, y, sample_weight = check_chunked_data(X, y, sample_weight)
        templates = expert_templates(
            self.expert, self.n_experts, None, self._default_expert()
        )
        gate_template = make_gate(self.gate)
        kind = check_chunked_settings(self, templates, gate_template)
        n_experts = len(templates)
        if n_experts > X.shape[0]:
            raise ValueError(
                f"n_experts={n_experts} must be <= n_samples={X.shape[0]}: each "
                "expert needs rows to learn from."
            )
        family = self._chunked_family_name(templates)
        classes = self._chunked_targets(y)
        _check_n_features(self, X, reset=True)
        _check_feature_names(self, X, reset=True)
        gate_columns = resolve_gate_features(self.gate_features, X.shape[1], None)
        data = ChunkedRows(X, y, sample_weight, classes)
        summary = summarise(data, gate_columns)
        setup = ChunkedSetup(
            data=data,
            summary=summary,
            templates=[clone(template) for template in templates],
            kind=kind,
            family=chunked_family(
                family, summary, getattr(self, "covariance_type", "diag")
            ),
            outputs_of=self._outputs_function(),
            gate_columns=gate_columns,
            partition=self.partition,
            max_iter=self.max_iter,
            tol=self.tol,
            verbose=self.verbose,
        )
        rng = check_random_state(self.random_state)
        seeds = rng.randint(MAX_SEED, size=self.n_init)
        best = max(
            (chunked_run(setup, gate_template, seed) for seed in seeds),
            key=lambda run: run.lower_bound,
        )
        if not best.converged:
            self._warn_unconverged(self.n_init, stacklevel=6)
        self.feature_groups_ = None
        self.gate_features_ = gate_columns
        self._keep(
            best,
            setup.family,
            n_experts,
            y.ndim,
            expert_load=best.expert_load,
            dropped_fraction=0.0,
            balance=best.load_balance,
        )
        return self

    def _prepare(self, X, y, y_fit, sample_weight, routed, warm):
        """Check the experts against the data and gather what EM needs.

        Returns the fit's data, each expert's column indices (None without
        `feature_groups`) and the gate's (None without `gate_features`).
        """
        templates = expert_templates(
            self.expert, self.n_experts, self.feature_groups, self._default_expert()
        )
        n_experts = len(templates)
        if n_experts > X.shape[0]:
            raise ValueError(
                f"n_experts={n_experts} must be <= n_samples={X.shape[0]}: each "
                "expert needs rows to learn from."
            )
        names = [
            f"expert[{k}]" if isinstance(self.expert, list) else "expert"
            for k in range(n_experts)
        ]
        for template, name in zip(templates, names, strict=True):
            self._check_expert(template, name)
        takes_weights = [supports_sample_weight(t) for t in templates]
        check_expert_weights(
            templates,
            names,
            takes_weights,
            self.training,
            np.all(sample_weight == sample_weight[0]),
        )
        check_routing_params(self.top_k, self.pooling, self.min_expert_load, n_experts)
        if self.feature_groups is None:
            groups, X_parts = None, [X] * n_experts
        else:
            groups = resolve_feature_groups(
                self.feature_groups,
                X.shape[1],
                getattr(self, "feature_names_in_", None),
            )
            X_parts = [X[:, g] for g in groups]
        gate_columns = resolve_gate_features(
            self.gate_features, X.shape[1], getattr(self, "feature_names_in_", None)
        )
        splits = None
        if self.cv is not None:
            cv = check_cv(self.cv, y_fit, classifier=is_classifier(self))
            splits = list(cv.split(X, y_fit))
        context = FitContext(
            X=X,
            # The clusterings of the initial partition and of re-seeding take
            # no missing values: they see them as the column's mean.
            X_filled=SimpleImputer().fit_transform(X) if np.isnan(X).any() else X,
            X_gate=X if gate_columns is None else X[:, gate_columns],
            y=y,
            y_fit=y_fit,
            X_parts=X_parts,
            sample_weight=sample_weight,
            likelihood=self._likelihood_for(templates, y, sample_weight),
            # Unfitted clones: an expert is fitted on a fresh copy of its
            # prototype at every EM step.
            templates=[clone(template) for template in templates],
            takes_weights=takes_weights,
            fit_one=self._fit_one,
            outputs_of=self._outputs_function(),
            routed=routed,
            splits=splits,
            n_jobs=self._expert_n_jobs(warm),
            keep_checkpoint=self.warm_start,
            partition=self.partition,
            training=self.training,
            capacity_factor=self.capacity_factor,
            overflow=self.overflow,
            min_expert_load=self.min_expert_load,
            max_iter=self.max_iter,
            tol=self.tol,
            verbose=self.verbose,
        )
        return context, groups, gate_columns

    def _store(self, best, context, y_ndim):
        """Keep the winning run as the fitted model."""
        self._keep(
            best,
            context.likelihood,
            len(context.templates),
            y_ndim,
            expert_load=best.expert_load,
            dropped_fraction=best.dropped_fraction,
            balance=(
                load_balance(np.exp(best.gate._predict_log_proba(context.X_gate)))
                if best.load_balance is None
                else best.load_balance
            ),
        )

    def _keep(
        self,
        best,
        likelihood,
        n_experts,
        y_ndim,
        expert_load,
        dropped_fraction,
        balance,
    ):
        """Set the fitted attributes from a run and its training summaries."""
        self.experts_ = best.experts
        self.gate_ = best.gate
        self.n_experts_ = n_experts
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = list(best.history)
        self.expert_load_ = expert_load
        self.dropped_fraction_ = dropped_fraction
        self.load_balance_ = balance
        self.n_reseeds_ = best.n_reseeds
        self._gate_checkpoint = best.checkpoint
        self._likelihood, self._scale = likelihood, best.scale
        attributes = likelihood.attributes(best.scale, y_ndim, n_experts)
        for name, value in attributes.items():
            setattr(self, name, value)
        # A fit starts a new model: partial_fit seeds its statistics afresh.
        self._online = None
        self.n_batch_iter_ = 0

    # ------------------------------------------------------------------
    # Online EM (partial_fit).

    def _partial_fit(self, X, y, sample_weight, classes):
        """One step of online EM on a batch (see ``_online.py``); atomic."""
        state = dict(vars(self))
        try:
            with single_threaded_blas.kept():
                return self._partial_fit_step(X, y, sample_weight, classes)
        except BaseException:
            vars(self).clear()
            vars(self).update(state)
            raise

    def _partial_fit_step(self, X, y, sample_weight, classes):
        for name, value in (("X", X), ("y", y), ("sample_weight", sample_weight)):
            if is_dask_collection(value):
                raise TypeError(
                    f"partial_fit takes one batch of rows in memory; {name} is a "
                    "dask collection. Fit a dask array over its chunks with "
                    "fit(X, y), or feed its chunks to partial_fit one at a time "
                    "with dask_ml.wrappers.Incremental."
                )
        templates = self._check_partial_fit_support()
        check_X_y_shapes(X, y)
        if not hasattr(self, "experts_"):
            # The first call starts from batch EM on its own rows (the
            # initial partition, restarts, convergence: all of fit's), and
            # the step below seeds the running statistics from it.
            self._fit(X, y, sample_weight, {}, classes=classes)
        elif len(templates) != self.n_experts_:
            raise ValueError(
                f"partial_fit continues the fitted model, which has "
                f"{self.n_experts_} experts, but the parameters now give "
                f"{len(templates)}. Call fit, or partial_fit on a fresh clone."
            )
        X, y = self._validate_X_y(X, y, reset=False)
        y, y_fit = self._validate_targets(y, reset=False)
        sample_weight = check_sample_weight(sample_weight, X)
        online = self._online
        rho = (
            1.0
            if online is None
            else step_size(online.n_steps, self.learning_offset, self.learning_decay)
        )
        batch = OnlineBatch(
            X_parts=self._X_parts(X),
            X_gate=X if self.gate_features_ is None else X[:, self.gate_features_],
            y=y,
            y_fit=y_fit,
            y_ndim=getattr(self, "_y_ndim", 1),
            sample_weight=sample_weight,
            classes=np.arange(len(self.classes_)) if is_classifier(self) else None,
        )
        seeds = check_random_state(self.random_state).randint(
            MAX_SEED, size=self.n_experts_
        )
        experts, gate, scale, online, log_prob = partial_step(
            self.experts_,
            self.gate_,
            self._scale,
            online,
            batch,
            [clone(template) for template in templates],
            self._likelihood,
            self._outputs_function(),
            rho,
            seeds,
        )
        self.experts_, self.gate_, self._scale = experts, gate, scale
        # A warm-started fit then begins from this gate, not from the state
        # of the fit before the online steps.
        self._gate_checkpoint = None
        self._online = online
        self.n_batch_iter_ = online.n_steps
        self.expert_load_ = online.shares
        self.dropped_fraction_ = 0.0
        self.lower_bound_ = _em.mean_log_likelihood(log_prob, sample_weight)
        self.load_balance_ = load_balance(np.exp(gate._predict_log_proba(batch.X_gate)))
        attributes = self._likelihood.attributes(scale, batch.y_ndim, self.n_experts_)
        for name, value in attributes.items():
            setattr(self, name, value)
        return self

    def _check_partial_fit_support(self):
        """Refuse what partial_fit cannot train, saying what to use instead.

        Returns the experts' templates.
        """
        for name, supported, why in _ONLINE_SETTINGS:
            value = getattr(self, name)
            if value != supported:
                raise ValueError(
                    f"partial_fit does not support {name}={value!r}: {why}. Use "
                    f"{name}={supported!r}, or train with fit."
                )
        if not hasattr(make_gate(self.gate), "_partial_update"):
            raise ValueError(
                f"partial_fit does not support gate={self.gate!r}: only the "
                "softmax and constant gates have an online update. Use "
                "gate='softmax' or gate='constant', or train with fit."
            )
        templates = expert_templates(
            self.expert, self.n_experts, self.feature_groups, self._default_expert()
        )
        for k, template in enumerate(templates):
            name = f"expert[{k}]" if isinstance(self.expert, list) else "expert"
            self._check_expert(template, name)
            kind = update_kind(template)
            given = (
                f"None (the default, {template!r})"
                if self.expert is None
                else repr(template)
            )
            if kind is None:
                raise ValueError(
                    f"{name}={given} cannot be trained by partial_fit: it has no "
                    "partial_fit of its own, and it is not a linear expert whose "
                    "sufficient statistics mixexp keeps. Use "
                    f"{self._online_experts}, or train with fit."
                )
            if (
                kind == "partial_fit"
                and "sample_weight"
                not in inspect.signature(template.partial_fit).parameters
            ):
                raise ValueError(
                    f"{name}={given} has a partial_fit without sample_weight, "
                    "which online soft EM needs to pass the responsibilities. Use "
                    f"{self._online_experts}, or train with fit."
                )
        return templates

    def _route_fit_params(self, fit_params):
        """Split the extra fit parameters between the experts and the gate."""
        n_templates = len(self.expert) if isinstance(self.expert, list) else 1
        _raise_for_params(fit_params, self, "fit")
        if not _routing_enabled():
            return {"experts": [{}] * n_templates, "gate": {}}
        routed = process_routing(self, "fit", **fit_params)
        if isinstance(self.expert, list):
            experts = [routed[f"expert_{k}"].fit for k in range(n_templates)]
        else:
            experts = [routed["expert"].fit]
        gate = routed["gate"].fit if routed_classifier(self.gate) is not None else {}
        return {"experts": experts, "gate": gate}

    def _expert_n_jobs(self, warm):
        """Workers for the experts of an M-step, given those of the restarts.

        Restarts that run in parallel fit their experts one after another,
        unless workers are left over once every restart has one (a cluster
        with more workers than restarts): nested parallel fits on busy
        workers only add joblib's cost (benchmarks/parallel.py).
        """
        if warm or self.n_init == 1:
            return self.n_jobs
        return self.n_jobs if effective_n_jobs(self.n_jobs) > self.n_init else 1

    def _posterior(self, X, X_parts, y):
        """The fitted mixture's E-step on validated data: responsibilities
        and per-row log-likelihood (see ``_em.posterior``)."""
        outputs = self._expert_outputs(self.experts_, X_parts)
        log_lik = self._likelihood.log_likelihood(y, outputs, self._scale)
        return _em.posterior(self._log_gate(X), log_lik)

    # ------------------------------------------------------------------
    # Prediction helpers.

    def _validate_X_y(self, X, y, reset):
        return validate_data(
            self,
            X,
            y,
            reset=reset,
            dtype=np.float64,
            multi_output=True,
            y_numeric=self._y_numeric,
            ensure_all_finite="allow-nan" if self._nan_allowed() else True,
        )

    def _check_predict_X(self, X):
        check_is_fitted(self)
        check_2d(X)
        return validate_data(
            self,
            X,
            reset=False,
            dtype=np.float64,
            ensure_all_finite="allow-nan" if self._nan_allowed() else True,
        )

    def _nan_allowed(self):
        """Whether every expert and the gate take missing values (NaN) in X.

        Then the mixture passes them through; the initial partition and the
        re-seeding, which cluster, see a missing value as its column's mean.
        """
        if isinstance(self.gate, str):
            gate_takes_nan = self.gate == "constant"  # it never reads X
        elif isinstance(self.gate, ConstantGate):
            gate_takes_nan = True
        else:
            gate_takes_nan = not isinstance(self.gate, SoftmaxGate) and (
                get_tags(self.gate).input_tags.allow_nan
            )
        if not gate_takes_nan:
            return False
        try:
            templates = expert_templates(
                self.expert, self.n_experts, self.feature_groups, self._default_expert()
            )
        except (TypeError, ValueError):
            return False
        return all(get_tags(t).input_tags.allow_nan for t in templates)

    def _X_parts(self, X):
        if self.feature_groups_ is None:
            return [X] * self.n_experts_
        return [X[:, g] for g in self.feature_groups_]

    def _log_gate(self, X):
        """The fitted gate's log-probabilities on validated `X`."""
        if self.gate_features_ is not None:
            X = X[:, self.gate_features_]
        return self.gate_._predict_log_proba(X)

    def _expert_outputs(self, experts, X_parts, used=None):
        return self._outputs_function()(experts, X_parts, used)

    def _pooling_weights(self, X):
        """Per-row weights of each expert in the pooled prediction."""
        gate = np.exp(self._log_gate(X))
        if self.pooling == "argmax":
            return top_k_weights(gate, 1)
        if self.top_k is not None:
            return top_k_weights(gate, self.top_k)
        return gate

    def predict_gate(self, X):
        """How much each expert is trusted on each row: the gate's output.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The rows to route to the experts.

        Returns
        -------
        gate : ndarray of shape (n_samples, n_experts_)
            ``g_k(x)`` for each row and expert; rows sum to 1.
        """
        if is_dask_collection(X):
            check_is_fitted(self)
            return lazy_rows(self.predict_gate, X, self.n_features_in_, self.n_experts_)
        X = self._check_predict_X(X)
        return np.exp(self._log_gate(X))

    def predict_expert(self, X):
        """Index of the most trusted expert for each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The rows to assign, one expert each.

        Returns
        -------
        experts : ndarray of int of shape (n_samples,)
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
        if is_dask_collection(X):
            return lazy_rows(self.log_likelihood, X, self.n_features_in_, y=y)
        X, y = self._validate_X_y(X, y, reset=False)
        y, _ = self._validate_targets(y, reset=False)
        return self._posterior(X, self._X_parts(X), y)[1]

    # ------------------------------------------------------------------
    # Model selection.

    def _n_parameters(self):
        """Free parameters: experts, the family's scales and the gate."""
        check_is_fitted(self)
        total = self._likelihood.n_parameters(self._scale)
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
        count = getattr(self.gate_, "_n_parameters", lambda: None)()
        if count is None:
            raise ValueError(
                f"bic and aic need a parameter count, which is not defined for the "
                f"gate {self.gate!r}: use gate='softmax' or 'constant', or compare "
                "models by cross-validated log_likelihood instead."
            )
        return int(total + count)

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
            The data the criterion is computed on, usually the training
            rows.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Their targets.

        Returns
        -------
        bic : float
            The criterion; compare it between models fitted to the same data.
        """
        log_lik = self.log_likelihood(X, y)
        penalty = self._n_parameters() * np.log(log_lik.shape[0])
        return float(-2 * log_lik.sum() + penalty)

    def aic(self, X, y):
        """Akaike information criterion on the given data; lower is better.

        ``-2 log L + 2 p``; see :meth:`bic` for how ``log L`` and ``p`` are
        counted. It penalises parameters less than :meth:`bic` once there
        are more than seven rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets `X` is scored against.

        Returns
        -------
        float
            The criterion, to compare between models of the same data.
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
        classifier = routed_classifier(self.gate)
        if classifier is not None:
            router.add(gate=classifier, method_mapping=mapping)
        return router

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = self._nan_allowed()
        return tags
