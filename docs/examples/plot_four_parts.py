"""
======================================
The four parts of a mixture of experts
======================================

Data made of three linear regimes, each in its own region of the plane
(:func:`~mixexp.datasets.make_regimes`): a single linear model cannot follow
them. A :class:`~mixexp.MixtureOfExpertsRegressor` divides the plane into
subtasks, fits a linear expert to each, learns a gate that says which expert
to trust where, and pools the experts' predictions.
"""

# %%
# The data and a single linear model
# ----------------------------------
import matplotlib.pyplot as plt
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import train_test_split

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.plotting import ExpertLoadDisplay, GateRegionsDisplay

X, y, regime = make_regimes(
    n_samples=1000, n_regimes=3, noise=0.2, return_regimes=True, random_state=0
)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

single = LinearRegression().fit(X_train, y_train)
print(f"one linear model:       R2 = {single.score(X_test, y_test):.3f}")

# %%
# Three linear experts and a softmax gate
# ---------------------------------------
# ``n_init=3`` runs EM from three starting partitions and keeps the best.
moe = MixtureOfExpertsRegressor(
    LinearRegression(), n_experts=3, n_init=3, random_state=0
).fit(X_train, y_train)
print(f"mixture of 3 experts:   R2 = {moe.score(X_test, y_test):.3f}")

# %%
# What the model learned
# ----------------------
# Left: the target, coloured by value; the three regimes show as three
# different slopes. Middle: the gate's regions, where each expert is trusted,
# with the training points coloured by their most trusted expert. Right:
# each expert's share of the training data.
fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
points = axes[0].scatter(X[:, 0], X[:, 1], c=y, s=6, cmap="viridis")
fig.colorbar(points, ax=axes[0], label="y")
axes[0].set(title="target", xlabel="x[0]", ylabel="x[1]")

regions = GateRegionsDisplay.from_estimator(moe, X_train, ax=axes[1])
regions.ax_.scatter(
    X_train[:, 0],
    X_train[:, 1],
    c=regions.colors_[moe.predict_expert(X_train)],
    s=6,
    edgecolor="black",
    linewidth=0.2,
)
regions.ax_.set_title("gate: whom to trust")

ExpertLoadDisplay.from_estimator(moe, ax=axes[2], name="subtasks: share of data")
plt.show()

# %%
# Each expert recovers one regime's linear function: its coefficients, and a
# noise scale close to the 0.2 of the data.
for k, expert in enumerate(moe.experts_):
    print(
        f"expert {k}: coef={expert.coef_.round(2)}, "
        f"intercept={expert.intercept_:.2f}, noise={moe.noise_std_[k]:.2f}"
    )
