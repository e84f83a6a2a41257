"""gapkit report fits a 120-column terminal: long titles, notes and sentences wrap; wide tables print in
column groups led by the columns that name their rows; --wide prints every table in one piece."""

from pathlib import Path

import pytest

from gapkit.analysis import format_report, load_table, report
from gapkit.cli import main

SWEEP = Path(__file__).resolve().parents[1] / "results" / "sweeps" / "sst2_minilm_power"


@pytest.fixture(scope="module")
def tables():
    return report(load_table(SWEEP))


def test_every_line_fits_120_columns_and_nothing_is_lost(tables):
    narrow, wide = format_report(tables), format_report(tables, width=None)
    assert max(map(len, narrow.splitlines())) <= 120
    assert max(map(len, wide.splitlines())) > 120  # the committed sweep's tables are wider than a terminal
    # Every cell of the wide tables is still printed, words only rewrapped.
    assert set(wide.split()) <= set(narrow.split())


def test_a_wide_table_is_split_into_column_groups_that_each_name_their_rows(tables):
    text = format_report(tables)
    headers = [line for line in text.splitlines() if line.startswith("task teacher   student")]
    assert len(headers) >= 2, "the student table fits 120 columns only in two or more column groups"
    assert all(h.split()[:5] == ["task", "teacher", "student", "experts", "method"] for h in headers)


def test_notes_leave_the_table_as_numbered_lines(tables):
    text = format_report(tables)
    fit = text.split("Top teacher size against student size")[1]
    rows = [line for line in fit.splitlines() if line.startswith("sst2")]
    assert rows and all(line.rstrip().endswith(f"[{i + 1}]") for i, line in enumerate(rows))
    assert "  [1] sst2 1,4E minimoe params linear: not estimable" in fit



def test_cli_report_is_narrow_unless_wide(tmp_path, capsys):
    assert main(["report", str(SWEEP), "--out", str(tmp_path / "a")]) == 0
    narrow = capsys.readouterr().out
    assert main(["report", str(SWEEP), "--out", str(tmp_path / "b"), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert max(map(len, narrow.splitlines())) <= 120 < max(map(len, wide.splitlines()))
