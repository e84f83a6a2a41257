"""Fixtures shared by every test module."""

import pytest

from data_helpers import shared_data


@pytest.fixture
def shared_data_dir():
    """The real data folder ../shared/data; skips the test without it (fails it under CI=true)."""
    return shared_data()
