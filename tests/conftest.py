"""Fixtures shared by every test module, and the environment every test runs in."""

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

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


# `gapkit quickstart` with its budgets cut to a few steps, a small task, one student shape and one seed, in one
# process (the real one takes minutes): the same sweep, teachers of 3 sizes, dense and MiniMoE students, in
# about 40 s on 2 cores.
QUICKSTART_OVERRIDES = (
    "budgets={all: {lr: 1.0e-3, max_steps: 3, batch_size: 32, eval_every: 3, device: cpu}}",
    "tasks=[{task: synthetic, max_len: 18, synthetic: {rule: span, min_len: 14, max_len: 18, n_train: 256, "
    "n_dev: 64}}]",
    "students={shapes: [1L-16H-4A]}",
    "seeds=[0]",
    "executor={kind: inline}",
)


class QuickstartRun(NamedTuple):
    out: Path  # the sweep folder
    overrides: tuple  # the --set values it ran with (QUICKSTART_OVERRIDES)
    status: int  # gapkit's exit status
    printed: str  # what it printed on stdout


@pytest.fixture(scope="session")
def quickstart_results(tmp_path_factory) -> QuickstartRun:
    """One cut-budget `gapkit quickstart` run, shared by every test that reads a finished sweep (the
    quickstart test, the notebooks). Tests may read its folder, and resume it, but not change its runs."""
    from gapkit.cli import main

    # Where the README's main command puts it, in a folder that stands for a fresh checkout: the README's
    # command list (tests/test_readme_commands.py) goes on from there.
    out = tmp_path_factory.mktemp("checkout") / "runs" / "quickstart"
    args = ["quickstart", "--quiet", "--out", str(out)]
    for override in QUICKSTART_OVERRIDES:
        args += ["--set", override]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(args)
    return QuickstartRun(out, QUICKSTART_OVERRIDES, status, printed.getvalue())
