"""The experts' M-step: each expert refitted on its rows, weighted by its
responsibilities.

Plain functions of the fit's data (a ``_run.FitContext``: the inputs of
each expert, the targets, the row weights, the unfitted templates and how to
fit them) and of the responsibilities. A worker receives one expert's
template, rows and weights, never the mixture.
"""

import numpy as np
from sklearn import config_context
from sklearn.base import clone
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import _routing_enabled
from sklearn.utils.validation import has_fit_parameter

from mixexp._likelihood import GaussianLikelihood
from mixexp._linear import fit_linear_regressions, is_plain_linear_regression
from mixexp._penalty import expert_priors, mixture_weights
from mixexp._utils import (
    run_calls,
    runs_in_parallel,
    set_random_states,
    single_threaded_blas,
    take_rows,
)

# A row whose responsibility for an expert is below this is left out of that
# expert's fit. Its weight would change the expert's parameters by about
# this relative amount (far below any tolerance here), while leaving it out
# saves a copy and a pass of the row per expert and iteration.
_NEGLIGIBLE_RESPONSIBILITY = 1e-8


def supports_sample_weight(estimator):
    """Whether `estimator` (a Pipeline: its last step) takes sample_weight."""
    if isinstance(estimator, Pipeline):
        return supports_sample_weight(estimator.steps[-1][1])
    return has_fit_parameter(estimator, "sample_weight")


def fit_weighted(estimator, X, y, sample_weight, params):
    """``fit`` with the row weights, wherever the estimator takes them."""
    if sample_weight is None:
        return estimator.fit(X, y, **params)
    if isinstance(estimator, Pipeline) and not has_fit_parameter(
        estimator, "sample_weight"
    ):
        if _routing_enabled():
            return estimator.fit(X, y, sample_weight=sample_weight, **params)
        last = estimator.steps[-1][0]
        return estimator.fit(
            X, y, **{f"{last}__sample_weight": sample_weight}, **params
        )
    return estimator.fit(X, y, sample_weight=sample_weight, **params)


def fit_weighted_classifier(estimator, X, y, sample_weight, params):
    """`fit_weighted` for a classifier expert, whose rows may hold one class.

    Most classifiers refuse a single class (possible under hard EM); the
    expert is then a constant DummyClassifier for that step.
    """
    present = np.unique(y if sample_weight is None else y[sample_weight > 0])
    if present.shape[0] < 2:
        return DummyClassifier(strategy="prior").fit(X, np.full(X.shape[0], present[0]))
    return fit_weighted(estimator, X, y, sample_weight, params)


def fit_experts(context, resp, seeds, previous, train_rows=None):
    """Fit every expert on its weighted (or own) rows; the experts' M-step.

    Rows whose responsibility for an expert is negligible are left out of
    that expert's fit: this is what makes an EM iteration cost about one fit
    on all rows rather than one per expert, once the experts have
    specialised. Plain linear experts are solved together (see
    ``fit_linear_regressions``), unless the fits run in parallel.

    Parameters
    ----------
    context : FitContext
        The fit's data.
    resp : ndarray of shape (n_samples, n_experts)
        The M-step's responsibilities (zero where a capacity left a row out).
    seeds : ndarray of int of shape (n_experts,)
        Seeds for every unset ``random_state`` of each expert.
    previous : list of estimators or None
        The last M-step's experts: one with no rows keeps its fit.
    train_rows : ndarray of int, default=None
        Only these rows may be used (a fold's training rows).

    Returns
    -------
    list of fitted estimators
    """
    w = context.sample_weight
    total_weight = w.sum() if train_rows is None else w[train_rows].sum()
    negligible = _NEGLIGIBLE_RESPONSIBILITY * w
    # Above this share a row counts whatever its (positive) weight: an
    # expert whose every share is above it keeps all rows, found without a
    # pass of products and comparisons over them (many overlapping experts).
    clearly = np.inf
    if train_rows is None and np.all(w > 0):
        clearly = _NEGLIGIBLE_RESPONSIBILITY * (1.0 + 1e-12)
    calls, owners, linear = [], [], []
    substituted = False  # a share not a column of `resp`
    for k, template in enumerate(context.templates):
        share = resp[:, k]
        if share.min(initial=np.inf) > clearly:
            rows = None
        else:
            rows = np.flatnonzero(w * share > negligible)
            if train_rows is not None:
                rows = np.intersect1d(rows, train_rows)
            if rows.size == 0 and previous is not None:
                continue  # keeps the previous fit (the gate gives it ~0)
            if rows.size == 0:
                # No rows even after re-seeding (more experts than distinct
                # rows): a fit on all rows keeps the expert defined, and the
                # gate, which learns it explains nothing, gives it ~0.
                share, rows = np.ones_like(w), np.arange(w.shape[0])
                substituted = True
            rows = None if rows.size == w.size else rows
        params = context.expert_params(k)
        if not params and is_plain_linear_regression(template):
            # The responsibilities (a view), not the weights: the linear
            # fit weights its own rows only, so that no (n, K) array of
            # weights is held while the experts are fitted together.
            linear.append((k, share, rows))
            continue
        # fit checked that the weights are uniform for experts that take
        # none.
        weights = (
            mixture_weights(template, w * share, total_weight)
            if context.takes_weights[k]
            else None
        )
        calls.append(
            (
                _fit_expert,
                (
                    k,
                    template,
                    context.X_parts[k],
                    context.y_fit,
                    weights,
                    rows,
                    params,
                    seeds[k],
                    context.fit_one,
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
        # Every expert at once: their weights are the columns of `resp`.
        shares = [share for _, share, _ in group]
        if ks == list(range(resp.shape[1])) and not substituted:
            shares = resp
        calls.append(
            (
                _fit_linear_experts,
                (
                    ks,
                    [context.templates[k] for k in ks],
                    [context.X_parts[k] for k in ks],
                    context.y_fit,
                    shares,
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


def _fit_expert(k, template, X, y, weights, rows, params, seed, fit_one):
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
        set_random_states(estimator, seed)
        # X and y were checked finite once in fit; the experts need not
        # check them again at every EM step. The user's expert runs with the
        # user's BLAS threads.
        with config_context(assume_finite=True), single_threaded_blas.lifted():
            return fit_one(estimator, X, y, weights, params)
    except Exception as exc:
        _raise_naming_experts(exc, [k], template)


def _fit_linear_experts(ks, templates, X_parts, y, weights, rows, sample_weight):
    """Fit plain LinearRegression experts `ks` together (runs in a worker).

    The same minimiser as LinearRegression.fit, faster when refitted at
    every EM step (see mixexp/_linear.py); nothing to seed.
    """
    try:
        with single_threaded_blas:
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


def keep_better_fits(context, mstep, experts, outputs, previous, previous_outputs):
    """Give back its previous fit to an expert whose refit is worse.

    EM raises its objective only if each M-step raises the expected
    complete log-likelihood of every expert, ``sum_i w_i r_ik log
    p_k(y_i | x_i)``. Weighted least squares (a plain LinearRegression)
    maximises it; most other experts do not: a tree, a forest or a nested
    mixture runs its own heuristic or local search, and its refit on new
    weights can land somewhere worse than where it was. Such an expert
    keeps its previous fit when that one scores higher on the current
    weights, which makes the step a generalised M-step. Without this, a
    mixture of nested mixtures was seen cycling through three states
    forever, its objective rising and falling by 0.9.

    `experts` and `outputs` are updated in place.

    Parameters
    ----------
    context : FitContext
    mstep : ndarray of shape (n_samples, n_experts)
        The M-step's responsibilities.
    experts, outputs : list
        The refitted experts and their outputs on the training rows.
    previous : list or None
        The experts before this M-step.
    previous_outputs : list or None
        Their outputs, when this function returned them last time.

    Returns
    -------
    list or None
        The outputs to pass as `previous_outputs` next time: `outputs`
        when some expert is inexact, else None (nothing is kept).
    """
    inexact = [
        k for k, expert in enumerate(experts) if not is_plain_linear_regression(expert)
    ]
    if not inexact:
        return None
    if previous is None:
        return outputs
    if previous_outputs is None:  # a warm start's experts
        previous_outputs = context.outputs_of(previous, context.X_parts)
    w = context.sample_weight
    family = context.likelihood
    if getattr(family, "covariance_type", None) == "tied":
        # Each of the two fits compared gets its own covariance.
        family = GaussianLikelihood(family.floor, "full")
    for k in inexact:
        if experts[k] is previous[k]:
            continue  # not refitted: no rows (see fit_experts)
        pair = [outputs[k], previous_outputs[k]]
        weights = np.repeat(mstep[:, k, np.newaxis], 2, axis=1)
        expert_weight = w @ mstep[:, k]
        priors = expert_priors(
            [experts[k], previous[k]],
            [context.templates[k]] * 2,
            [expert_weight] * 2,
            w.sum(),
            family.name,
        )
        scale = family.fit_scale(context.y, pair, weights, w, priors)
        log_lik = family.log_likelihood(context.y, pair, scale)
        refit, kept = (w * mstep[:, k]) @ log_lik
        # Penalised experts (Ridge, L2 logistic regression) maximise the
        # penalised expected log-likelihood: compare that one.
        penalties = [
            family.penalty([prior], None if scale is None else scale[[i]])
            for i, prior in enumerate(priors)
        ]
        if None not in penalties:
            refit, kept = refit - penalties[0], kept - penalties[1]
        if kept > refit:
            experts[k], outputs[k] = previous[k], previous_outputs[k]
    return outputs


def out_of_fold_outputs(context, mstep, seeds, experts):
    """Each row's expert outputs from experts fitted without its fold."""
    outputs = None
    for train, test in context.splits:
        held_out = mstep.copy()
        held_out[test] = 0.0
        fold_experts = fit_experts(context, held_out, seeds, experts, train_rows=train)
        fold_outputs = context.outputs_of(
            fold_experts, [part[test] for part in context.X_parts]
        )
        if outputs is None:
            n_samples = context.X.shape[0]
            outputs = [np.empty((n_samples, out.shape[1])) for out in fold_outputs]
        for full, part in zip(outputs, fold_outputs, strict=True):
            full[test] = part
    return outputs
