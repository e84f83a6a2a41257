"""Raw text for task-agnostic distillation (local files, Hub layouts with a stand-in for load_dataset,
segment-pair packing, TextCorpus) and the built-in synthetic task."""

import collections

import numpy as np
import pytest
from torch.utils.data import DataLoader

from data_helpers import fake_load_dataset, minilm_tokenizer, shared_data
from gapkit.data import (SyntheticTask, TextCorpus, iter_text, load_conll, pack_segment_pairs, pad_batch,
                         split_sentences)
from gapkit.data.text import lines_to_documents
from gapkit.errors import DataError

CLS, SEP = 101, 102


class WordTokenizer:
    """One id per whitespace word (ids = 1000 + word number): lets tests check packing exactly."""

    cls_token_id, sep_token_id = CLS, SEP

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[1000 + int(w) for w in t.split()] for t in texts]}


def _docs_file(tmp_path, docs, name="corpus.txt"):
    path = tmp_path / name
    path.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return path


def test_local_sentence_and_document_modes(tmp_path):
    path = _docs_file(tmp_path, [["One.", "Two."], ["Three."]])
    assert list(iter_text(path)) == [["One.", "Two."], ["Three."]]
    lines = tmp_path / "docs.txt"
    lines.write_text("First sentence. Second one!\nOther doc here.\n", encoding="utf-8")
    assert list(iter_text(lines, line_mode="document")) == [["First sentence.", "Second one!"],
                                                            ["Other doc here."]]


def test_folder_max_docs_and_errors(tmp_path):
    _docs_file(tmp_path, [["b1"]], "b.txt")
    _docs_file(tmp_path, [["a1", "a2"]], "a.txt")  # no blank line between files: a file end ends a document
    assert list(iter_text(tmp_path)) == [["a1", "a2"], ["b1"]]
    assert list(iter_text(tmp_path, max_docs=1)) == [["a1", "a2"]]
    with pytest.raises(DataError, match="does not exist"):
        iter_text(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no .txt files"):
        iter_text(tmp_path / "empty")
    with pytest.raises(DataError, match="line_mode"):
        iter_text(tmp_path, line_mode="paragraph")


def test_split_sentences_and_wikitext_layout():
    assert split_sentences("It rained. Then it stopped!\nA new paragraph?") == [
        "It rained.", "Then it stopped!", "A new paragraph?"]
    rows = [" = Valkyria Chronicles III = \n", "", " Senjō no Valkyria 3 is a game. It was made in Japan. \n",
            " = = Gameplay = = \n", " The player fights. \n", " = Tower Building = \n", " A tower. \n"]
    assert list(lines_to_documents(rows, "wikitext")) == [
        ["Senjō no Valkyria 3 is a game.", "It was made in Japan.", "The player fights."], ["A tower."]]


def test_hub_sources_use_presets_and_streaming(monkeypatch):
    calls = fake_load_dataset(monkeypatch, [{"text": "Para one. Two.\nPara two."}, {"text": "Doc two."}])
    assert list(iter_text("wikipedia")) == [["Para one.", "Two.", "Para two."], ["Doc two."]]
    assert calls[-1] == (("wikimedia/wikipedia", "20231101.en"), {"split": "train", "streaming": True})
    fake_load_dataset(monkeypatch, [{"text": " = T = "}, {"text": " A b. "}])
    assert list(iter_text("wikitext", config="wikitext-2-raw-v1")) == [["A b."]]
    calls = fake_load_dataset(monkeypatch, [{"sentence": "one"}, {"sentence": "two"}])
    assert list(iter_text("bookcorpus", text_field="sentence")) == [["one", "two"]]
    assert calls[-1][0] == ("bookcorpus/bookcorpus", None)


def test_packing_is_exact_and_consecutive():
    # 3-word sentences, budget 128 - 3 = 125 tokens: a chunk closes at 42 sentences (126 tokens)
    doc = [f"{3 * i} {3 * i + 1} {3 * i + 2}" for i in range(200)]
    feats = list(pack_segment_pairs([doc], WordTokenizer(), max_len=128, seed=0, short_seq_prob=0.0))
    stream = []
    for f in feats:
        ids, types = f["input_ids"], f["token_type_ids"]
        assert len(ids) <= 128 and ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
        first_sep = ids.index(SEP)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert f["attention_mask"] == [1] * len(ids)
        stream += [t for t in ids if t not in (CLS, SEP)]
    # the pairs tile the document in order, consecutive sentences only; each full chunk lost exactly
    # one token to trimming, the last (the document's end) none
    assert len(feats) == 5 and all(len(f["input_ids"]) == 128 for f in feats[:-1])
    assert stream == sorted(stream) and set(stream) <= set(range(1000, 1600))
    assert len(stream) == 600 - 4


def test_packing_real_text_with_the_real_tokenizer():
    tok = minilm_tokenizer()
    sents = [" ".join(s.tokens) for s in load_conll("dev", shared_data("conll2003"), max_examples=400)]
    docs = [sents[i:i + 20] for i in range(0, len(sents), 20)] + [["A lone sentence ."]]
    feats = list(pack_segment_pairs(docs, tok, max_len=64, seed=1))
    assert feats == list(pack_segment_pairs(docs, tok, max_len=64, seed=1))  # seeded
    lengths = [len(f["input_ids"]) for f in feats]
    assert max(lengths) <= 64 and len(set(lengths)) > 5  # short_seq_prob makes some shorter
    for f in feats:
        ids, types = f["input_ids"], f["token_type_ids"]
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        n_sep = ids.count(tok.sep_token_id)
        assert n_sep == 2 if 1 in types else n_sep == 1
        assert types == sorted(types) and types[ids.index(tok.sep_token_id)] == 0
    assert tok.decode(feats[-1]["input_ids"]) == "[CLS] a lone sentence. [SEP]"
    assert sum(1 in f["token_type_ids"] for f in feats) > 0.8 * len(feats)


def test_text_corpus_shards_over_workers(tmp_path):
    # one 4-sentence document per line-block; each fits one feature, so features = documents
    docs = [[f"{100 * d + s} {100 * d + s + 50}" for s in range(4)] for d in range(12)]
    path = _docs_file(tmp_path, docs)
    corpus = TextCorpus(path, WordTokenizer(), max_len=64, short_seq_prob=0.0)

    def contents(loader):
        return collections.Counter(tuple(sorted(t for t in row if t not in (0, CLS, SEP)))
                                   for batch in loader for row in batch["input_ids"].tolist())

    single = contents(DataLoader(corpus, batch_size=5, collate_fn=pad_batch))
    assert sum(single.values()) == 12
    assert contents(DataLoader(corpus, batch_size=5, collate_fn=pad_batch, num_workers=2)) == single


# ---- the built-in synthetic task --------------------------------------------------------------

def test_synthetic_is_deterministic_per_seed():
    a, b = SyntheticTask(seed=0), SyntheticTask(seed=0)
    assert a.examples("train") == b.examples("train") and a.examples("dev") == b.examples("dev")
    assert a.examples("train") != SyntheticTask(seed=1).examples("train")
    assert a.examples("dev") != a.examples("train")[: a.n_dev]
    # independent streams: the dev set does not move when the train size changes
    assert SyntheticTask(n_train=100).examples("dev") == a.examples("dev")
    assert list(a.unlabeled(4)) == list(b.unlabeled(4))
    assert [f["input_ids"] for f in a.unlabeled(4)] != [f["input_ids"] for f in a.examples("train")[:4]]


@pytest.mark.parametrize("num_labels", [2, 3, 4])
def test_synthetic_labels_follow_the_rule_and_are_balanced(num_labels):
    task = SyntheticTask(num_labels=num_labels, vocab_size=64, min_len=6, max_len=20)
    train = task.examples("train")
    labels = np.array([f["labels"] for f in train])
    assert all(task.label_of(f["input_ids"]) == f["labels"] for f in train)
    shares = np.bincount(labels, minlength=num_labels) / len(labels)
    assert shares.min() > 0.6 / num_labels and shares.max() < 1.4 / num_labels
    lengths = [len(f["input_ids"]) for f in train]
    assert min(lengths) >= 6 and max(lengths) <= 20 and len(set(lengths)) > 5
    ids = np.concatenate([f["input_ids"][1:-1] for f in train])
    assert ids.min() >= 3 and ids.max() < 64
    # needs context: the group of one fixed token predicts the label far worse than the count rule
    first_group = task.group_of([f["input_ids"][1] for f in train])
    assert (first_group == labels).mean() < 0.75


def test_synthetic_features_and_validation():
    task = SyntheticTask(n_train=64, n_dev=16, max_len=24)
    feats = task.features("dev")
    assert feats["input_ids"].shape[0] == 16 and feats["input_ids"].shape[1] <= 24
    assert (feats["input_ids"][:, 0] == 1).all() and feats["labels"].dtype == feats["input_ids"].dtype
    assert (feats["input_ids"][feats["attention_mask"] == 0] == 0).all()
    with pytest.raises(DataError, match="num_labels must be 2, 3 or 4"):
        SyntheticTask(num_labels=5)
    with pytest.raises(DataError, match="min_len <= max_len"):
        SyntheticTask(min_len=40, max_len=32)
    with pytest.raises(DataError, match="vocab_size 8 is too small"):
        SyntheticTask(vocab_size=8)
    with pytest.raises(DataError, match="splits 'train' and 'dev'"):
        task.examples("test")
