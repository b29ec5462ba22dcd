"""The experts' penalties, in the units of the mixture's objective.

EM maximises the weighted mean log-likelihood less the penalties, divided
by the total weight ``W``. A penalised expert (Ridge, an L2 logistic
regression, a GLM with ``alpha``) maximises its own penalised weighted
likelihood in the M-step; counting the same penalty in the objective makes
the M-step exact again, so that EM raises what it reports. An expert whose
penalty is not known here (trees, k-NN, boosting, pipelines) makes the
M-step approximate: its penalty is ``None``.

An expert's *prior* is one of

- ``0.0``: no penalty (LinearRegression, a constant DummyRegressor);
- a float: the penalty in log-likelihood units (an L2 logistic regression:
  ``||coef||^2 / (2 C)``; a Poisson GLM: ``W alpha ||coef||^2 / 2``);
- an (m, m) ndarray: a Gaussian prior's scatter ``alpha B^T B`` (Ridge),
  whose penalty ``trace(Sigma^-1 alpha B^T B) / 2`` depends on the noise
  covariance ``Sigma`` and enters its M-step (see ``_likelihood.py``);
- ``None``: not known.

scikit-learn's GLMs (PoissonRegressor, GammaRegressor, TweedieRegressor)
average their loss over the sample weights, so that ``alpha`` is a penalty
per unit of weight. In a mixture, the unit is the mixture's training weight
``W``: an expert that holds ``W_k`` of it is fitted with ``alpha W / W_k``
(:func:`for_mixture_weight`). Its penalty, ``W alpha ||coef||^2 / 2``, then
no longer moves with the responsibilities, and the objective is
``mean log-likelihood - sum_k alpha ||coef_k||^2 / 2`` as for one GLM.
"""

import numbers

import numpy as np
from sklearn.base import clone

from mixexp._family import FAMILIES, family_of

_GLMS = ("PoissonRegressor", "GammaRegressor", "TweedieRegressor")


def for_mixture_weight(template, total_weight, expert_weight):
    """The template to fit on `expert_weight` of `total_weight` (see above)."""
    if type(template).__name__ not in _GLMS or expert_weight <= 0:
        return template
    alpha = template.get_params(deep=False)["alpha"]
    if alpha == 0:
        return template
    return clone(template).set_params(alpha=alpha * total_weight / expert_weight)


def expert_priors(experts, templates, total_weight, family):
    """Each fitted expert's prior (see the module docstring).

    Parameters
    ----------
    experts : list of fitted estimators
    templates : list of estimators
        The unfitted experts, with the user's parameters.
    total_weight : float
        ``W``, the mixture's training weight.
    family : str
        The mixture's likelihood family (its ``name``): a regressor fitted
        for another family has no known penalty under this one.
    """
    return [
        _prior(expert, template, total_weight, family)
        for expert, template in zip(experts, templates, strict=True)
    ]


def _prior(expert, template, total_weight, family):
    name = type(expert).__name__
    if name in ("DummyRegressor", "DummyClassifier"):
        return 0.0
    if family in FAMILIES and family_of(template) != family:
        return None
    if name == "LinearRegression":
        return 0.0
    params = template.get_params(deep=False)
    if name == "Ridge":
        alpha = params["alpha"]
        if not isinstance(alpha, numbers.Real):
            return None  # one alpha per output: no shared Gaussian prior
        coef = np.atleast_2d(expert.coef_)  # (m, p)
        return alpha * (coef @ coef.T)
    if name == "LogisticRegression":
        return _logistic_penalty(expert, params)
    if name in _GLMS:
        alpha = params["alpha"]
        if alpha == 0:
            return 0.0
        if family == "poisson":
            return total_weight * alpha * float(np.sum(expert.coef_**2)) / 2.0
        if family == "gaussian":  # TweedieRegressor(power=0): a ridge prior
            coef = np.atleast_2d(expert.coef_)
            return total_weight * alpha * (coef @ coef.T)
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
