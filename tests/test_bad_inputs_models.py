"""Bad input to the models layer, as data (the pattern of tests/test_bad_inputs.py): model references that
name no model, a student's forward pass on a batch it cannot encode, FLOP counting of something that is not a
model, ``save_pretrained`` of something that is not a student or onto a file, and the two run settings that
used to fail only once data and models were built (an unwritable ``output_dir``, a synthetic vocabulary too
large to train).

Two tables:
- ``CLI``: ``gapkit distill`` on a small base config with one thing broken. Each must exit with status 2,
  print exactly one line ``gapkit: error: ...`` matching the case's pattern, no traceback, and write
  nothing under the test's folder.
- ``API``: Python calls. Each must raise the case's exception class with a one-line message matching its
  pattern, and pass its ``after`` check where it has one (nothing written, a file left as it was).

Placeholders: ``{tmp}`` (the test's folder) and ``{unwritable}`` (a folder this process cannot create
anything in: a read-only folder, or under /sys when the tests run as root, whom permission bits do not stop).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from gapkit.cli import main
from gapkit.errors import ConfigError, ModelError
from config_helpers import fill as _fill
from config_helpers import merge as _merge

BASE = dict(  # a run that would train in a second: every case breaks one thing of it
    stage="finetune", student="2L-32H-4A", output_dir="{tmp}/run",
    data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=16),
    train=dict(lr=1e-3, max_steps=2, batch_size=16, device="cpu"),
    weights=dict(relation=0.0, hard=1.0),
)
TASK_KD = dict(stage="task", weights=dict(relation=0.0, soft=1.0, hard=0.0))  # a stage that loads its teacher


@pytest.fixture
def unwritable(tmp_path) -> str:
    """A folder in which creating anything fails, for this process."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield str(folder)
        folder.chmod(0o755)
        return
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no folder here refuses root a new folder")
    yield "/sys/gapkit-test"


def _files(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its content (None for folders): what a bad input must leave untouched."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def write(rel: str, content: str | bytes = "") -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


# ----------------------------------------------------------------------------------------------------
# The CLI table: gapkit distill
# ----------------------------------------------------------------------------------------------------
def cli(id: str, pattern: str, *extra: str, config: dict | None = None, setup=None):
    return pytest.param(config or {}, list(extra), setup, pattern, id=id)


CLI = [
    # -- output_dir: refused before any data or model is built ---------------------------------------
    cli("output:unwritable", r"output_dir .*/run cannot be written: creating a folder in .* fails \(.+\); choose an "
        r"output_dir you can write to\.$", "--set", "output_dir={unwritable}/run"),
    cli("output:unwritable-nested", r"output_dir .*/a/b/run cannot be written", "--set", "output_dir={unwritable}/a/b/run"),
    # -- the synthetic task's vocabulary, sized before nn.Embedding is asked for it --------------------
    cli("synthetic:vocab-beyond-memory", r"Student '.*' has \d+ billion parameters \(its embedding has a row for each "
        r"of the 1,000,000,000 ids of data\.synthetic\.vocab_size\): training it takes about .* more than the .* of "
        r"memory of this machine; lower data\.synthetic\.vocab_size\.$", "--set", "data.synthetic.vocab_size=1000000000"),
    # -- teachers and pretrained students named by a path: one sentence when the config is read -------
    cli("teacher:relative-path", r"^gapkit: error: teacher '\./no/such/teacher': no such folder; give an existing "
        r"model folder or a Hugging Face Hub name", "--set", "teacher=./no/such/teacher", config=TASK_KD),
    cli("teacher:absolute-path", r"teacher '.*/nope/teacher': no such folder \(the nearest existing folder is .*\)",
        "--set", "teacher={tmp}/nope/teacher", config=TASK_KD),
    cli("teacher:home-path", r"teacher '~/gapkit-no-such-teacher-folder': no such folder",
        "--set", "teacher=~/gapkit-no-such-teacher-folder", config=TASK_KD),
    cli("teacher:not-a-hub-id", r"teacher 'my teacher!': no such folder", "--set", "teacher='my teacher!'",
        config=TASK_KD),
    cli("teacher:nested-path", r"teacher 'models/minilm/l6': no such folder", "--set", "teacher=models/minilm/l6",
        config=TASK_KD),
    cli("teacher:weight-file", r"teacher '.*model\.safetensors' is a safetensors weight file, not a model folder: "
        r"give the folder that holds it", "--set", "teacher={tmp}/t/model.safetensors", config=TASK_KD,
        setup=write("t/model.safetensors", b"\x00")),
    cli("teacher:folder-without-config", r"teacher folder '.*empty' has no config\.json \(it holds notes\.txt\)",
        "--set", "teacher={tmp}/empty", config=TASK_KD, setup=write("empty/notes.txt")),
    cli("student:relative-path", r"student '\./no/such/student': no such folder", "--set", "student=./no/such/student"),
    cli("student:file", r"student '.*weights\.bin' is a file, not a model folder", "--set", "student={tmp}/weights.bin",
        setup=write("weights.bin", b"\x00")),
]


@pytest.mark.parametrize("config, extra, setup, pattern", CLI)
def test_cli_bad_input_is_one_sentence(config, extra, setup, pattern, tmp_path, unwritable, capsys):
    values = {"{tmp}": str(tmp_path), "{unwritable}": unwritable}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_fill(_merge(BASE, config), values)))
    if setup is not None:
        setup(tmp_path)
    before = _files(tmp_path)
    capsys.readouterr()

    status = main(["distill", str(cfg), "--quiet", *_fill(extra, values)])

    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert _files(tmp_path) == before, "a bad input must write nothing (no run folder, no changed file)"


# ----------------------------------------------------------------------------------------------------
# The Python API table
# ----------------------------------------------------------------------------------------------------
def api(id: str, call: Callable[[Path], object], exc: type[Exception], pattern: str, setup=None, after=None):
    return pytest.param(call, exc, pattern, setup, after, id=id)


def _student(**kw):
    from gapkit.models import Student, StudentSpec

    return Student(StudentSpec(**dict(dict(layers=1, hidden=32, heads=4, ffn=64, vocab_size=100), **kw)))


def _forward(input_ids=None, mask=None, **kw):
    return _student()(input_ids, mask, **kw)


def _ids(*rows):
    return torch.tensor(rows)


def _count(model, **kw):
    from gapkit.flops import count_flops

    return count_flops(model, **kw)


def _save(model, folder):
    from gapkit.models import save_pretrained

    return save_pretrained(model, folder)


def _teacher(ref):
    from gapkit.models import Teacher

    return Teacher.from_pretrained(ref)


def _distill(tmp: Path, **over):
    from gapkit.distill import DistillSpec

    return DistillSpec.from_dict(_fill(_merge(BASE, over), {"{tmp}": str(tmp)}))


def _run(tmp: Path, **over):
    from gapkit.distill import run

    return run(_distill(tmp, **over), progress=False)


def nothing_at(rel: str):
    def after(tmp: Path) -> None:
        assert not (tmp / rel).exists(), f"{rel} was written by a call that failed"
    return after


def unchanged(rel: str, content: bytes):
    def after(tmp: Path) -> None:
        assert (tmp / rel).read_bytes() == content, f"{rel} was changed by a call that failed"
    return after


API = [
    # -- a student's forward pass --------------------------------------------------------------------
    api("forward:id-beyond-vocab", lambda t: _forward(_ids([1, 150])), ValueError,
        r"^Token id 150 \(sequence 0, position 1\) is outside the student's vocabulary of 100 ids \(0\.\.99\): encode "
        r"with the tokenizer the student was built for, or build it with a larger vocab_size\.$"),
    api("forward:id-equal-to-vocab", lambda t: _forward(_ids([1, 5], [7, 100])), ValueError,
        r"Token id 100 \(sequence 1, position 1\) is outside the student's vocabulary of 100 ids"),
    api("forward:negative-id", lambda t: _forward(_ids([-3, 5])), ValueError, r"Token id -3 \(sequence 0, position 0\)"),
    api("forward:float-ids", lambda t: _forward(torch.ones(1, 4)), ValueError,
        r"Token ids must be integers \(torch\.long\), got a torch\.float32 tensor"),
    api("forward:no-tokens", lambda t: _forward(torch.zeros(1, 0, dtype=torch.long)), ValueError,
        r"input_ids has shape \(1, 0\): a batch needs at least one sequence of at least one token"),
    api("forward:no-sequences", lambda t: _forward(torch.zeros(0, 4, dtype=torch.long)), ValueError,
        r"input_ids has shape \(0, 4\)"),
    api("forward:no-batch-dimension", lambda t: _forward(torch.tensor([1, 2, 3])), ValueError,
        r"input_ids must have shape \(batch, tokens\), got \(3,\): add the batch dimension with input_ids\[None\]"),
    api("forward:list", lambda t: _forward([[1, 2, 3]]), ValueError,
        r"input_ids must be a \(batch, tokens\) tensor, got list"),
    api("forward:mask-shape", lambda t: _forward(_ids([1, 2, 3]), torch.ones(1, 2)), ValueError,
        r"attention_mask must be a tensor of the input_ids' \(batch, tokens\) shape \(1, 3\), got \(1, 2\)"),
    api("forward:token-type-beyond", lambda t: _forward(_ids([1, 2]), token_type_ids=_ids([0, 2])), ValueError,
        r"Token type id 2 \(sequence 0, position 1\) is outside the student's token types of 2 ids"),
    api("forward:too-long", lambda t: _forward(torch.ones(1, 513, dtype=torch.long)), ValueError,
        r"Sequence length 513 exceeds the student's max_positions \(512\)"),
    api("forward:embeds-width", lambda t: _forward(inputs_embeds=torch.zeros(1, 4, 16)), ValueError,
        r"inputs_embeds must have shape \(batch, tokens, 32\), got \(1, 4, 16\)"),
    api("forward:ids-and-embeds", lambda t: _forward(_ids([1, 2]), inputs_embeds=torch.zeros(1, 2, 32)), ValueError,
        r"Pass exactly one of input_ids and inputs_embeds"),
    # -- FLOP counting -------------------------------------------------------------------------------
    api("flops:string", lambda t: _count("hello"), ModelError,
        r"^count_flops takes a model \(a gapkit Student or a Hugging Face encoder module\), got str 'hello': for a "
        r"preset, shape, folder or Hub name use gapkit\.describe\('hello'\)"),
    api("flops:none", lambda t: _count(None), ModelError, r"count_flops takes a model .*got NoneType None\.$"),
    api("flops:spec", lambda t: _count(_student().spec), ModelError, r"count_flops takes a model .*got StudentSpec"),
    api("flops:not-an-encoder", lambda t: _count(torch.nn.Linear(3, 3)), ModelError,
        r"count_flops takes an encoder whose forward accepts input_ids and attention_mask .* Linear\.forward does not"),
    api("flops:batch-zero", lambda t: _count(_student(), batch=0), ValueError, r"positive integer batch, got 0"),
    api("flops:seq-len-negative", lambda t: _count(_student(), seq_len=-4), ValueError,
        r"positive integer seq_len, got -4"),
    api("flops:analytic-string", lambda t: __import__("gapkit").analytic_count("3L-384H"), ModelError,
        r"The closed-form FLOP count takes a StudentSpec, got str '3L-384H': build one with "
        r"gapkit\.StudentSpec\.from_name"),
    api("flops:analytic-seq-len-zero", lambda t: __import__("gapkit").analytic_count(_student().spec, seq_len=0),
        ValueError, r"positive integer seq_len, got 0"),
    api("flops:describe-seq-len-negative", lambda t: __import__("gapkit").describe("2L-192H", seq_len=-1), ValueError,
        r"positive integer seq_len, got -1"),
    # -- save_pretrained -----------------------------------------------------------------------------
    api("save:onto-a-file", lambda t: _save(_student(), t / "taken"), ModelError,
        r"save_pretrained's folder '.*taken' is a file: give a folder", setup=write("taken", b"mine"),
        after=unchanged("taken", b"mine")),
    api("save:under-a-file", lambda t: _save(_student(), t / "taken" / "student"), ModelError,
        r"save_pretrained cannot create the folder '.*taken/student' \(.+\): choose a folder you can write to",
        setup=write("taken", b"mine"), after=unchanged("taken", b"mine")),
    api("save:method-onto-a-file", lambda t: _student().save_pretrained(t / "taken"), ModelError,
        r"save_pretrained's folder '.*taken' is a file: give a folder", setup=write("taken", b"mine"),
        after=unchanged("taken", b"mine")),
    api("save:not-a-student", lambda t: _save(torch.nn.Linear(3, 3), t / "out"), ModelError,
        r"save_pretrained writes a gapkit Student \(dense or MiniMoE\), got Linear: a Hugging Face model saves "
        r"itself with model\.save_pretrained\(folder\)", after=nothing_at("out")),
    api("save:hf-model", lambda t: _save(__import__("transformers").BertModel(__import__("transformers").BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)), t / "out"),
        ModelError, r"got BertModel: a Hugging Face model saves itself", after=nothing_at("out")),
    # -- references to models that are not there -----------------------------------------------------
    api("load:student-relative-path", lambda t: __import__("gapkit").load_student("./no/such/student"), ModelError,
        r"^Model '\./no/such/student': no such folder; give an existing model folder or a Hugging Face Hub name"),
    api("load:student-under-tmp", lambda t: __import__("gapkit").load_student(str(t / "gone" / "student")), ModelError,
        r"no such folder \(the nearest existing folder is .*\)"),
    api("load:teacher-relative-path", lambda t: _teacher("./no/such/teacher"), ModelError,
        r"^Teacher '\./no/such/teacher': no such folder"),
    api("load:teacher-not-a-hub-id", lambda t: _teacher("not a model!"), ModelError,
        r"Teacher 'not a model!': no such folder"),
    api("load:teacher-folder-without-config", lambda t: _teacher(t / "empty"), ModelError,
        r"Teacher folder '.*empty' has no config\.json \(it holds nothing\)", setup=lambda t: (t / "empty").mkdir()),
    api("load:teacher-weight-file", lambda t: _teacher(t / "model.safetensors"), ModelError,
        r"Teacher '.*model\.safetensors' is a safetensors weight file, not a model folder",
        setup=write("model.safetensors", b"\x00")),
    api("load:hf-model-relative-path", lambda t: __import__("gapkit.models").models.load_hf_model("../no/such/model"),
        ModelError, r"^Model '\.\./no/such/model': no such folder"),
    api("config:teacher-path", lambda t: _distill(t, teacher="./no/such/teacher", **TASK_KD), ModelError,
        r"^teacher '\./no/such/teacher': no such folder"),
    api("config:student-file", lambda t: _distill(t, student="{tmp}/student.safetensors"), ModelError,
        r"^student '.*student\.safetensors' is a safetensors weight file, not a model folder",
        setup=write("student.safetensors", b"\x00")),
    # -- run(): refused before data, models or the run folder ----------------------------------------
    api("run:unwritable-output", lambda t: _run(t, output_dir="/sys/gapkit-test/run") if os.geteuid() == 0 else (
        (t / "ro").mkdir(), (t / "ro").chmod(0o555), _run(t, output_dir="{tmp}/ro/run")), ConfigError,
        r"output_dir .*/run cannot be written", after=nothing_at("ro/run")),
    api("run:synthetic-vocab", lambda t: _run(t, data=dict(synthetic=dict(vocab_size=10**9))), ConfigError,
        r"1,000,000,000 ids of data\.synthetic\.vocab_size", after=nothing_at("run")),
]


@pytest.mark.parametrize("call, exc, pattern, setup, after", API)
def test_api_bad_input_is_one_sentence(call, exc, pattern, setup, after, tmp_path):
    if setup is not None:
        setup(tmp_path)
    with pytest.raises(exc) as info:
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert re.search(pattern, message), message
    if after is not None:
        after(tmp_path)


def test_the_tables_cover_every_class():
    classes = {p.id.split(":")[0] for p in CLI + API}
    assert len(CLI) + len(API) >= 45
    assert {"output", "synthetic", "teacher", "student", "forward", "flops", "save", "load", "config", "run"} <= classes


# ----------------------------------------------------------------------------------------------------
# The other half: what must still be accepted
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ref", ["bert-base-uncased", "google/bert_uncased_L-2_H-128_A-2", "org/name", "t"])
def test_hub_ids_are_left_to_the_hub(ref):
    from gapkit.models.hf_loading import missing_reference

    assert missing_reference(ref) is None


def test_a_later_stage_may_name_a_run_folder_not_written_yet(tmp_path):
    """A pipeline's or sweep's later stage names ``<run>/best`` before that run has written it."""
    spec = _distill(tmp_path, teacher="{tmp}/teacher/best", **TASK_KD)
    assert spec.teacher == str(tmp_path / "teacher" / "best")


def test_the_shipped_pipelines_still_resolve():
    from gapkit.distill.pipeline import PipelineSpec

    root = Path(__file__).resolve().parents[1]
    for name in ("synthetic_chain.yaml", "synthetic_ta_chain.yaml"):
        assert len(PipelineSpec.from_file(root / "configs" / name).resolved()) >= 2


def test_the_writability_check_leaves_nothing_behind(tmp_path):
    spec = _distill(tmp_path, output_dir="{tmp}/a/b/run")
    spec.check_output_writable()
    assert list(tmp_path.iterdir()) == []


def test_the_forward_check_accepts_every_valid_id_and_broadcast_shapes():
    student = _student().eval()
    ids = torch.tensor([[0, 1, 99], [98, 2, 3]])
    out = student(ids, torch.ones(2, 3), token_type_ids=torch.tensor([[0, 1, 1]]),
                  position_ids=torch.arange(3)[None])
    assert out.last_hidden_state.shape == (2, 3, 32)
