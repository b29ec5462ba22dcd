"""Tests of mixexp.plotting: the displays draw what they say, on Agg."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from mixexp import MixtureOfExpertsClassifier, MixtureOfExpertsRegressor  # noqa: E402
from mixexp.datasets import make_regimes, make_xor  # noqa: E402
from mixexp.gating import SoftmaxGate  # noqa: E402
from mixexp.plotting import (  # noqa: E402
    ExpertLoadDisplay,
    GateRegionsDisplay,
    LogLikelihoodHistoryDisplay,
)


@pytest.fixture(autouse=True)
def _close_figures():
    plt.close("all")
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def regimes():
    X, y = make_regimes(n_samples=300, n_regimes=3, random_state=0)
    moe = MixtureOfExpertsRegressor(n_experts=3, n_init=2, random_state=0).fit(X, y)
    return moe, X, y


@pytest.fixture(scope="module")
def xor():
    X, y = make_xor(n_samples=300, random_state=0)
    return MixtureOfExpertsClassifier(n_experts=4, random_state=0).fit(X, y), X, y


# ----------------------------------------------------------------------------
# GateRegionsDisplay


def test_gate_regions_follow_the_gate(regimes):
    moe, X, _ = regimes
    disp = GateRegionsDisplay.from_estimator(moe, X, grid_resolution=30, eps=0.1)
    assert disp.gate_proba.shape == (30, 30, 3)
    grid = np.c_[disp.xx0.ravel(), disp.xx1.ravel()]
    expected = moe.predict_gate(grid).reshape(30, 30, 3)
    np.testing.assert_allclose(disp.gate_proba, expected)
    assert disp.xx0.min() == pytest.approx(X[:, 0].min() - 0.1)
    assert disp.xx1.max() == pytest.approx(X[:, 1].max() + 0.1)
    # One filled region per expert that is most trusted somewhere, and lines
    # where the most trusted expert changes.
    assert len(disp.surface_) == np.unique(expected.argmax(axis=2)).size
    assert disp.boundaries_
    assert disp.colors_.shape == (3, 4)
    np.testing.assert_allclose(disp.colors_[1], to_rgba("C1"))
    assert disp.ax_.get_xlabel() == "x[0]"
    assert disp.ax_.get_ylabel() == "x[1]"
    assert [t.get_text() for t in disp.ax_.get_legend().get_texts()] == [
        "expert 0",
        "expert 1",
        "expert 2",
    ]
    assert disp.figure_ is disp.ax_.figure


def test_gate_regions_options(regimes):
    moe, X, _ = regimes
    _, ax = plt.subplots()
    disp = GateRegionsDisplay.from_estimator(
        moe,
        X,
        grid_resolution=20,
        plot_method="pcolormesh",
        colors=["red", "green", "blue"],
        boundaries=False,
        legend=False,
        xlabel="first",
        ylabel="second",
        ax=ax,
        alpha=0.5,
    )
    assert disp.ax_ is ax
    assert all(isinstance(artist, QuadMesh) for artist in disp.surface_)
    assert disp.boundaries_ is None
    assert ax.get_legend() is None
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("first", "second")
    np.testing.assert_allclose(disp.colors_[2], to_rgba("blue"))
    # plot() draws again on other axes, keeping the computed values.
    other = plt.subplots()[1]
    assert disp.plot(ax=other).ax_ is other
    assert disp.surface_


def test_gate_regions_more_features_are_held_at_their_median():
    X, y = make_regimes(n_samples=300, n_regimes=2, n_features=3, random_state=0)
    moe = MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X, y)
    disp = GateRegionsDisplay.from_estimator(
        moe, X, features=(2, 0), grid_resolution=10
    )
    grid = np.tile(np.median(X, axis=0), (100, 1))
    grid[:, 2] = disp.xx0.ravel()
    grid[:, 0] = disp.xx1.ravel()
    np.testing.assert_allclose(
        disp.gate_proba, moe.predict_gate(grid).reshape(10, 10, 2)
    )
    assert disp.ax_.get_xlabel() == "x[2]"


def test_gate_regions_dataframe_names_and_columns():
    pd = pytest.importorskip("pandas")
    X, y = make_regimes(n_samples=200, n_regimes=2, n_features=3, random_state=0)
    X = pd.DataFrame(X, columns=["a", "b", "c"])
    moe = MixtureOfExpertsRegressor(n_experts=2, random_state=0).fit(X, y)
    # A grid without column names would warn; warnings are errors here.
    disp = GateRegionsDisplay.from_estimator(
        moe, X, features=("c", "a"), grid_resolution=10
    )
    assert (disp.ax_.get_xlabel(), disp.ax_.get_ylabel()) == ("c", "a")


def test_gate_regions_of_a_gate_and_of_a_classifier(xor):
    moe, X, _ = xor
    disp = GateRegionsDisplay.from_estimator(moe, X, grid_resolution=20)
    assert disp.gate_proba.shape == (20, 20, 4)
    targets = np.column_stack([X[:, 0] < 0, X[:, 0] >= 0]).astype(float)
    gate = SoftmaxGate().fit(X, targets)
    disp = GateRegionsDisplay.from_estimator(gate, X, grid_resolution=20)
    assert disp.gate_proba.shape == (20, 20, 2)
    np.testing.assert_allclose(disp.gate_proba.sum(axis=2), 1.0)


def test_gate_regions_single_expert():
    X, y = make_regimes(n_samples=100, n_regimes=1, random_state=0)
    moe = MixtureOfExpertsRegressor(n_experts=1, random_state=0).fit(X, y)
    disp = GateRegionsDisplay.from_estimator(moe, X, grid_resolution=10)
    assert len(disp.surface_) == 1
    assert disp.boundaries_ is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid_resolution": 1}, "grid_resolution"),
        ({"eps": -1.0}, "eps"),
        ({"plot_method": "contour"}, "plot_method"),
        ({"features": (0, 0)}, "two different features"),
        ({"features": (0, 5)}, "not a column index"),
        ({"features": ("a", 1)}, "not a column of X"),
        ({"features": (0,)}, "two features"),
    ],
)
def test_gate_regions_errors(regimes, kwargs, match):
    moe, X, _ = regimes
    with pytest.raises(ValueError, match=match):
        GateRegionsDisplay.from_estimator(moe, X, **kwargs)


def test_gate_regions_needs_two_features_and_a_fitted_model():
    X, y = make_regimes(n_samples=50, n_features=1, random_state=0)
    moe = MixtureOfExpertsRegressor(n_experts=2, random_state=0)
    with pytest.raises(NotFittedError):
        GateRegionsDisplay.from_estimator(moe, X)
    moe.fit(X, y)
    with pytest.raises(ValueError, match="at least two features"):
        GateRegionsDisplay.from_estimator(moe, X)


def test_gate_regions_checks_its_inputs():
    xx0, xx1 = np.meshgrid(np.arange(3.0), np.arange(3.0))
    disp = GateRegionsDisplay(xx0=xx0, xx1=xx1, gate_proba=np.ones((2, 2, 1)))
    with pytest.raises(ValueError, match="gate_proba must have shape"):
        disp.plot()
    disp = GateRegionsDisplay(
        xx0=xx0, xx1=xx1, gate_proba=np.full((3, 3, 2), 0.5), colors=["red"]
    )
    with pytest.raises(ValueError, match="2 matplotlib colours"):
        disp.plot()


# ----------------------------------------------------------------------------
# LogLikelihoodHistoryDisplay


def test_history_draws_lower_bounds(regimes):
    moe, _, _ = regimes
    disp = LogLikelihoodHistoryDisplay.from_estimator(moe)
    np.testing.assert_allclose(disp.line_.get_ydata(), moe.lower_bounds_)
    np.testing.assert_array_equal(disp.line_.get_xdata(), np.arange(1, moe.n_iter_ + 1))
    assert disp.ax_.get_xlabel() == "EM iteration"
    assert disp.ax_.get_legend() is None
    assert disp.converged is True


def test_history_compares_fits_on_one_axes(regimes):
    moe, X, y = regimes
    hard = MixtureOfExpertsRegressor(training="hard", random_state=0).fit(X, y)
    disp = LogLikelihoodHistoryDisplay.from_estimator(moe, name="soft EM")
    disp = LogLikelihoodHistoryDisplay.from_estimator(
        hard, name="hard EM", ax=disp.ax_, color="black"
    )
    labels = [t.get_text() for t in disp.ax_.get_legend().get_texts()]
    assert labels == ["soft EM", "hard EM"]
    assert disp.line_.get_color() == "black"


def test_history_marks_a_fit_that_did_not_converge():
    disp = LogLikelihoodHistoryDisplay(lower_bounds=[-2.0, -1.5], converged=False)
    disp.plot()
    assert len(disp.ax_.get_lines()) == 2  # the curve and the cross
    disp = LogLikelihoodHistoryDisplay(lower_bounds=[-2.0, -1.5], converged=True)
    assert len(disp.plot().ax_.get_lines()) == 1


def test_history_needs_a_fitted_model():
    with pytest.raises(NotFittedError):
        LogLikelihoodHistoryDisplay.from_estimator(MixtureOfExpertsRegressor())


# ----------------------------------------------------------------------------
# ExpertLoadDisplay


def test_load_of_the_training_data(regimes):
    moe, _, _ = regimes
    disp = ExpertLoadDisplay.from_estimator(moe, name="training")
    heights = [bar.get_height() for bar in disp.bars_]
    np.testing.assert_allclose(heights, moe.expert_load_)
    assert disp.ax_.get_title() == "training"
    assert disp.ax_.get_ylabel() == "share of the training responsibility"
    uniform = [line.get_ydata()[0] for line in disp.ax_.get_lines()]
    assert uniform == [pytest.approx(1 / 3)]
    np.testing.assert_allclose(disp.bars_[0].get_facecolor(), to_rgba("C0"))


@pytest.mark.parametrize("routing", ["soft", "argmax"])
def test_load_on_new_data(regimes, routing):
    moe, X, _ = regimes
    disp = ExpertLoadDisplay.from_estimator(moe, X, routing=routing, uniform=False)
    heights = np.array([bar.get_height() for bar in disp.bars_])
    gate = moe.predict_gate(X)
    if routing == "soft":
        expected = gate.mean(axis=0)
    else:
        expected = np.bincount(gate.argmax(axis=1), minlength=3) / X.shape[0]
    np.testing.assert_allclose(heights, expected)
    assert disp.ax_.get_lines() == []


def test_load_errors(regimes):
    moe, X, _ = regimes
    with pytest.raises(ValueError, match="routing must be"):
        ExpertLoadDisplay.from_estimator(moe, X, routing="top2")
    with pytest.raises(ValueError, match="needs X"):
        ExpertLoadDisplay.from_estimator(moe, routing="argmax")
    with pytest.raises(NotFittedError):
        ExpertLoadDisplay.from_estimator(MixtureOfExpertsRegressor())


def test_many_experts_get_distinct_colours():
    disp = ExpertLoadDisplay(load=np.full(12, 1 / 12)).plot()
    assert np.unique(disp.colors_, axis=0).shape[0] == 12


# ----------------------------------------------------------------------------
# matplotlib is optional


def test_import_without_matplotlib_and_a_clear_error_when_drawing():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["matplotlib"] = None  # import matplotlib now fails
        import mixexp.plotting
        from mixexp.plotting import LogLikelihoodHistoryDisplay
        try:
            LogLikelihoodHistoryDisplay(lower_bounds=[0.0]).plot()
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "requires matplotlib" in result.stdout
    assert "pip install 'mixexp[plot]'" in result.stdout


def test_importing_mixexp_plotting_does_not_import_matplotlib():
    code = "import sys, mixexp.plotting; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
