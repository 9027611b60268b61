"""`foresight lm-eval ARGS`: lm-eval's own command line, every flag and the same output, with foresight's model
registered (`--model foresight --model_args checkpoint=PATH`) and foresight's tasks on the include path.

lm-eval (0.4) knows a model by name only once Python code has imported the module that registers it; its registry
reads no entry points, so a plain `lm_eval --model foresight` in a shell cannot find foresight's model. This command
is that `lm_eval`, with the registration done first and, for each foresight task named in `--tasks`, the task's test
documents written (with the options of the checkpoint's own task, as `foresight eval` does) into a temporary folder
that lm-eval reads as `--include_path`. A folder of the user's own tasks given with `--include_path` is read too."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from suite.errors import UsageError


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv (the last one given), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


def without(argv: list[str], name: str) -> list[str]:
    """argv without every `--name VALUE` and `--name=VALUE`."""
    kept, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg == name:
            skip = i + 1 < len(argv)
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


def model_arg(model_args: str | None, key: str) -> str | None:
    """`key`'s value in lm-eval's `--model_args k1=v1,k2=v2`."""
    for pair in (model_args or "").split(","):
        name, _, value = pair.partition("=")
        if name.strip() == key and value:
            return value.strip()
    return None


def prepared_argv(argv: list[str], folder: Path) -> list[str]:
    """argv for lm-eval's CLI, with foresight's tasks written into `folder` and `folder` the include path."""
    from suite import checkpoints
    from suite.evaluate import foresight_tasks, write_tasks

    names = [n.strip() for n in (option(argv, "--tasks") or "").split(",") if n.strip()]
    ours = [n for n in names if n in foresight_tasks()]
    if not ours:
        return argv
    checkpoint = model_arg(option(argv, "--model_args"), "checkpoint")
    data = checkpoints.read(checkpoint, "--model_args checkpoint", mmap=True) if checkpoint else None
    write_tasks(ours, data, folder)
    user = option(argv, "--include_path")
    if user is not None:
        if not os.path.isdir(user):
            raise UsageError(f"--include_path {user!r} is not a folder; allowed: a folder of lm-eval task YAMLs")
        shutil.copytree(user, folder / "include_path", symlinks=True)
    return [*without(argv, "--include_path"), "--include_path", str(folder)]


def main(argv: list[str]) -> None:
    import suite.lm_eval_model  # noqa: F401  registers `foresight` (and `foresight-oracle`) with lm-eval
    from lm_eval.__main__ import cli_evaluate

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(variable, "1")
    with tempfile.TemporaryDirectory(prefix="foresight-lm-eval-") as folder:
        sys.argv = ["lm_eval", *prepared_argv(list(argv), Path(folder))]
        cli_evaluate()
