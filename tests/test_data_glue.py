"""GLUE loading (real SST-2/MRPC/STS-B files, classic formats of the other tasks, the Hub path with a
stand-in for load_dataset), GLUE features and padding."""

import pytest
import torch

from data_helpers import SAMPLES, SHARED_DATA, fake_load_dataset, minilm_tokenizer, needs_shared_data
from gapkit.data import (GLUE_TASKS, Example, check_max_len, encode_glue, load_glue, pad_batch,
                         tokenize_glue)
from gapkit.errors import DataError, GapkitError

# The real SST-2/MRPC/STS-B files (tests marked needs_shared_data: skipped on a fresh clone) and the
# made-up rows in the same formats shipped with the tests (for tests of formats, not contents).
GLUE = SHARED_DATA / "glue"
SAMPLE_GLUE = SAMPLES / "glue"


@needs_shared_data
@pytest.mark.parametrize("task, split, n", [("sst2", "train", 67349), ("sst2", "dev", 872),
                                             ("mrpc", "train", 2576), ("mrpc", "dev", 1500),
                                             ("stsb", "train", 4249), ("stsb", "dev", 1500)])
def test_real_row_counts(task, split, n):
    assert len(load_glue(task, split, GLUE)) == n


@needs_shared_data
def test_sst2_contents():
    train = load_glue("sst2", "train", GLUE)
    assert train[0] == Example("hide new secretions from the parental units", None, 0, "sst2-train-2")
    assert train[3].text_a == "remains utterly satisfied to remain the same throughout" and train[3].label == 0
    assert train[-2].text_a == "a patient viewer" and train[-2].label == 1
    assert train[-1].text_a.startswith("this new jangle of noise")
    assert {e.label for e in train} == {0, 1}
    dev = load_glue("sst2", "dev", GLUE)
    assert dev[0].text_a == "one long string of cliches ." and dev[0].label == 0
    assert dev[-1].text_a.startswith("an effectively creepy") and dev[-1].label == 1


@needs_shared_data
def test_mrpc_label_from_quality_and_quotes_kept():
    train = load_glue("mrpc", "train", GLUE)
    first, second = train[0], train[1]
    assert first.label == 1 and second.label == 0  # Quality column
    # QUOTE_NONE keeps the quotes as text instead of swallowing the tabs between them
    assert first.text_a == ('Amrozi accused his brother, whom he called "the witness", '
                            'of deliberately distorting his evidence.')
    assert first.text_b.startswith('Referring to him as only "the witness"')
    assert train[-1].text_b == "MSNBC.com first reported the CIA request on Friday."
    dev = load_glue("mrpc", "dev", GLUE)
    assert dev[-1].label == 0 and dev[-1].text_a.startswith("The 30-year bond US30YT=RR rose 22/32")


@needs_shared_data
def test_stsb_float_scores():
    train = load_glue("stsb", "train", GLUE)
    assert train[0].text_a == "A plane is taking off." and train[0].text_b == "An air plane is taking off."
    assert train[0].label == 5.0 and isinstance(train[1].label, float) and train[1].label == 3.8
    dev = load_glue("stsb", "dev", GLUE)
    assert dev[0].label == 4.25 and dev[-1].label == 0.0
    assert all(0.0 <= e.label <= 5.0 for e in train + dev)


@needs_shared_data
def test_max_examples_is_a_seeded_ordered_subset():
    full = load_glue("sst2", "dev", GLUE)
    a = load_glue("sst2", "dev", GLUE, max_examples=50, seed=1)
    assert a == load_glue("sst2", "dev", GLUE, max_examples=50, seed=1)
    assert a != load_glue("sst2", "dev", GLUE, max_examples=50, seed=2)
    assert len(a) == 50 and set(e.guid for e in a) <= set(e.guid for e in full)
    assert a == sorted(a, key=lambda e: int(e.guid.rsplit("-", 1)[1]))  # file order kept
    assert len(load_glue("sst2", "dev", GLUE, max_examples=10_000)) == len(full)


def test_task_table():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert [t.folder for t in GLUE_TASKS.values()] == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI",
                                                       "QNLI", "RTE", "WNLI"]
    assert GLUE_TASKS["stsb"].num_labels == 1 and GLUE_TASKS["stsb"].is_regression
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["cola"].num_labels == 2
    assert GLUE_TASKS["mnli"].split_files["dev"] == "dev_matched.tsv"
    assert GLUE_TASKS["mnli"].split_files["dev_mismatched"] == "dev_mismatched.tsv"
    assert GLUE_TASKS["mnli"].hub_splits["dev_mismatched"] == "validation_mismatched"
    assert GLUE_TASKS["cola"].metrics == ("mcc",) and GLUE_TASKS["qqp"].metrics == ("f1", "accuracy")
    assert not GLUE_TASKS["sst2"].is_pair and GLUE_TASKS["rte"].is_pair


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_classic_formats_of_the_other_tasks(tmp_path):
    _write(tmp_path / "CoLA/train.tsv",  # no header: source, label, star, sentence
           ['gj04\t1\t\tOur friends won\'t buy this analysis, let alone "the" next one.',
            "gj04\t0\t*\tOne more pseudo generalization and I'm giving up."])
    _write(tmp_path / "QQP/dev.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                      "1\t2\t3\tHow do I learn?\tHow can I learn?\t1"])
    mnli_header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
                   "label4\tlabel5\tgold_label")
    _write(tmp_path / "MNLI/dev_mismatched.tsv",
           [mnli_header, "0\t1\t2\tletters\t( a )\t( b )\t(A)\t(B)\tThe premise.\tThe hypothesis.\t"
                         "contradiction\tneutral\tcontradiction\tcontradiction\tcontradiction\tcontradiction"])
    _write(tmp_path / "QNLI/dev.tsv", ["index\tquestion\tsentence\tlabel", "0\tWho?\tHim.\tnot_entailment"])
    _write(tmp_path / "RTE/train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tA b.\tA.\tentailment"])
    _write(tmp_path / "WNLI/train.tsv", ["index\tsentence1\tsentence2\tlabel", "0\tX.\tY.\t1"])

    cola = load_glue("cola", "train", tmp_path)
    assert [e.label for e in cola] == [1, 0] and cola[0].text_a.endswith('"the" next one.')
    assert cola[0].text_b is None
    assert load_glue("qqp", "dev", tmp_path) == [Example("How do I learn?", "How can I learn?", 1, "qqp-dev-2")]
    mm = load_glue("mnli", "dev_mismatched", tmp_path)
    assert (mm[0].text_a, mm[0].text_b, mm[0].label) == ("The premise.", "The hypothesis.", 2)
    assert load_glue("qnli", "dev", tmp_path)[0].label == 1
    assert load_glue("rte", "train", tmp_path)[0].label == 0
    assert load_glue("wnli", "train", tmp_path)[0].label == 1  # 1 = entailment


def _broken_copy(tmp_path, folder, split, line_no, edit):
    """Copy a real GLUE file into tmp_path with line `line_no` (1-based) replaced by edit(line)."""
    lines = (GLUE / folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = edit(lines[line_no - 1])
    _write(tmp_path / folder / f"{split}.tsv", lines)
    return tmp_path / folder / f"{split}.tsv"


@needs_shared_data
@pytest.mark.parametrize("folder, task, line_no, edit, what", [
    ("SST-2", "sst2", 5, lambda l: l.replace("\t", " "), "expected 2 tab-separated columns, found 1"),
    ("SST-2", "sst2", 300, lambda l: l.rsplit("\t", 1)[0] + "\t7", "not in the label set"),
    ("MRPC", "mrpc", 41, lambda l: l + "\textra", "expected 5 tab-separated columns, found 6"),
    ("STS-B", "stsb", 1234, lambda l: l.rsplit("\t", 1)[0] + "\thigh", "score is not a number"),
])
def test_malformed_row_names_file_and_line(tmp_path, folder, task, line_no, edit, what):
    path = _broken_copy(tmp_path, folder, "dev", line_no, edit)
    with pytest.raises(DataError) as err:
        load_glue(task, "dev", tmp_path)
    message = str(err.value)
    assert str(path) in message and f"line {line_no}:" in message and what in message


def test_missing_folder_split_file_and_unknown_names(tmp_path):
    with pytest.raises(DataError, match=r"GLUE folder .*RTE does not exist"):
        load_glue("rte", "train", tmp_path)
    (tmp_path / "SST-2").mkdir()
    with pytest.raises(DataError, match=r"expects the file .*SST-2/dev.tsv"):
        load_glue("sst2", "dev", tmp_path)
    with pytest.raises(DataError, match="known tasks are cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"):
        load_glue("imdb", "train", tmp_path)
    with pytest.raises(DataError, match="dev_mismatched"):
        load_glue("mnli", "test", tmp_path)
    # DataError is both gapkit's and Python's: callers may catch either
    assert issubclass(DataError, GapkitError) and issubclass(DataError, ValueError)


@needs_shared_data
def test_task_names_are_forgiving():
    assert len(load_glue("SST-2", "dev", GLUE)) == 872
    assert len(load_glue("STS-B", "dev", GLUE, max_examples=3)) == 3


def test_hub_path_maps_fields_and_splits(monkeypatch):
    calls = fake_load_dataset(monkeypatch, [{"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 7}])
    assert load_glue("mnli", "dev", max_examples=5) == [Example("P.", "H.", 1, "mnli-dev-7")]
    assert calls == [(("nyu-mll/glue", "mnli"), {"split": "validation_matched"})]
    fake_load_dataset(monkeypatch, [{"sentence1": "a", "sentence2": "b", "label": 3, "idx": 0}])
    stsb = load_glue("stsb", "train")
    assert stsb[0].label == 3.0 and isinstance(stsb[0].label, float)


def test_hub_failure_is_one_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"nyu-mll/glue config 'cola' split 'validation'.*data_dir="):
        load_glue("cola", "dev")


def test_encode_glue_with_the_real_tokenizer():
    tok = minilm_tokenizer()
    pairs = load_glue("mrpc", "dev", SAMPLE_GLUE, max_examples=8)
    enc = encode_glue(pairs, tok, max_len=32)
    assert set(enc) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert enc["input_ids"].shape == (8, 32) and enc["labels"].dtype == torch.long
    assert (enc["input_ids"][:, 0] == tok.cls_token_id).all()
    assert (enc["token_type_ids"].sum(1) > 0).all()  # every pair has a B segment
    assert enc["labels"].tolist() == [e.label for e in pairs]

    stsb = encode_glue(load_glue("stsb", "dev", SAMPLE_GLUE, max_examples=4), tok, max_len=128)
    assert stsb["labels"].dtype == torch.float
    assert stsb["input_ids"].shape[1] < 128  # padded to the longest, not to max_len
    single = encode_glue(load_glue("sst2", "dev", SAMPLE_GLUE, max_examples=4), tok)
    assert single["token_type_ids"].sum() == 0
    n_real = single["attention_mask"].sum(1)
    assert all(single["input_ids"][i, n - 1] == tok.sep_token_id for i, n in enumerate(n_real.tolist()))


def test_pad_batch_pads_to_the_batch_longest():
    feats = tokenize_glue(load_glue("sst2", "dev", SAMPLE_GLUE, max_examples=6), minilm_tokenizer())
    batch = pad_batch(feats[:2])
    longest = max(len(f["input_ids"]) for f in feats[:2])
    assert batch["input_ids"].shape == (2, longest)
    short = min(range(2), key=lambda i: len(feats[i]["input_ids"]))
    n = len(feats[short]["input_ids"])
    assert batch["attention_mask"][short].tolist() == [1] * n + [0] * (longest - n)
    assert batch["input_ids"][short, n:].eq(0).all()
    with pytest.raises(DataError, match="mix of single sentences and sentence pairs"):
        tokenize_glue([Example("a", None, 0, "x"), Example("a", "b", 0, "y")], minilm_tokenizer())


def test_check_max_len():
    check_max_len(128, 512, "configs/x.yaml")
    with pytest.raises(DataError, match=r"max_len 600 in configs/x.yaml .* 512 position embeddings"):
        check_max_len(600, 512, "configs/x.yaml")
    with pytest.raises(DataError):
        check_max_len(0, 512, "here")
