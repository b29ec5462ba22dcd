"""Warnings that mixexp raises, so that users can filter them by category."""

__all__ = ["ApproximateMStepWarning", "CollapsedExpertWarning"]


class CollapsedExpertWarning(UserWarning):
    """An expert's share of the responsibility fell to about zero during EM.

    The expert was re-seeded on the rows the mixture explained worst; the
    fitted attribute ``n_reseeds_`` counts how often, per expert. It usually
    means the data support fewer experts than were asked for.

    See Also
    --------
    sklearn.exceptions.ConvergenceWarning : Raised when the best EM run did
        not converge within ``max_iter`` iterations.

    Examples
    --------
    >>> import warnings
    >>> from mixexp.exceptions import CollapsedExpertWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", CollapsedExpertWarning)
    """


class ApproximateMStepWarning(UserWarning):
    """The experts' fit does not maximise the likelihood family EM scores.

    Raised when an explicit ``likelihood`` does not match what an expert's
    loss fits (``likelihood="poisson"`` with a least-squares expert, say):
    each M-step is then an approximation, and EM is no longer guaranteed to
    raise its objective at every step. ``likelihood="auto"`` picks the
    family the experts fit.

    See Also
    --------
    CollapsedExpertWarning : Raised when an expert was re-seeded.

    Examples
    --------
    >>> import warnings
    >>> from mixexp.exceptions import ApproximateMStepWarning
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ApproximateMStepWarning)
    """
