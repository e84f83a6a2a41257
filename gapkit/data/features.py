"""Examples -> model inputs with a Hugging Face tokenizer, and per-batch padding.

``tokenize_*`` give unpadded per-example features (python lists) for a DataLoader with
``collate_fn=pad_batch``: each batch is padded only to its own longest sequence, which on GLUE's
short sentences is several times less compute than padding everything to max_len.
``encode_*`` are the same, padded at once into one dict of tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch

from gapkit.data.conll import CONLL_LABELS, NerExample
from gapkit.data.glue import Example
from gapkit.errors import DataError

IGNORE_INDEX = -100  # what torch's cross_entropy ignores: non-first word-pieces, specials, padding
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0}


def check_max_len(max_len: int, max_position_embeddings: int, where: str) -> None:
    """Raise DataError unless 0 < max_len <= max_position_embeddings.

    Args:
        max_len: the sequence length asked for.
        max_position_embeddings: the model's position table size.
        where: what asked for it (a config path, a model name), for the message.
    """
    if not 0 < max_len <= max_position_embeddings:
        raise DataError(f"max_len {max_len} in {where} does not fit the model's {max_position_embeddings} "
                        f"position embeddings; set max_len between 1 and {max_position_embeddings}.")


def tokenize_glue(examples: Sequence[Example], tokenizer, max_len: int = 128) -> list[dict]:
    """Tokenize GLUE examples as ``[CLS] a [SEP] (b [SEP])``, truncated to max_len (longest side first).

    Returns:
        Per-example dicts ``{input_ids, token_type_ids, attention_mask}`` (lists) plus ``labels``
        (int, or float for STS-B).
    """
    if not examples:
        return []
    pairs = examples[0].text_b is not None
    if any((e.text_b is not None) != pairs for e in examples):
        raise DataError("tokenize_glue got a mix of single sentences and sentence pairs; "
                        "pass the examples of one task at a time.")
    enc = tokenizer([e.text_a for e in examples], [e.text_b for e in examples] if pairs else None,
                    truncation=True, max_length=max_len, return_token_type_ids=True)
    return [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
             "attention_mask": enc["attention_mask"][i], "labels": e.label}
            for i, e in enumerate(examples)]


def encode_glue(examples: Sequence[Example], tokenizer, max_len: int = 128) -> dict[str, torch.Tensor]:
    """``tokenize_glue`` padded into tensors: input_ids, token_type_ids, attention_mask (N, T) long
    with T the longest sequence; labels (N,) long, or float for regression (STS-B)."""
    return pad_batch(tokenize_glue(examples, tokenizer, max_len), tokenizer.pad_token_id)


def tokenize_conll(examples: Sequence[NerExample], tokenizer, max_len: int = 128,
                   label_list: Sequence[str] = CONLL_LABELS) -> list[dict]:
    """Tokenize NER sentences word by word and align the tags to word-pieces.

    Each word's tag goes on its FIRST word-piece; its other pieces and the special tokens get
    ``IGNORE_INDEX`` (the BERT paper's NER recipe), so the loss and ``align_predictions`` see one
    position per word. Words cut by truncation have no position and are not scored.

    Args:
        examples: sentences with IOB2 tags.
        tokenizer: a *fast* Hugging Face tokenizer (``word_ids()`` is needed).
        max_len: maximum word-pieces per sentence, specials included.
        label_list: tag names in label-id order.

    Returns:
        Per-example dicts ``{input_ids, token_type_ids, attention_mask, labels}`` (lists).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(f"tokenize_conll needs a fast tokenizer for word_ids(), got {type(tokenizer).__name__}; "
                        f"load it with AutoTokenizer.from_pretrained(..., use_fast=True).")
    tag_id = {tag: i for i, tag in enumerate(label_list)}
    enc = tokenizer([e.tokens for e in examples], is_split_into_words=True, truncation=True,
                    max_length=max_len, return_token_type_ids=True)
    features = []
    for i, ex in enumerate(examples):
        labels, previous = [], None
        for word in enc.word_ids(i):
            if word is None or word == previous:
                labels.append(IGNORE_INDEX)
            elif ex.tags[word] in tag_id:
                labels.append(tag_id[ex.tags[word]])
            else:
                raise DataError(f"tag {ex.tags[word]!r} of sentence {i} word {word} ({ex.tokens[word]!r}) "
                                f"is not in label_list {list(label_list)}; pass the matching label_list.")
            previous = word
        features.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                         "attention_mask": enc["attention_mask"][i], "labels": labels})
    return features


def encode_conll(examples: Sequence[NerExample], tokenizer, max_len: int = 128,
                 label_list: Sequence[str] = CONLL_LABELS) -> dict[str, torch.Tensor]:
    """``tokenize_conll`` padded into tensors, all (N, T) long; labels padded with IGNORE_INDEX."""
    return pad_batch(tokenize_conll(examples, tokenizer, max_len, label_list), tokenizer.pad_token_id)


def pad_batch(features: Sequence[dict], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Collate per-example features into tensors padded to the longest sequence of the batch.

    Use as ``DataLoader(..., collate_fn=pad_batch)`` (or a ``functools.partial`` for another pad id).

    Args:
        features: dicts of python lists (sequences) or scalars (a per-example label).
        pad_token_id: padding for ``input_ids``; attention_mask and token_type_ids pad with 0,
            sequence ``labels`` with IGNORE_INDEX.

    Returns:
        A dict of tensors: sequences (B, T) long; scalar labels (B,), float if any label is a float.
    """
    if not features:
        raise DataError("pad_batch got an empty batch; check the dataset is not empty.")
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if not isinstance(values[0], (list, tuple)):
            dtype = torch.float if any(isinstance(v, float) for v in values) else torch.long
            batch[key] = torch.tensor(values, dtype=dtype)
            continue
        pad = pad_token_id if key == "input_ids" else _PAD_VALUES.get(key, IGNORE_INDEX)
        width = max(len(v) for v in values)
        batch[key] = torch.tensor([list(v) + [pad] * (width - len(v)) for v in values], dtype=torch.long)
    return batch


def align_predictions(predictions: torch.Tensor, labels: torch.Tensor,
                      label_list: Sequence[str] = CONLL_LABELS) -> tuple[list[list[str]], list[list[str]]]:
    """Undo the word-piece alignment: keep the positions whose label is not IGNORE_INDEX.

    Args:
        predictions: (B, T) predicted tag ids, or (B, T, C) logits.
        labels: (B, T) gold ids from ``encode_conll``.
        label_list: tag names in label-id order.

    Returns:
        (predicted tags, gold tags), one list of tag names per sentence, ready for ``ner_metrics``.
    """
    if predictions.dim() == 3:
        predictions = predictions.argmax(-1)  # (B, T, C) -> (B, T)
    pred_tags, gold_tags = [], []
    for pred, gold in zip(predictions.tolist(), labels.tolist()):
        kept = [(p, g) for p, g in zip(pred, gold) if g != IGNORE_INDEX]
        pred_tags.append([label_list[p] for p, _ in kept])
        gold_tags.append([label_list[g] for _, g in kept])
    return pred_tags, gold_tags
