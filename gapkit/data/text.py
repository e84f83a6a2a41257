"""Raw text for task-agnostic distillation: documents from local files or the Hub, packed into
BERT segment pairs.

The MiniMoE task-agnostic stage (docs/method.md) distils on English Wikipedia as BERT
segment pairs of length 128 with no masking: the MiniLM relation loss needs only the teacher's and
the student's attention, so there is no MLM target and no next-sentence label here.

A document is a list of sentences (``list[str]``); ``iter_text`` yields documents and
``pack_segment_pairs`` turns them into features ``{input_ids, token_type_ids, attention_mask}``
(unpadded python lists; ``features.pad_batch`` pads per batch).

``text_segments`` packs once into a memory-mapped token cache on disk and returns ``TokenSegments``, a
read-only sequence of those same features: a corpus the size of Wikipedia then costs disk, not memory,
and later runs with the same settings reuse it.
"""

from __future__ import annotations

import collections.abc
import copy
import datetime
import hashlib
import itertools
import json
import logging
import os
import random
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from gapkit.errors import DataError

# A document with no boundary for this many sentences (BookCorpus rows have none) is cut here, so
# memory stays bounded; segment pairs never need more than a few sentences of context.
MAX_DOC_SENTENCES = 256
LAYOUTS = ("sentence", "document", "wikitext")

# A plain heuristic, not a trained splitter: end punctuation, whitespace, then something that can
# start a sentence. It misses abbreviations ("Dr. Smith" splits); for segment pairs that only moves a
# boundary, which the distillation loss does not care about.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True)
class HubText:
    """A Hub text corpus: dataset path, config, text field, and how its rows map to documents.

    ``layout``: ``"document"`` (a row is a document, paragraphs split by newlines),
    ``"sentence"`` (a row is a sentence, a blank row ends a document), ``"wikitext"`` (a row is a
    paragraph or heading; an article title starts a new document).
    """

    path: str
    config: str | None
    layout: str
    text_field: str = "text"


# Source: the Hub dataset cards (Salesforce/wikitext, wikimedia/wikipedia, bookcorpus/bookcorpus).
HUB_TEXT: dict[str, HubText] = {
    "wikitext": HubText("Salesforce/wikitext", "wikitext-103-raw-v1", "wikitext"),
    "wikipedia": HubText("wikimedia/wikipedia", "20231101.en", "document"),
    "wikimedia/wikipedia": HubText("wikimedia/wikipedia", "20231101.en", "document"),
    "bookcorpus": HubText("bookcorpus/bookcorpus", None, "sentence"),
}


def split_sentences(text: str) -> list[str]:
    """Split a paragraph (or several, newline-separated) into sentences with a punctuation heuristic."""
    return [s for para in text.splitlines() for s in _SENTENCE_END.split(para.strip()) if s]


def lines_to_documents(lines: Iterable[str], layout: str = "sentence") -> Iterator[list[str]]:
    """Group a stream of text lines (file lines or Hub rows) into documents.

    Args:
        lines: the text, one line or row at a time.
        layout: ``"sentence"``, ``"document"`` or ``"wikitext"`` (see ``HubText``).

    Returns:
        An iterator of documents, each a non-empty list of sentences.
    """
    if layout not in LAYOUTS:
        raise DataError(f"Unknown text layout {layout!r}; use one of {', '.join(LAYOUTS)}.")
    doc: list[str] = []
    for line in lines:
        line = line.strip()
        if layout == "document":
            if sents := split_sentences(line):
                yield sents
            continue
        if layout == "sentence":
            boundary, sents = not line, [line] if line else []
        else:  # WikiText: " = Title = " starts an article, " = = Section = = " is dropped
            heading = line.startswith("= ") and line.endswith(" =")
            boundary = heading and not line.startswith("= =")
            sents = [] if heading else split_sentences(line)
        if doc and (boundary or len(doc) >= MAX_DOC_SENTENCES):
            yield doc
            doc = []
        doc.extend(sents)
    if doc:
        yield doc


def iter_text(source: str | Path, line_mode: str = "sentence", *, config: str | None = None,
              split: str = "train", text_field: str | None = None, streaming: bool = True,
              max_docs: int | None = None) -> Iterator[list[str]]:
    """Yield documents (lists of sentences) from local text or a Hugging Face Hub corpus.

    Args:
        source: a ``.txt`` file, a folder (all ``*.txt`` below it, sorted), or a Hub dataset name:
            ``wikitext``, ``wikipedia``/``wikimedia/wikipedia``, ``bookcorpus`` (presets in
            ``HUB_TEXT``) or any other dataset whose rows are documents.
        line_mode: local files only: ``"sentence"`` (one sentence per line, blank line ends a
            document; every file ends one) or ``"document"`` (one line is one document).
        config: Hub config, overriding the preset's (e.g. ``"wikitext-2-raw-v1"``, ``"20231101.de"``).
        split: Hub split.
        text_field: Hub field holding the text (default: the preset's, else ``"text"``).
        streaming: stream the Hub dataset instead of downloading it whole.
        max_docs: stop after this many documents.

    Returns:
        An iterator of documents.

    Raises:
        DataError: a missing local path, a folder without ``.txt`` files, an unknown line_mode, or a
            Hub dataset that cannot be loaded; a local file that is not UTF-8, when it is read.
    """
    _check_line_mode(line_mode)
    path = _local_path(source)
    if path is not None:
        docs = _local_documents(path, line_mode)
    else:
        docs = _hub_documents(str(source), config, split, text_field, streaming)
    return itertools.islice(docs, max_docs)


def _check_line_mode(line_mode: str) -> None:
    if line_mode not in ("sentence", "document"):
        raise DataError(f"Unknown line_mode {line_mode!r}; use 'sentence' or 'document'.")


def _local_path(source: str | Path) -> Path | None:
    """The local file or folder a source names, or None for a Hub dataset name.

    Raises:
        DataError: a source that looks like a path but does not exist.
    """
    path = Path(source).expanduser()
    if path.exists():
        return path
    if str(source) in HUB_TEXT or not _looks_like_path(str(source)):
        return None
    raise DataError(f"Text source {path} does not exist; pass an existing .txt file or folder, "
                    f"or a Hub dataset name such as {', '.join(HUB_TEXT)}.")


def _looks_like_path(s: str) -> bool:
    return s.endswith(".txt") or s.startswith(("/", ".", "~")) or "\\" in s


def _local_documents(path: Path, line_mode: str) -> Iterator[list[str]]:
    # Checked here, not inside the generator, so a bad path fails at the call, not at first use.
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"Text folder {path} contains no .txt files; put one or more .txt files in it.")
    return (doc for file in files for doc in _file_documents(file, line_mode))


def _file_documents(file: Path, layout: str) -> Iterator[list[str]]:
    with open(file, encoding="utf-8") as f:  # a file's end is always a document's end
        try:
            yield from lines_to_documents(f, layout)
        except UnicodeDecodeError:
            raise _not_utf8(file) from None


def _not_utf8(file: Path) -> DataError:
    """The one sentence for a text file that is not UTF-8: its first bad byte, and the fix.

    The file is scanned line by line, not read whole (``glue.utf8_error`` does that): a corpus need not
    fit in memory. A newline byte never occurs inside a UTF-8 sequence, so decoding line by line finds
    the same first bad byte as decoding the whole file.
    """
    offset = 0
    with open(file, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return DataError(f"Text file {file} is not UTF-8 text at byte {offset + err.start} (line {number}): "
                                 f"convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8).")
            offset += len(line)
    return DataError(f"Text file {file} is not UTF-8 text: convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8).")


def _hub_documents(name: str, config: str | None, split: str, text_field: str | None,
                   streaming: bool) -> Iterator[list[str]]:
    import datasets  # deferred: importing datasets costs about a second

    preset = HUB_TEXT.get(name, HubText(name, None, "document"))
    config = config or preset.config
    field = text_field or preset.text_field
    try:
        ds = datasets.load_dataset(preset.path, config, split=split, streaming=streaming)
    except Exception as err:  # network, cache and Hub errors come in many types
        raise DataError(f"Could not load {preset.path} (config {config!r}, split {split!r}) from the "
                        f"Hugging Face Hub ({type(err).__name__}: {err}); check the network or pass a "
                        f"local .txt file or folder.") from err
    return lines_to_documents((row[field] for row in ds), preset.layout)


def pack_segment_pairs(docs: Iterable[list[str]], tokenizer, max_len: int = 128, seed: int = 0,
                       short_seq_prob: float = 0.1) -> Iterator[dict[str, list[int]]]:
    """Pack documents into BERT segment pairs ``[CLS] A [SEP] B [SEP]``, without masking.

    Follows BERT's ``create_instances_from_document`` minus the random next sentence: sentences of a
    document are gathered until they reach a target length (``max_len - 3``, or with probability
    ``short_seq_prob`` a random shorter one, so the model also sees short inputs); the chunk is cut at
    a random sentence boundary into A and B, and the longer side is trimmed, from a random end,
    until the pair fits. A chunk of a single sentence gives ``[CLS] A [SEP]`` with no B.

    Args:
        docs: documents, each a list of sentences.
        tokenizer: a Hugging Face tokenizer with ``cls_token_id`` and ``sep_token_id``.
        max_len: the length of every feature at most, special tokens included.
        seed: seed of the target lengths, cut points and trimming.
        short_seq_prob: probability of a shorter target length.

    Returns:
        An iterator of features ``{input_ids, token_type_ids, attention_mask}``, python lists of
        equal length <= max_len; token_type_ids are 0 on ``[CLS] A [SEP]`` and 1 on ``B [SEP]``.
    """
    for input_ids, n_a in _pack_pairs(_tokenized_docs(docs, tokenizer), tokenizer, max_len, seed, short_seq_prob):
        yield {"input_ids": input_ids,
               "token_type_ids": [0] * n_a + [1] * (len(input_ids) - n_a),
               "attention_mask": [1] * len(input_ids)}


def _tokenized_docs(docs: Iterable[list[str]], tokenizer, batch_sentences: int = 256) -> Iterator[list[list[int]]]:
    """Documents as lists of sentence token ids (empty sentences dropped), without special tokens.

    Sentences of several documents go to the tokenizer in one call, so a fast tokenizer can encode
    them in parallel and a call's fixed cost is paid once per batch rather than once per (short)
    document. The ids equal those of encoding each document alone (no padding, truncation or
    specials). At most ``batch_sentences`` sentences (plus one document) are read ahead of the packing.
    On a busy 2-core machine batches of 1,024-4,096 sentences measured slower than 32-256, not faster
    (why is not understood); 256 also keeps the read-ahead small.
    """
    batch, n_sentences = [], 0
    for doc in docs:
        if not doc:
            continue
        batch.append(doc)
        n_sentences += len(doc)
        if n_sentences >= batch_sentences:
            yield from _encode_batch(batch, tokenizer)
            batch, n_sentences = [], 0
    if batch:
        yield from _encode_batch(batch, tokenizer)


def _encode_batch(batch: list[list[str]], tokenizer) -> Iterator[list[list[int]]]:
    ids = tokenizer([s for doc in batch for s in doc], add_special_tokens=False)["input_ids"]
    start = 0
    for doc in batch:
        yield [piece for piece in ids[start:start + len(doc)] if piece]
        start += len(doc)


def _pack_pairs(docs: Iterable[list[list[int]]], tokenizer, max_len: int, seed: int,
                short_seq_prob: float) -> Iterator[tuple[list[int], int]]:
    """The packing of ``pack_segment_pairs`` on tokenized documents.

    Returns:
        An iterator of ``(input_ids, n_a)``: the pair's ids and the length of ``[CLS] A [SEP]``
        (what token_type_ids marks 0), the compact form the token cache stores.
    """
    if max_len < 5:
        raise DataError(f"pack_segment_pairs needs max_len >= 5 for [CLS] A [SEP] B [SEP], got {max_len}.")
    rng = random.Random(seed)
    budget = max_len - 3
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def target() -> int:
        return rng.randint(2, budget) if rng.random() < short_seq_prob else budget

    for pieces in docs:
        chunk, n_tokens, goal = [], 0, target()
        for i, ids in enumerate(pieces):
            chunk.append(ids)
            n_tokens += len(ids)
            if n_tokens < goal and i < len(pieces) - 1:
                continue
            cut = rng.randint(1, len(chunk) - 1) if len(chunk) > 1 else 1
            a = [t for ids in chunk[:cut] for t in ids]
            b = [t for ids in chunk[cut:] for t in ids]
            _truncate_pair(a, b, budget if b else max_len - 2, rng)
            yield [cls, *a, sep] + ([*b, sep] if b else []), len(a) + 2
            chunk, n_tokens, goal = [], 0, target()


def _truncate_pair(a: list[int], b: list[int], budget: int, rng: random.Random) -> None:
    """Trim the longer of a, b in place until they fit; BERT trims a random end to avoid always
    cutting sentence endings."""
    while len(a) + len(b) > budget:
        longer = a if len(a) > len(b) else b
        del longer[0 if rng.random() < 0.5 else -1]


class TextCorpus(IterableDataset):
    """Segment-pair features from ``iter_text`` as a torch IterableDataset.

    Documents are sharded round-robin over DataLoader workers and, under torch.distributed, over
    ranks, so every document is used once per pass. (A streamed Hub dataset is still read in full by
    each shard, which then skips the others' documents: simple and correct, not the fastest.)

    Args:
        source, line_mode, **text_kwargs: passed to ``iter_text``.
        tokenizer, max_len, seed, short_seq_prob: passed to ``pack_segment_pairs``
            (the seed is offset per shard so shards do not repeat each other's random choices).
    """

    def __init__(self, source: str | Path, tokenizer, max_len: int = 128, seed: int = 0,
                 short_seq_prob: float = 0.1, line_mode: str = "sentence", **text_kwargs):
        self.source, self.tokenizer, self.max_len = source, tokenizer, max_len
        self.seed, self.short_seq_prob = seed, short_seq_prob
        self.line_mode, self.text_kwargs = line_mode, text_kwargs

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        dist = torch.distributed
        rank, world = ((dist.get_rank(), dist.get_world_size())
                       if dist.is_available() and dist.is_initialized() else (0, 1))
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        shard, n_shards = rank * n_workers + worker, world * n_workers
        docs = itertools.islice(iter_text(self.source, self.line_mode, **self.text_kwargs),
                                shard, None, n_shards)
        yield from pack_segment_pairs(docs, self.tokenizer, self.max_len, self.seed + shard,
                                      self.short_seq_prob)


# ---- Tokenised once: segment pairs in a memory-mapped cache on disk --------------------------------
#
# A cache folder ``<cache_root()>/text/<key>/`` holds N packed segment pairs, T tokens in all:
#   tokens.bin    (T,)   uint16 (int32 for vocabularies over 65,536 ids): every pair's input_ids, back to back
#   offsets.bin   (N+1,) int64: pair i is tokens[offsets[i]:offsets[i + 1]]
#   a_lengths.bin (N,)   int32: the length of [CLS] A [SEP] (token_type_ids 0), the rest is B [SEP] (1)
#   meta.json     the key, N, T and the dtype: written last, and only then is the folder renamed into place
# attention_mask is all ones (features are unpadded), so it is not stored. A pair costs 2 bytes a token
# plus 12 on disk (about 230 B at max_len 128) and no memory until read, against about 6.5 KB of RAM as
# python lists (benchmarks/text_stream.py).

CACHE_FORMAT = 1  # bump when the packing or the file layout changes: older caches then never match
HELD_OUT_EVERY = 20  # every 20th packed segment is held out for evaluation (rows 0, 20, 40, ...)
# Rank 0 may tokenise a whole Wikipedia while the other ranks wait: far past the default 30 minutes
# of a collective, so the wait uses its own group with this timeout.
BUILD_TIMEOUT = datetime.timedelta(hours=24)
_ARRAYS = (("tokens", None), ("offsets", np.int64), ("a_lengths", np.int32))
_BUILDING = ".building-"  # prefix of a folder being written: never opened as a cache
WRITE_CHUNK_TOKENS = 1 << 20  # tokens buffered between writes: 2-4 MB, whatever the corpus size

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """gapkit's cache folder: ``$GAPKIT_CACHE`` when set, else ``~/.cache/gapkit``."""
    return Path(os.environ.get("GAPKIT_CACHE") or "~/.cache/gapkit").expanduser()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides a tokenizer's ids: its class, vocabulary, special ids and, for a fast
    tokenizer, its normalizer, pre-tokenizer and model settings.

    The backend's truncation and padding state are left out: transformers changes them on the fly
    when a call asks for truncation, and they do not change the ids of the untruncated encoding used
    here.

    Raises:
        DataError: an object without ``get_vocab`` (not a Hugging Face tokenizer).
    """
    if not hasattr(tokenizer, "get_vocab"):
        raise DataError(f"The text cache needs a Hugging Face tokenizer (with get_vocab), got "
                        f"{type(tokenizer).__name__}; load one with AutoTokenizer.from_pretrained.")
    h = hashlib.sha256()
    h.update(type(tokenizer).__name__.encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.cls_token_id, tokenizer.sep_token_id]).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        h.update(json.dumps(state, sort_keys=True).encode())
    else:  # a slow tokenizer: its behaviour is set by its init arguments (lower-casing, accents ...)
        h.update(json.dumps(getattr(tokenizer, "init_kwargs", {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


def _source_identity(source: str | Path, text_config: str | None) -> dict:
    """What identifies one source's text: path, size and mtime of every local file; name and config
    of a Hub corpus (a Hub corpus that changes upstream under the same name is not noticed: for a
    pinned corpus use a local copy)."""
    path = _local_path(source)
    if path is None:
        return {"hub": str(source), "config": text_config}
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    return {"path": str(path.resolve()),
            "files": [[str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns]
                      for f in files]}


def text_cache_key(sources: Sequence[str | Path], tokenizer, max_len: int, seed: int, line_mode: str,
                   text_config: str | None, limit: int | None, short_seq_prob: float = 0.1) -> dict:
    """Everything that decides the packed segments, as a JSON-able dict (its hash names the folder).

    Args:
        sources, line_mode, text_config: the text (see ``iter_text``).
        tokenizer: a Hugging Face tokenizer; identified by ``name_or_path`` and ``tokenizer_fingerprint``.
        max_len, seed, short_seq_prob: the packing (see ``pack_segment_pairs``).
        limit: the number of segments packed at most (None: all the text).

    Returns:
        The key; two calls give equal keys exactly when a cache built for one is right for the other.
    """
    _check_line_mode(line_mode)
    return {
        "format": CACHE_FORMAT,
        "tokenizer": {"name_or_path": str(getattr(tokenizer, "name_or_path", "")),
                      "fingerprint": tokenizer_fingerprint(tokenizer)},
        "sources": [_source_identity(s, text_config) for s in sources],
        "line_mode": line_mode, "text_config": text_config,
        "max_len": max_len, "seed": seed, "short_seq_prob": short_seq_prob, "limit": limit,
    }


def segments_needed(n_train: int, n_eval: int, every: int = HELD_OUT_EVERY) -> int:
    """How many packed segments give ``n_train`` training rows and ``n_eval`` held-out rows when rows
    0, every, 2 * every, ... are held out (``TokenSegments.split``): the cap a build packs up to."""
    train_rows = n_train + -(-n_train // (every - 1))  # each `every` rows hold every - 1 training rows
    eval_rows = (n_eval - 1) * every + 1
    return max(train_rows, eval_rows)


def _key_name(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


class TokenSegments(collections.abc.Sequence):
    """Packed segment pairs in a token cache folder, as a read-only sequence of features.

    ``segments[i]`` is ``{input_ids, token_type_ids, attention_mask}`` (python lists), exactly what
    ``pack_segment_pairs`` gave for that pair, read from memory-mapped files: only the rows asked for
    are read, so each data-parallel rank touches only its own share of a batch. A slice is a view
    (nothing is read), and the object pickles as its folder (DataLoader workers reopen the files).

    Args:
        folder: a complete cache folder (one with its ``meta.json``).

    Raises:
        DataError: a folder that is not a complete token cache.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = _read_meta(self.folder)
        if self.meta is None:
            raise DataError(f"{self.folder} is not a complete gapkit token cache (no valid meta.json, or "
                            f"files of the wrong size); delete it and build it again with text_segments.")
        # Row j of this view is the stored pair _stored_row(_rows[j]); a view only changes these two.
        self._rows = range(self.meta["segments"])
        self._skip = 0  # 0: rows are stored rows; k: position p is the p-th stored row not held out every k
        self._arrays = None

    def split(self, every: int = HELD_OUT_EVERY) -> tuple[TokenSegments, TokenSegments]:
        """Split into (train, held_out) views: stored rows 0, every, 2 * every, ... are held out.

        Returns:
            Two views; neither copies a row.
        """
        assert self._rows == range(self.meta["segments"]) and not self._skip, "split a whole cache only"
        n = len(self._rows)
        return self._view(range(n - -(-n // every)), every), self._view(range(0, n, every), 0)

    def _view(self, rows: range, skip: int) -> TokenSegments:
        self._open()
        view = copy.copy(self)  # shares the memory maps
        view._rows, view._skip = rows, skip
        return view

    def _stored_row(self, p: int) -> int:
        # With one row in `skip` held out (the first), position p skips p // (skip - 1) + 1 of them.
        return p + p // (self._skip - 1) + 1 if self._skip else p

    def _open(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = _open_arrays(self.folder, self.meta)
        return self._arrays

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._view(self._rows[index], self._skip)
        row = self._stored_row(self._rows[index])  # range indexing: negatives and IndexError for free
        tokens, offsets, a_lengths = self._open()
        input_ids = tokens[offsets[row]:offsets[row + 1]].tolist()
        n_a = int(a_lengths[row])
        return {"input_ids": input_ids,
                "token_type_ids": [0] * n_a + [1] * (len(input_ids) - n_a),
                "attention_mask": [1] * len(input_ids)}

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _arrays=None)  # the memory maps reopen in the new process

    def __repr__(self) -> str:
        return f"TokenSegments({len(self)} of {self.meta['segments']} segments in {self.folder})"


def _read_meta(folder: Path) -> dict | None:
    """The meta of a complete cache folder, or None (missing, unreadable, or files of the wrong size)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        sizes = {"tokens": meta["tokens"] * np.dtype(meta["dtype"]).itemsize,
                 "offsets": (meta["segments"] + 1) * 8, "a_lengths": meta["segments"] * 4}
        if meta["format"] != CACHE_FORMAT or any((folder / f"{name}.bin").stat().st_size != size
                                                 for name, size in sizes.items()):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


def _open_arrays(folder: Path, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for name, dtype in _ARRAYS:
        dtype = np.dtype(dtype or meta["dtype"])
        if (folder / f"{name}.bin").stat().st_size == 0:  # mmap cannot map an empty file
            arrays.append(np.zeros(0, dtype))
        else:
            arrays.append(np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r"))
    return tuple(arrays)


class _SegmentWriter:
    """Appends packed pairs to the cache files through fixed-size numpy buffers, so the memory a
    build needs does not grow with the corpus."""

    def __init__(self, folder: Path, dtype: np.dtype, chunk_tokens: int = WRITE_CHUNK_TOKENS):
        self.files = {name: open(folder / f"{name}.bin", "wb") for name, _ in _ARRAYS}
        self.buffer = np.empty(chunk_tokens, dtype)
        self.fill, self.n_tokens, self.n_segments = 0, 0, 0
        self.ends: list[int] = []
        self.a_lengths: list[int] = []
        np.zeros(1, np.int64).tofile(self.files["offsets"])  # offsets[0]

    def __enter__(self) -> _SegmentWriter:
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files.values():
            f.close()

    def add(self, input_ids: list[int], n_a: int) -> None:
        n = len(input_ids)
        if self.fill + n > len(self.buffer):
            self.flush()
        assert n <= len(self.buffer), "the write buffer must hold a whole segment"
        # numpy raises OverflowError for an id that does not fit the dtype: never a silent wrap-around
        self.buffer[self.fill:self.fill + n] = input_ids
        self.fill += n
        self.n_tokens += n
        self.n_segments += 1
        self.ends.append(self.n_tokens)
        self.a_lengths.append(n_a)

    def flush(self) -> None:
        self.buffer[:self.fill].tofile(self.files["tokens"])
        np.asarray(self.ends, np.int64).tofile(self.files["offsets"])
        np.asarray(self.a_lengths, np.int32).tofile(self.files["a_lengths"])
        self.fill, self.ends, self.a_lengths = 0, [], []

    def finish(self) -> None:
        """Write what is buffered and sync every file to disk, before the meta declares them complete."""
        self.flush()
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())


def _build_cache(folder: Path, key: dict, sources: Sequence[str | Path], tokenizer, max_len: int,
                 seed: int, line_mode: str, text_config: str | None, limit: int | None,
                 short_seq_prob: float) -> None:
    """Pack the sources into a new cache at ``folder``, atomically.

    The files are written into a ``.building-*`` folder beside it, the meta last, then the folder is
    renamed into place: an interrupted build leaves no folder under the key's name. (A killed one
    leaves its ``.building-*`` folder; the next build on the same host removes it.)
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_builds(folder)
    tmp = folder.parent / f"{_BUILDING}{folder.name}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    t0 = time.time()
    try:
        dtype = np.dtype(np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32)
        # Each source is packed on its own with the same seed (as it always was); the cap stops the
        # reading of documents as soon as `limit` pairs are written.
        pairs = itertools.chain.from_iterable(
            _pack_pairs(_tokenized_docs(iter_text(s, line_mode, config=text_config), tokenizer), tokenizer,
                        max_len, seed, short_seq_prob)
            for s in sources)
        with (_SegmentWriter(tmp, dtype, WRITE_CHUNK_TOKENS) as writer,
              tqdm(total=limit, unit="seg", desc="tokenising text", disable=None, mininterval=5) as bar):
            for input_ids, n_a in itertools.islice(pairs, limit):
                writer.add(input_ids, n_a)
                if writer.n_segments % 10000 == 0:
                    bar.update(10000)
            bar.update(writer.n_segments - bar.n)
            writer.finish()
        meta = {"format": CACHE_FORMAT, "key": key, "segments": writer.n_segments, "tokens": writer.n_tokens,
                "dtype": dtype.name, "seconds": round(time.time() - t0, 3),
                "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _move_into_place(tmp, folder, key)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, folder: Path, key: dict) -> None:
    """Rename the finished ``tmp`` to ``folder`` (atomic on one filesystem): the cache appears whole."""
    for attempt in range(2):
        try:
            os.rename(tmp, folder)
            return
        except OSError:  # the folder exists
            if _valid_for(folder, key):  # another process built the same cache meanwhile: keep theirs
                shutil.rmtree(tmp)
                return
            if attempt == 0:  # a broken folder under this key's name (a copy gone wrong): replace it
                shutil.rmtree(folder, ignore_errors=True)
    raise DataError(f"Could not move the new token cache into {folder}: a broken folder there cannot be "
                    f"replaced; delete it (or set GAPKIT_CACHE to another folder) and run again.")


def _remove_dead_builds(folder: Path) -> None:
    """Remove the ``.building-*`` folders of this key left by killed processes of this host."""
    prefix = f"{_BUILDING}{folder.name}-{socket.gethostname()}-"
    for stale in folder.parent.glob(f"{prefix}*"):
        pid = stale.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a killed build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _valid_for(folder: Path, key: dict) -> bool:
    meta = _read_meta(folder)
    return meta is not None and meta["key"] == key


def _open_or_build(key: dict, cache_dir: Path, build_args: tuple) -> TokenSegments:
    folder = cache_dir / "text" / _key_name(key)
    if _valid_for(folder, key):
        log.info("reusing the token cache %s", folder)
    else:
        log.info("tokenising text into %s", folder)
        _build_cache(folder, key, *build_args)
    return TokenSegments(folder)


def text_segments(sources: str | Path | Sequence[str | Path], tokenizer, max_len: int = 128, seed: int = 0, *,
                  line_mode: str = "sentence", text_config: str | None = None, limit: int | None = None,
                  short_seq_prob: float = 0.1, cache_dir: str | Path | None = None) -> TokenSegments:
    """Raw text packed into segment pairs, tokenised once into a memory-mapped cache and reused.

    The first call streams the documents through ``pack_segment_pairs`` into
    ``<cache_dir>/text/<key>/`` (memory stays flat in the corpus size; at most ``limit`` pairs are
    packed and no text is read past them); a later call with the same key opens that folder. The key
    (``text_cache_key``) holds the tokenizer's name and fingerprint, max_len, seed, line_mode,
    text_config, the limit and each source (local files by path, size and mtime), so a change in any of
    them builds a new cache: a cache is never reused for other settings.

    Under torch.distributed (world > 1) rank 0 builds while the other ranks wait, then each opens the
    cache read-only (a rank that cannot see it, on a node-local cache folder, builds its own copy).
    Every rank must call this with the same arguments.

    Args:
        sources: local ``.txt`` files or folders, or Hub corpus names (see ``iter_text``), packed in order.
        tokenizer: a Hugging Face tokenizer (fast or slow).
        max_len, seed, short_seq_prob: the packing (see ``pack_segment_pairs``).
        line_mode, text_config: see ``iter_text``.
        limit: pack at most this many segment pairs (None: all the text).
        cache_dir: the cache folder (default: ``cache_root()``).

    Returns:
        A ``TokenSegments`` over all packed pairs, in packing order (``split`` holds some out).

    Raises:
        DataError: a missing source, a local file that is not UTF-8, an unknown line_mode, a Hub corpus
            that cannot be loaded; under torch.distributed, on every rank when rank 0 fails.
    """
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    key = text_cache_key(sources, tokenizer, max_len, seed, line_mode, text_config, limit, short_seq_prob)
    build_args = (sources, tokenizer, max_len, seed, line_mode, text_config, limit, short_seq_prob)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return _open_or_build(key, cache_dir, build_args)
    # A gloo group of its own: its timeout covers a long build, and it works beside an NCCL group.
    group = dist.new_group(backend="gloo", timeout=BUILD_TIMEOUT)
    try:
        failure, segments = None, None
        if dist.get_rank() == 0:
            try:
                segments = _open_or_build(key, cache_dir, build_args)
            except Exception as err:  # told to the other ranks, then raised here
                failure = err
        status = [None if failure is None else
                  (True, str(failure)) if isinstance(failure, DataError) else
                  (False, f"{type(failure).__name__}: {failure}")]
        dist.broadcast_object_list(status, src=0, group=group)  # also the barrier: rank 0 is done
        if failure is not None:
            raise failure
        if status[0] is not None:
            is_data_error, message = status[0]
            raise DataError(message if is_data_error else f"Rank 0 could not build the token cache ({message}); "
                                                           f"see rank 0's error.")
        return segments if segments is not None else _open_or_build(key, cache_dir, build_args)
    finally:
        dist.destroy_process_group(group)
