import pytest

from .helpers import random_inception


@pytest.fixture(scope="session")
def inception():
    """One randomly initialised FID Inception shared by the tests (no real weights here)."""
    return random_inception()
