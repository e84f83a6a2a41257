"""Inspecting experts: ``inspect_tokens`` against the student's own eval-mode routing (and the gates
recomputed by hand), on a gapkit folder, a released-layout checkpoint and a real run folder; ``gapkit
inspect`` (table, --json, every bad input as one sentence and exit 2); the notebook views with and
without ipywidgets; and notebooks/03_expert_load_balance.ipynb executed in static mode."""

import json
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gapkit.analysis import (ExpertExplorer, IdTokenizer, inspect_tokens, load_for_inspection,  # noqa: E402
                             sentence_routing, token_expert_table)
from gapkit.cli import main  # noqa: E402
from gapkit.errors import DataError, ModelError  # noqa: E402
from gapkit.models import Student, spec_from_name  # noqa: E402
from gapkit.models.student import Router  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_expert_load_balance.ipynb"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the cat sat on a mat and dog ran far away ##s".split()
VOCAB = 64
SENTENCES = ["the cat sat on a mat", "dogs ran far away", "a cat"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import BertTokenizer

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(WORDS + [f"w{i}" for i in range(len(WORDS), VOCAB)]))
    return BertTokenizer(str(vocab))


def tiny(name: str, **fields) -> Student:
    """A tiny student of a shape name; random init whose gates are spread out enough that tokens of
    one sentence go to several experts."""
    torch.manual_seed(0)
    student = Student(spec_from_name(name, vocab_size=VOCAB, max_positions=16, **fields))
    for module in student.modules():
        if isinstance(module, Router) and module.mode == "learned":
            torch.nn.init.normal_(module.weight, 0, 3.0)
    return student


def saved(student: Student, folder: Path, tokenizer=None) -> Path:
    student.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def reference_rows(student: Student, tokenizer, sentences) -> dict:
    """(sentence, position, layer, block) -> (expert, gate prob) from the student's own forward pass in
    eval mode, one sentence at a time."""
    was_training = student.training
    student.eval()
    rows = {}
    with torch.no_grad():
        for i, text in enumerate(sentences):
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            for layer, block, routing in student(ids).routing.blocks():
                for pos in range(ids.shape[1]):
                    rows[i, pos, layer, block] = (int(routing.expert[0, pos]), float(routing.prob[0, pos]))
    student.train(was_training)
    return rows


def inspected_rows(frame) -> dict:
    return {(r.sentence, r.position, r.layer, r.block): (r.expert, r.gate_prob) for r in frame.itertuples()}


# ----------------------------------------------------------------------------------------------------
# The numbers
# ----------------------------------------------------------------------------------------------------
def test_shape_names_with_attention_and_ffn_experts():
    spec = spec_from_name("2L-48H-6A-2,4E")
    assert (spec.attn_experts, spec.ffn_experts, spec.heads, spec.experts) == (2, 4, 6, "2,4E")
    assert spec.name == "2L-48H-2,4E"  # heads are not part of the display name


@pytest.mark.parametrize("name", ["2L-48H-6A-2,4E", "2L-48H-6A-1,4E", "2L-48H-6A-3,1E"])
def test_inspected_experts_are_the_students_own_eval_routing(tokenizer, name):
    student = tiny(name, gate_noise=5.0).train()  # in training this noise would reroute most tokens
    frame = inspect_tokens(student, tokenizer, SENTENCES)
    assert student.training  # the caller's mode is given back
    assert list(frame.columns) == ["sentence", "position", "token", "token_id", "layer", "block", "expert",
                                   "gate_prob", "mode"]
    spec = student.spec
    blocks = {b for b, n in (("attn", spec.attn_experts), ("ffn", spec.ffn_experts)) if n > 1}
    n_tokens = sum(len(tokenizer(s)["input_ids"]) for s in SENTENCES)
    assert set(frame.block) == blocks and len(frame) == n_tokens * spec.layers * len(blocks)
    got, want = inspected_rows(frame), reference_rows(student, tokenizer, SENTENCES)
    assert got.keys() == want.keys()
    assert all(got[k][0] == want[k][0] and got[k][1] == pytest.approx(want[k][1], abs=1e-6) for k in want)
    assert frame.expert.nunique() > 1 and (frame["mode"] == "learned").all()
    # tokens are the tokenizer's, in order
    first = frame[(frame.sentence == 0) & (frame.layer == 0) & (frame.block == sorted(blocks)[0])]
    assert list(first.token) == ["[CLS]", "the", "cat", "sat", "on", "a", "mat", "[SEP]"]


def test_inspected_gate_probabilities_are_the_gates_recomputed_by_hand(tokenizer):
    """Independent of StudentOutput.routing: each router's input, captured by a hook, through its own
    Linear and a softmax; the argmax and its probability, with no noise."""
    student = tiny("2L-48H-6A-2,4E", gate_noise=5.0).train()
    captured = {}
    hooks = [layer_module.register_forward_hook(
        lambda mod, args, out, key=(i, name): captured.setdefault(key, []).append(args[0].detach()))
        for i, layer in enumerate(student.encoder.layer)
        for name, layer_module in (("attn", layer.attn_gate), ("ffn", layer.ffn_gate))]
    try:
        frame = inspect_tokens(student, tokenizer, SENTENCES)
    finally:
        for h in hooks:
            h.remove()
    for (layer, block), inputs in captured.items():
        router = getattr(student.encoder.layer[layer], f"{block}_gate")
        for sentence, x in enumerate(inputs):  # (T, H) per sentence
            probs = F.softmax(x @ router.weight.T + router.bias, -1)  # (T, E)
            rows = frame[(frame.sentence == sentence) & (frame.layer == layer) & (frame.block == block)]
            assert list(rows.expert) == probs.argmax(-1).tolist()
            assert list(rows.gate_prob) == pytest.approx(probs.max(-1).values.tolist(), abs=1e-6)


def test_a_released_layout_checkpoint_inspects_as_the_student_it_was_saved_from(tokenizer, tmp_path):
    student = tiny("2L-48H-6A-2,4E")
    folder = saved(student, tmp_path / "released", tokenizer)
    (folder / "gapkit_spec.json").unlink()  # the authors' folders have no gapkit spec
    config = json.loads((folder / "config.json").read_text())
    assert config["moe"] == "2,4" and config["num_attention_heads"] == 12  # the authors' layout (6 heads x 2)
    inspection = load_for_inspection(folder)
    assert inspection.tokenizer_source.startswith("saved beside the weights")
    frame = inspect_tokens(inspection.student, inspection.tokenizer, SENTENCES)
    got, want = inspected_rows(frame), reference_rows(student, tokenizer, SENTENCES)
    assert got.keys() == want.keys()
    assert all(got[k][0] == want[k][0] and got[k][1] == pytest.approx(want[k][1], abs=1e-6) for k in want)


def test_hash_and_random_routing_show_probability_one_and_say_the_mode(tokenizer, tmp_path, capsys):
    hashed = tiny("2L-48H-6A-1,3E", routing="hash")
    frame = inspect_tokens(hashed, tokenizer, SENTENCES)
    assert (frame.expert == frame.token_id % 3).all() and (frame.gate_prob == 1.0).all()
    assert set(frame["mode"]) == {"hash"}
    randomly = tiny("2L-48H-6A-1,3E", routing="random")
    first, again = inspect_tokens(randomly, tokenizer, SENTENCES), inspect_tokens(randomly, tokenizer, SENTENCES)
    assert first.equals(again) and (first.gate_prob == 1.0).all() and set(first["mode"]) == {"random"}
    assert not first.equals(inspect_tokens(randomly, tokenizer, SENTENCES, seed=1))  # the seed is the draw
    for student, words in ((hashed, "hash routing (an ablation): expert = token id mod"),
                           (randomly, "random routing (an ablation): each token's expert is drawn uniformly")):
        folder = saved(student, tmp_path / student.spec.routing, tokenizer)
        assert main(["inspect", str(folder), "a cat"]) == 0
        out = capsys.readouterr().out
        assert words in out and " 1.00" in out


def test_sentence_routing_is_a_routing_table_of_the_sentences(tokenizer):
    student = tiny("2L-48H-6A-1,4E")
    table = sentence_routing(student, tokenizer, SENTENCES)
    assert set(table.split) == {"sentences"} and set(table.step) == {0}
    frame = inspect_tokens(student, tokenizer, SENTENCES)
    for (layer, block), rows in table.groupby(["layer", "block"]):
        counts = frame[(frame.layer == layer) & (frame.block == block)].expert.value_counts(normalize=True)
        assert dict(zip(rows.expert, rows.token_fraction)) == pytest.approx(
            {e: counts.get(e, 0.0) for e in range(4)})


# ----------------------------------------------------------------------------------------------------
# gapkit inspect
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def student_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("inspect") / "student"
    return saved(tiny("2L-48H-6A-2,4E"), folder, tokenizer)


def test_gapkit_inspect_prints_one_aligned_table_per_sentence(student_dir, tokenizer, capsys):
    assert main(["inspect", str(student_dir), *SENTENCES[:2]]) == 0
    out = capsys.readouterr().out
    assert "routing: learned gate, eval mode (no gate noise)" in out and "2 attention experts and 4 FFN experts" in out
    inspection = load_for_inspection(student_dir)
    grid = token_expert_table(inspect_tokens(inspection.student, inspection.tokenizer, SENTENCES[:2]))
    blocks = ["L0.attn", "L0.ffn", "L1.attn", "L1.ffn"]
    for sentence in (0, 1):
        section = out.split(f"sentence {sentence + 1}:\n")[1].split("\n\n")[0].splitlines()
        assert section[0].split() == ["pos", "token", "id", *blocks]
        rows = grid[grid.sentence == sentence]
        assert len(section) == 2 + len(rows)
        for line, row in zip(section[2:], rows.itertuples()):
            cells = [getattr(row, "_" + str(i)) for i in range(5, 9)]  # the L.block columns
            assert line.split() == [str(row.position), row.token, str(row.token_id), *" ".join(cells).split()]
        widths = {len(line) for line in section[:1] + section[2:]}
        assert len({line.index("L0.ffn") for line in section[:1]}) == 1 and max(widths) < 80


def test_gapkit_inspect_json_rows_are_the_library_rows(student_dir, capsys):
    assert main(["inspect", str(student_dir), "the cat", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    inspection = load_for_inspection(student_dir)
    assert rows == inspect_tokens(inspection.student, inspection.tokenizer, "the cat").to_dict("records")
    assert rows[0] == dict(rows[0], sentence=0, position=0, token="[CLS]", layer=0, block="attn", mode="learned")


def test_a_sentence_longer_than_the_positions_is_truncated_with_a_warning(student_dir, capsys):
    long = " ".join(["the cat sat"] * 8)
    assert main(["inspect", str(student_dir), long, "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == ("gapkit: warning: Sentence 1 has 26 tokens, more than the student's 16 positions: "
                                    "only its first 16 are inspected.")
    rows = json.loads(captured.out)
    assert max(r["position"] for r in rows) == 15 and rows[-1]["token"] == "[SEP]"


def bad_cases():
    """(name, make(tmp, student_dir, tokenizer) -> argv after 'inspect', message pattern)."""
    def dense(tmp, student_dir, tok):
        return [str(saved(tiny("2L-48H-6A"), tmp / "dense", tok)), "a cat"]

    def no_tokenizer(tmp, student_dir, tok):
        return [str(saved(tiny("2L-48H-6A-1,4E"), tmp / "bare")), "a cat"]

    def big_tokenizer(tmp, student_dir, tok):
        from transformers import BertTokenizer

        (tmp / "big.txt").write_text("\n".join(WORDS + [f"w{i}" for i in range(len(WORDS), 200)]))
        BertTokenizer(str(tmp / "big.txt")).save_pretrained(tmp / "big")
        return [str(student_dir), "a cat", "--tokenizer", str(tmp / "big")]

    def not_a_student(tmp, student_dir, tok):
        (tmp / "empty").mkdir()
        return [str(tmp / "empty"), "a cat"]

    def a_file(tmp, student_dir, tok):
        (tmp / "notes.txt").write_text("hello")
        return [str(tmp / "notes.txt"), "a cat"]

    def run_without_weights(tmp, student_dir, tok):
        (tmp / "run").mkdir()
        (tmp / "run" / "config.json").write_text(json.dumps({"stage": "finetune", "student": "2L-48H-6A-1,4E"}))
        return [str(tmp / "run"), "a cat"]

    return [
        ("missing folder", lambda tmp, s, t: [str(tmp / "nope"), "a cat"], r"Cannot inspect .*nope: folder .*nope does "
                                                                            r"not exist; give a run folder, a saved"),
        ("a file", a_file, r"notes\.txt: it is a file; give a run folder"),
        ("not a student", not_a_student, r"empty has no config\.json \(found: nothing\); expected a Hugging Face BERT"),
        ("run without weights", run_without_weights, r"Run .*run has no best/ weights yet and it has not finished"),
        ("dense student", dense, r"dense is a dense student \(2L-48H, one expert per block\): it has no routing"),
        ("no tokenizer", no_tokenizer, r"No tokenizer for .*bare: none is saved in .*bare; pass --tokenizer NAME_OR"),
        ("tokenizer of another student", big_tokenizer, r"has 200 ids but the student only 64: it is not this"),
        ("unknown tokenizer", lambda tmp, s, t: [str(s), "a", "--tokenizer", str(tmp / "no-tok")],
         r"Cannot load the tokenizer .*no-tok.*: not a tokenizer folder"),
        ("empty sentence", lambda tmp, s, t: [str(s), "the cat", ""], r"Sentence 2 is empty: give some text"),
        ("blank sentence", lambda tmp, s, t: [str(s), "   "], r"Sentence 1 is empty: give some text"),
        ("no sentence", lambda tmp, s, t: [str(s)], r"the following arguments are required: SENTENCE"),
        ("words for token ids", lambda tmp, s, t: [str(s), "a cat", "--tokenizer", "ids"],
         r"Sentence 'a cat' holds 'a', which is not a token id"),
        ("token id beyond the vocabulary", lambda tmp, s, t: [str(s), "5 64", "--tokenizer", "ids"],
         r"holds token id 64, outside the student's vocabulary \(ids 0 to 63\)"),
    ]


@pytest.mark.parametrize("name, make, message", bad_cases(), ids=[c[0] for c in bad_cases()])
def test_gapkit_inspect_refuses_bad_input_with_one_sentence(name, make, message, tmp_path, student_dir, tokenizer,
                                                            capsys):
    argv = make(tmp_path, student_dir, tokenizer)
    assert main(["inspect", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gapkit: error: "), captured.err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert captured.out == ""


def test_the_library_raises_the_same_sentences(tokenizer):
    with pytest.raises(ModelError, match="is dense"):
        inspect_tokens(tiny("2L-48H-6A"), tokenizer, "a cat")
    with pytest.raises(DataError, match="No sentence to inspect"):
        inspect_tokens(tiny("2L-48H-6A-1,4E"), tokenizer, [])


# ----------------------------------------------------------------------------------------------------
# A real run folder
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny MiniMoE run (attention and FFN experts) on the synthetic task: 4 steps, routing every step."""
    from gapkit.distill import DistillSpec, run

    out = tmp_path_factory.mktemp("inspect-run") / "minimoe"
    spec = DistillSpec(
        stage="finetune", student="2L-24H-6A-2,4E", output_dir=str(out),
        data=dict(task="synthetic", max_len=32, max_train_examples=64, max_eval_examples=32),
        train=dict(lr=3e-3, max_steps=4, batch_size=16, eval_every=2, log_every=1, routing_every=1, device="cpu"),
        weights=dict(relation=0, hard=1.0))
    run(spec, progress=False)
    return out


def test_a_run_folder_is_inspected_with_its_best_weights_and_task_ids(run_dir, capsys):
    inspection = load_for_inspection(run_dir)
    assert inspection.weights == run_dir / "best" and inspection.notes == []
    assert isinstance(inspection.tokenizer, IdTokenizer) and "synthetic task" in inspection.tokenizer_source
    assert main(["inspect", str(run_dir), "5 9 12 7", "[CLS] 30 41 [SEP]"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:3] for line in out.split("sentence 2:\n")[1].splitlines()[2:]]
    assert rows == [["0", "[CLS]", "1"], ["1", "#30", "30"], ["2", "#41", "41"], ["3", "[SEP]", "2"]]
    assert inspection_matches_forward(inspection, ["5 9 12 7"])


def inspection_matches_forward(inspection, sentences) -> bool:
    frame = inspect_tokens(inspection.student, inspection.tokenizer, sentences)
    want = reference_rows(inspection.student, inspection.tokenizer, sentences)
    got = inspected_rows(frame)
    return got.keys() == want.keys() and all(got[k][0] == want[k][0] for k in want)


def test_a_finished_run_without_best_falls_back_to_its_final_weights_and_says_so(run_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    copy = tmp_path / "no-best"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "best")
    inspection = load_for_inspection(copy)
    assert inspection.notes == ["the run finished without best/ (it never evaluated): these are its final weights, "
                                "from checkpoint/"]
    final = load_file(str(copy / "checkpoint" / "model.safetensors"))
    state = inspection.student.state_dict()
    assert all(torch.equal(state[k], final["model." + k]) for k in state)
    assert inspection_matches_forward(inspection, ["5 9 12 7"])
    assert main(["inspect", str(copy), "5 9"]) == 0
    assert "note: the run finished without best/" in capsys.readouterr().out
    (copy / "result.json").unlink()  # an unfinished run without best/ has nothing to show
    with pytest.raises(ModelError, match="has no best/ weights yet and it has not finished"):
        load_for_inspection(copy)


# ----------------------------------------------------------------------------------------------------
# The notebook's views, and the notebook
# ----------------------------------------------------------------------------------------------------
def test_the_views_render_statically_without_ipywidgets(run_dir, monkeypatch, capsys):
    import matplotlib.pyplot as plt

    explorer = ExpertExplorer(run_dir)
    assert (explorer.layers, explorer.blocks, explorer.splits) == ([0, 1], ["attn", "ffn"], ["dev", "train"])
    assert explorer.steps("train") == [1, 2, 3, 4] and explorer.steps() == [2, 4]
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    explorer.show("5 9 12 7", layer=0, block="attn", interactive=True)
    out = capsys.readouterr().out
    assert out.startswith("ipywidgets is not installed: showing the views statically")
    for title in ("Token share per expert, step 4 on dev:", "Load balance and gate entropy over training:",
                  "Tokens each expert of layer 0 (attention block) receives most, step 4 on dev:", "L1.ffn"):
        assert title in out
    assert plt.get_fignums() == []  # every figure shown once and closed


def test_the_widget_follows_its_controls_and_says_what_is_wrong(run_dir, tokenizer, student_dir, capsys):
    pytest.importorskip("ipywidgets")
    explorer = ExpertExplorer(run_dir)
    box = explorer.widget("5 9", 1, "ffn", 4, "dev")
    controls = {getattr(c, "description", ""): c for c in box.children}
    assert controls["step"].options == (2, 4) and controls["block"].value == "ffn"
    controls["split"].value = "train"
    assert controls["step"].options == (1, 2, 3, 4) and controls["step"].value == 4
    capsys.readouterr()
    controls["sentence"].value = "five"
    assert "holds 'five', which is not a token id" in capsys.readouterr().out
    # a released checkpoint has no training record: shares and top tokens come from the sentence
    released = ExpertExplorer(student_dir)
    assert released.balance_figure() is None and "training record: none" in released.describe()
    fig = released.share_figure(sentences="the cat sat")
    assert "over the sentences typed" in fig._suptitle.get_text()


def test_notebook_03_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1 and "interactive = True" in "".join(params[0]["source"])


@pytest.mark.slow  # the default run executes notebook 03 on the quickstart's run (tests/test_notebooks.py)
def test_notebook_03_runs_statically_on_a_run_folder(run_dir, tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "03.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
                               parameters=dict(student=str(run_dir), sentence="5 9 12 7", interactive=False))
    import nbformat

    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for expected in ("routing: learned gate, eval mode (no gate noise)", "training record:",
                     "Token share per expert, step 4 on dev:", "Load balance and gate entropy over training:",
                     "Tokens each expert of layer 1 (FFN block) receives most, step 4 on dev:"):
        assert expected in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
    tables = [o.data["text/plain"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("L0.attn" in t and "#12" in t for t in tables)
