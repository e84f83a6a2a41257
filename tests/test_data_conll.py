"""CoNLL-2003 loading (the real files, the classic 4-column format, errors, the Hub path with a stand-in
for load_dataset) and word-piece label alignment with the real tokenizer."""

import pytest
import torch

from data_helpers import SAMPLES, fake_load_dataset, minilm_tokenizer, shared_data
from gapkit.data import (CONLL_LABELS, IGNORE_INDEX, NerExample, align_predictions, encode_conll,
                         load_conll, ner_metrics, tokenize_conll)
from gapkit.errors import DataError

# Made-up sentences in the same format, shipped with the tests (for tests of formats, not contents).
SAMPLE_CONLL = SAMPLES / "conll2003"


@pytest.fixture(scope="module")
def conll():
    """The real CoNLL-2003 folder; skips the test on a fresh clone (fails it under CI) without it."""
    return shared_data("conll2003")


@pytest.fixture(scope="module")
def train(conll):
    return load_conll("train", conll)


@pytest.fixture(scope="module")
def sample_train():
    return load_conll("train", SAMPLE_CONLL)


def test_label_order():
    assert CONLL_LABELS == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@pytest.mark.parametrize("split, n", [("dev", 3250), ("test", 3453)])
def test_sentence_counts(conll, split, n):
    assert len(load_conll(split, conll)) == n


def test_train_contents(train):
    assert len(train) == 14041
    assert train[0] == NerExample(["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
                                  ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"])
    assert train[1] == NerExample(["Peter", "Blackburn"], ["B-PER", "I-PER"])
    assert train[-1] == NerExample(["Swansea", "1", "Lincoln", "2"], ["B-ORG", "O", "B-ORG", "O"])
    assert sum(len(s.tokens) for s in train) == 203621
    assert {t for s in train for t in s.tags} == set(CONLL_LABELS)


def test_classic_four_column_format(tmp_path):
    path = tmp_path / "valid.txt"
    # the original release's layout: -DOCSTART-, space-separated, POS and chunk before the tag,
    # and no blank line at the end of the file
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER", encoding="utf-8")
    assert load_conll("dev", tmp_path) == [NerExample(["EU", "rejects"], ["B-ORG", "O"]),
                                           NerExample(["Peter", "Blackburn"], ["B-PER", "I-PER"])]


@pytest.mark.parametrize("bad_line, what", [("Blackburn", "found one field"),
                                            ("Blackburn\tB-PERSON", "tag 'B-PERSON' is not one of")])
def test_bad_line_names_file_and_line(tmp_path, conll, bad_line, what):
    lines = (conll / "test.txt").read_text(encoding="utf-8").splitlines()
    lines[99] = bad_line
    (tmp_path / "test.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_conll("test", tmp_path)
    assert str(tmp_path / "test.txt") in str(err.value) and "line 100:" in str(err.value)
    assert what in str(err.value)


def test_missing_file_and_unknown_split(tmp_path):
    with pytest.raises(DataError, match=r"CoNLL file .*valid.txt does not exist"):
        load_conll("dev", tmp_path)
    with pytest.raises(DataError, match="use one of train, dev, test"):
        load_conll("validation", SAMPLE_CONLL)


def test_max_examples(conll, train):
    some = load_conll("train", conll, max_examples=100, seed=3)
    assert len(some) == 100 and some == load_conll("train", conll, max_examples=100, seed=3)
    assert all(s in train for s in some[:5])


def test_hub_path_maps_tag_ids_to_names(monkeypatch):
    calls = fake_load_dataset(monkeypatch, [{"tokens": ["EU", "rejects"], "ner_tags": [3, 0]}])
    assert load_conll("dev") == [NerExample(["EU", "rejects"], ["B-ORG", "O"])]
    assert calls == [(("eriktks/conll2003",), {"split": "validation"})]


def test_labels_on_first_word_piece_only(sample_train):
    tok = minilm_tokenizer()
    # the first sentences whose entity words split into several pieces
    sents = [s for s in sample_train[:200]
             if any(t != "O" and len(tok.tokenize(w)) > 1 for w, t in zip(s.tokens, s.tags))][:4]
    assert len(sents) == 4
    feats = tokenize_conll(sents, tok, max_len=128)
    for sent, feat in zip(sents, feats):
        enc = tok(sent.tokens, is_split_into_words=True)
        word_ids = enc.word_ids()
        assert feat["input_ids"] == enc["input_ids"]
        for pos, word in enumerate(word_ids):
            first = word is not None and (pos == 0 or word_ids[pos - 1] != word)
            expected = CONLL_LABELS.index(sent.tags[word]) if first else IGNORE_INDEX
            assert feat["labels"][pos] == expected
        assert sum(label != IGNORE_INDEX for label in feat["labels"]) == len(sent.tokens)
        assert feat["labels"][0] == feat["labels"][-1] == IGNORE_INDEX  # [CLS], [SEP]


def test_encode_conll_round_trip_and_truncation(sample_train):
    tok = minilm_tokenizer()
    sents = sample_train[:16]
    enc = encode_conll(sents, tok, max_len=128)
    assert enc["labels"].shape == enc["input_ids"].shape
    assert (enc["labels"][enc["attention_mask"] == 0] == IGNORE_INDEX).all()
    pred, gold = align_predictions(enc["labels"].clamp(min=0), enc["labels"])
    assert gold == [s.tags for s in sents] and pred == gold
    assert ner_metrics(pred, gold)["f1"] == 100.0

    logits = torch.nn.functional.one_hot(enc["labels"].clamp(min=0), len(CONLL_LABELS)).float()
    assert align_predictions(logits, enc["labels"])[0] == gold  # (B, T, C) logits work too

    short = encode_conll([sample_train[0]], tok, max_len=6)  # [CLS] + 4 pieces + [SEP]
    assert short["input_ids"].shape == (1, 6)
    assert align_predictions(short["labels"], short["labels"])[1] == [sample_train[0].tags[:4]]


def test_unknown_tag_in_features():
    with pytest.raises(DataError, match="not in label_list"):
        tokenize_conll([NerExample(["Paris"], ["B-CITY"])], minilm_tokenizer())
