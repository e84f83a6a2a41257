"""Raw text tokenised once into the memory-mapped token cache: the same features as packing in memory,
the cap applied while packing, reuse only for the same key, atomic builds, and the data-parallel path
(rank 0 builds, the other ranks wait and read)."""

import itertools
import json
import multiprocessing
import os
import pickle
import random
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

import gapkit.data.text as text_module
from data_helpers import minilm_tokenizer
from gapkit.data.features import pad_batch
from gapkit.data.tasks import build_task
from gapkit.data.text import (HELD_OUT_EVERY, TokenSegments, iter_text, pack_segment_pairs, segments_needed,
                              text_segments)
from gapkit.errors import DataError

WORDS = ("the cat sat on a mat while dogs ran quickly away from unbelievable hyperparameters "
         "of seven distilled students near old rivers").split()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache root (the default, ~/.cache/gapkit, is never touched)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("GAPKIT_CACHE", str(root))
    return root


def write_corpus(path: Path, n_docs: int, seed: int = 0, words=WORDS) -> Path:
    """Documents of 1-25 sentences of 1-30 words, one sentence a line, a blank line between documents."""
    rng = random.Random(seed)
    docs = ["\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(1, 30))).capitalize() + "."
                      for _ in range(rng.randint(1, 25))) for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def tiny_tokenizer(folder: Path, words=WORDS):
    """A real (fast) WordPiece tokenizer with a tiny vocabulary, made from a vocab file."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]) + "\n")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(folder)


def old_text(sources, tok, max_len, seed, n_train, n_eval_arg, line_mode="sentence"):
    """The reference: how ``_text`` built its features before the cache, everything in python lists."""
    n_eval = n_eval_arg or max(1, (n_train or 10**9) // 19)
    features = []
    for source in sources:
        features.extend(pack_segment_pairs(iter_text(source, line_mode), tok, max_len, seed))
        if n_train is not None and len(features) >= (n_train + n_eval) * 1.2:
            break
    train = [f for i, f in enumerate(features) if i % 20]
    return (train[:n_train] if n_train else train), features[::20][:n_eval]


def text_spec(sources, max_len=64, n_train=None, n_eval=None, line_mode="sentence"):
    return SimpleNamespace(task="text", text=[str(s) for s in sources], text_config=None, line_mode=line_mode,
                           max_len=max_len, max_train_examples=n_train, max_eval_examples=n_eval, data_dir=None)


# ---- the same features as packing in memory ----------------------------------------------------

@pytest.mark.parametrize("n_train, n_eval", [(None, None), (None, 3), (40, None), (30, 7), (5000, 2)])
def test_task_features_equal_the_in_memory_packing(tmp_path, n_train, n_eval):
    tok = minilm_tokenizer()
    sources = [write_corpus(tmp_path / "a.txt", 60, seed=1), write_corpus(tmp_path / "b.txt", 30, seed=2)]
    task = build_task(text_spec(sources, 64, n_train, n_eval), tok, seed=3)
    train, dev = old_text(sources, tok, 64, 3, n_train, n_eval)
    assert isinstance(task.train, TokenSegments) and isinstance(task.evals["dev"], TokenSegments)
    assert len(task.train) == len(train) and len(task.evals["dev"]) == len(dev)
    assert list(task.train) == train and list(task.evals["dev"]) == dev
    assert len(train) > 20  # the table's cases are not vacuous


def test_segments_behave_like_a_list_of_features(tmp_path):
    tok = minilm_tokenizer()
    corpus = write_corpus(tmp_path / "c.txt", 40)
    features = list(pack_segment_pairs(iter_text(corpus), tok, 48, seed=0))
    segments = text_segments(corpus, tok, 48, seed=0)
    assert len(segments) == len(features) > 40 and list(segments) == features
    train, held_out = segments.split()
    kept = [f for i, f in enumerate(features) if i % HELD_OUT_EVERY]
    assert list(held_out) == features[::HELD_OUT_EVERY] and list(train) == kept
    for index in (0, 18, 19, 20, -1, -19):
        assert train[index] == kept[index]
    assert list(train[7:60:3]) == kept[7:60:3] and list(train[7:60:3][2:]) == kept[7:60:3][2:]
    assert list(train[-5:]) == kept[-5:] and len(train[10**6:]) == 0
    with pytest.raises(IndexError):
        train[len(kept)]
    batch = pad_batch(train[3:9], tok.pad_token_id)  # what the trainer's evaluation does with a slice
    first = kept[3]["input_ids"]
    assert batch["input_ids"].shape[0] == 6 and batch["input_ids"][0, :len(first)].tolist() == first
    # DataLoader workers get the folder, not the arrays
    data = pickle.dumps(train[2:])
    assert len(data) < 4000 and list(pickle.loads(data)) == kept[2:]


def test_segments_needed_is_the_smallest_cap():
    for every in (2, 3, 20):
        for n_train in range(1, 70):
            for n_eval in (1, 2, 5):
                n = segments_needed(n_train, n_eval, every)
                held = len(range(0, n, every))
                assert n - held >= n_train and held >= n_eval
                smaller = n - 1
                assert smaller - len(range(0, smaller, every)) < n_train or len(range(0, smaller, every)) < n_eval


# ---- the cap stops the reading ------------------------------------------------------------------

def test_the_cap_is_applied_while_packing(tmp_path, monkeypatch):
    tok = minilm_tokenizer()
    corpus = write_corpus(tmp_path / "c.txt", 5)  # only the key reads it: documents come from below
    read = []

    def endless(source, line_mode="sentence", **kwargs):
        rng = random.Random(0)
        while True:
            if len(read) >= 2000:
                raise AssertionError("read 2000 documents: the cap was not applied while packing")
            read.append(1)
            yield [" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(8)]  # ~1 segment each

    monkeypatch.setattr(text_module, "iter_text", endless)
    task = build_task(text_spec([corpus], 128, n_train=95, n_eval=2), tok, seed=0)
    assert len(task.train) == 95 and len(task.evals["dev"]) == 2
    assert task.train.meta["segments"] == segments_needed(95, 2) == 100
    # packing reads ahead at most one tokenizer batch (256 sentences: 32 of these documents)
    assert len(read) <= 100 + 256 // 8 + 1


# ---- one key, one cache -------------------------------------------------------------------------

def _touch_same_size(kw, tmp_path):
    st = kw["sources"].stat()
    os.utime(kw["sources"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # an edit that kept the size
    return kw


def _new_text(kw, tmp_path):
    write_corpus(kw["sources"], 30, seed=9)
    return kw


# Each case changes one thing the key must see.
CHANGES = {
    "max_len": lambda kw, tmp_path: dict(kw, max_len=40),
    "seed": lambda kw, tmp_path: dict(kw, seed=1),
    "limit": lambda kw, tmp_path: dict(kw, limit=17),
    "line_mode": lambda kw, tmp_path: dict(kw, line_mode="document"),
    "tokenizer": lambda kw, tmp_path: dict(kw, tokenizer=minilm_tokenizer()),
    # a tokenizer folder rewritten in place: the same name_or_path, another vocabulary
    "vocab": lambda kw, tmp_path: dict(kw, tokenizer=tiny_tokenizer(tmp_path / "tok", WORDS[:-3])),
    "mtime": _touch_same_size,
    "content": _new_text,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_cache_is_reused_for_the_same_key_and_rebuilt_for_another(tmp_path, monkeypatch, change):
    corpus = write_corpus(tmp_path / "c.txt", 30)
    kwargs = dict(sources=corpus, tokenizer=tiny_tokenizer(tmp_path / "tok"), max_len=48, seed=0,
                  line_mode="sentence", limit=None)
    first = text_segments(**kwargs)
    builds = []
    real_build = text_module._build_cache
    monkeypatch.setattr(text_module, "_build_cache", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    again = text_segments(**kwargs)
    assert again.folder == first.folder and not builds  # reused, not rebuilt
    kwargs = CHANGES[change](dict(kwargs), tmp_path)
    other = text_segments(**kwargs)
    assert other.folder != first.folder and builds == [1]
    expected = list(itertools.islice(pack_segment_pairs(
        iter_text(kwargs["sources"], kwargs["line_mode"]), kwargs["tokenizer"], kwargs["max_len"], kwargs["seed"]),
        kwargs["limit"]))
    assert list(other) == expected
    assert list(text_segments(**kwargs)) == expected and builds == [1]


# ---- atomic builds ------------------------------------------------------------------------------

def test_an_interrupted_build_leaves_no_cache_taken_as_complete(tmp_path, cache, monkeypatch):
    tok = tiny_tokenizer(tmp_path / "tok")
    corpus = write_corpus(tmp_path / "c.txt", 60)
    real_iter_text = text_module.iter_text

    def dies_midway(*args, **kwargs):
        for i, doc in enumerate(real_iter_text(*args, **kwargs)):
            if i == 40:
                raise KeyboardInterrupt  # as a Ctrl-C in the middle of a build
            yield doc

    with monkeypatch.context() as m:
        m.setattr(text_module, "iter_text", dies_midway)
        with pytest.raises(KeyboardInterrupt):
            text_segments(corpus, tok, 48)
        assert list((cache / "text").iterdir()) == []  # the half-built folder is gone
        # A killed process (SIGKILL, out of memory) cannot clean up: keep the half-built folder this time.
        m.setattr(text_module.shutil, "rmtree", lambda *a, **k: None)
        m.setattr(text_module, "WRITE_CHUNK_TOKENS", 256)  # so that the killed build has written some
        with pytest.raises(KeyboardInterrupt):
            text_segments(corpus, tok, 48)
    (leftover,) = (cache / "text").iterdir()
    assert leftover.name.startswith(".building-") and not (leftover / "meta.json").exists()
    assert (leftover / "tokens.bin").stat().st_size > 0  # it did write tokens
    with pytest.raises(DataError, match="not a complete gapkit token cache"):
        TokenSegments(leftover)

    expected = list(pack_segment_pairs(iter_text(corpus), tok, 48))
    segments = text_segments(corpus, tok, 48)  # builds afresh, beside the leftover of a live pid
    assert list(segments) == expected and leftover.exists()
    # the leftover of a dead process of this host is removed by the next build of its key
    dead = leftover.with_name(leftover.name.replace(f"-{os.getpid()}-", "-4194305-"))  # above any pid_max
    leftover.rename(dead)
    (segments.folder / "meta.json").unlink()  # and a folder without its meta is not reused
    with pytest.raises(DataError, match="not a complete gapkit token cache"):
        TokenSegments(segments.folder)
    assert list(text_segments(corpus, tok, 48)) == expected
    assert sorted(p.name for p in (cache / "text").iterdir()) == [segments.folder.name]


def test_a_truncated_cache_file_is_rebuilt(tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    corpus = write_corpus(tmp_path / "c.txt", 30)
    segments = text_segments(corpus, tok, 48)
    expected = list(segments)
    tokens = segments.folder / "tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-6])
    assert list(text_segments(corpus, tok, 48)) == expected


# ---- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist; pass an existing .txt file or folder"),
    ("line_mode", "Unknown line_mode 'paragraph'"),
    ("tokenizer", "needs a Hugging Face tokenizer"),
    ("not_a_cache", "is not a complete gapkit token cache"),
    ("too_little", r"gave 1 segment\(s\); give more text"),
])
def test_bad_input_is_one_clear_error(tmp_path, case, message):
    corpus = write_corpus(tmp_path / "c.txt", 3)
    tok = minilm_tokenizer()
    with pytest.raises(DataError, match=message):
        if case == "missing":
            text_segments(tmp_path / "nowhere.txt", tok)
        elif case == "line_mode":
            text_segments(corpus, tok, line_mode="paragraph")
        elif case == "tokenizer":
            text_segments(corpus, SimpleNamespace(cls_token_id=101, sep_token_id=102))
        elif case == "not_a_cache":
            TokenSegments(tmp_path)
        else:
            (tmp_path / "one.txt").write_text("Just one sentence.\n")
            build_task(text_spec([tmp_path / "one.txt"]), tok)


# ---- data parallel: rank 0 builds, the others wait, then read their rows --------------------------

def test_two_gloo_ranks_build_once_and_read_the_same_rows(tmp_path, cache):
    corpus = write_corpus(tmp_path / "c.txt", 40)
    tok = tiny_tokenizer(tmp_path / "tok")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The ranks are forked from this process, where torch and transformers are already imported: two
    # fresh interpreters (torchrun) would spend most of this test importing them. They use only gloo,
    # numpy and a tokenizer, nothing that a fork breaks.
    fork = multiprocessing.get_context("fork")
    ranks = [fork.Process(target=_rank, args=(r, port, tmp_path, corpus)) for r in (0, 1)]
    for p in ranks:
        p.start()
    for p in ranks:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in ranks] == [0, 0], "a rank failed or hung (its traceback is in the captured stderr)"
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["built"] == 1 and r1["built"] == 0 and r0["folder"] == r1["folder"]
    expected = list(pack_segment_pairs(iter_text(corpus), tok, 48))
    assert r0["rows"] == expected[0::2] and r1["rows"] == expected[1::2]
    # a failure of rank 0's build reaches every rank as the same error, and nobody hangs
    assert r0["error"] == r1["error"] and "does not exist" in r0["error"]


def _rank(rank: int, port: int, tmp: Path, corpus: Path) -> None:
    """One of two data-parallel ranks: open (rank 0: build) the cache, read this rank's rows."""
    import torch.distributed as dist
    from transformers import AutoTokenizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TOKENIZERS_PARALLELISM="false")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    builds = []
    real_build = text_module._build_cache
    text_module._build_cache = lambda *a, **k: builds.append(1) or real_build(*a, **k)
    segments = text_segments(corpus, AutoTokenizer.from_pretrained(tmp / "tok"), 48)
    rows = [segments[i] for i in range(rank, len(segments), 2)]  # this rank's share, read by index
    built = len(builds)

    error = None
    if rank == 0:  # the text vanishes while rank 0 builds: rank 0 fails, rank 1 must not wait forever
        text_module.iter_text = lambda *a, **k: (_ for _ in ()).throw(
            DataError("Text source gone.txt does not exist; pass an existing .txt file or folder."))
    try:
        text_segments(corpus, AutoTokenizer.from_pretrained(tmp / "tok"), 40)
    except DataError as err:
        error = str(err)
    (tmp / f"rank{rank}.json").write_text(json.dumps(
        dict(built=built, folder=str(segments.folder), rows=rows, error=error)))
    dist.destroy_process_group()
