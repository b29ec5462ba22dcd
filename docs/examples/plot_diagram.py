"""
===================================
The mixture of experts as a diagram
===================================

The four parts and how a prediction flows through them: the **partition**
divides the training data into subtasks (it only starts EM), an **expert**
per subtask predicts ``f_k(x)``, the **gate** says how much to trust each
expert at ``x``, ``g_k(x)``, and **pooling** combines them, here by the
gate-weighted sum. EM trains the experts and the gate together: each row's
*responsibility* (which expert explains it best) weights the experts' fits
and is the gate's target.
"""

# %%
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

PARTS = {  # colours of the four parts
    "partition": "#f4d35e",
    "experts": "#9ad1d4",
    "gate": "#f7a072",
    "pooling": "#b8d8ba",
}


def box(ax, x, y, text, colour, width=2.2, height=0.9):
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.08",
            facecolor=colour,
            edgecolor="black",
            linewidth=1.2,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=11)


def arrow(ax, start, end, style="-|>", **kwargs):
    ax.add_patch(
        FancyArrowPatch(
            start, end, arrowstyle=style, mutation_scale=14, linewidth=1.2, **kwargs
        )
    )


fig, ax = plt.subplots(figsize=(12, 5.2), layout="constrained")
ax.set(xlim=(0, 12.4), ylim=(-0.7, 5.5))
ax.axis("off")

box(ax, 1.2, 2.5, "input $x$", "white", width=1.6)
box(ax, 1.2, 4.6, "1. partition\n(the first subtasks)", PARTS["partition"], width=2.0)
experts = [(4.8, 4.0, "$f_1(x)$"), (4.8, 2.5, "$f_2(x)$"), (4.8, 1.0, "$f_3(x)$")]
for x, y, label in experts:
    box(ax, x, y, f"2. expert\n{label}", PARTS["experts"], width=1.9)
    arrow(ax, (2.0, 2.5), (x - 0.95, y))
box(
    ax,
    4.8,
    -0.05,
    "3. gate $g_k(x)$: whom to trust",
    PARTS["gate"],
    width=4.6,
    height=0.6,
)
arrow(ax, (1.2, 2.05), (2.5, -0.05), connectionstyle="arc3,rad=0.25")
box(
    ax,
    8.6,
    2.5,
    "4. pooling\n$\\sum_k g_k(x)\\, f_k(x)$\nor the most trusted",
    PARTS["pooling"],
    width=2.6,
    height=1.5,
)
for x, y, _ in experts:
    arrow(ax, (x + 0.95, y), (7.3, 2.5))
arrow(ax, (7.1, -0.05), (8.6, 1.75), connectionstyle="arc3,rad=0.3")
box(ax, 11.3, 2.5, "prediction\n$\\hat y$", "white", width=1.6)
arrow(ax, (9.9, 2.5), (10.5, 2.5))

# Training: EM's loop between the experts and the gate.
arrow(ax, (2.2, 4.6), (3.85, 4.3), style="-|>", linestyle="dashed")
ax.text(
    6.2,
    5.15,
    "EM: responsibilities weight each expert's fit and are the gate's target",
    ha="center",
    fontsize=10,
    style="italic",
)
arrow(
    ax,
    (5.9, 4.45),
    (6.4, 0.25),
    style="<|-|>",
    linestyle="dashed",
    connectionstyle="arc3,rad=-0.4",
)
ax.set_title("A mixture of three experts: the four parts", fontsize=13)
plt.show()

# %%
# In mixexp each part is a parameter of
# :class:`~mixexp.MixtureOfExpertsRegressor` and
# :class:`~mixexp.MixtureOfExpertsClassifier`: ``partition`` (and
# ``feature_groups``), ``expert`` (and ``likelihood``), ``gate`` (and
# ``gate_features``, ``training``), and ``pooling`` (and ``top_k``).
