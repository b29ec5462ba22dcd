"""Warnings that mixexp raises, so that users can filter them by category."""

__all__ = ["CollapsedExpertWarning"]


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
