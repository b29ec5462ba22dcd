"""The experts' penalties, in the units of the mixture's objective.

EM maximises the weighted mean log-likelihood less the penalties, divided
by the total weight ``W``. A penalised expert (Ridge, an L2 logistic
regression, a Poisson GLM with ``alpha``) maximises its own penalised
weighted likelihood in the M-step; counting the same penalty in the
objective makes the M-step exact again, so that the objective EM reports is
the one its M-step raises. An expert whose penalty is not known here
(trees, k-NN, boosting, pipelines) makes the M-step approximate: its
penalty is ``None``.

Each expert pays its share of the training weight, ``W_k / W``, of the
penalty the plain estimator pays on all rows: an expert fitted on every row
pays it in full, and splitting an expert into two with the same
coefficients costs nothing. (A penalty that did not scale with the share
would push EM to merge experts, one collapse at a time, for no gain in
fit.) scikit-learn's GLMs average their loss over the sample weights, so
their ``alpha`` already scales this way. Ridge and LogisticRegression sum
their loss: their weights are rescaled to sum to ``W``
(:func:`mixture_weights`), which leaves their parameters as the user set
them.

The E-step's responsibilities stay the posterior of the mixture, so that
the objective is monotone up to the change of the shares times each
expert's penalty per unit of weight: a second-order term that vanishes as
EM converges (a dip of 2e-6 against a rise of 0.3 in
tests/test_families.py).

An expert's *prior* is one of

- ``0.0``: no penalty (LinearRegression, a constant DummyRegressor);
- a float: the penalty in log-likelihood units (an L2 logistic regression:
  ``W_k / W ||coef||^2 / (2 C)``; a Poisson GLM: ``W_k alpha ||coef||^2 /
  2``);
- an (m, m) ndarray: a Gaussian prior's scatter ``W_k / W alpha B^T B``
  (Ridge), whose penalty ``trace(Sigma^-1 scatter) / 2`` depends on the
  noise covariance ``Sigma`` and enters its M-step (see ``_likelihood.py``);
- ``None``: not known.
"""

import numbers

import numpy as np

from mixexp._family import FAMILIES, family_of

_GLMS = ("PoissonRegressor", "GammaRegressor", "TweedieRegressor")
_SUMMED_LOSSES = ("Ridge", "LogisticRegression")


def mixture_weights(template, weights, total_weight):
    """An expert's fit weights, rescaled to sum to `total_weight` if its
    loss is a sum (Ridge, LogisticRegression; see the module docstring)."""
    if type(template).__name__ not in _SUMMED_LOSSES:
        return weights
    fitted_weight = weights.sum()
    if fitted_weight <= 0:
        return weights
    return weights * (total_weight / fitted_weight)


def expert_priors(experts, templates, expert_weights, total_weight, family):
    """Each fitted expert's prior (see the module docstring).

    Parameters
    ----------
    experts : list of fitted estimators
    templates : list of estimators
        The unfitted experts, with the user's parameters.
    expert_weights : ndarray of shape (K,)
        ``W_k``, each expert's weight in the M-step that fitted it.
    total_weight : float
        ``W``, the mixture's training weight.
    family : str
        The mixture's likelihood family (its ``name``): a regressor fitted
        for another family has no known penalty under this one.
    """
    return [
        _prior(expert, template, share, total_weight, family)
        for expert, template, share in zip(
            experts, templates, np.asarray(expert_weights) / total_weight, strict=True
        )
    ]


def _prior(expert, template, share, total_weight, family):
    name = type(expert).__name__
    if name in ("DummyRegressor", "DummyClassifier"):
        return 0.0
    if name == "LinearRegression":
        # Its family is Gaussian; read off its class, not its parameters,
        # for this runs at every EM iteration (get_params is slow).
        return None if family in FAMILIES and family != "gaussian" else 0.0
    if family in FAMILIES and family_of(template) != family:
        return None
    params = template.get_params(deep=False)
    if name == "Ridge":
        alpha = params["alpha"]
        if not isinstance(alpha, numbers.Real):
            return None  # one alpha per output: no shared Gaussian prior
        coef = np.atleast_2d(expert.coef_)  # (m, p)
        return share * alpha * (coef @ coef.T)
    if name == "LogisticRegression":
        penalty = _logistic_penalty(expert, params)
        return None if penalty is None else share * penalty
    if name in _GLMS:
        alpha = params["alpha"]
        if alpha == 0:
            return 0.0
        expert_weight = share * total_weight
        if family == "poisson":
            return expert_weight * alpha * float(np.sum(expert.coef_**2)) / 2.0
        if family == "gaussian":  # TweedieRegressor(power=0): a ridge prior
            coef = np.atleast_2d(expert.coef_)
            return expert_weight * alpha * (coef @ coef.T)
        # A Gamma GLM's penalty is scaled by the dispersion in
        # log-likelihood units; its M-step is left approximate.
        return None
    return None


def _logistic_penalty(expert, params):
    """``||coef||^2 / (2 C)`` for an L2 LogisticRegression, else None.

    Its fit minimises ``C sum_i s_i loss_i + ||coef||^2 / 2`` (the intercept
    unpenalised) with every solver but liblinear, which penalises the
    intercept too.
    """
    penalty = params.get("penalty", "l2")
    l1_ratio = params.get("l1_ratio")
    if penalty is None or params["C"] == np.inf:
        return 0.0
    ridge = (penalty in ("l2", "deprecated") and l1_ratio in (None, 0, 0.0)) or (
        penalty == "elasticnet" and l1_ratio == 0
    )
    if not ridge or params["solver"] == "liblinear":
        return None
    if params.get("class_weight") is not None:
        return None  # reweights the likelihood itself
    return float(np.sum(expert.coef_**2)) / (2.0 * params["C"])
