"""The wheel holds the whole tool: built from the project's files, installed apart from the checkout, the commands
that read shipped files (sweeps, bench, lm-eval task YAMLs) work from a folder that is not the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the project's files, installed (without dependencies: this environment has
    them) into its own folder."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("suite", "objectives", "tasks"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w",
                    str(base / "dist"), str(source)], check=True, timeout=600)
    wheel = next((base / "dist").glob("foresight_bench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [p.relative_to(ROOT).as_posix() for name in ("suite", "objectives", "tasks")
               for p in (ROOT / name).rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    assert sorted(set(shipped) - set(names)) == []  # every source and data file of the packages is in the wheel
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                    str(base / "site"), str(wheel)], check=True, timeout=600)
    return base / "site"


def run(site: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=folder, env=env, timeout=600)


@pytest.mark.slow
def test_the_installed_wheel_runs_the_commands_that_read_shipped_files(installed, tmp_path):
    where = run(installed, tmp_path, "-c", "import suite, objectives, tasks; print(suite.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(installed)), where.stdout + where.stderr
    dry = run(installed, tmp_path, "-m", "suite.cli", "sweep", "--config", "quickstart", "--dry-run")
    assert dry.returncode == 0 and "quickstart" in dry.stdout, dry.stderr[-2000:]
    bench = run(installed, tmp_path, "-m", "suite.cli", "bench", "--help")
    assert bench.returncode == 0 and "memory" in bench.stdout, bench.stderr[-2000:]
    load = run(installed, tmp_path, "-c", """
from pathlib import Path
from lm_eval.tasks import TaskManager
from suite.evaluate import foresight_tasks, write_tasks
write_tasks(["star_graph"], None, Path("tasks"))
loaded = TaskManager(include_path="tasks", include_defaults=False).load_task_or_group(["star_graph"])
print(len(list(loaded["star_graph"].test_docs())), sorted(foresight_tasks()))
""")
    assert load.returncode == 0, load.stderr[-2000:]
    assert load.stdout.split()[0] == "1000" and "humaneval" in load.stdout  # the default star graph's test split
