"""What `foresight sweep --dry-run` prints: each point's parameters, tokens and training FLOPs (analytic), and the
time the sweep will take, calibrated against the points this machine has already finished.

The calibration reads every finished row under the results folder (any sweep) from a machine like this one (same
CPU count and GPU), and goes by rows of the point's own task and model size: the training FLOP/s they reached
(analytic FLOPs over their measured training seconds) and what a point of that task costs besides training
(starting its process, building its data, evaluating, recording: its wall time minus its training time). A task
trains at its own speed (a corpus's large vocabulary and long rows are not a star graph's 26 tokens), so a point
with no such rows is assumed a speed, and the output says which points that was."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

DEFAULT_SPEED = {"cpu": 5e10, "gpu": 1e14}
"""FLOP/s assumed with nothing measured on the machine."""
DEFAULT_STARTUP_S = 10.0
"""Seconds a point is assumed to cost besides training with nothing measured: the quickstart's points on 2 CPU
cores finished 22 s apart, 13 s of it training (results/cpu-2core/quickstart)."""

PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str) -> str:
    """`value` with an SI prefix that keeps three significant digits: 2.06e11 FLOP -> '206 GFLOP'."""
    for scale, prefix in PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def duration(seconds: float) -> str:
    """'about 40 s', 'about 1 minute', 'about 12 minutes', 'about 2.5 hours'."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        minutes = round(seconds / 60)
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    return f"about {seconds / 3600:.1f} hours"


def estimate(sweep, points, flops_per_s) -> list[dict]:
    """Each point's parameters, steps, tokens and training FLOPs (analytic), counted on the meta device with
    stand-ins for frozen models (a reverse model has the point's size), so nothing is written; and its training
    seconds at `flops_per_s(point)`."""
    import torch

    import objectives
    import tasks
    from suite.checkpoints import attach_stand_ins
    from suite.model import Trunk
    from suite.overhead import analytic_flops_per_token
    from suite.sizes import ModelConfig, count_parameters

    budget, rows, built = sweep.budget, [], {}
    for point in points:
        key = json.dumps(point.data, sort_keys=True, default=str)
        if key not in built:
            built[key] = tasks.build(point.data["task"], **(point.data.get("options") or {}))
        task = built[key]
        tokens_per_step = point.data.get("batch_size", 64) * task.seq_len
        steps = budget.get("steps") or math.ceil(budget["tokens"] / tokens_per_step)
        config = ModelConfig.from_name(point.size, vocab_size=task.vocab_size)
        options = dict(point.options)
        if point.objective == "fsp_revlm":  # trained by the sweep itself, before the point: no file yet
            options.setdefault("reverse_lm", "(trained by the sweep)")
        with torch.device("meta"):
            trunk = Trunk(config)
            objective = objectives.build(point.objective, **options)
            attach_stand_ins(objective, trunk)
        flops = analytic_flops_per_token(trunk, objective, task.seq_len) * steps * tokens_per_step
        rows.append({"point": point.id, "params": count_parameters(trunk, objective)["total"], "steps": steps,
                     "tokens": steps * tokens_per_step, "flops": flops, "seconds": flops / flops_per_s(point)})
    return rows


def same_machine(row: dict, here: dict) -> bool:
    machine = row.get("machine") or {}
    return machine.get("cpus") == here.get("cpus") and machine.get("gpu") == here.get("gpu")


def shape(task: str | None, size: str | None) -> str:
    """How the calibration names a point's kind: its task and model size."""
    return f"{task} {size}"


def calibration(results: Path, here: dict) -> dict | None:
    """{"speed": {shape: FLOP/s}, "startup_s": {task: seconds}, "points": N} from the finished rows under `results`
    measured on a machine like `here`, by task and size (`shape`); None when there are none."""
    from suite.results import latest_rows, read_rows

    rows = [row for path in sorted(Path(results).glob("*/runs.jsonl"))
            for row in latest_rows(read_rows(path)).values()]
    timed = [row for row in rows if row.get("status") == "ok" and same_machine(row, here)
             and (row.get("train") or {}).get("seconds") and not (row["train"].get("resumed_from_step"))
             and (row.get("overhead") or {}).get("flops_per_token_analytic")]
    if not timed:
        return None
    by_shape: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}
    for row in timed:
        axes = row["axes"]
        by_shape.setdefault(shape(axes.get("data"), axes["size"]), []).append(row)
        if row.get("wall_seconds"):
            walls.setdefault(axes.get("data"), []).append(row["wall_seconds"] - row["train"]["seconds"])
    speed = {key: sum(r["overhead"]["flops_per_token_analytic"] * r["train"]["tokens"] for r in group)
             / sum(r["train"]["seconds"] for r in group) for key, group in by_shape.items()}
    return {"speed": speed, "startup_s": {task: statistics.median(values) for task, values in walls.items()},
            "points": len(timed)}


def print_dry_run(sweep, points, flops_per_s: float | None, results: Path, jobs: int = 1) -> None:
    import torch

    from suite.provenance import machine

    kind = "gpu" if torch.cuda.is_available() else "cpu"
    measured = (None if flops_per_s else calibration(results, machine())) or {"speed": {}, "startup_s": {}}
    assumed = set()

    def speed(point) -> float:
        key = shape(point.data.get("task"), point.size)
        if flops_per_s or key in measured["speed"]:
            return flops_per_s or measured["speed"][key]
        assumed.add(point.id)
        return DEFAULT_SPEED[kind]

    def startup(point) -> float:
        return measured["startup_s"].get(point.data.get("task")) or DEFAULT_STARTUP_S

    rows = estimate(sweep, points, speed)
    print(f"sweep {sweep.name}: {len(points)} points ({sweep.source})\n")
    print("| point | role | parameters | steps | tokens | training FLOPs | est. time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for point, row in zip(points, rows):
        print(f"| {point.id} | {point.role} | {row['params']:,} | {row['steps']:,} | {row['tokens']:,} | "
              f"{si(row['flops'], 'FLOP')} | {duration(row['seconds'] + startup(point))} |")
    training = sum(row["seconds"] for row in rows)
    used = sorted({shape(p.data.get("task"), p.size) for p in points} & set(measured["speed"]))
    if flops_per_s:
        basis = f"{si(flops_per_s, 'FLOP/s')} (--flops_per_s)"
    else:
        basis = "; ".join(filter(None, [
            f"the speed finished points of the same task and size under {results} reached on this machine ("
            + ", ".join(f"{key} {si(measured['speed'][key], 'FLOP/s')}" for key in used) + ")" if used else "",
            f"an assumed {si(DEFAULT_SPEED[kind], 'FLOP/s')} for {len(assumed)} of {len(points)} points, which have "
            f"no finished point of their task and size under {results} from this machine to go by "
            "(--flops_per_s sets it)" if assumed else ""]))
    startups = [startup(point) for point in points]
    measured_startup = all(measured["startup_s"].get(p.data.get("task")) for p in points)
    together = min(jobs, len(points))
    print(f"\ntotal: {si(sum(row['flops'] for row in rows), 'FLOP')} of training, {duration(training)} at {basis}, "
          f"plus about {duration(sum(startups) / len(startups)).removeprefix('about ')} a point to start, evaluate "
          f"and record ({'measured' if measured_startup else 'assumed where not measured'}): "
          f"{duration(training + sum(startups))} in all"
          + (f"; {together} at a time (--jobs), {duration((training + sum(startups)) / together)}"
             " if they share the machine without slowing each other" if jobs > 1 else ""))
