"""The wandb report `foresight dashboard` builds, checked offline: its panels plot exactly the keys a sweep point
writes into its wandb run (summary and config), grouped the way the issue asks."""

from __future__ import annotations

import wandb_workspaces.reports.v2 as wr

from suite import dashboard
from suite.point import wandb_config, wandb_summary

ROW = {"status": "ok", "seconds": 12.0, "scores": {"star_graph": {"path_acc": 0.5, "arm_acc": 0.5}},
       "families": {"reasoning": 0.5, "knowledge": 0.25, "code": 0.0},
       "overhead": {"step_time_s": 0.1, "train_memory_bytes": 1000, "tokens_per_s": 500.0, "flops_per_token": 9.0,
                    "memory_kind": "max_rss"},
       "params": {"trunk": 10, "shared": 5, "objective": 3, "frozen": 0, "total": 18}}
SPEC = {"sweep": "toy", "id": "ntp-nano-s0-abc", "role": "point", "objective": "ntp", "n": None, "size": "nano",
        "seed": 0, "data": {"task": "star_graph"}, "source": "toy.yaml"}


def panels(report) -> list:
    return [(block, panel) for block in report.blocks if isinstance(block, wr.PanelGrid) for panel in block.panels]


def test_every_summary_metric_the_report_plots_is_one_a_point_logs():
    report = dashboard.build("me", "foresight", "toy", {"star_graph": "path_acc"})
    logged = set(wandb_summary(ROW))
    plotted = set()
    for _, panel in panels(report):
        if isinstance(panel, wr.BarPlot):
            plotted |= set(panel.metrics)
        if isinstance(panel, wr.ScatterPlot):
            plotted |= {axis.name for axis in (panel.x, panel.y) if isinstance(axis, wr.SummaryMetric)}
    assert plotted == {"family/reasoning", "family/knowledge", "family/code", "eval/star_graph/path_acc",
                       "overhead/step_time_s", "overhead/train_memory_bytes", "overhead/tokens_per_s",
                       "overhead/flops_per_token", "params/total"}
    assert plotted <= logged


def test_runs_are_filtered_to_the_sweep_and_grouped_by_config_keys_a_point_logs():
    report = dashboard.build("me", "foresight", "toy")
    config = wandb_config(SPEC)
    grids = [block for block in report.blocks if isinstance(block, wr.PanelGrid)]
    assert [rs.groupby for grid in grids for rs in grid.runsets] == [
        ["config.objective_name", "config.n"], ["config.size_name", "config.objective_name"],
        ["config.objective_name"]]
    for grid in grids:
        for rs in grid.runsets:
            assert rs.filters == "Config('sweep') = 'toy'" and (rs.entity, rs.project) == ("me", "foresight")
            assert all(key.removeprefix("config.") in config for key in rs.groupby)
    scatter_x = {panel.x.name for _, panel in panels(report) if isinstance(panel, wr.ScatterPlot)
                 and isinstance(panel.x, wr.Config)}
    assert scatter_x == {"n"} and config["n"] is None and config["objective_name"] == "ntp"
    curves = [panel for _, panel in panels(report) if isinstance(panel, wr.LinePlot)]
    assert [(panel.x, panel.y) for panel in curves] == [("trainer/global_step", ["train/loss/head_1"]),
                                                        ("trainer/global_step", ["train/loss"])]


def test_without_a_sweep_every_run_of_the_project_is_compared():
    report = dashboard.build("me", "foresight")
    assert report.title == "foresight: foresight"
    assert all(rs.filters in (None, "") for block in report.blocks if isinstance(block, wr.PanelGrid)
               for rs in block.runsets)
    assert dashboard.outline(report)[0] == "report 'foresight: foresight' (me/foresight)"


def test_a_reasoning_only_sweep_gets_no_empty_knowledge_or_code_panels(tmp_path):
    import json

    row = {**ROW, "schema": 1, "point": "p", "families": {"reasoning": 0.5}}
    (tmp_path / "runs.jsonl").write_text(json.dumps(row) + "\n")
    tasks, families = dashboard.sweep_scores(str(tmp_path))
    assert tasks == {"star_graph": "path_acc"} and families == ["reasoning"]
    shown = [panel.title for _, panel in panels(dashboard.build("me", "foresight", "toy", tasks, families))]
    assert "family/reasoning" in shown and "eval/star_graph/path_acc" in shown
    assert not [title for title in shown if "knowledge" in title or "code" in title]
    everything = [panel.title for _, panel in panels(dashboard.build("me", "foresight", "toy"))]
    assert "family/knowledge" in everything  # without the sweep's rows, every family
