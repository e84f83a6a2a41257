"""Fixtures shared by every test module, and the environment every test runs in."""

import os
import tempfile

import pytest

# Tests never use the network (the Hub client reads this when it is first imported, so set it here,
# before any test module imports transformers), and never write to the user's gapkit cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GAPKIT_CACHE", tempfile.mkdtemp(prefix="gapkit-test-cache-"))

from data_helpers import shared_data


@pytest.fixture
def shared_data_dir():
    """The real data folder ../shared/data; skips the test without it (fails it under CI=true)."""
    return shared_data()
