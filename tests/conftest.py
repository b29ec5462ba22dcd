"""Test-wide settings."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_blas():
    # The suite fits thousands of tiny models, often two test processes at a
    # time: BLAS threads would only fight over the cores.
    with threadpool_limits(limits=1):
        yield
