"""Where a run's numbers go: `metrics.jsonl` in its run folder (always), and wandb (offline unless the environment
says online; never the reason a run fails)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from suite.results import write_json


class JsonlLogger(Logger):
    """One JSON object per logged step in `save_dir/metrics.jsonl` (appended, so a resumed run continues it), the
    way lingua keeps a run reproducible from its folder. As the first logger it also makes `save_dir` the run's log
    folder, where LightningCLI writes the resolved config.yaml."""

    def __init__(self, save_dir: str, filename: str = "metrics.jsonl"):
        super().__init__()
        self._save_dir, self.filename = save_dir, filename

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return self._save_dir

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the resolved config.yaml beside metrics.jsonl holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        Path(self._save_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self._save_dir) / self.filename, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def wandb_online() -> bool:
    return os.environ.get("WANDB_MODE", "offline").lower() in ("online", "run")


def wandb_sync_line(runs: Path) -> str | None:
    """How to upload a sweep's offline wandb runs (its runs folder's wandb/), or None when there are none."""
    offline = sorted((Path(runs) / "wandb").glob("offline-run-*"))
    if not offline:
        return None
    return (f"{len(offline)} wandb runs are offline in {Path(runs) / 'wandb'}; to upload them: "
            f"wandb sync {Path(runs) / 'wandb'}/offline-run-*")


class SafeWandbLogger(WandbLogger):
    """Lightning's WandbLogger, offline by default (the run lands in `save_dir/wandb`, to `wandb sync` later) and
    online only when WANDB_MODE=online says so; if wandb cannot start online (no network, no credentials), the run
    goes on offline after one warning."""

    def __init__(self, project: str = "foresight", save_dir: str = ".", name: str | None = None,
                 id: str | None = None, group: str | None = None, job_type: str | None = None,
                 tags: list[str] | None = None, config: dict | None = None):
        """
        Args:
            project: The wandb project.
            save_dir: Where the wandb/ folder of offline runs goes.
            name: The run's display name.
            id: The run's id: the same id resumes the same wandb run (a resumed sweep point).
            group: Groups runs in the wandb UI (a sweep's name).
            job_type: A second grouping (the objective).
            tags: Filters in the wandb UI (n, size, data).
            config: The run's full configuration, shown and filterable in wandb.
        """
        import wandb

        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(project=project, save_dir=save_dir, name=name, id=id, offline=not wandb_online(),
                         group=group, job_type=job_type, tags=tags, config=config,
                         settings=wandb.Settings(init_timeout=float(os.environ.get("WANDB_INIT_TIMEOUT", 30)),
                                                  console="off", silent=True))
        self._wandb_init.pop("anonymous", None)  # Lightning passes it; wandb warns that it is gone

    @property
    def experiment(self):
        try:
            return super().experiment
        except Exception as err:  # wandb's errors for an unreachable server or missing key vary by version
            if self._offline:
                raise
            rank_zero_warn(f"wandb could not start online ({type(err).__name__}: {str(err).splitlines()[0]}); this "
                           f"run logs offline under {self._save_dir}; `wandb sync` it later")
            self._offline, self._experiment = True, None
            self._wandb_init["mode"] = "offline"  # wandb read WANDB_MODE=online once already; say it to init
            return super().experiment


class Checkpoint(ModelCheckpoint):
    """Checkpoints of the run under <default_root_dir>/checkpoints, last.ckpt always the final step.

    Lightning's ModelCheckpoint writes last.ckpt every `every_n_train_steps` only, so a run of 200 steps saved
    every 7 would end with step 196 in last.ckpt; this one also writes it when training ends."""

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class ProgressFile(L.Callback):
    """Writes {"step", "max_steps", "stage"} to `path` at most twice a second, replacing it whole: how a sweep
    follows the training of the point it started in another process."""

    def __init__(self, path: str):
        self.path, self._last = Path(path), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if time.monotonic() - self._last > 0.5 or trainer.global_step >= trainer.max_steps:
            self._last = time.monotonic()
            write_progress(self.path, trainer.global_step, trainer.max_steps, "fit")


def write_progress(path: Path, step: int, total: int, stage: str) -> None:
    write_json(path, {"step": step, "max_steps": total, "stage": stage})
