"""The command line's light verbs start without torch or transformers (lazy imports, gapkit.lazy), and the
packages' lazy names resolve to the same objects as their modules'."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "matplotlib", "datasets", "scipy", "sklearn")


def _imported_after(args: list[str], cwd: Path) -> tuple[int, set[str]]:
    code = ("import sys; from gapkit.cli import main; status = main(sys.argv[1:]); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else "[]"
    return done.returncode, set(eval(last))


@pytest.fixture(scope="module")
def bad_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "bad.yaml"
    path.write_text("stage: finetune\nstudent: 2L-64H\ntrain: {lr: fast}\n")
    return path


def test_version_help_and_config_errors_import_no_torch(bad_config, tmp_path):
    for args in (["--version"], ["--help"], ["distill", str(bad_config)], ["sweep", str(bad_config)],
                 ["report", str(tmp_path / "nowhere")]):
        status, heavy = _imported_after(args, tmp_path)
        assert heavy == set(), f"gapkit {' '.join(args)} imported {heavy}"


def test_status_and_results_import_no_torch(quickstart_results, tmp_path):
    for verb in ("status", "results"):
        status, heavy = _imported_after([verb, str(quickstart_results.out)], tmp_path)
        assert status == 0 and heavy == set(), f"gapkit {verb} imported {heavy}"


@pytest.mark.parametrize("package", ["gapkit", "gapkit.models", "gapkit.distill", "gapkit.data", "gapkit.sweep",
                                     "gapkit.analysis"])
def test_every_lazy_name_resolves_to_its_modules_object(package):
    module = importlib.import_module(package)
    assert module.__all__ and set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        value = getattr(module, name)
        assert not isinstance(value, type(module)), f"{package}.{name} is a module, not the function it names"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr(module, "nope")


def test_from_import_of_a_lazy_name():
    from gapkit import Student, StudentSpec  # noqa: F401
    from gapkit.analysis import report
    from gapkit.sweep import plan

    assert callable(report) and callable(plan) and Student.__name__ == "Student"


def test_startup_benchmark_dry_run(quickstart_results, capsys):
    from test_benchmarks import load_benchmark

    bench = load_benchmark("cli_startup")
    assert bench.main(["--dry-run", "--sweep", str(quickstart_results.out)]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
    assert [r[0] for r in rows] == ["--version", "--help", "status", "results", "config"]
    assert all("False" in " ".join(r) for r in rows)  # none of them imported torch
