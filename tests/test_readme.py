"""What the README and the packaging promise: the "Using it" snippet runs as written (and its numbers
hold), ``gapkit --version``, the LICENSE that pyproject.toml names."""

import ast
import re
from pathlib import Path

import pytest

import gapkit
from gapkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_python_blocks(section: str) -> list[str]:
    """The fenced ``python`` blocks of the README section whose heading is ``section``."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README.md has no section '## {section}'"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), re.S | re.M)


def test_using_it_snippet_runs_as_written_and_its_numbers_hold(tmp_path, monkeypatch):
    (block,) = readme_python_blocks("Using it")
    monkeypatch.chdir(tmp_path)  # the snippet saves a folder under the current directory
    lines = block.splitlines()
    namespace: dict = {}
    checked = 0
    # One statement at a time, so that a bare expression whose comment starts with a number
    # ("... / 1e9   # 0.679, the paper's x-axis") is compared with that number.
    for stmt in ast.parse(block).body:
        code = ast.Module(body=[stmt], type_ignores=[])
        if isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), "README.md", "eval"), namespace)
            comment = lines[stmt.end_lineno - 1].partition("#")[2].strip()
            stated = re.match(r"(\d+\.\d+)\b", comment)
            if stated:
                digits = len(stated.group(1).split(".")[1])
                assert f"{value:.{digits}f}" == stated.group(1), f"README says {comment!r}, the code gives {value}"
                checked += 1
        else:
            exec(compile(code, "README.md", "exec"), namespace)
    assert checked >= 1
    assert (tmp_path / "my-student" / "model.safetensors").is_file()
    assert namespace["out"].last_hidden_state.shape == (2, 16, 384)


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gapkit {gapkit.__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", gapkit.__version__)


def test_pyproject_reads_the_version_from_the_package_and_names_the_license():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "gapkit.version.__version__"}
    assert project["project"]["license"] == {"text": "Apache-2.0"}
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "Copyright 2026 the gapkit authors" in license_text


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    command = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q'
    assert command in README and command in ci


def test_readme_main_command_sets_up_the_notebooks_and_its_figures_are_committed():
    assert 'pip install torch==2.13.0 && pip install -e ".[notebooks]" && gapkit quickstart' in README
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert len(images) >= 2 and all((ROOT / path).is_file() for path in images), images
    links = re.findall(r"\]\(((?:docs|results)/[^)#]+)\)", README)
    assert all((ROOT / path).exists() for path in links), [p for p in links if not (ROOT / p).exists()]


def test_the_test_command_shows_skip_reasons():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-rs" in options.split()  # a skipped test is listed with its reason under the run
