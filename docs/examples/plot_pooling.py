"""
=================================
Pooling: weighted sum and argmax
=================================

A mixture of experts predicts by pooling its experts: the gate-weighted sum
(``pooling="weighted"``, the mean of the predictive mixture) or the output of
the most trusted expert (``pooling="argmax"``). They agree where the gate is
sure and differ where it hesitates. Here, one input and three linear experts
approximate a sine; the softmax gate's penalty ``alpha`` sets how sharp the
gate may be, and so how much the two poolings differ.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from mixexp import MixtureOfExpertsRegressor
from mixexp.gating import SoftmaxGate

rng = np.random.RandomState(0)
X = rng.uniform(-3, 3, size=(300, 1))
y = np.sin(1.5 * X[:, 0]) + 0.1 * rng.randn(300)
grid = np.linspace(-3, 3, 400)[:, np.newaxis]

# %%
# With a sharp gate (``alpha=1e-3``) the two poolings nearly
# coincide. With a blurred gate (``alpha=10``) the weighted sum mixes
# neighbouring experts everywhere, while the argmax still follows one expert
# at a time, with a jump where the most trusted expert changes. The lower
# panels show the gate probabilities, stacked.
fig, axes = plt.subplots(
    2, 2, figsize=(11, 6), sharex=True, height_ratios=[3, 1], layout="constrained"
)
for col, alpha in enumerate([1e-3, 10.0]):
    ax = axes[0, col]
    ax.scatter(X[:, 0], y, s=4, color="grey", alpha=0.5, label="data")
    for pooling, style in [("weighted", "-"), ("argmax", "--")]:
        moe = MixtureOfExpertsRegressor(
            n_experts=3,
            gate=SoftmaxGate(alpha=alpha),
            pooling=pooling,
            n_init=3,
            random_state=0,
        ).fit(X, y)
        mse = np.mean((moe.predict(X) - y) ** 2)
        ax.plot(
            grid[:, 0], moe.predict(grid), style, label=f"{pooling} (MSE {mse:.3f})"
        )
    ax.set_title(f"SoftmaxGate(alpha={alpha:g})")
    ax.legend(loc="lower left", fontsize="small")
    axes[1, col].stackplot(
        grid[:, 0], moe.predict_gate(grid).T, colors=["C0", "C1", "C2"], alpha=0.7
    )
    axes[1, col].set(xlabel="x", ylabel="gate")

# %%
# The experts are the same for both poolings (pooling only changes
# ``predict``); what differs is how their outputs are combined. When the gate
# is unsure, the weighted sum is the right answer to "what is the mean of
# ``y``?" only if the model is right; the argmax commits to one expert. Which
# is better on your data is a question for cross-validation.
