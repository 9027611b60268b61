"""Every report.md committed under results/ is what `foresight report` makes of the runs.jsonl beside it, byte for
byte: the numbers in results/ come from the rows, not from an edit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from suite.report import write_report

RESULTS = Path(__file__).resolve().parents[2] / "results"
REPORTS = sorted(path.parent for path in RESULTS.rglob("runs.jsonl") if (path.parent / "report.md").is_file())


def test_results_hold_sweep_reports():
    assert {folder.name for folder in REPORTS} >= {"quickstart"}


@pytest.mark.parametrize("folder", REPORTS, ids=[str(folder.relative_to(RESULTS)) for folder in REPORTS])
def test_a_committed_report_regenerates_exactly_from_its_runs_jsonl(folder, tmp_path, monkeypatch):
    copy = tmp_path / folder.name
    copy.mkdir()
    shutil.copy(folder / "runs.jsonl", copy / "runs.jsonl")
    monkeypatch.chdir(tmp_path)  # no run folder (runs/...) can be found from here: the rows alone must suffice
    regenerated = write_report(copy)
    assert regenerated.read_text() == (folder / "report.md").read_text()
    committed = sorted(path.name for path in (folder / "plots").glob("*.png"))
    assert sorted(path.name for path in (copy / "plots").glob("*.png")) == committed
