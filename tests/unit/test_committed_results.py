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


@pytest.mark.parametrize("folder", REPORTS, ids=[str(folder.relative_to(RESULTS)) for folder in REPORTS])
def test_every_point_of_a_committed_study_is_a_point_of_its_shipped_sweep_file(folder, request, tmp_path,
                                                                             monkeypatch):
    """A shipped sweep file edited after its results were committed would orphan them: its points' ids (a hash of
    each point's whole config) would no longer match the rows. A study still running (committed as its rows land,
    results/README.md says which) holds some of its points; a finished one all of them."""
    from suite.results import read_rows
    from suite.grid import SHIPPED, grid, load_sweep

    rows = read_rows(folder / "runs.jsonl")
    name = rows[0]["sweep"]
    if not (SHIPPED / f"{name}.yaml").is_file():
        pytest.skip(f"{name} is not a shipped sweep")
    path = (rows[0]["config"]["data"].get("options") or {}).get("path")
    if rows[0]["config"]["data"]["task"] == "corpus":  # loading the sweep builds its tasks: a prepared stand-in
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).symlink_to(request.getfixturevalue("prepared_corpus"))
        monkeypatch.chdir(tmp_path)
    ids = {point.id for point in grid(load_sweep(name))}
    assert {row["point"] for row in rows} <= ids
    assert all(row["status"] == "ok" for row in rows)
    if len({row["point"] for row in rows}) < len(ids):
        assert f"{folder.name}/) | study" in (RESULTS / "README.md").read_text() and "in progress" in \
            (RESULTS / "README.md").read_text().split(f"{folder.name}/) |", 1)[1].split("\n", 1)[0]
