"""
=======================
Choosing the likelihood
=======================

Counts from two Poisson regressions, one rising and one falling with ``x``.
Gaussian experts (least squares, the default) see a noise of one constant
spread per expert; but a count's spread grows with its mean, so rows with
large counts look like outliers and pull both experts. Poisson experts
(``PoissonRegressor``) are scored by the Poisson likelihood their fit
maximises (``likelihood="auto"`` reads it off the expert), and recover the
two regressions.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import norm
from sklearn.linear_model import LinearRegression, PoissonRegressor

from mixexp import MixtureOfExpertsRegressor

rng = np.random.RandomState(0)
X = rng.uniform(0, 3, size=(2000, 1))
rising = rng.rand(2000) < 0.5
log_mean = np.where(rising, 0.5 + 0.6 * X[:, 0], 2.0 - 0.4 * X[:, 0])
y = rng.poisson(np.exp(log_mean))

experts = {
    "Gaussian experts (LinearRegression)": LinearRegression(),
    "Poisson experts (PoissonRegressor)": PoissonRegressor(alpha=0),
}
grid = np.linspace(0, 3, 200)[:, np.newaxis]
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
for ax, (name, expert) in zip(axes, experts.items(), strict=True):
    moe = MixtureOfExpertsRegressor(
        expert, n_experts=2, gate="constant", n_init=3, random_state=0
    ).fit(X, y)
    ax.scatter(X[:, 0], y, s=4, c=np.where(rising, "C0", "C1"), alpha=0.25)
    ax.plot(grid, np.exp(0.5 + 0.6 * grid), "k--", lw=1, label="true means")
    ax.plot(grid, np.exp(2.0 - 0.4 * grid), "k--", lw=1)
    for k, fitted in enumerate(moe.experts_):
        ax.plot(grid, fitted.predict(grid), lw=2.5, color=f"C{k + 2}")
    ax.set_title(f"{name}\nlikelihood_ = {moe.likelihood_!r}")
    ax.set_xlabel("x")
    ax.legend(loc="upper center")
axes[0].set_ylabel("count y")
plt.show()

# %%
# The mixture's mean log-likelihood on held-out counts tells the two apart
# without a plot. The Gaussian model's density is not a probability of a
# count, so the comparison is made on what each model says the count's
# probability is: the Poisson law of the Poisson experts, against the
# Gaussian density of the least-squares experts integrated over each
# count's unit interval (a continuity correction).
X_test = rng.uniform(0, 3, size=(2000, 1))
rising_test = rng.rand(2000) < 0.5
y_test = rng.poisson(
    np.exp(np.where(rising_test, 0.5 + 0.6 * X_test[:, 0], 2.0 - 0.4 * X_test[:, 0]))
)
poisson = MixtureOfExpertsRegressor(
    PoissonRegressor(alpha=0), n_experts=2, gate="constant", n_init=3, random_state=0
).fit(X, y)
gaussian = MixtureOfExpertsRegressor(
    n_experts=2, gate="constant", n_init=3, random_state=0
).fit(X, y)
gate = gaussian.predict_gate(X_test)
probability = sum(
    gate[:, k]
    * (
        norm.cdf(y_test + 0.5, expert.predict(X_test), gaussian.noise_std_[k])
        - norm.cdf(y_test - 0.5, expert.predict(X_test), gaussian.noise_std_[k])
    )
    for k, expert in enumerate(gaussian.experts_)
)
print(f"Poisson experts:  {poisson.log_likelihood(X_test, y_test).mean():.3f}")
print(f"Gaussian experts: {np.log(probability).mean():.3f}")
