"""
==========================
Soft EM, hard EM and no EM
==========================

``training`` chooses how the experts and the gate learn together: soft EM
(every expert sees every row, weighted by its responsibility), hard EM (each
row goes to one expert) or a fixed partition (cluster first, then fit, no
EM). The EM history shows soft EM climbing to a higher log-likelihood, and
the gate regions show why: EM moves the rows that the first partition put
with the wrong expert.
"""

# %%
import matplotlib.pyplot as plt

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.plotting import GateRegionsDisplay, LogLikelihoodHistoryDisplay

X, y = make_regimes(n_samples=800, n_regimes=3, noise=0.3, random_state=0)

models = {
    training: MixtureOfExpertsRegressor(
        n_experts=3, training=training, n_init=3, random_state=0
    ).fit(X, y)
    for training in ["em", "hard", "fixed"]
}
for training, model in models.items():
    print(
        f"{training:>5}: {model.n_iter_:3d} iterations, mean log-likelihood "
        f"{model.lower_bound_:.3f}, R2 {model.score(X, y):.3f}"
    )

# %%
# The log-likelihood after each EM iteration (the fixed partition has one
# point: it stops after its only M-step).
history = None
for training, model in models.items():
    history = LogLikelihoodHistoryDisplay.from_estimator(
        model, name=training, ax=None if history is None else history.ax_
    )
history.ax_.set_title("EM history")

# %%
# The gate regions each mode ends with.
fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
for ax, (training, model) in zip(axes, models.items(), strict=True):
    GateRegionsDisplay.from_estimator(model, X, ax=ax, legend=False)
    ax.scatter(X[:, 0], X[:, 1], c="black", s=1)
    ax.set_title(f'training="{training}"')
