"""Figures of a fitted mixture of experts, in scikit-learn's Display style.

Each display is built by ``from_estimator(...)``, which computes what to draw
and calls ``plot(ax=None, ...)``; the display keeps the matplotlib objects it
made (``ax_``, ``figure_`` and the drawn artists) so a figure can be
refined or redrawn on other axes.

- :class:`GateRegionsDisplay`: where in the input space each expert is
  trusted (the gate's probabilities over two input features).
- :class:`LogLikelihoodHistoryDisplay`: the EM objective after each
  iteration.
- :class:`ExpertLoadDisplay`: each expert's share of the data.

Expert ``k`` is drawn in matplotlib's colour ``"C{k}"`` in every display, so
the figures of one model can be read together.

matplotlib is imported only when a figure is drawn: ``import
mixexp.plotting`` works without it, and drawing without it raises an
``ImportError`` that names the ``plot`` extra.
"""

import re
import textwrap

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["ExpertLoadDisplay", "GateRegionsDisplay", "LogLikelihoodHistoryDisplay"]

# Docstring parts that several docstrings of the displays share, each written
# once. A line ``{name}`` alone in a display's docstring stands for the part of
# that name; see _fill_docstrings. Parts are format strings (literal braces
# doubled): ``{display}`` is the class's name, ``{artist}`` and ``{drawn}`` what
# its plot draws and ``{kwargs_to}`` where its ``**kwargs`` go.
_AX_DOC = """\
ax : matplotlib Axes, default=None
    Axes to draw on. ``None`` makes a new figure and axes."""
_DOC_PARTS = {
    "ax": _AX_DOC,
    "colors": """\
colors : list of matplotlib colours, default=None
    One colour per expert; ``None`` means ``"C0"``, ``"C1"``, ...""",
    "plot_method": """\
plot_method : {{"contourf", "pcolormesh"}}, default="contourf"
    The matplotlib method that fills the regions.""",
    "boundaries": """\
boundaries : bool, default=True
    Whether to draw black lines where the most trusted expert
    changes.""",
    "legend": """\
legend : bool, default=True
    Whether to add a legend naming the experts.""",
    "uniform": """\
uniform : bool, default=True
    Whether to draw a dashed line at the balanced load
    ``1 / n_experts``.""",
    "axes_attributes": """\
ax_ : matplotlib Axes
    Axes with {drawn}.
figure_ : matplotlib Figure
    Figure containing the axes.""",
    "plot_returns": """\
Returns
-------
{display}
    The display, with ``{artist}``, ``ax_`` and ``figure_`` set.""",
    # The end of every from_estimator docstring's Parameters, and its Returns.
    "from_estimator_tail": _AX_DOC
    + """
**kwargs : dict
    Passed to {kwargs_to}.

Returns
-------
{display}
    The display, drawn.""",
}

_PART_LINE = re.compile(r"^( *)\{(\w+)\}$", flags=re.MULTILINE)


def _fill_docstrings(**context):
    """Class decorator: write the shared parts into a display's docstrings.

    In the docstrings of the class, its ``plot`` and its ``from_estimator``,
    each line ``{name}`` becomes ``_DOC_PARTS[name]``, indented like the line
    and formatted with `context` and ``display`` (the class's name).
    """

    def fill(cls):
        fields = {**context, "display": cls.__name__}

        def part(match):
            indent, name = match.groups()
            return textwrap.indent(_DOC_PARTS[name].format(**fields), indent)

        for obj in (cls, cls.plot, cls.from_estimator.__func__):
            if obj.__doc__:  # None under python -OO
                obj.__doc__ = _PART_LINE.sub(part, obj.__doc__)
        return cls

    return fill


def _check_matplotlib(caller):
    """Import matplotlib or say how to install it."""
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"{caller} requires matplotlib, which is not installed. Install the "
            "plot extra with: pip install 'mixexp[plot]'"
        ) from exc


def _new_axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots()
    return ax


def _finish(display, ax, *, xlabel=None, ylabel=None, title=None):
    """Set the labels and title given (not None), keep `ax`; return `display`."""
    for setter, text in (
        (ax.set_xlabel, xlabel),
        (ax.set_ylabel, ylabel),
        (ax.set_title, title),
    ):
        if text is not None:
            setter(text)
    display.ax_ = ax
    display.figure_ = ax.figure
    return display


def _expert_colors(n_experts, colors=None):
    """RGBA colours of the experts: ``"C0"``, ``"C1"``, ... unless given."""
    from matplotlib.colors import is_color_like, to_rgba_array

    if colors is None:
        if n_experts <= 10:
            colors = [f"C{k}" for k in range(n_experts)]
        else:
            import matplotlib as mpl

            cmap = mpl.colormaps["tab20" if n_experts <= 20 else "gist_rainbow"]
            return cmap(np.linspace(0.0, 1.0, n_experts))
    colors = list(colors)
    if len(colors) != n_experts or not all(is_color_like(c) for c in colors):
        raise ValueError(
            f"colors must be a list of {n_experts} matplotlib colours, one per "
            f"expert; got {colors!r}."
        )
    return to_rgba_array(colors)


def _gate_probabilities(estimator, X):
    """Gate probabilities of a mixture (predict_gate) or of a gate."""
    if hasattr(estimator, "predict_gate"):
        return np.asarray(estimator.predict_gate(X))
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(X))
    raise TypeError(
        f"{type(estimator).__name__} is neither a mixture of experts (no "
        "predict_gate) nor a gate (no predict_proba)."
    )


def _feature_index(feature, columns, n_features):
    if isinstance(feature, str):
        if columns is None or feature not in columns:
            raise ValueError(
                f"Feature {feature!r} is not a column of X; name columns only when "
                "X is a DataFrame."
            )
        return columns.index(feature)
    if isinstance(feature, (int, np.integer)) and -n_features <= feature < n_features:
        return int(feature) % n_features
    raise ValueError(
        f"Feature {feature!r} is not a column index of X, which has {n_features} "
        "features."
    )


@_fill_docstrings(
    artist="surface_",
    drawn="the regions",
    kwargs_to="the `plot_method` (for example ``alpha``)",
)
class GateRegionsDisplay:
    """Regions of the input space where each expert is trusted.

    Over a grid of two input features, each point is coloured by the expert
    the gate trusts most there, from white (the gate hesitates between
    experts) to the expert's full colour (the gate is sure); black lines
    mark where the most trusted expert changes. It is the gate's view of
    how the task is divided into subtasks.

    Build it with :meth:`from_estimator`; all parameters are stored as
    attributes.

    Parameters
    ----------
    xx0 : ndarray of shape (grid_resolution, grid_resolution)
        First feature's values on the grid (first output of
        :func:`numpy.meshgrid`).
    xx1 : ndarray of shape (grid_resolution, grid_resolution)
        Second feature's values on the grid.
    gate_proba : ndarray of shape (grid_resolution, grid_resolution, n_experts)
        Gate probabilities at each grid point; they sum to 1 over the last
        axis.
    {colors}
    xlabel : str, default=None
        Default label of the x axis.
    ylabel : str, default=None
        Default label of the y axis.

    Attributes
    ----------
    surface_ : list of matplotlib artists
        One filled region per expert (``QuadContourSet`` or ``QuadMesh``).
    boundaries_ : list of matplotlib ``QuadContourSet`` or None
        The lines where the most trusted expert changes, if drawn.
    colors_ : ndarray of shape (n_experts, 4)
        RGBA colour of each expert; ``colors_[labels]`` colours points by
        expert.
    {axes_attributes}

    See Also
    --------
    GateRegionsDisplay.from_estimator : Draw the regions of a fitted mixture.
    sklearn.inspection.DecisionBoundaryDisplay : The same idea for the
        predictions of a classifier.

    Examples
    --------
    >>> import numpy as np
    >>> from mixexp.plotting import GateRegionsDisplay
    >>> xx0, xx1 = np.meshgrid(np.linspace(-1, 1, 50), np.linspace(-1, 1, 50))
    >>> p0 = 1 / (1 + np.exp(-4 * xx0))
    >>> gate_proba = np.stack([p0, 1 - p0], axis=-1)
    >>> disp = GateRegionsDisplay(xx0=xx0, xx1=xx1, gate_proba=gate_proba).plot()
    >>> len(disp.surface_)
    2
    """

    def __init__(self, *, xx0, xx1, gate_proba, colors=None, xlabel=None, ylabel=None):
        self.xx0, self.xx1 = xx0, xx1  # the grid, as from numpy.meshgrid
        self.gate_proba = gate_proba
        self.colors = colors
        self.xlabel = xlabel
        self.ylabel = ylabel

    def plot(
        self,
        *,
        plot_method="contourf",
        ax=None,
        boundaries=True,
        legend=True,
        xlabel=None,
        ylabel=None,
        **kwargs,
    ):
        """Draw the regions.

        A display can be drawn several times, for example on other axes or
        with another `plot_method`; each call replaces the drawn attributes.

        Parameters
        ----------
        {plot_method}
        {ax}
        {boundaries}
        {legend}
        xlabel : str, default=None
            Label of the x axis; ``None`` keeps the display's `xlabel`.
        ylabel : str, default=None
            Label of the y axis; ``None`` keeps the display's `ylabel`.
        **kwargs : dict
            Passed to the `plot_method` (for example ``alpha``). ``zorder``
            defaults to -1, so points scattered afterwards are drawn on top.

        {plot_returns}

        See Also
        --------
        GateRegionsDisplay.from_estimator : Compute the regions and draw them.

        Examples
        --------
        Draw on axes of your own: filled contours on the left, then the same
        regions cell by cell (``pcolormesh``) on the right:

        >>> import matplotlib.pyplot as plt
        >>> from mixexp import MixtureOfExpertsRegressor
        >>> from mixexp.datasets import make_regimes
        >>> from mixexp.plotting import GateRegionsDisplay
        >>> X, y = make_regimes(n_samples=300, random_state=0)
        >>> moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
        >>> fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4))
        >>> disp = GateRegionsDisplay.from_estimator(moe, X, ax=left)
        >>> disp.plot(ax=right, plot_method="pcolormesh").figure_ is fig
        True
        """
        _check_matplotlib(f"{type(self).__name__}.plot")
        from matplotlib.colors import LinearSegmentedColormap
        from matplotlib.patches import Patch

        if plot_method not in ("contourf", "pcolormesh"):
            raise ValueError(
                f"plot_method must be 'contourf' or 'pcolormesh'; got {plot_method!r}."
            )
        ax = _new_axes(ax)
        proba = np.asarray(self.gate_proba, dtype=float)
        if proba.ndim != 3 or proba.shape[:2] != np.shape(self.xx0):
            raise ValueError(
                "gate_proba must have shape (*xx0.shape, n_experts); got "
                f"{proba.shape} with xx0 of shape {np.shape(self.xx0)}."
            )
        n_experts = proba.shape[2]
        self.colors_ = _expert_colors(n_experts, self.colors)
        kwargs.setdefault("zorder", -1)
        draw = getattr(ax, plot_method)
        most_trusted = proba.argmax(axis=2)
        # The most trusted expert has probability in [1 / K, 1]: white at the
        # lower end (no preference), full colour at 1 (certainty).
        low = 1.0 / n_experts
        self.surface_ = []
        for k, (r, g, b, _) in enumerate(self.colors_):
            cmap = LinearSegmentedColormap.from_list(
                f"expert_{k}", [(1.0, 1.0, 1.0), (r, g, b)]
            )
            region = np.ma.array(proba[:, :, k], mask=most_trusted != k)
            if region.count() == 0:
                continue
            if plot_method == "contourf":
                levels = np.linspace(low, 1.0, 11) if n_experts > 1 else [0.0, 1.0]
                artist = draw(
                    self.xx0, self.xx1, region, levels=levels, cmap=cmap, **kwargs
                )
            else:
                artist = draw(
                    self.xx0,
                    self.xx1,
                    region,
                    cmap=cmap,
                    vmin=low if n_experts > 1 else 0.0,
                    vmax=1.0,
                    shading="auto",
                    **kwargs,
                )
            self.surface_.append(artist)

        self.boundaries_ = None
        if boundaries and n_experts > 1:
            self.boundaries_ = []
            for k in range(n_experts):
                others = np.delete(proba, k, axis=2).max(axis=2)
                margin = proba[:, :, k] - others
                if margin.min() < 0 < margin.max():
                    self.boundaries_.append(
                        ax.contour(
                            self.xx0,
                            self.xx1,
                            margin,
                            levels=[0.0],
                            colors="black",
                            linewidths=1.0,
                            zorder=kwargs["zorder"],
                        )
                    )
        if legend:
            handles = [
                Patch(facecolor=color, edgecolor="black", label=f"expert {k}")
                for k, color in enumerate(self.colors_)
            ]
            ax.legend(handles=handles, loc="best", fontsize="small", framealpha=0.8)

        return _finish(
            self,
            ax,
            xlabel=self.xlabel if xlabel is None else xlabel,
            ylabel=self.ylabel if ylabel is None else ylabel,
        )

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        *,
        features=(0, 1),
        grid_resolution=100,
        eps=0.5,
        plot_method="contourf",
        colors=None,
        boundaries=True,
        legend=True,
        xlabel=None,  # None (also ylabel): the feature's name
        ylabel=None,
        ax=None,
        **kwargs,
    ):
        """Draw the gate's regions of a fitted mixture over two features.

        The grid spans the range of the two `features` in `X`, widened by
        `eps` on each side. When `X` has more than two features, the others
        are held at their median in `X`: the figure is a slice of the input
        space through the middle of the data.

        Parameters
        ----------
        estimator : fitted mixture of experts or gate
            A :class:`~mixexp.MixtureOfExpertsRegressor` or
            :class:`~mixexp.MixtureOfExpertsClassifier` (its ``predict_gate``
            is drawn), or a fitted gate such as
            :class:`~mixexp.gating.SoftmaxGate` (its ``predict_proba``).
        X : array-like or DataFrame of shape (n_samples, n_features)
            Inputs that set the range of the grid (usually the training
            data). A DataFrame gives the axis labels and the grid keeps its
            column names.
        features : pair of int or str, default=(0, 1)
            The two features on the x and y axes: column indices, or names
            when `X` is a DataFrame.
        grid_resolution : int, default=100
            Number of grid points along each axis.
        eps : float, default=0.5
            How far the grid extends beyond the data on each side.
        {plot_method}
        {colors}
        {boundaries}
        {legend}
        xlabel : str, default=None
            Label of the x axis; ``None`` uses the feature's name, or
            ``"x[i]"``.
        ylabel : str, default=None
            Label of the y axis; ``None`` uses the feature's name, or
            ``"x[j]"``.
        {from_estimator_tail}

        See Also
        --------
        GateRegionsDisplay : The display and its attributes.
        ExpertLoadDisplay : How much of the data each expert takes.

        Examples
        --------
        A classifier's gate on the XOR task, with each point drawn in the
        colour of the expert its gate trusts most:

        >>> from mixexp import MixtureOfExpertsClassifier
        >>> from mixexp.datasets import make_xor
        >>> from mixexp.plotting import GateRegionsDisplay
        >>> X, y = make_xor(random_state=0)
        >>> moe = MixtureOfExpertsClassifier(n_experts=4, random_state=0).fit(X, y)
        >>> disp = GateRegionsDisplay.from_estimator(moe, X, alpha=0.8)
        >>> experts = moe.predict_gate(X).argmax(axis=1)
        >>> disp.ax_.scatter(X[:, 0], X[:, 1], c=disp.colors_[experts], s=8)
        <matplotlib.collections.PathCollection object at ...>
        """
        _check_matplotlib(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator)
        if not (isinstance(grid_resolution, (int, np.integer)) and grid_resolution > 1):
            raise ValueError(
                f"grid_resolution must be an integer > 1; got {grid_resolution!r}."
            )
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0; got {eps!r}.")
        is_frame = hasattr(X, "columns") and type(X).__module__.startswith("pandas")
        columns = [str(c) for c in X.columns] if is_frame else None
        values = np.asarray(X, dtype=float)
        if values.ndim != 2 or values.shape[1] < 2:
            raise ValueError(
                "X must be 2-D with at least two features to draw regions over two "
                f"of them; got shape {values.shape}."
            )
        n_features = values.shape[1]
        if len(features) != 2:
            raise ValueError(f"features must name two features; got {features!r}.")
        i, j = (_feature_index(f, columns, n_features) for f in features)
        if i == j:
            raise ValueError(
                f"features must be two different features; got {features}."
            )

        xx0, xx1 = np.meshgrid(
            np.linspace(
                values[:, i].min() - eps, values[:, i].max() + eps, grid_resolution
            ),
            np.linspace(
                values[:, j].min() - eps, values[:, j].max() + eps, grid_resolution
            ),
        )
        grid = np.tile(np.median(values, axis=0), (xx0.size, 1))
        grid[:, i] = xx0.ravel()
        grid[:, j] = xx1.ravel()
        if is_frame:
            grid = type(X)(grid, columns=X.columns)
        proba = _gate_probabilities(estimator, grid)
        proba = proba.reshape(*xx0.shape, proba.shape[1])

        names = columns if is_frame else [f"x[{k}]" for k in range(n_features)]
        display = cls(
            xx0=xx0,
            xx1=xx1,
            gate_proba=proba,
            colors=colors,
            xlabel=names[i] if xlabel is None else xlabel,
            ylabel=names[j] if ylabel is None else ylabel,
        )
        return display.plot(
            plot_method=plot_method,
            ax=ax,
            boundaries=boundaries,
            legend=legend,
            **kwargs,
        )


@_fill_docstrings(
    artist="line_",
    drawn="the curve",
    kwargs_to=":meth:`matplotlib.axes.Axes.plot`",
)
class LogLikelihoodHistoryDisplay:
    """The EM objective after each iteration of a fit.

    Soft EM never lowers it, so the curve climbs and flattens; hard EM and
    experts that are not fitted by maximum likelihood may wobble. Several
    fits drawn on the same axes (each with a `name`) compare training modes
    or starting points.

    Build it with :meth:`from_estimator`; all parameters are stored as
    attributes.

    Parameters
    ----------
    lower_bounds : array-like of shape (n_iter,)
        The objective after each iteration: the weighted mean per-row
        log-likelihood, less the gate's penalty (the fitted attribute
        ``lower_bounds_``).
    converged : bool, default=None
        Whether the fit converged; if False the last point is marked with a
        cross.
    name : str, default=None
        Name of the curve in the legend; ``None`` draws no legend entry.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The curve.
    {axes_attributes}

    See Also
    --------
    LogLikelihoodHistoryDisplay.from_estimator : Draw the EM history of a
        fitted mixture.

    Examples
    --------
    >>> from mixexp.plotting import LogLikelihoodHistoryDisplay
    >>> disp = LogLikelihoodHistoryDisplay(lower_bounds=[-1.9, -1.0, -0.4, -0.35])
    >>> disp.plot().line_.get_ydata().tolist()
    [-1.9, -1.0, -0.4, -0.35]
    """

    def __init__(self, *, lower_bounds, converged=None, name=None):
        self.lower_bounds = lower_bounds
        self.converged = converged
        self.name = name

    def plot(self, *, ax=None, name=None, **kwargs):
        """Draw the curve.

        Parameters
        ----------
        {ax}
        name : str, default=None
            Name of the curve in the legend; ``None`` keeps the display's
            `name`.
        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.plot` (for example
            ``color`` or ``linestyle``).

        {plot_returns}

        See Also
        --------
        LogLikelihoodHistoryDisplay.from_estimator : Read the history of a
            fitted mixture and draw it.

        Examples
        --------
        >>> from mixexp.plotting import LogLikelihoodHistoryDisplay
        >>> disp = LogLikelihoodHistoryDisplay(lower_bounds=[-2.0, -1.2, -1.1])
        >>> disp.plot(name="soft EM", color="black").ax_.get_xlabel()
        'EM iteration'
        """
        _check_matplotlib(f"{type(self).__name__}.plot")
        from matplotlib.ticker import MaxNLocator

        ax = _new_axes(ax)
        name = self.name if name is None else name
        history = np.asarray(self.lower_bounds, dtype=float)
        iterations = np.arange(1, history.shape[0] + 1)
        kwargs.setdefault("marker", "o")
        kwargs.setdefault("markersize", 3)
        if name is not None:
            kwargs.setdefault("label", name)
        (self.line_,) = ax.plot(iterations, history, **kwargs)
        if self.converged is False and history.size:
            ax.plot(
                iterations[-1:],
                history[-1:],
                marker="x",
                markersize=9,
                color=self.line_.get_color(),
                linestyle="none",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("EM iteration")
        ax.set_ylabel("mean log-likelihood")
        if name is not None:
            ax.legend(fontsize="small")
        return _finish(self, ax)

    @classmethod
    def from_estimator(cls, estimator, *, name=None, ax=None, **kwargs):
        """Draw the EM history of a fitted mixture of experts.

        Parameters
        ----------
        estimator : fitted mixture of experts
            Its ``lower_bounds_`` (one value per EM iteration of the kept
            run) and ``converged_`` are drawn.
        name : str, default=None
            Name of the curve in the legend; ``None`` draws no legend entry.
        {from_estimator_tail}

        See Also
        --------
        LogLikelihoodHistoryDisplay : The display and its attributes.

        Examples
        --------
        >>> from mixexp import MixtureOfExpertsRegressor
        >>> from mixexp.datasets import make_regimes
        >>> from mixexp.plotting import LogLikelihoodHistoryDisplay
        >>> X, y = make_regimes(n_samples=300, random_state=0)
        >>> soft = MixtureOfExpertsRegressor(random_state=0).fit(X, y)
        >>> hard = MixtureOfExpertsRegressor(training="hard", random_state=0).fit(X, y)
        >>> disp = LogLikelihoodHistoryDisplay.from_estimator(soft, name="soft EM")
        >>> disp = LogLikelihoodHistoryDisplay.from_estimator(
        ...     hard, name="hard EM", ax=disp.ax_
        ... )
        >>> len(disp.ax_.get_lines()) >= 2
        True
        """
        _check_matplotlib(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator, "lower_bounds_")
        display = cls(
            lower_bounds=list(estimator.lower_bounds_),
            converged=bool(estimator.converged_),
            name=name,
        )
        return display.plot(ax=ax, **kwargs)


@_fill_docstrings(
    artist="bars_",
    drawn="the bars",
    kwargs_to=":meth:`matplotlib.axes.Axes.bar`",
)
class ExpertLoadDisplay:
    """Each expert's share of the data, as bars.

    A balanced mixture gives every expert about ``1 / n_experts`` (the dashed
    line); an expert near zero does almost nothing and one near 1 does almost
    everything.

    Build it with :meth:`from_estimator`; all parameters are stored as
    attributes.

    Parameters
    ----------
    load : array-like of shape (n_experts,)
        Share of the data per expert; sums to 1.
    ylabel : str, default="share of the data"
        Label of the y axis, which says what the shares measure.
    name : str, default=None
        Title of the axes; ``None`` leaves the title alone.

    Attributes
    ----------
    bars_ : matplotlib BarContainer
        The bars, one per expert.
    colors_ : ndarray of shape (n_experts, 4)
        RGBA colour of each expert.
    {axes_attributes}

    See Also
    --------
    ExpertLoadDisplay.from_estimator : Draw the load of a fitted mixture.

    Examples
    --------
    >>> from mixexp.plotting import ExpertLoadDisplay
    >>> disp = ExpertLoadDisplay(load=[0.5, 0.3, 0.2]).plot()
    >>> len(disp.bars_)
    3
    """

    def __init__(self, *, load, ylabel="share of the data", name=None):
        self.load = load
        self.ylabel = ylabel
        self.name = name

    def plot(self, *, ax=None, colors=None, uniform=True, name=None, **kwargs):
        """Draw the bars.

        Parameters
        ----------
        {ax}
        {colors}
        {uniform}
        name : str, default=None
            Title of the axes; ``None`` keeps the display's `name`.
        **kwargs : dict
            Passed to :meth:`matplotlib.axes.Axes.bar`.

        {plot_returns}

        See Also
        --------
        ExpertLoadDisplay.from_estimator : Compute the load of a fitted mixture
            and draw it.

        Examples
        --------
        >>> from mixexp.plotting import ExpertLoadDisplay
        >>> disp = ExpertLoadDisplay(load=[0.7, 0.3]).plot(uniform=False)
        >>> [float(bar.get_height()) for bar in disp.bars_]
        [0.7, 0.3]
        """
        _check_matplotlib(f"{type(self).__name__}.plot")
        ax = _new_axes(ax)
        load = np.asarray(self.load, dtype=float)
        n_experts = load.shape[0]
        self.colors_ = _expert_colors(n_experts, colors)
        kwargs.setdefault("edgecolor", "black")
        self.bars_ = ax.bar(np.arange(n_experts), load, color=self.colors_, **kwargs)
        if uniform:
            ax.axhline(
                1.0 / n_experts,
                color="grey",
                linestyle="--",
                linewidth=1.0,
                label="equal load",
            )
            ax.legend(fontsize="small")
        ax.set_xticks(np.arange(n_experts))
        ax.set_xlabel("expert")
        ax.set_ylabel(self.ylabel)
        ax.set_ylim(0.0, max(1.05 * float(load.max(initial=0.0)), 1.2 / n_experts))
        return _finish(self, ax, title=self.name if name is None else name)

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X=None,
        *,
        routing="soft",
        colors=None,
        uniform=True,
        name=None,
        ax=None,
        **kwargs,
    ):
        """Draw how much of the data each expert of a fitted mixture takes.

        Parameters
        ----------
        estimator : fitted mixture of experts
            The mixture whose load is drawn.
        X : array-like of shape (n_samples, n_features), default=None
            ``None`` draws the load of the training data, ``expert_load_``
            (each expert's share of the EM responsibilities). Otherwise the
            load on `X` is computed from the gate, as `routing` says.
        routing : {"soft", "argmax"}, default="soft"
            Only with `X`. ``"soft"``: each expert's mean gate probability
            on `X`. ``"argmax"``: the share of the rows of `X` whose most
            trusted expert it is (the rows it serves under
            ``pooling="argmax"``).
        {colors}
        {uniform}
        name : str, default=None
            Title of the axes.
        {from_estimator_tail}

        See Also
        --------
        ExpertLoadDisplay : The display and its attributes.
        GateRegionsDisplay : Where each expert is trusted.

        Examples
        --------
        On the training data, the experts share the work as the regimes of
        the data do:

        >>> import numpy as np
        >>> from mixexp import MixtureOfExpertsRegressor
        >>> from mixexp.datasets import make_regimes
        >>> from mixexp.plotting import ExpertLoadDisplay
        >>> X, y, regimes = make_regimes(
        ...     n_samples=300, return_regimes=True, random_state=0
        ... )
        >>> moe = MixtureOfExpertsRegressor(n_experts=3, random_state=0).fit(X, y)
        >>> disp = ExpertLoadDisplay.from_estimator(moe)
        >>> disp.ax_.get_ylabel()
        'share of the training responsibility'
        >>> sorted(round(float(bar.get_height()), 2) for bar in disp.bars_)
        [0.23, 0.36, 0.41]
        >>> sorted((np.bincount(regimes) / len(regimes)).round(2).tolist())
        [0.23, 0.36, 0.41]

        With `X`, the load is read from the gate; under ``"argmax"`` routing
        each row counts for one expert only:

        >>> disp = ExpertLoadDisplay.from_estimator(moe, X, routing="argmax")
        >>> float(sum(bar.get_height() for bar in disp.bars_))
        1.0
        """
        _check_matplotlib(f"{cls.__name__}.from_estimator")
        check_is_fitted(estimator)
        if routing not in ("soft", "argmax"):
            raise ValueError(f"routing must be 'soft' or 'argmax'; got {routing!r}.")
        if X is None:
            if routing != "soft":
                raise ValueError(
                    "routing='argmax' needs X: the training load expert_load_ is "
                    "the share of the soft responsibilities."
                )
            load = np.asarray(estimator.expert_load_, dtype=float)
            ylabel = "share of the training responsibility"
        else:
            proba = _gate_probabilities(estimator, X)
            if routing == "soft":
                load = proba.mean(axis=0)
                ylabel = "mean gate probability"
            else:
                counts = np.bincount(proba.argmax(axis=1), minlength=proba.shape[1])
                load = counts / counts.sum()
                ylabel = "share of rows routed (argmax)"
        display = cls(load=load, ylabel=ylabel, name=name)
        return display.plot(ax=ax, colors=colors, uniform=uniform, **kwargs)
