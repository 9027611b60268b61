"""One sweep point, in a process of its own: `python -m suite.point RUN_DIR/point.json` (the sweep starts it; so
does `foresight agent`).

It trains through the same LightningCLI path as `foresight fit` (the run folder gets that command's resolved
config.yaml), resuming from checkpoints/last.ckpt when an earlier attempt was interrupted; scores the final
checkpoint through the same code as `foresight eval`; and appends the point's one row to
results/<sweep>/runs.jsonl. Stages leave files behind so that a killed point redoes only what it had not finished:

    checkpoints/last.ckpt   training state (every `checkpoint_every` steps and at the end)
    trained.json            training finished (steps, tokens, final loss, seconds); overhead.json beside it
    eval.json               evaluation finished (lm-eval's results, family scores, per-document scores)
    the row                 the point finished; it is never written twice

Exit status: 0 the row is written (ok, or failed with the reason), BUSY another process holds this point,
INTERRUPTED it was stopped before finishing (rerun to resume)."""

from __future__ import annotations

import ctypes
import fcntl
import json
import math
import os
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path

import yaml

from suite import faults
from suite.results import read_curves, read_json, write_json

BUSY = 75  # EX_TEMPFAIL
INTERRUPTED = 130


def objective_spec(spec: dict) -> dict:
    """The point's objective as {class_path, init_args}, as ObjectiveLM and LightningCLI take it."""
    import objectives

    cls = objectives.OBJECTIVES[spec["objective"]]
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(spec["options"])}


def resolved_spec(spec: dict) -> dict:
    """The point's objective with every constructor argument, defaults included: a row says what ran even after a
    default changes (the sweep's options alone would not)."""
    import objectives

    return objectives.from_spec(objective_spec(spec)).spec()


def folder_flags(spec: dict, always: bool) -> list[str]:
    """--runs and --results as the sweep that made the point was given them (with always=False, only where they
    differ from the defaults)."""
    folders = {"runs": Path(spec["run_dir"]).parent.parent, "results": Path(spec["results"]).parent}
    return [part for name, folder in folders.items() if always or str(folder) != name
            for part in (f"--{name}", str(folder))]


def command(spec: dict) -> list[str]:
    """The arguments of the `foresight` command that runs this point alone, as recorded in its row."""
    return ["agent", "--config", spec["source"], "--point", spec["id"], *folder_flags(spec, always=True)]


def base_row(spec: dict) -> dict:
    """What every row of the point says, finished or failed: who it is, how it was configured, where it came from."""
    from suite.provenance import provenance

    origin = provenance(command(spec))
    origin["sweep_command"] = shlex.join(["foresight", "sweep", "--config", spec["source"],
                                          *folder_flags(spec, always=False)])
    return {"sweep": spec["sweep"], "point": spec["id"], "role": spec["role"],
            "axes": {"objective": spec["objective"], "label": spec.get("label") or spec["objective"],
                     "control": bool(spec.get("control")), "n": spec["n"], "size": spec["size"], "seed": spec["seed"],
                     "data": spec["data"].get("task")},
            "objective": resolved_spec(spec),
            "config": {key: spec[key] for key in ("data", "model", "trainer", "budget", "eval")},
            "setting": spec.get("setting"),  # the sweep's own settings: one results folder holds one (suite.settings)
            "run_dir": spec["run_dir"], "status": None, "error": None, **origin}


def tokens_per_step(spec: dict, seq_len: int) -> int:
    trainer = spec["trainer"]
    devices = trainer.get("devices") if isinstance(trainer.get("devices"), int) else 1
    return spec["data"].get("batch_size", 64) * seq_len * max(devices, 1) * trainer.get("num_nodes", 1)


def max_steps(spec: dict) -> int:
    """The budget in optimizer steps: as given, or tokens / tokens per step (rounded up)."""
    budget = spec["budget"]
    if "steps" in budget:
        return int(budget["steps"])
    import tasks

    task = tasks.build(spec["data"]["task"], **(spec["data"].get("options") or {}))
    return math.ceil(budget["tokens"] / tokens_per_step(spec, task.seq_len))


def wandb_config(spec: dict) -> dict:
    """The point's wandb config: its axes under names Lightning's own hyperparameters (size, objective) do not
    overwrite, and the whole point spec."""
    return {"sweep": spec["sweep"], "point": spec["id"], "role": spec["role"], "objective_name": spec["objective"],
            "label": spec.get("label") or spec["objective"],
            "n": spec["n"], "size_name": spec["size"], "seed": spec["seed"], "data_task": spec["data"].get("task"),
            "spec": {key: value for key, value in spec.items() if key != "source"}}


def fit_config(spec: dict, steps: int) -> dict:
    """The LightningCLI config of the point: what `foresight fit --config` would take."""
    run_dir = spec["run_dir"]
    tags = [f"size={spec['size']}", f"data={spec['data'].get('task')}", f"seed={spec['seed']}"]
    tags += [f"n={spec['n']}"] if spec["n"] is not None else []
    loggers = [
        {"class_path": "suite.tracking.JsonlLogger", "init_args": {"save_dir": run_dir}},
        {"class_path": "suite.tracking.SafeWandbLogger", "init_args": {
            # under a wandb agent the run id is the agent's (WANDB_RUN_ID), so the sweep sees its run finish
            "project": spec["project"], "save_dir": spec["wandb_dir"], "name": spec["id"],
            "id": None if os.environ.get("WANDB_SWEEP_ID") else spec["id"],
            "group": spec["sweep"],
            "job_type": (spec.get("label") or spec["objective"]) if spec["role"] == "point" else "reverse_lm",
            "tags": tags, "config": wandb_config(spec)}},
    ]
    callbacks = [
        {"class_path": "suite.overhead.OverheadMonitor"},
        {"class_path": "suite.tracking.ProgressFile", "init_args": {"path": str(Path(run_dir) / "progress.json")}},
    ]
    trainer = {"default_root_dir": run_dir, "max_steps": steps, "logger": loggers, "callbacks": callbacks,
               "enable_progress_bar": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
               "log_every_n_steps": max(1, min(25, steps // 20)), **spec["trainer"]}
    data = {**spec["data"], "reverse": spec["role"] == "reverse_lm"}
    return {"seed_everything": spec["seed"], "trainer": trainer,
            "model": {"size": spec["size"], "objective": objective_spec(spec), **spec["model"]},
            "data": data, "checkpoint": {"every_n_train_steps": max(1, math.ceil(steps / 10))}}


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the sweep that started it dies, even by SIGKILL; it resumes later."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os._exit(INTERRUPTED)


def _lock(run_dir: Path):
    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    return handle


def train(spec: dict, run_dir: Path) -> dict:
    """Fit (or resume) the point; trained.json when done. Returns its contents."""
    from suite.cli import lightning_main

    steps = max_steps(spec)
    config_path = run_dir / "fit.yaml"
    config_path.write_text(yaml.safe_dump(fit_config(spec, steps), sort_keys=False))
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed_from = None
    argv = ["fit", "--config", str(config_path)]
    if last.is_file():
        from suite.checkpoints import read
        from suite.errors import UsageError

        try:
            resumed_from = read(last, mmap=True)["global_step"]
        except UsageError as err:  # cut short or damaged: say so, and leave the file for its owner to look at
            raise UsageError(f"{err}; move it away to train the point from the start") from None
        argv += ["--ckpt_path", str(last)]
    start = time.perf_counter()
    cli = lightning_main(argv)
    trainer = cli.trainer
    if trainer.global_step < steps:  # Lightning ends fit quietly on Ctrl-C or SIGTERM
        raise KeyboardInterrupt
    loss = cli.model.last_loss  # restored from the checkpoint when a resumed attempt had no step left to take
    trained = {"steps": trainer.global_step, "tokens": int(cli.model.tokens_seen),
               "final_loss": None if loss is None else float(loss), "seconds": time.perf_counter() - start,
               "resumed_from_step": resumed_from, "params": cli.model.parameter_counts(),
               "document_mask": bool(cli.model.document_mask),  # attention within documents (the data's option)
               "curves": read_curves(run_dir / "metrics.jsonl")}
    write_json(run_dir / "trained.json", trained)
    return trained


def evaluate(spec: dict, run_dir: Path) -> dict:
    """Score checkpoints/last.ckpt on the sweep's eval tasks through lm-eval; eval.json when done."""
    import torch

    from suite.evaluate import evaluate as run_eval
    from suite.tracking import write_progress

    settings = spec["eval"]
    start = time.perf_counter()
    report = run_eval(str(run_dir / "checkpoints" / "last.ckpt"), list(settings["tasks"]), run_dir / "eval",
                      limit=settings.get("limit"), batch_size=settings.get("batch_size", 32),
                      device="cuda" if torch.cuda.is_available() else "cpu", seed=spec["seed"], items=True,
                      progress=lambda done, total: write_progress(run_dir / "progress.json", done, total, "eval"))
    report["seconds"] = time.perf_counter() - start
    faults.fault("eval")
    write_json(run_dir / "eval.json", report)
    return report


def finished_row(base: dict, spec: dict, trained: dict, overhead: dict, scores: dict | None, seconds: float) -> dict:
    """The row of a finished point: `base_row` (taken when the point's process started) and what it measured."""
    from suite.comparison import metric_values

    scores = scores or {}
    return {**base, "status": "ok",
            "scores": {task: metric_values(metrics) for task, metrics in (scores.get("results") or {}).items()},
            "families": scores.get("families") or {}, "items": scores.get("items") or {},
            "plan": scores.get("plan") or {},  # path tasks: every head's accuracy on every answer token, plan decoding
            "overhead": {key: value for key, value in overhead.items() if key not in ("params", "clock")},
            "timing": timing(spec, overhead.get("clock"), scores.get("seconds")),
            "params": trained["params"],
            "train": {**{key: trained[key] for key in ("steps", "tokens", "final_loss", "seconds", "resumed_from_step")},
                      "document_mask": trained.get("document_mask", False)},
            "curves": trained.get("curves") or {},
            "eval_seconds": scores.get("seconds"), "seconds": seconds,
            # from the sweep's launch of the point's process (import, data, training, evaluation): calibrates
            # `foresight sweep --dry-run` (suite.estimate); None when run without a launch time
            "wall_seconds": time.time() - spec["launched_at"] if spec.get("launched_at") else None}


def timing(spec: dict, clock: dict | None, eval_seconds: float | None) -> dict:
    """Where a point's wall time went, in seconds: start-up (its process, imports, the data and model before the fit
    began), the training steps themselves, validation, the rest of the fit (checkpoints, loggers, FLOP counting),
    evaluation, and what came after (the row, wandb); `fixed` is all but the training steps. Empty where the fit
    was resumed or timed by an older foresight."""
    if not clock or not clock.get("fit_started_at") or not spec.get("launched_at"):
        return {}
    fit = clock["train_ended_at"] - clock["fit_started_at"]
    found = {"start_up": clock["fit_started_at"] - spec["launched_at"], "steps": clock["steps_seconds"],
             "validation": clock["validation_seconds"],
             "rest_of_fit": fit - clock["steps_seconds"] - clock["validation_seconds"],
             "evaluation": eval_seconds or 0.0}
    found["after"] = time.time() - spec["launched_at"] - sum(found.values())
    found["fixed"] = sum(value for key, value in found.items() if key != "steps")
    return found


def wandb_summary(row: dict) -> dict:
    """A finished row as the point's wandb run summary: what `foresight dashboard` plots."""
    summary = {f"eval/{task}/{metric}": value for task, metrics in row["scores"].items()
               for metric, value in metrics.items()}
    summary |= {f"family/{family}": value for family, value in row["families"].items()}
    summary |= {f"overhead/{key}": value for key, value in row["overhead"].items() if isinstance(value, (int, float))}
    summary |= {f"params/{key}": value for key, value in row["params"].items()}
    for task, plan in (row.get("plan") or {}).items():
        summary |= {f"plan/{task}/first_step/{head}": value for head, value in plan["first_step"].items()}
        summary |= {f"plan/{task}/decode_{rule}/{metric}": value for rule, scores in plan["decode"].items()
                    for metric, value in scores.items()}
    return summary | {"status": row["status"], "seconds": row["seconds"]}


def log_to_wandb(spec: dict, row: dict) -> None:
    """The point's scores and overhead in its wandb run's summary, then the run is closed."""
    import wandb

    from suite.tracking import SafeWandbLogger

    summary = wandb_summary(row)
    if wandb.run is None:  # evaluated in a later process than the training: reopen the training run
        SafeWandbLogger(**fit_config(spec, 0)["trainer"]["logger"][1]["init_args"]).experiment
    wandb.run.summary.update(summary)
    wandb.finish()


def run(spec: dict) -> int:
    from suite.errors import one_line
    from suite.results import append_row, latest_rows, read_rows
    from suite.tracking import write_progress

    run_dir, rows_file = Path(spec["run_dir"]), Path(spec["results"]) / "runs.jsonl"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir)
    if lock is None:
        print(f"point {spec['id']} is running in another process (it holds {run_dir / '.lock'})", file=sys.stderr)
        return BUSY
    previous = latest_rows(read_rows(rows_file)).get(spec["id"])
    if previous is not None and previous["status"] == "ok":
        print(f"point {spec['id']} is already finished ({rows_file})")
        return 0
    start = time.perf_counter()
    base = base_row(spec)  # the commit as the point starts: code edited while it runs is not what ran
    try:
        trained = read_json(run_dir / "trained.json") or train(spec, run_dir)
        overhead = read_json(run_dir / "overhead.json") or {}
        scores = None
        if spec["role"] == "point" and spec["eval"].get("tasks"):
            write_progress(run_dir / "progress.json", 0, 1, "eval")  # its own bar: documents scored
            scores = read_json(run_dir / "eval.json") or evaluate(spec, run_dir)
        row = finished_row(base, spec, trained, overhead, scores, time.perf_counter() - start)
    except KeyboardInterrupt:
        print(f"point {spec['id']} interrupted; rerun the sweep to resume it", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # the point failed (NaN loss, a bad option, a bug): say why in its row, go on
        traceback.print_exc()
        row = {**base, "status": "failed", "error": f"{type(err).__name__}: {one_line(err)}",
               "seconds": time.perf_counter() - start}
    append_row(rows_file, row)
    try:
        if row["status"] == "ok":
            log_to_wandb(spec, row)
    except Exception as err:  # the row is safe; a summary wandb could not take is worth a warning, not a failure
        print(f"foresight: warning: wandb summary not written ({type(err).__name__}: {one_line(err)})",
              file=sys.stderr)
    print(f"point {spec['id']}: {row['status']}" + (f" ({row['error']})" if row.get("error") else ""))
    return 0


PRELOAD = ("torch", "lightning", "wandb", "suite.cli", "suite.module", "suite.data", "suite.evaluate",
           "suite.lm_eval_model", "suite.tracking", "suite.overhead")
"""What the sweep's fork server imports once, so that a point forked from it starts with its libraries loaded
(`suite.sweep.run_point`): importing lightning and torch alone takes seconds, a large share of a short point."""


def forked(path: str, log: str, env: dict) -> None:
    """A point in a process forked from the sweep's fork server, its imports done: its output goes to `log`, its
    slot's environment (`suite.jobs.slot_env`) is set, and torch takes the threads it names."""
    import os

    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    os.environ.update(env)
    if "OMP_NUM_THREADS" in env:
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))  # the fork server's OpenMP read its own environment
    raise SystemExit(main([path]))


def main(argv: list[str]) -> int:
    _die_with_parent()
    from suite.cli import quiet

    quiet()
    return run(json.loads(Path(argv[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
