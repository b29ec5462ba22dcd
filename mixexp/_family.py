"""Which likelihood family a regression mixture uses, read off its experts.

``likelihood="auto"`` follows the experts: an expert that minimises a
Poisson deviance is scored by a Poisson likelihood, one that minimises
absolute errors by a Laplace one, and so on, so that each expert's weighted
``fit`` is the exact M-step of its family. An explicit family that does not
match the experts' loss is allowed, with a warning: the M-step is then
approximate.
"""

import warnings

import numpy as np
from sklearn.pipeline import Pipeline

from mixexp._likelihood import (
    GammaLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    PoissonLikelihood,
)
from mixexp.exceptions import ApproximateMStepWarning

FAMILIES = ("gaussian", "laplace", "poisson", "gamma")

# The losses of scikit-learn's regressors, by the family whose likelihood
# they maximise (the value of their `loss` or `criterion` parameter).
_LOSS_FAMILIES = {
    "squared_error": "gaussian",
    "absolute_error": "laplace",
    "poisson": "poisson",
    "gamma": "gamma",
}


def family_of(estimator):
    """The family whose likelihood `estimator`'s fit maximises.

    Reads the estimator's class and its loss parameters: the generalised
    linear models (``PoissonRegressor``, ``GammaRegressor``,
    ``TweedieRegressor`` with power 1 or 2), the boosting and tree losses
    (``loss`` / ``criterion`` of "poisson", "gamma", "absolute_error"), the
    median regression (``QuantileRegressor(quantile=0.5)``, a ``quantile``
    loss at 0.5), a Pipeline's last step, and a nested mixture's own family.
    Everything else is ``"gaussian"``.
    """
    if isinstance(estimator, Pipeline):
        return family_of(estimator.steps[-1][1])
    params = estimator.get_params(deep=False)
    if "likelihood" in params and "n_experts" in params:  # a nested mixture
        if params["likelihood"] != "auto":
            return params["likelihood"]
        expert = params["expert"]
        if expert is None:
            return "gaussian"
        experts = expert if isinstance(expert, list) else [expert]
        return _one_family(experts, "expert")
    name = type(estimator).__name__
    if name == "PoissonRegressor":
        return "poisson"
    if name == "GammaRegressor":
        return "gamma"
    if name == "TweedieRegressor":
        families = {0: "gaussian", 1: "poisson", 2: "gamma"}
        return families.get(params["power"], "gaussian")
    if name == "QuantileRegressor":
        return "laplace" if params["quantile"] == 0.5 else "gaussian"
    for key in ("loss", "criterion"):
        loss = params.get(key)
        if loss == "quantile":
            quantile = params.get("quantile", params.get("alpha"))
            return "laplace" if quantile == 0.5 else "gaussian"
        if isinstance(loss, str) and loss in _LOSS_FAMILIES:
            return _LOSS_FAMILIES[loss]
    return "gaussian"


def _one_family(templates, name):
    families = [family_of(t) for t in templates]
    if len(set(families)) > 1:
        found = ", ".join(
            f"{name}[{k}] ({type(t).__name__}): {f}"
            for k, (t, f) in enumerate(zip(templates, families, strict=True))
        )
        raise ValueError(
            f"The experts fit different likelihood families ({found}); one "
            "mixture has one family. Use experts of one family, or set "
            "likelihood= to the family to score them all by (their M-step is "
            "then approximate)."
        )
    return families[0]


def resolve_family(likelihood, templates):
    """The family a mixture of `templates` uses under `likelihood`.

    Raises a ValueError for experts of different families under "auto";
    warns (ApproximateMStepWarning) when an explicit family does not match
    what an expert's fit maximises.
    """
    if likelihood == "auto":
        return _one_family(templates, "expert")
    for k, template in enumerate(templates):
        fits = family_of(template)
        if fits != likelihood:
            warnings.warn(
                f"likelihood={likelihood!r} scores the experts by a "
                f"{likelihood} likelihood, but expert {k} "
                f"({type(template).__name__}) fits a {fits} one: the M-step is "
                "approximate and EM may not raise the objective at every step. "
                f"Use an expert that fits the {likelihood} family, or "
                "likelihood='auto'.",
                ApproximateMStepWarning,
                stacklevel=5,
            )
            break
    return likelihood


def check_targets(family, y):
    """Refuse targets outside the family's support, saying what to do."""
    check_target_counts(family, int(np.sum(y < 0)), int(np.sum(y <= 0)))


def check_target_counts(family, negative, not_positive):
    """`check_targets` from the numbers of negative and of y <= 0 values."""
    if family == "poisson" and negative:
        raise ValueError(
            f"likelihood='poisson' needs y >= 0 (counts); y has "
            f"{negative} negative values. Use likelihood='gaussian' "
            "or 'laplace' for targets of any sign."
        )
    if family == "gamma" and not_positive:
        raise ValueError(
            f"likelihood='gamma' needs y > 0; y has {not_positive} "
            "values <= 0. Use likelihood='poisson' for counts with zeros, or "
            "'gaussian' for targets of any sign."
        )


def make_likelihood(family, covariance_type, y, sample_weight):
    """The likelihood object of `family`, configured from the targets."""
    if covariance_type != "diag" and family != "gaussian":
        raise ValueError(
            f"covariance_type={covariance_type!r} structures a Gaussian "
            f"likelihood, but this mixture's family is {family!r}. Leave "
            "covariance_type='diag' (the default), or use Gaussian experts "
            "(likelihood='gaussian')."
        )
    check_targets(family, y)
    if family == "gaussian":
        return GaussianLikelihood.for_targets(y, sample_weight, covariance_type)
    return {
        "laplace": LaplaceLikelihood,
        "poisson": PoissonLikelihood,
        "gamma": GammaLikelihood,
    }[family].for_targets(y, sample_weight)
