"""`results/<sweep>/runs.jsonl`: one JSON line per finished sweep point, in a versioned schema.

Appends are one `write` of one whole line under an exclusive lock, so shards of a sweep running at once into one
folder never interleave; a reader skips (and reports) a torn last line left by a killed writer, so the good rows
are always readable.

Row schema (SCHEMA = 1):

    schema       1
    sweep        the sweep's name
    point        the point's id: "<objective>[-n<n>]-<size>-s<seed>-<hash of its whole config>"
    role         "point" (compared in reports) or "reverse_lm" (a prerequisite of fsp_revlm points)
    status       "ok" or "failed"
    error        why it failed (one line), or null
    axes         {"objective": registry name, "n": horizon or null, "size": size name, "seed": int, "data": task}
    objective    the objective's spec: {"class_path": ..., "init_args": {...}}
    config       the point's resolved settings (data, model, trainer, budget, eval)
    scores       {task: {metric: value}}: lm-eval's metrics of each eval task
    families     {family: score}: the mean of each family's primary metrics
    items        {task: [per-document value of the primary metric, in document order]}, for paired tests
    plan         {task: `suite.plan.plan_report`} for path tasks (rows before it have none): on the test split,
                 every head's teacher-forced accuracy on every answer token ("heads"), the first step's by head
                 ("first_step"), and the scores of plan decoding, which is not next-token decoding ("decode")
    overhead     {"step_time_s": median seconds per optimizer step, "tokens_per_s", "steps_timed",
                  "peak_memory_bytes": the process's peak, "train_memory_bytes": peak minus the memory at the start
                  of training, "memory_kind": "max_rss" | "cuda_max_allocated", "flops_per_token": counted by
                  torch's FLOP counter, "flops_per_token_analytic"}
    params       {"trunk", "shared", "objective", "frozen", "total"}
    train        {"steps", "tokens", "final_loss", "seconds", "resumed_from_step": null or the step a resumed
                  attempt started from}
    curves       {key: [[step, value], ...]}: the curves `kept_curve` keeps from the run folder's metrics.jsonl
                  (training and per-head losses, validation scores and plans, each head's gradient on the shared
                  state at every validation, each head's loss and gradient at step 0), at
                  most CURVE_POINTS per key, so a report's learning curves need runs.jsonl alone
    eval_seconds wall time of the evaluation
    seconds      wall time of the point
    run_dir      where the point's run folder is
    command      `foresight agent ...`: re-runs this point alone
    sweep_command  `foresight sweep --config ...`: the sweep it belongs to
    commit, dirty, date, machine, versions   provenance (suite.provenance)
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

from suite import faults

SCHEMA = 1

CURVES = ("train/loss/head_1", "train/loss")
"""The training curves every row has: the next-token loss every objective has, and the objective's own loss."""
CURVE_POINTS = 100


def kept_curve(key: str) -> bool:
    """The metrics.jsonl keys a row keeps as curves: the training loss and each head's (`train/loss/head_k`,
    `train/loss/fsp`), validation (`val/...`: each head's loss, the task's scores during training), and each head's
    loss and gradient norm before the first step (`init/...`); not accuracies of single heads."""
    parts = key.split("/")
    if parts[0] == "init":
        return True
    return parts[0] in ("train", "val") and len(parts) > 1 and parts[1] != "acc" and (
        parts[0] == "val" or parts[1] == "loss")


def append_row(path: Path, row: dict) -> None:
    """Append `row` as one line, atomically with respect to other writers of the same file. A torn last line (a
    writer killed mid-row; under the lock no live writer can be mid-row) is first moved to `<path>.torn`, so the
    file holds whole rows only and the fragment is kept for whoever wants to look."""
    line = (json.dumps({"schema": SCHEMA, **row}, default=str) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:  # never truncating on open: another writer may hold the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _set_aside_torn_tail(path, handle)
            handle.seek(0, os.SEEK_END)
            if faults.armed("row"):
                handle.write(line[: len(line) // 2])
                handle.flush()
                faults.die()
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _set_aside_torn_tail(path: Path, handle) -> None:
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    handle.seek(0)  # rare (a writer was killed mid-row): reading the whole file is fine
    start = handle.read().rfind(b"\n") + 1  # the torn line begins after the last newline
    handle.seek(start)
    torn = handle.read()
    with open(f"{path}.torn", "ab") as aside:
        aside.write(torn + b"\n")
        aside.flush()
        os.fsync(aside.fileno())
    handle.truncate(start)
    _stderr(f"{path}: its last line was a torn row (a run killed while writing); moved to {path}.torn")


def write_json(path: Path, value: dict) -> None:
    """A run folder's JSON file, whole or not at all: written beside and renamed, so a reader (or a rerun after a
    kill) never sees half a file."""
    temporary = Path(path).with_name(Path(path).name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")
    temporary.replace(path)


def read_json(path: Path) -> dict | None:
    """A run folder's JSON file, or None where it is missing or unreadable (a stage that has not finished)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_rows(path: Path, warn=None) -> list[dict]:
    """Every complete row of `path`; a line that does not parse (a torn last line from a killed writer) is skipped
    with a warning naming it, never fatal. A missing file has no rows."""
    if not Path(path).exists():
        return []
    rows = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or "point" not in row:
                    raise ValueError("not a row")
            except ValueError:
                (warn or _stderr)(f"{path}: line {number} is not a complete row (a run killed while writing?); "
                                  "skipped")
                continue
            rows.append(row)
    return rows


def read_curves(metrics: Path, keys=None, points: int = CURVE_POINTS) -> dict[str, list[list]]:
    """{key: [[step, value], ...]} from a run's metrics.jsonl: every logged value of each key (`keys`, or every
    key `kept_curve` keeps), thinned to at most `points` evenly spaced ones (the last always kept); a torn line of a
    killed run is skipped, a missing file gives no curves."""
    logged: dict[str, dict[int, float]] = {key: {} for key in keys or ()}
    if Path(metrics).is_file():
        for line in Path(metrics).read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                continue
            for key, value in record.items():
                if isinstance(value, (int, float)) and (key in logged if keys else kept_curve(key)):
                    logged.setdefault(key, {})[record["step"]] = float(value)
    curves = {}
    for key, values in sorted(logged.items()):
        steps = sorted(values)
        if len(steps) > points:
            stride = (len(steps) - 1) / (points - 1)
            steps = [steps[round(i * stride)] for i in range(points)]
        if steps:
            curves[key] = [[step, values[step]] for step in steps]
    return curves


def latest_rows(rows: list[dict]) -> dict[str, dict]:
    """The last row of each point (a retried point's newest result wins)."""
    return {row["point"]: row for row in rows}


def _stderr(message: str) -> None:
    print(f"foresight: warning: {message}", file=sys.stderr)
