"""One Newton step of a generalised linear expert, from sums over rows.

Over the chunks of a dask array an expert cannot be refitted on all its
rows at once. A generalised linear model (PoissonRegressor, GammaRegressor,
a log-link TweedieRegressor, an L2 LogisticRegression) can instead take a
Newton step on its own penalised objective, whose gradient and Hessian are
sums over rows: a generalised M-step, as the softmax gate's. Each expert
minimises

    F(theta) = sum_i s_i loss_i(theta) / N + lam / 2 ||coef||^2

with ``s_i = w_i r_ik`` and ``N = sum_i s_i``, which is the estimator's own
objective up to a constant factor: ``alpha`` for the GLMs, whose loss is
the weighted mean of half deviances; ``1 / (C W)`` for LogisticRegression,
whose summed loss EM weights to total ``W`` (``_penalty.mixture_weights``).
The per-row derivatives come from scikit-learn's losses (a multinomial
expert from the softmax gate's kernels, ``_softmax.py``). A step is checked
over the same rows at a few lengths and the longest one that satisfies
Armijo's condition is taken (none: the expert keeps its parameters), so
every step lowers F.

Parameters ``theta`` are ``[intercept, coef...]`` for one output, and
``(d + 1, C)`` raveled (intercepts first) for a multinomial expert.
"""

from dataclasses import dataclass

import numpy as np
from sklearn._loss.loss import HalfBinomialLoss, HalfGammaLoss, HalfPoissonLoss
from sklearn.linear_model import (
    GammaRegressor,
    LogisticRegression,
    PoissonRegressor,
    TweedieRegressor,
)

from mixexp import _softmax
from mixexp._linear import _shallow_copy

# Lengths of the step tried, longest first, in the pass that checks them.
STEP_LENGTHS = (1.0, 0.5, 0.25, 0.125, 0.0625)


def newton_kind(template):
    """ "poisson", "gamma", "logistic", or None if not stepped this way."""
    params = template.get_params(deep=False)
    if type(template) is PoissonRegressor:
        return "poisson"
    if type(template) is GammaRegressor:
        return "gamma"
    if type(template) is TweedieRegressor and params["link"] in ("auto", "log"):
        return {1: "poisson", 2: "gamma"}.get(params["power"])
    if type(template) is LogisticRegression and _ridge_logistic(params):
        return "logistic"
    return None


def _ridge_logistic(params):
    """Whether a LogisticRegression minimises C sum loss + ||coef||^2 / 2
    over all classes together (see ``_penalty._logistic_penalty``)."""
    penalty, l1_ratio = params.get("penalty", "l2"), params.get("l1_ratio")
    ridge = (
        penalty is None
        or (penalty in ("l2", "deprecated") and l1_ratio in (None, 0, 0.0))
        or (penalty == "elasticnet" and l1_ratio == 0)
    )
    return (
        ridge
        and params["solver"] != "liblinear"
        and params.get("class_weight") is None
        and params.get("multi_class", "auto") in ("auto", "multinomial", "deprecated")
    )


@dataclass
class NewtonExpert:
    """The objective of one expert and how to step it (see the module)."""

    kind: str  # "poisson", "gamma", "logistic"
    fit_intercept: bool
    lam: float  # the penalty on the coefficients, in F's units
    n_classes: int = 0  # logistic only

    @classmethod
    def of(cls, template, total_weight, n_classes=0):
        kind = newton_kind(template)
        if kind == "logistic":
            strength = template.C
            unpenalised = template.get_params()["penalty"] is None or np.isinf(strength)
            lam = 0.0 if unpenalised else 1.0 / strength
            return cls(kind, template.fit_intercept, lam / total_weight, n_classes)
        return cls(kind, template.fit_intercept, float(template.alpha))

    @property
    def multinomial(self):
        return self.kind == "logistic" and self.n_classes > 2

    def n_parameters(self, n_features):
        width = n_features + 1
        return width * self.n_classes if self.multinomial else width

    def start(self, target_sum, total, n_features):
        """Intercept-only parameters: the weighted mean target, linked."""
        theta = np.zeros(self.n_parameters(n_features))
        if not (self.fit_intercept and total > 0):
            return theta
        mean = target_sum / total
        if self.multinomial:
            share = np.clip(mean, 1e-12, None)
            theta[: self.n_classes] = np.log(share) - np.log(share).mean()
        elif self.kind == "logistic":
            p = np.clip(mean[1] if mean.size > 1 else mean[0], 1e-12, 1 - 1e-12)
            theta[0] = np.log(p / (1 - p))
        else:
            theta[0] = np.log(max(float(mean[0]), 1e-12))
        return theta

    # Sums over a block of rows (weights s: w times the responsibility).

    def _loss(self):
        return {
            "poisson": HalfPoissonLoss,
            "gamma": HalfGammaLoss,
            "logistic": HalfBinomialLoss,
        }[self.kind]()

    def _raw(self, theta, X):
        return theta[0] + X @ theta[1:]

    def block_sums(self, theta, X, y, s):
        """``(sum s loss, its gradient, its Hessian)`` in `theta`."""
        if self.multinomial:
            return self._multinomial_sums(theta, X, y, s)
        loss = self._loss()
        raw = self._raw(theta, X)
        target = self._target(y)
        value = float(
            loss.loss(y_true=target, raw_prediction=raw, sample_weight=s).sum()
        )
        g, h = loss.gradient_hessian(y_true=target, raw_prediction=raw, sample_weight=s)
        grad = np.concatenate([[g.sum()], X.T @ g])
        Z = np.empty((X.shape[0], X.shape[1] + 1))
        Z[:, 0], Z[:, 1:] = 1.0, X
        return value, grad, (Z * h[:, np.newaxis]).T @ Z

    def block_trials(self, theta, direction, X, y, s):
        """``sum s loss`` at each of `STEP_LENGTHS` along ``-direction``."""
        if self.multinomial:
            onehot = self._onehotT(y)
            zero, one = np.zeros(X.shape[1]), np.ones(X.shape[1])
            return np.array(
                [
                    _softmax.softmax_objective(
                        theta - length * direction,
                        X,
                        zero,
                        one,
                        onehot,
                        s,
                        0.0,
                        gradient=False,
                    )[0]
                    for length in STEP_LENGTHS
                ]
            )
        loss = self._loss()
        target = self._target(y)
        raw, slope = self._raw(theta, X), self._raw(direction, X)
        return np.array(
            [
                float(
                    loss.loss(
                        y_true=target,
                        raw_prediction=raw - length * slope,
                        sample_weight=s,
                    ).sum()
                )
                for length in STEP_LENGTHS
            ]
        )

    def block_deviances(self, theta, direction, X, y, s, mean_floor):
        """Gamma's ``sum s (y / mu - log(y / mu) - 1)`` at a zero-length step,
        then at each of `STEP_LENGTHS`."""
        raw, slope = self._raw(theta, X), self._raw(direction, X)
        target = y[:, 0]
        sums = []
        for length in (0.0, *STEP_LENGTHS):
            ratio = target / np.maximum(np.exp(raw - length * slope), mean_floor)
            sums.append(s @ (ratio - np.log(ratio) - 1.0))
        return np.array(sums)

    def _target(self, y):
        if self.kind == "logistic":
            return np.ascontiguousarray(y == 1, dtype=np.float64)
        return np.ascontiguousarray(y[:, 0])

    def _onehotT(self, y):
        onehot = np.zeros((self.n_classes, y.shape[0]))
        onehot[y, np.arange(y.shape[0])] = 1.0
        return onehot

    def _multinomial_sums(self, theta, X, y, s):
        zero, one = np.zeros(X.shape[1]), np.ones(X.shape[1])
        value, grad = _softmax.softmax_objective(
            theta, X, zero, one, self._onehotT(y), s, 0.0
        )
        probaT = _softmax.softmax_probaT(theta, X, zero, one, self.n_classes)
        hessian = _softmax.softmax_hessian(X, zero, one, probaT, s, 0.0)
        return value, grad, hessian

    # The step, on the client.

    def penalty(self, theta):
        coef = self._coef(theta)
        return 0.5 * self.lam * float(np.sum(coef**2))

    def _coef(self, theta):
        if self.multinomial:
            return theta.reshape(-1, self.n_classes)[1:]
        return theta[1:]

    def direction(self, theta, grad, hessian, total):
        """The Newton direction of F (to subtract), and F's slope along it."""
        grad = grad / total
        hessian = hessian / total
        penalised = ~self._intercept_mask(theta.size)
        grad = grad + self.lam * np.where(penalised, theta, 0.0)
        hessian = hessian + np.diag(self.lam * penalised)
        if not self.fit_intercept:  # the intercept stays at zero
            free = ~self._intercept_mask(theta.size)
            grad, hessian = grad * free, hessian * np.outer(free, free)
        values, vectors = _softmax.pseudo_inverse_factors(hessian)
        step = vectors @ ((vectors.T @ grad) / values)
        return step, float(grad @ step)

    def _intercept_mask(self, size):
        mask = np.zeros(size, dtype=bool)
        mask[: self.n_classes if self.multinomial else 1] = True
        return mask

    def chosen(self, theta, direction, slope, value, trials, total):
        """Parameters after the longest step that satisfies Armijo."""
        current = value / total + self.penalty(theta)
        for length, trial in zip(STEP_LENGTHS, trials, strict=True):
            moved = theta - length * direction
            if trial / total + self.penalty(moved) <= current - 1e-4 * length * slope:
                return moved, length
        return theta, 0.0

    def fitted(self, template, theta, n_features, classes=None):
        """A fitted copy of `template` with these parameters."""
        estimator = _shallow_copy(template)
        estimator.n_features_in_ = n_features
        if self.kind == "logistic":
            if self.multinomial:
                params = theta.reshape(n_features + 1, self.n_classes)
                estimator.coef_ = np.ascontiguousarray(params[1:].T)
                estimator.intercept_ = params[0].copy()
            else:
                estimator.coef_ = theta[1:][np.newaxis, :].copy()
                estimator.intercept_ = theta[:1].copy()
            estimator.classes_ = classes
            estimator.n_iter_ = np.array([1])
            return estimator
        estimator.coef_ = theta[1:].copy()
        estimator.intercept_ = float(theta[0])
        estimator.n_iter_ = 1
        estimator._base_loss = estimator._get_loss()
        return estimator
