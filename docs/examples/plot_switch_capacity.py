"""
=======================================
Switch routing: the capacity trade-off
=======================================

Under Switch routing each row goes to its most trusted expert, and each
expert takes at most ``ceil(n_rows / n_experts * capacity_factor)`` rows of
a batch; rows beyond that overflow and are dropped.
:func:`mixexp.routing.switch_route` routes a batch of gate probabilities by
these rules. A small capacity factor drops rows; a large one leaves expert
places empty (padded). Here both costs are measured on the gates of two
fitted mixtures: one whose experts take fairly even shares of the rows, and
one where a single expert is the first choice of most rows.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

from mixexp import MixtureOfExpertsRegressor
from mixexp.datasets import make_regimes
from mixexp.routing import expert_capacity, load_balance, switch_route


def route_costs(gate, capacity_factor):
    """Share of the rows dropped and share of the expert places left empty."""
    n_rows, n_experts = gate.shape
    routed = np.count_nonzero(switch_route(gate, capacity_factor=capacity_factor) >= 0)
    places = n_experts * expert_capacity(n_rows, n_experts, capacity_factor)
    return 1 - routed / n_rows, 1 - routed / places


gates = {}
for name, seed in [("fitted gate", 0), ("skewed gate", 1)]:
    X, y = make_regimes(n_samples=1200, n_regimes=3, noise=0.2, random_state=seed)
    moe = MixtureOfExpertsRegressor(n_experts=3, n_init=3, random_state=0).fit(X, y)
    gates[name] = moe.predict_gate(X)
    print(f"{name}: load balance {load_balance(gates[name]):.3f}")

# %%
# The dotted lines are a perfectly even load: below a capacity factor of 1
# a share ``1 - capacity_factor`` of the rows must be dropped, above it a
# share ``1 - 1 / capacity_factor`` of the places must stay empty. The more
# skewed the gate, the further both curves lie above these limits. A
# balanced router needs little slack, hence the capacity factors of 1 to
# 1.25 (shaded) that Switch Transformers found the best trade-off.
factors = np.linspace(0.5, 2.0, 61)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for ax, column, title in [(axes[0], 0, "rows dropped"), (axes[1], 1, "places empty")]:
    ax.axvspan(1.0, 1.25, color="grey", alpha=0.15)
    even = np.maximum(0, 1 - factors) if column == 0 else np.maximum(0, 1 - 1 / factors)
    ax.plot(factors, even, ":", color="black", label="perfectly even load")
    for (name, gate), color in zip(gates.items(), ["C0", "C3"], strict=True):
        costs = np.array([route_costs(gate, f) for f in factors])
        ax.plot(factors, costs[:, column], color=color, label=name)
    ax.set(xlabel="capacity_factor", ylabel="share", title=title)
axes[0].legend()
plt.show()

# %%
# ``predict`` never applies a capacity (a row's prediction does not depend
# on its batch); in training, ``capacity_factor`` and ``overflow`` limit the
# rows each expert is fitted on. The teaching notebook
# ``04_switch_routing.ipynb`` covers both.
