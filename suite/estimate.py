"""What `foresight sweep --dry-run` prints: each point's parameters, tokens and training FLOPs (analytic), and the
time the sweep will take, calibrated against the points this machine has already finished.

The calibration reads every finished row under the results folder (any sweep) from a machine like this one (same
CPU count and GPU): the training FLOP/s those points reached (analytic FLOPs over their measured training
seconds, per model size where that size has run) and what a point costs besides training (starting its process,
building its data, evaluating, recording: the point's wall time minus its training time). With no such rows the
speed is assumed and the output says so."""

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
    seconds at `flops_per_s(size)`."""
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
                     "tokens": steps * tokens_per_step, "flops": flops, "seconds": flops / flops_per_s(point.size)})
    return rows


def same_machine(row: dict, here: dict) -> bool:
    machine = row.get("machine") or {}
    return machine.get("cpus") == here.get("cpus") and machine.get("gpu") == here.get("gpu")


def calibration(results: Path, here: dict) -> dict | None:
    """{"speed": {size: FLOP/s}, "overall": FLOP/s, "startup_s": seconds or None, "points": N} from the finished
    rows under `results` measured on a machine like `here`; None when there are none."""
    from suite.results import latest_rows, read_rows

    rows = [row for path in sorted(Path(results).glob("*/runs.jsonl"))
            for row in latest_rows(read_rows(path)).values()]
    timed = [row for row in rows if row.get("status") == "ok" and same_machine(row, here)
             and (row.get("train") or {}).get("seconds") and not (row["train"].get("resumed_from_step"))
             and (row.get("overhead") or {}).get("flops_per_token_analytic")]
    if not timed:
        return None
    flops = {id(row): row["overhead"]["flops_per_token_analytic"] * row["train"]["tokens"] for row in timed}
    by_size: dict[str, list[dict]] = {}
    for row in timed:
        by_size.setdefault(row["axes"]["size"], []).append(row)
    speed = {size: sum(flops[id(r)] for r in group) / sum(r["train"]["seconds"] for r in group)
             for size, group in by_size.items()}
    walls = [row["wall_seconds"] - row["train"]["seconds"] for row in timed if row.get("wall_seconds")]
    return {"speed": speed, "overall": sum(flops.values()) / sum(row["train"]["seconds"] for row in timed),
            "startup_s": statistics.median(walls) if walls else None, "points": len(timed)}


def print_dry_run(sweep, points, flops_per_s: float | None, results: Path) -> None:
    import torch

    from suite.provenance import machine

    kind = "gpu" if torch.cuda.is_available() else "cpu"
    measured = None if flops_per_s else calibration(results, machine())

    def speed(size: str) -> float:
        if flops_per_s:
            return flops_per_s
        if measured:
            return measured["speed"].get(size, measured["overall"])
        return DEFAULT_SPEED[kind]

    rows = estimate(sweep, points, speed)
    startup = (measured or {}).get("startup_s") or DEFAULT_STARTUP_S
    print(f"sweep {sweep.name}: {len(points)} points ({sweep.source})\n")
    print("| point | role | parameters | steps | tokens | training FLOPs | est. time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for point, row in zip(points, rows):
        print(f"| {point.id} | {point.role} | {row['params']:,} | {row['steps']:,} | {row['tokens']:,} | "
              f"{si(row['flops'], 'FLOP')} | {duration(row['seconds'] + startup)} |")
    training = sum(row["seconds"] for row in rows)
    print(f"\ntotal: {si(sum(row['flops'] for row in rows), 'FLOP')} of training, {duration(training)} at "
          + (f"{si(flops_per_s, 'FLOP/s')} (--flops_per_s)" if flops_per_s else
             f"the speed {measured['points']} finished points under {results} reached on this machine "
             f"({', '.join(size + ' ' + si(value, 'FLOP/s') for size, value in sorted(measured['speed'].items()))})"
             if measured else f"an assumed {si(DEFAULT_SPEED[kind], 'FLOP/s')} (no finished points under {results} "
             "from this machine to calibrate against; --flops_per_s sets it)")
          + f", plus {duration(startup)} a point to start, evaluate and record"
          + (" (measured)" if (measured or {}).get("startup_s") else " (assumed)")
          + f": {duration(training + startup * len(points))} in all")
