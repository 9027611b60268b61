"""What `foresight fit|validate|test` checks and rewrites before LightningCLI parses: shipped configs by name,
objectives by registry name, the data a checkpoint was trained with, the validation schedule of a step budget,
and a run folder that already holds a run."""

from __future__ import annotations

import os
import re

CKPT_NAMES = ("last", "best", "hpc", "registry")
"""What --ckpt_path may name instead of a file: checkpoints Lightning finds itself."""


VALIDATIONS = 10
"""How many times a run with a step budget validates by default, evenly spaced."""


def validation_schedule(trainer) -> dict:
    """Trainer options that validate every max_steps / VALIDATIONS steps when the run has a step budget and the
    user left the schedule at Lightning's once-an-epoch default (a short run would validate never, a long one
    rarely); empty otherwise."""
    max_steps = trainer.get("max_steps") or -1
    if max_steps <= 0 or trainer.get("val_check_interval") not in (None, 1.0) or \
            trainer.get("check_val_every_n_epoch") != 1:
        return {}
    return {"val_check_interval": max(1, max_steps // VALIDATIONS), "check_val_every_n_epoch": None}


def fresh_run_folder(root: str, overwrite: bool) -> None:
    """A fresh `fit` (no --ckpt_path) into a folder that holds a run's checkpoints is refused: Lightning would write
    last-v1.ckpt beside the old last.ckpt, and every command that reads checkpoints/last.ckpt would read the old
    model. With --overwrite the old checkpoints are removed first."""
    import shutil

    from suite.errors import UsageError

    folder = os.path.join(root, "checkpoints")
    if not os.path.isdir(folder) or not any(name.endswith(".ckpt") for name in os.listdir(folder)):
        return
    if not overwrite:
        raise UsageError(f"--trainer.default_root_dir {root!r} already holds a run ({folder}/last.ckpt); allowed: "
                         "--ckpt_path=last to resume it, --overwrite=true to start afresh there, or another "
                         "--trainer.default_root_dir")
    shutil.rmtree(folder)


def option_slots(argv: list[str], *names: str) -> list[tuple[int, str, str]]:
    """(index, prefix, value) of each value given to any of `names` in argv, in the order given: `--name VALUE`
    (index of VALUE, prefix "") or `--name=VALUE` (its index, prefix "--name="); `argv[index] = prefix + new`
    gives the option another value."""
    slots = []
    for i, arg in enumerate(argv):
        key, is_pair, value = arg.partition("=")
        if key in names and is_pair:
            slots.append((i, f"{key}=", value))
        elif arg in names and i + 1 < len(argv):
            slots.append((i + 1, "", argv[i + 1]))
    return slots


def option_values(argv: list[str], *names: str) -> list[str]:
    """The values given to any of `names` in argv, as `--name VALUE` or `--name=VALUE`, in the order given."""
    return [value for _, _, value in option_slots(argv, *names)]


CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
"""The shipped `fit` configs, which `--config NAME` finds by name from any folder."""


def check_config_files(argv: list[str]) -> list[str]:
    """argv with each `--config NAME` of a shipped config written as its path; each `--config FILE` read as YAML
    before Lightning parses it, so a missing or malformed file is named."""
    import yaml

    from suite.errors import UsageError, nearest, one_line

    shipped = sorted(name[:-5] for name in os.listdir(CONFIGS) if name.endswith(".yaml"))
    out = list(argv)
    for i, prefix, value in option_slots(argv, "-c", "--config"):
        if not os.path.isfile(value) and value in shipped:
            value = os.path.join(CONFIGS, f"{value}.yaml")
            out[i] = prefix + value
        if not os.path.isfile(value):
            if value.endswith((".yaml", ".yml", ".json")) or re.fullmatch(r"[\w.-]+", value):  # not inline YAML
                raise UsageError(f"--config {value!r} does not exist; allowed: a YAML file of options or a shipped "
                                 f"config by name: {', '.join(shipped)}{nearest(value, shipped)}")
            continue
        try:
            with open(value) as file:
                yaml.safe_load(file)
        except yaml.YAMLError as err:
            raise UsageError(f"--config {value!r} is not valid YAML ({one_line(err)})") from None
    return out


def checkpoint_data(argv: list[str]) -> dict:
    """For `validate`/`test` of a checkpoint file: the data settings it was trained with (task, options, reverse)."""
    if argv[0] not in ("validate", "test"):
        return {}
    values = option_values(argv, "--ckpt_path")
    if not values or values[-1] in CKPT_NAMES or not os.path.isfile(values[-1]):
        return {}
    from suite.checkpoints import read

    data = read(values[-1], "--ckpt_path", mmap=True).get("datamodule_hyper_parameters") or {}
    return {key: data[key] for key in ("task", "options", "reverse") if key in data}


def class_named_objectives(argv: list[str]) -> list[str]:
    """argv with `--model.objective=parallel_mtp` (the registry name `sweep` and `sizes` take) written as the class
    name LightningCLI resolves (`ParallelMTP`); any other value is left for the parser to judge."""
    import objectives

    out = list(argv)
    for i, prefix, value in option_slots(argv, "--model.objective", "--model.objective.class_path"):
        cls = objectives.OBJECTIVES.get(value)
        if cls is not None:
            out[i] = prefix + cls.__name__
    return out
