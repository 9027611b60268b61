"""Sweep points under a wandb sweep agent: `foresight sweep --config X --export-wandb-sweep sweep.yaml` writes the
grid as a wandb sweep config (`suite.grid.export_wandb_sweep`: method grid over one parameter, the point id),
`wandb sweep sweep.yaml` registers it, and each `wandb agent ENTITY/PROJECT/SWEEP_ID` runs `foresight agent --config
X --point ID` for the points it is handed, on any number of machines. Every point still lands as one row in results/<sweep>/runs.jsonl (shared
storage, or one folder per machine merged by concatenation: rows are independent lines).

`foresight agent --config X --point ID` is also how a single point is rerun by hand: it is the `command` each row
records."""

from __future__ import annotations

import time
from pathlib import Path

from suite.errors import UsageError


def find_point(sweep, point_id: str):
    from suite.grid import grid

    points = {point.id: point for point in grid(sweep)}
    if point_id not in points:
        shown = ", ".join(list(points)[:6]) + (", ..." if len(points) > 6 else "")
        raise UsageError(f"point {point_id!r} is not in sweep {sweep.name!r} ({sweep.source}); allowed: one of its "
                         f"{len(points)} points ({shown}; `foresight sweep --config {sweep.source} --dry-run` lists "
                         "them)")
    return points[point_id], points


def main(argv: list[str]) -> None:
    from suite.parsing import Parser

    from suite.sweep import check_before_running, execute, load_sweep
    from suite.results import latest_rows, read_rows

    parser = Parser(prog="foresight agent",
                    description="Run one point of a sweep (for a wandb agent, or to rerun a point by hand).")
    parser.add_argument("--config", type=str, required=True, help="the sweep file")
    parser.add_argument("--point", type=str, required=True, help="the point's id (see --dry-run of the sweep)")
    parser.add_argument("--runs", type=str, default="runs", help="folder of run folders")
    parser.add_argument("--results", type=str, default="results", help="folder of results/<sweep>/runs.jsonl")
    args = parser.parse_args(argv)
    sweep = load_sweep(args.config)
    point, points = find_point(sweep, args.point)
    runs, results = Path(args.runs) / sweep.name, Path(args.results) / sweep.name
    check_before_running(sweep, [point, *([points[point.needs]] if point.needs else [])], runs, results)
    rows = latest_rows(read_rows(results / "runs.jsonl"))
    # an agent may be handed an fsp_revlm point before its reverse model: train that first (its lock keeps two
    # agents from training it twice; the second waits for the first's row)
    for needed in [points[point.needs]] if point.needs else []:
        while (rows.get(needed.id) or {}).get("status") is None:
            row, said = execute(sweep, needed, runs, results)
            print(f"{needed.id} (needed by {point.id}): {said}")
            if row is None and said.startswith("interrupted"):
                raise SystemExit(1)
            if row is None:
                time.sleep(10)
            rows = latest_rows(read_rows(results / "runs.jsonl"))
    row, said = execute(sweep, point, runs, results)
    print(f"{point.id}: {said}")
    if row is None or row["status"] != "ok":
        raise SystemExit(1)
