"""Small helpers shared by the estimators and the gates."""

import numpy as np


def take_rows(value, rows, n_samples):
    """Index a per-row fit parameter by `rows`; pass anything else through.

    Metadata routed to an expert (or a gate) may be per-row arrays, which must
    follow the rows that expert is fitted on, or scalars, which must not.
    """
    if hasattr(value, "__len__") and not isinstance(value, str):
        array = np.asarray(value)
        if array.ndim >= 1 and array.shape[0] == n_samples:
            return array[rows]
    return value
