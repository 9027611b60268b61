"""`foresight sweep --config NAME|FILE [--shard i/N] [--dry-run]`: train, score and cost a grid of objectives x n x
sizes x seeds on one budget (the sweep file and its grid: `suite.grid`), one process per point, one row per point
in `results/<sweep>/runs.jsonl`, then the comparison table.

Points are independent and resumable: a finished point (its row in runs.jsonl) is skipped, an interrupted one
resumes from its last checkpoint, a failed one is recorded and the sweep goes on (`--retry-failed` runs it again,
and drops failed rows that are stale). Before any point runs, every point is checked and the results folder must
hold no finished rows of another setting (`suite.settings`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from suite.errors import UsageError, check_range, check_writable, one_line
from suite.grid import Point, Sweep, export_wandb_sweep, grid, load_sweep, parse_shard, shard
from suite.jobs import default_jobs, run_side_by_side
from suite.point import BUSY, INTERRUPTED, base_row
from suite.results import append_row, latest_rows, read_json, read_rows
from suite.settings import check_sweep, stale, sweep_setting

__all__ = ["Point", "Sweep", "grid", "load_sweep", "main", "parse_shard", "shard"]


def point_spec(sweep: Sweep, point: Point, runs: Path, results: Path) -> dict:
    """Everything the point's process needs (written to its run folder as point.json)."""
    options = dict(point.options)
    if point.objective == "fsp_revlm":
        options["reverse_lm"] = str(runs / point.needs / "checkpoints" / "last.ckpt")
    return {"sweep": sweep.name, "project": sweep.project, "id": point.id, "role": point.role,
            "objective": point.objective, "label": point.label, "control": point.control, "options": options,
            "n": point.n,
            "size": point.size, "seed": point.seed, "needs": point.needs, "data": point.data, "model": sweep.model,
            "trainer": sweep.trainer,
            "budget": sweep.budget, "eval": sweep.eval if point.role == "point" else {},
            "run_dir": str(runs / point.id), "wandb_dir": str(runs), "results": str(results),
            "source": sweep.source, "setting": sweep_setting(sweep)}


def run_point(spec: dict, progress=None, task=None, env: dict | None = None, stop=None) -> int:
    """The point in its own process (crash isolation, and its own peak memory), forked from the sweep's fork server
    (`fork_server`), with `env` added to its environment (its device or share of the cores,
    `suite.jobs.slot_env`); its output goes to log.txt in its run folder; a progress bar follows its steps, and its
    evaluation's documents. Returns the process's exit status; a set `stop` event (the sweep was interrupted) ends
    the process."""
    from suite.point import forked

    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "launched_at": time.time()}  # the point's row records its wall time from here (wall_seconds)
    (run_dir / "point.json").write_text(json.dumps(spec, indent=2) + "\n")
    child = fork_server().Process(target=forked, args=(str(run_dir / "point.json"), str(run_dir / "log.txt"),
                                                        env or {}), name=spec["id"])
    child.start()
    try:
        while child.is_alive():
            child.join(0.5)
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            if progress is not None:
                state = read_json(run_dir / "progress.json")
                if state:
                    progress.update(task, completed=state["step"], total=state["max_steps"],
                                    description=f"{spec['id']}: {state.get('stage', 'fit')}")
    except BaseException:  # Ctrl-C or a kill of the sweep: the point must not outlive it
        child.terminate()
        child.join()
        raise
    return child.exitcode


_FORK_SERVER = []


def fork_server():
    """The multiprocessing context that starts the sweep's points: a fork server that has imported what a point
    runs (`suite.point.PRELOAD`) once, each point a fresh process forked from it, so a point pays for none of the
    imports and keeps its own memory and crash. Started with the first point; it ends when the sweep does, and its
    points with it (`suite.point._die_with_parent`)."""
    import multiprocessing

    from suite.point import PRELOAD

    if not _FORK_SERVER:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(PRELOAD))
        _FORK_SERVER.append(context)
    return _FORK_SERVER[0]


def main(argv: list[str]) -> None:
    from jsonargparse import ActionYesNo
    from suite.parsing import Parser

    parser = Parser(prog="foresight sweep",
                    description="Train, score and cost a grid of objectives x n x sizes x seeds.")
    parser.add_argument("--config", type=str, required=True, help="a sweep YAML, or a shipped sweep's name")
    parser.add_argument("--shard", type=str, help="i/N: run shard i of N (SLURM job arrays, several machines)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action=ActionYesNo, default=False,
                        help="print the grid and its estimated cost, train nothing")
    parser.add_argument("--retry-failed", "--retry_failed", dest="retry_failed", action=ActionYesNo, default=False,
                        help="run points again whose last row says failed")
    parser.add_argument("--jobs", type=int, help="points run at once, each in its own process (default: one per GPU, "
                        "else one per CPU core, the cores shared out)")
    parser.add_argument("--runs", type=str, default="runs", help="folder of run folders (checkpoints, logs, wandb)")
    parser.add_argument("--results", type=str, default="results", help="folder of results/<sweep>/runs.jsonl")
    parser.add_argument("--flops_per_s", type=float, help="for --dry-run: the training speed to assume (default: "
                        "what finished points under --results reached on this machine, else 5e10 on a CPU, 1e14 "
                        "on a GPU)")
    parser.add_argument("--export-wandb-sweep", "--export_wandb_sweep", dest="export_wandb_sweep", type=str,
                        help="write the grid as a wandb sweep config to this file (for `wandb sweep` and "
                        "`foresight agent`), train nothing")
    args = parser.parse_args(argv)
    sweep = load_sweep(args.config)
    everything, (index, count) = grid(sweep), parse_shard(args.shard)
    if not everything:
        raise UsageError(f"sweep {sweep.name!r} has an empty grid: objectives {sweep.objectives} at n={sweep.n} "
                         "give no point; allowed: n values > 1 for objectives with a horizon, or an objective "
                         "without one")
    points = shard(everything, index, count)
    if not points:
        return print(f"sweep {sweep.name}: shard {index}/{count} has no points (the grid has {len(everything)})")
    runs, results = Path(args.runs) / sweep.name, Path(args.results) / sweep.name
    if args.export_wandb_sweep:
        return print(export_wandb_sweep(sweep, points, Path(args.export_wandb_sweep), args.runs, args.results))
    if args.dry_run:
        return dry_run(sweep, points, args.flops_per_s, Path(args.results), args.jobs or default_jobs())
    if args.jobs is not None:
        check_range("--jobs", args.jobs, 1)
    run_sweep(sweep, points, runs, results, args.retry_failed, args.jobs or default_jobs())


def check_points(sweep: Sweep, points: list[Point]) -> None:
    """Each point's whole `fit` configuration through the parser `fit` uses, and its task and objective built as the
    point would build them (a data folder that is not a prepared one, an option value out of range), once per
    setting (seeds and folders do not change what is accepted): what every real point would fail on, before any
    runs. A reverse model that fsp_revlm reads is the sweep's own, trained before it: not checked for a file."""
    import objectives
    import tasks
    from suite.cli import check_fit_config
    from suite.point import fit_config, max_steps

    seen = set()
    for point in points:
        key = json.dumps([point.role, point.objective, point.options, point.data, point.size], sort_keys=True,
                         default=str)
        if key in seen:
            continue
        seen.add(key)
        what = f"sweep {sweep.name!r} point {point.id}"
        spec = point_spec(sweep, point, Path("runs") / sweep.name, Path("results") / sweep.name)
        check_fit_config(fit_config(spec, max_steps(spec)), what)
        try:
            tasks.build(point.data["task"], **(point.data.get("options") or {}))
            objectives.build(point.objective, **spec["options"])
        except UsageError as err:
            raise UsageError(f"{what}: {err}") from None


def dry_run(sweep: Sweep, points: list[Point], flops_per_s: float | None, results: Path, jobs: int = 1) -> None:
    """Every point's fit configuration checked, then the grid and its cost (`suite.estimate`)."""
    from suite.estimate import print_dry_run

    check_points(sweep, points)
    print_dry_run(sweep, points, flops_per_s, results, jobs)


def check_before_running(sweep: Sweep, points: list[Point], runs: Path, results: Path) -> None:
    """Everything that can be checked before a point runs, for every point: the folders can be written, every
    point's fit configuration parses (data folders, options, values), and the results folder holds no finished
    rows of another setting. A mistake is one line and leaves nothing behind: no row, no run folder."""
    check_writable("--results folder", results)
    check_writable("--runs folder", runs)
    check_points(sweep, points)
    check_sweep(sweep, list(latest_rows(read_rows(results / "runs.jsonl")).values()), results)


def drop_stale(rows_file: Path) -> None:
    """Failed rows a report need not count (`suite.settings.stale`) get a `dropped` row after them: runs.jsonl only
    grows, and its newest row of a point says what the point is."""
    for point, why in stale(list(latest_rows(read_rows(rows_file)).values())).items():
        row = latest_rows(read_rows(rows_file))[point]
        append_row(rows_file, {**row, "status": "dropped", "error": f"stale: {why}"})
        print(f"{point}: dropped, stale ({why})")


def run_sweep(sweep: Sweep, points: list[Point], runs: Path, results: Path, retry_failed: bool,
              jobs: int = 1) -> None:
    check_before_running(sweep, points, runs, results)
    rows_file = results / "runs.jsonl"
    if retry_failed:
        drop_stale(rows_file)
    done = latest_rows(read_rows(rows_file))
    finished = {pid for pid, row in done.items() if row["status"] == "ok" or not retry_failed}
    todo = [p for p in points if p.id not in finished]
    print(f"sweep {sweep.name}: {len(points)} points, {len(points) - len(todo)} already finished; "
          f"{min(jobs, max(1, len(todo)))} at a time; runs in {runs}, results in {results}")
    run_side_by_side(todo, jobs, len(points), sweep.name,
                     lambda point, *lane: execute(sweep, point, runs, results, *lane),
                     [row.get("wall_seconds") for row in done.values() if row.get("status") == "ok"])
    finish(sweep, rows_file, runs)
    rows = latest_rows(read_rows(rows_file))
    failed = [p.id for p in points if rows.get(p.id, {}).get("status") != "ok"]
    if failed:  # the report is written; the exit status says the sweep did not finish
        print(f"foresight: error: {len(failed)} of {len(points)} points did not finish ({', '.join(failed[:3])}"
              f"{', ...' if len(failed) > 3 else ''}; the report's Failed points say why); rerun with "
              "--retry-failed once fixed", file=sys.stderr)
        raise SystemExit(1)


def execute(sweep: Sweep, point: Point, runs: Path, results: Path, progress=None, task=None, env=None,
            stop=None) -> tuple[dict | None, str]:
    """Run one point (its reverse model must have finished) and return its row and what to say about it; no row
    when another process holds the point or it was interrupted (a rerun resumes it)."""
    rows_file = results / "runs.jsonl"
    spec = point_spec(sweep, point, runs, results)
    needs = latest_rows(read_rows(rows_file)).get(point.needs) if point.needs else None
    if point.needs and not (needs and needs["status"] == "ok"):
        append_row(rows_file, failed_row(spec, f"its reverse model {point.needs} did not finish"))
    else:
        code = run_point(spec, progress, task, env, stop)
        if code == BUSY:
            return None, "running in another process"
        if code == INTERRUPTED:
            return None, "interrupted; rerun the sweep to resume it"
        if point.id not in latest_rows(read_rows(rows_file)):  # the process died before writing its row
            append_row(rows_file, failed_row(spec, f"the point's process ended with status {code} "
                                                   f"(see {spec['run_dir']}/log.txt)"))
    row = latest_rows(read_rows(rows_file))[point.id]
    return row, row["status"] + (f" ({row['error']})" if row.get("error") else "")


def failed_row(spec: dict, error: str) -> dict:
    return {**base_row(spec), "status": "failed", "error": error}


def finish(sweep: Sweep, rows_file: Path, runs: Path) -> None:
    """The comparison table (report.md, printed, and as a wandb.Table), and how to sync the offline wandb runs."""
    from suite.report import print_table, report_with_entries, timing_line
    from suite.tracking import wandb_sync_line

    path, entries = report_with_entries(rows_file.parent)
    print(f"\nreport: {path}\n")
    timed = timing_line(list(latest_rows(read_rows(rows_file)).values()))
    if timed:
        print(timed + "\n")
    print_table(path)
    log_comparison(sweep, entries, runs)
    sync = wandb_sync_line(runs)
    if sync:
        print(f"\n{sync}")


def log_comparison(sweep: Sweep, entries: list[dict], runs: Path) -> None:
    """The report's comparison as a wandb.Table in a run of its own in the sweep's group (job_type "comparison")."""
    try:
        import wandb

        from suite.report_tables import table
        from suite.tracking import SafeWandbLogger

        header, cells = table(entries)
        run = SafeWandbLogger(project=sweep.project, save_dir=str(runs), name=f"{sweep.name}-comparison",
                              id=f"{sweep.name}-comparison", group=sweep.name, job_type="comparison").experiment
        run.log({"comparison": wandb.Table(columns=header, data=cells)})
        wandb.finish()
    except Exception as err:  # the report is written; wandb is a copy of it
        print(f"foresight: warning: the comparison table was not logged to wandb ({type(err).__name__}: "
              f"{one_line(err)})", file=sys.stderr)
