"""Raw text for task-agnostic distillation: documents from local files or the Hub, packed into
BERT segment pairs.

The MiniMoE task-agnostic stage (reference/minimoe_facts.md) distils on English Wikipedia as BERT
segment pairs of length 128 with no masking: the MiniLM relation loss needs only the teacher's and
the student's attention, so there is no MLM target and no next-sentence label here.

A document is a list of sentences (``list[str]``); ``iter_text`` yields documents and
``pack_segment_pairs`` turns them into features ``{input_ids, token_type_ids, attention_mask}``
(unpadded python lists; ``features.pad_batch`` pads per batch).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

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
            Hub dataset that cannot be loaded.
    """
    if line_mode not in ("sentence", "document"):
        raise DataError(f"Unknown line_mode {line_mode!r}; use 'sentence' or 'document'.")
    path = Path(source).expanduser()
    if path.exists():
        docs = _local_documents(path, line_mode)
    elif str(source) in HUB_TEXT or not _looks_like_path(str(source)):
        docs = _hub_documents(str(source), config, split, text_field, streaming)
    else:
        raise DataError(f"Text source {path} does not exist; pass an existing .txt file or folder, "
                        f"or a Hub dataset name such as {', '.join(HUB_TEXT)}.")
    return itertools.islice(docs, max_docs)


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
        yield from lines_to_documents(f, layout)


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
    if max_len < 5:
        raise DataError(f"pack_segment_pairs needs max_len >= 5 for [CLS] A [SEP] B [SEP], got {max_len}.")
    rng = random.Random(seed)
    budget = max_len - 3
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def target() -> int:
        return rng.randint(2, budget) if rng.random() < short_seq_prob else budget

    for doc in docs:
        if not doc:
            continue
        pieces = [ids for ids in tokenizer(list(doc), add_special_tokens=False)["input_ids"] if ids]
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
            input_ids = [cls, *a, sep] + ([*b, sep] if b else [])
            n_a = len(a) + 2
            yield {"input_ids": input_ids,
                   "token_type_ids": [0] * n_a + [1] * (len(input_ids) - n_a),
                   "attention_mask": [1] * len(input_ids)}
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
