"""
=================
Choosing the gate
=================

The gate decides whom to trust. The softmax gate draws straight boundaries,
sharper or softer with its penalty ``alpha``; a decision tree as the gate
draws axis-aligned boxes; the constant gate trusts every expert the same
everywhere (a finite mixture of regressions). The same three linear experts
on the same data, with four gates.
"""

# %%
import matplotlib.pyplot as plt
from sklearn.tree import DecisionTreeClassifier

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.gating import SoftmaxGate
from mixexp.plotting import GateRegionsDisplay

X, y = make_regimes(n_samples=800, n_regimes=3, noise=0.2, random_state=0)

gates = {
    "softmax (alpha='auto')": "softmax",
    "softmax (alpha=10)": SoftmaxGate(alpha=10.0),
    "decision tree": DecisionTreeClassifier(max_depth=5, min_samples_leaf=10),
    "constant": "constant",
}
fig, axes = plt.subplots(1, 4, figsize=(16, 4), layout="constrained")
for ax, (name, gate) in zip(axes, gates.items(), strict=True):
    moe = MixtureOfExpertsRegressor(n_experts=3, gate=gate, n_init=3, random_state=0)
    moe.fit(X, y)
    GateRegionsDisplay.from_estimator(moe, X, ax=ax, legend=False)
    ax.set_title(f"{name}\nR2 = {moe.score(X, y):.3f}")
    if gate == "constant":
        # One set of weights everywhere: no region to draw, so say them.
        weights = ", ".join(f"{g:.2f}" for g in moe.predict_gate(X[:1])[0])
        ax.text(
            0.5,
            0.5,
            f"the same weights\neverywhere:\n({weights})",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=12,
        )

# %%
# A tree is not fitted by maximum likelihood on the soft targets, so with a
# tree gate an EM iteration is no longer sure to raise the log-likelihood;
# deep trees can make EM oscillate between two solutions. Limiting the
# tree's depth and leaf size keeps the gate smooth enough for EM to settle.
#
# The constant gate has no regions: one expert has the largest proportion
# everywhere, and the plane takes its colour, pale because no expert is
# trusted much more than the others. It suits data where the input does not
# tell the groups apart; here it does, and the input-dependent gates win.
