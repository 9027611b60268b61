"""One results folder, one setting (`suite.settings`): differences named by key, rows written before `setting` was
recorded read by their config, stale failed rows found, shown by the report and dropped by `--retry-failed`."""

import json

import pytest

from suite.errors import UsageError
from suite.settings import check_folder, difference, folder_setting, row_setting, stale

SETTING = {"data": {"task": "corpus", "options": {"path": "data/a"}}, "model": {"lr": 0.001}, "trainer": {},
           "budget": {"steps": 10}, "eval": {"tasks": ["corpus"]}}


def row(point, seed, status="ok", setting=SETTING, control=False, label="ntp", config=None):
    return {"schema": 1, "sweep": "mine", "point": point, "role": "point", "status": status, "error": None,
            "axes": {"objective": "ntp", "label": label, "control": control, "n": None, "size": "nano", "seed": seed,
                     "data": "corpus"},
            "setting": setting, "config": config or setting}


def other(path="data/b"):
    return {**SETTING, "data": {"task": "corpus", "options": {"path": path}}}


def test_a_difference_names_the_first_key_that_differs():
    assert difference(SETTING, SETTING) is None
    assert difference(SETTING, other()) == ("data.options.path", '"data/a"', '"data/b"')
    assert difference({"a": 1}, {"a": 1, "b": [2]}) == ("b", "null", "[2]")


def test_rows_before_the_setting_was_recorded_are_read_by_their_config():
    old = {**row("p0", 0), "setting": None}
    assert row_setting(old) == SETTING
    control = {**row("c0", 0, control=True, config=other("data/a-and-test")), "setting": None}
    assert row_setting(control) is None  # a control's data is its entry's: held to model, trainer, budget only
    assert folder_setting([old, control]) == (SETTING, None)
    slower = {**control, "config": {**other("x"), "budget": {"steps": 20}}}
    assert folder_setting([old, slower]) == (SETTING, ("budget.steps", "10", "20"))


def test_a_folder_of_two_settings_is_refused_in_one_line():
    with pytest.raises(UsageError, match=r"^results/mine holds rows of more than one setting \(data.options.path: "
                                         r'"data/a" in some, "data/b" in others\); allowed: one setting'):
        check_folder([row("p0", 0), row("p1", 1, setting=other())], "results/mine")
    assert check_folder([row("p0", 0), row("p1", 1, status="failed", setting=other())], "results/mine") == SETTING


def test_stale_failed_rows_are_superseded_or_of_another_setting():
    rows = [row("new0", 0), row("old0", 0, status="failed", setting=other("typo")),  # fixed: superseded
            row("old1", 1, status="failed", setting=other("typo")),  # another setting, not run again
            row("new2", 2, status="failed")]  # failed in this setting: not stale
    found = stale(rows)
    assert set(found) == {"old0", "old1"}
    assert found["old0"].startswith("superseded") and "data.options.path" in found["old1"]


def test_the_report_shows_stale_rows_apart_and_retry_failed_drops_them(tmp_path, monkeypatch, capsys):
    """Through the real commands: `foresight report` counts a stale failed row apart and says how to drop it;
    `foresight sweep --retry-failed` (its one point already finished) appends a `dropped` row and runs nothing."""
    from suite.cli import main
    from suite.grid import grid, load_sweep
    from suite.settings import sweep_setting

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("name: mine\nbudget: {steps: 1}\nobjectives: [ntp]\n")
    sweep = load_sweep("mine.yaml")
    (point,) = grid(sweep)
    ours = sweep_setting(sweep)
    typo = {**ours, "data": {"task": "star_graph", "options": {"num_nodes": 5}}}
    rows = [row("ntp-nano-s0-typo", 0, status="failed", setting=typo), row(point.id, 0, setting=ours)]
    rows[0]["error"] = "UsageError: star_graph num_nodes=5 is too small"
    (tmp_path / "results/mine").mkdir(parents=True)
    (tmp_path / "results/mine/runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["report", "results/mine"])
    report = (tmp_path / "results/mine/report.md").read_text()
    assert "1 points compared (1 settings of objective × n × size; sizes nano; seeds 0); 0 failed (and 1 stale)" \
        in report
    assert "`ntp-nano-s0-typo`: ntp, size nano, seed 0: UsageError: star_graph num_nodes=5 is too small (**stale**, " \
           "superseded by a finished point of the same setting and seed; `foresight sweep --retry-failed` drops it)" \
        in report
    capsys.readouterr()
    main(["sweep", "--config", "mine.yaml", "--retry-failed"])
    assert "ntp-nano-s0-typo: dropped, stale" in capsys.readouterr().out
    written = [json.loads(line) for line in (tmp_path / "results/mine/runs.jsonl").read_text().splitlines()]
    assert [(r["point"], r["status"]) for r in written] == [("ntp-nano-s0-typo", "failed"), (point.id, "ok"),
                                                           ("ntp-nano-s0-typo", "dropped")]
    assert "0 failed." in (tmp_path / "results/mine/report.md").read_text()
