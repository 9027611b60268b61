"""Where a number came from: the commit, the command, the machine and the library versions, for every result file."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "lightning", "foresight-bench", "lm-eval", "transformers", "wandb")


def git_commit(root: Path | None = None) -> dict:
    """HEAD's hash and whether the working tree's code differs from it (results/, where runs write their numbers
    while others run, does not count); None outside a git checkout."""
    root = root or Path(__file__).resolve().parents[1]

    def git(*args) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"commit": commit, "dirty": bool(changed) if commit else None}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance(command: list[str]) -> dict:
    """Commit, the foresight command that produced a result (its arguments after `foresight`), date, machine and
    versions: enough to say how to reproduce it."""
    return {**git_commit(), "command": shlex.join(["foresight", *command]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions()}
