"""Installing foresight keeps the user's torch: pip, resolving the project's dependencies and every extra from scratch
against the index with the installed torch pinned, installs no torchvision and no other torch (the `corpus` extra's
litdata once pulled torchvision, and a CUDA torch with it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_installing_the_project_with_every_extra_keeps_the_installed_torch(tmp_path):
    extras = ",".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    (tmp_path / "pins.txt").write_text(f"torch=={torch.__version__}\n")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
         str(tmp_path / "report.json"), "-c", str(tmp_path / "pins.txt"), f"{ROOT}[{extras}]"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]  # a dependency that needs another torch fails here
    installs = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert "torchvision" not in installs and "litdata" not in installs
    assert installs.get("torch", torch.__version__).split("+")[0] == torch.__version__.split("+")[0]
