"""
=============================
Linear experts for XOR labels
=============================

On the XOR pattern (:func:`~mixexp.datasets.make_xor`) the class is 1 where
the two inputs have the same sign. No single linear classifier does better
than chance. A :class:`~mixexp.MixtureOfExpertsClassifier` with four
logistic-regression experts lets the gate find the quadrants, and each
expert only has to learn that its quadrant is all of one class.
"""

# %%
import matplotlib.pyplot as plt
from sklearn.inspection import DecisionBoundaryDisplay
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mixexp import MixtureOfExpertsClassifier
from mixexp.datasets import make_xor
from mixexp.plotting import GateRegionsDisplay

X, y = make_xor(n_samples=600, flip=0.05, random_state=0)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

single = LogisticRegression().fit(X_train, y_train)
moe = MixtureOfExpertsClassifier(n_experts=4, n_init=3, random_state=0)
moe.fit(X_train, y_train)
print(f"one logistic regression: accuracy {single.score(X_test, y_test):.3f}")
print(f"mixture of 4 experts:    accuracy {moe.score(X_test, y_test):.3f}")

# %%
# Left: the gate's regions, one expert per quadrant. Right: the pooled
# probability of class 1, drawn by scikit-learn's
# :class:`~sklearn.inspection.DecisionBoundaryDisplay` (the mixture is an
# ordinary classifier). 5% of the labels were flipped at random.
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), layout="constrained")
GateRegionsDisplay.from_estimator(moe, X_train, eps=0.05, ax=axes[0])
axes[0].set_title("gate regions")
DecisionBoundaryDisplay.from_estimator(
    moe,
    X_train,
    response_method="predict_proba",
    cmap="RdBu_r",
    alpha=0.8,
    eps=0.05,
    ax=axes[1],
)
axes[1].scatter(
    X_train[:, 0],
    X_train[:, 1],
    c=y_train,
    cmap="RdBu_r",
    s=14,
    edgecolor="black",
    linewidth=0.4,
)
axes[1].set(title="pooled P(class 1)", xlabel="x[0]", ylabel="x[1]")
