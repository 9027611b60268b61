"""Faults a long benchmark meets on a shared cluster: a job killed at any moment (SIGKILL: nothing gets to clean up),
two shards writing one results folder, files cut short, a run folder missing its config, a diverging loss, wandb
online with no way to reach it. After each, rerunning must finish every point exactly once, with the numbers an
undisturbed run gets, and nothing already written lost.

The sweep tests share one undisturbed reference sweep; each disturbed sweep must end with its scores."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from suite.results import append_row, read_rows
from tests.conftest import STAR_17

STEPS = 120
SWEEP = {"name": "toy", "data": {"task": "star_graph", "options": STAR_17, "batch_size": 16}, "sizes": ["nano"],
         "seeds": [0], "n": [2], "objectives": ["ntp", "parallel_mtp"], "budget": {"steps": STEPS},
         "eval": {"tasks": ["star_graph"], "limit": 8}}
SAME = ("scores", "items", "families", "params")
"""What two runs of a point on one machine must agree on exactly (with train.final_loss and the loss curve)."""


def foresight(*args: str, cwd: Path, fault: str | None = None, wait: bool = True):
    """The real command in a session of its own (a fault kills that whole process group, never pytest)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("FORESIGHT_FAULT", None)
    if fault:
        env["FORESIGHT_FAULT"] = fault
    process = subprocess.Popen([sys.executable, "-m", "suite.cli", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    if not wait:
        return process
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def write_sweep(folder: Path, **settings) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, **settings}))
    return path


def sweep(folder: Path, *extra: str, fault: str | None = None):
    return foresight("sweep", "--config", str(folder / "toy.yaml"), *extra, cwd=folder, fault=fault)


def rows_of(folder: Path) -> list[dict]:
    return read_rows(folder / "results/toy/runs.jsonl")


def losses(folder: Path, row: dict) -> list[tuple[int, float]]:
    """The point's logged training loss, step by step (metrics.jsonl, appended to across a resume)."""
    records = [json.loads(line) for line in (folder / row["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    return sorted({(r["step"], r["train/loss"]) for r in records if "train/loss" in r})


def assert_same_numbers(folder: Path, rows: list[dict], reference: Path) -> None:
    expected = {row["point"]: row for row in rows_of(reference)}
    assert [row["point"] for row in rows] == list(expected)
    for row in rows:
        assert row["status"] == "ok", row.get("error")
        assert {key: row[key] for key in SAME} == {key: expected[row["point"]][key] for key in SAME}
        assert row["train"]["final_loss"] == expected[row["point"]]["train"]["final_loss"]
        assert row["train"]["steps"] == STEPS
        # Known gap: Lightning saves a step's checkpoint before it logs that step's metrics, so a kill between the two
        # loses that one line of metrics.jsonl, and the resumed run starts after it. Only such a line may be missing.
        ours, theirs = dict(losses(folder, row)), dict(losses(reference, expected[row["point"]]))
        assert ours.items() <= theirs.items()
        assert all((step + 1) % (STEPS // 10) == 0 for step in theirs.keys() - ours.keys())
        assert len(theirs) - len(ours) <= (1 if row["train"]["resumed_from_step"] else 0)


def assert_whole_rows(folder: Path) -> None:
    """Every line of runs.jsonl is a whole row, and no point has two."""
    lines = (folder / "results/toy/runs.jsonl").read_bytes().splitlines()
    points = [json.loads(line)["point"] for line in lines]
    assert len(points) == len(set(points))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The two-point sweep, undisturbed, one point at a time (its rows in the grid's order)."""
    folder = tmp_path_factory.mktemp("reference")
    write_sweep(folder)
    result = sweep(folder, "--jobs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["status"] for row in rows_of(folder)] == ["ok", "ok"]
    return folder


@pytest.mark.slow
def test_a_point_rerun_with_the_command_its_row_records_gets_identical_numbers(reference, tmp_path):
    """Same seed, same machine: the recorded `foresight agent` command, run into fresh folders, gives the same
    loss curve, scores and per-document items."""
    (row,) = [row for row in rows_of(reference) if row["axes"]["objective"] == "parallel_mtp"]
    command = shlex.split(row["command"])[1:]
    assert command[:5] == ["agent", "--config", str(reference / "toy.yaml"), "--point", row["point"]]
    result = foresight(*command[:5], "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (again,) = rows_of(tmp_path)
    assert {key: again[key] for key in SAME} == {key: row[key] for key in SAME}
    assert again["train"]["final_loss"] == row["train"]["final_loss"]
    assert losses(tmp_path, again) == losses(reference, row)


def wait_for(condition, seconds: float = 300) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.slow
def test_a_sweep_killed_again_and_again_finishes_every_point_once_with_the_undisturbed_numbers(reference, tmp_path):
    """SIGKILL of the sweep and its point together (its process group), at three moments in a row: after lm-eval
    scored the first point but before eval.json; halfway through writing its row; during the second point's
    training, after its first checkpoint. Then one clean rerun. One point at a time (--jobs 1), so each kill lands
    at its moment of the one point running."""
    write_sweep(tmp_path)
    rows_file = tmp_path / "results/toy/runs.jsonl"

    assert sweep(tmp_path, "--jobs", "1", fault="eval").returncode == -signal.SIGKILL
    assert not rows_file.exists()
    (first,) = tmp_path.glob("runs/toy/ntp-*")
    trained = {name: (first / name).read_bytes() for name in ("trained.json", "metrics.jsonl", "checkpoints/last.ckpt")}
    assert not (first / "eval.json").exists()

    assert sweep(tmp_path, "--jobs", "1", fault="row").returncode == -signal.SIGKILL
    torn = rows_file.read_bytes()
    assert torn.startswith(b'{"schema": 1, ') and not torn.endswith(b"\n")  # half a row
    assert (first / "eval.json").is_file()

    process = foresight("sweep", "--config", str(tmp_path / "toy.yaml"), "--jobs", "1", cwd=tmp_path, wait=False)
    assert wait_for(lambda: any(tmp_path.glob("runs/toy/parallel_mtp-*/checkpoints/last.ckpt")))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert "runs.jsonl: line 1 is not a complete row" in process.stderr.read()  # the sweep read past it
    assert "runs.jsonl: its last line was a torn row" in (first / "log.txt").read_text()  # the point set it aside
    assert (tmp_path / "results/toy/runs.jsonl.torn").read_bytes() == torn + b"\n"  # kept aside, whole
    assert [row["point"] for row in rows_of(tmp_path)] == [first.name]

    result = sweep(tmp_path, "--jobs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is not a complete row" not in result.stderr  # no torn line left to skip
    assert_whole_rows(tmp_path)
    rows = rows_of(tmp_path)
    assert_same_numbers(tmp_path, rows, reference)
    assert {name: (first / name).read_bytes() for name in trained} == trained  # trained once
    assert rows[0]["train"]["resumed_from_step"] is None
    assert STEPS // 10 <= rows[1]["train"]["resumed_from_step"] < STEPS


@pytest.mark.slow
def test_two_shards_at_once_into_one_results_folder_write_every_row_whole(reference, tmp_path):
    write_sweep(tmp_path)
    shards = [foresight("sweep", "--config", str(tmp_path / "toy.yaml"), "--shard", f"{i}/2", cwd=tmp_path,
                        wait=False) for i in range(2)]
    for shard in shards:
        out, err = shard.communicate(timeout=600)
        assert shard.returncode == 0, err[-3000:]
    assert_whole_rows(tmp_path)
    order = [row["point"] for row in rows_of(reference)]
    assert_same_numbers(tmp_path, sorted(rows_of(tmp_path), key=lambda row: order.index(row["point"])), reference)


def copy_of(reference: Path, folder: Path) -> Path:
    """The reference sweep's folders, copied; the second point set back to "trained until its last checkpoint,
    not yet finished" (its row, trained.json and eval.json gone)."""
    for name in ("runs", "results", "toy.yaml"):
        (shutil.copytree if (reference / name).is_dir() else shutil.copy)(reference / name, folder / name)
    rows_file = folder / "results/toy/runs.jsonl"
    first, _ = rows_file.read_bytes().splitlines(keepends=True)
    rows_file.write_bytes(first)
    (run,) = folder.glob("runs/toy/parallel_mtp-*")
    for stage in ("trained.json", "eval.json", "overhead.json"):
        (run / stage).unlink()
    return run


@pytest.mark.slow
def test_a_truncated_checkpoint_fails_its_point_with_the_path_named_and_is_left_as_it_was(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    checkpoint = run / "checkpoints/last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    before = {path: path.read_bytes() for path in (checkpoint, tmp_path / "results/toy/runs.jsonl")}
    result = sweep(tmp_path)
    # the sweep goes on past a failed point, writes its report, and exits non-zero saying how many failed
    assert result.returncode == 1, result.stderr[-3000:]
    assert "foresight: error: 1 of 2 points did not finish" in result.stderr
    assert checkpoint.read_bytes() == before[checkpoint]
    rows_file = tmp_path / "results/toy/runs.jsonl"
    assert rows_file.read_bytes().startswith(before[rows_file])  # the finished row is untouched
    ntp, failed = rows_of(tmp_path)
    assert ntp["status"] == "ok" and failed["status"] == "failed"
    assert f"checkpoint '{checkpoint.relative_to(tmp_path)}' cannot be read (" in failed["error"]
    assert "move it away to train the point from the start" in failed["error"]


@pytest.mark.slow
def test_a_run_folder_missing_its_config_resumes_from_its_checkpoint(reference, tmp_path):
    run = copy_of(reference, tmp_path)
    for config in ("point.json", "fit.yaml", "config.yaml"):
        (run / config).unlink()
    result = sweep(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(tmp_path)
    assert_same_numbers(tmp_path, rows, reference)
    assert rows[1]["train"]["resumed_from_step"] == STEPS
    assert (run / "point.json").is_file() and (run / "config.yaml").is_file()  # written anew


@pytest.mark.slow
@pytest.mark.parametrize("data", ["star_graph", "corpus"])
def test_a_fit_killed_and_resumed_from_last_ends_with_the_weights_of_an_uninterrupted_fit(tmp_path, data, request):
    """Bitwise: on CPU the resumed run takes the same batches (EpochSampler and ResumableLoader in memory,
    for a prepared corpus too), optimizer state and learning-rate schedule, and
    the same fp32 kernels on the same inputs give the same bits. The corpus run keeps attention within documents."""
    from suite.data import TaskData

    # the kill lands mid-epoch (at a checkpoint every 7 steps) and the resumed run crosses an epoch's end
    steps = 200 if data == "star_graph" else 100
    if data == "star_graph":
        flags = ["--data.task=star_graph", *[f"--data.options.{k}={v}" for k, v in STAR_17.items()]]
        options = STAR_17
    else:
        options = {"path": str(request.getfixturevalue("prepared_corpus")), "seq_len": 64, "document_mask": True}
        flags = ["--data.task=corpus", *[f"--data.options.{k}={v}" for k, v in options.items()]]
    epoch = len(TaskData(data, options, batch_size=8).train_dataloader())
    assert 7 < epoch < steps * 3 / 4
    common = ["fit", "--model.size=nano", "--model.objective=ParallelMTP", "--model.objective.n=2", *flags,
              "--data.batch_size=8", f"--trainer.max_steps={steps}", "--trainer.enable_progress_bar=false",
              "--trainer.logger=false", "--checkpoint.every_n_train_steps=7"]
    whole = foresight(*common, f"--trainer.default_root_dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    root = tmp_path / "killed"
    last = root / "checkpoints/last.ckpt"
    process = foresight(*common, f"--trainer.default_root_dir={root}", cwd=tmp_path, wait=False)
    assert wait_for(last.is_file)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=False)["global_step"]
    assert 0 < killed_at < steps and killed_at % epoch != 0  # mid-epoch
    assert killed_at < (steps - 1) // epoch * epoch  # an epoch's end lies ahead of the resumed run

    resumed = foresight(*common, f"--trainer.default_root_dir={root}", "--ckpt_path=last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    actual = torch.load(last, weights_only=False)
    assert actual["global_step"] == expected["global_step"] == steps
    assert actual["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    moments = [state["exp_avg_sq"] for state in expected["optimizer_states"][0]["state"].values()]
    assert all(torch.equal(a["exp_avg_sq"], b) for a, b in
               zip(actual["optimizer_states"][0]["state"].values(), moments))


def test_a_row_torn_by_a_killed_writer_is_set_aside_and_the_file_keeps_whole_rows(tmp_path):
    rows_file = tmp_path / "runs.jsonl"
    append_row(rows_file, {"point": "a", "status": "ok"})
    write = f"from suite.results import append_row; append_row(__import__('pathlib').Path({str(rows_file)!r}), " \
            "{'point': 'b', 'status': 'ok', 'pad': 'x' * 100000})"
    killed = subprocess.run([sys.executable, "-c", write], env={**os.environ, "FORESIGHT_FAULT": "row"},
                            start_new_session=True)
    assert killed.returncode == -signal.SIGKILL
    torn = rows_file.read_bytes().splitlines()[1]
    assert len(torn) == (len(json.dumps({"schema": 1, "point": "b", "status": "ok", "pad": "x" * 100000})) + 1) // 2
    warnings = []
    assert [row["point"] for row in read_rows(rows_file, warn=warnings.append)] == ["a"]
    assert warnings == [f"{rows_file}: line 2 is not a complete row (a run killed while writing?); skipped"]

    append_row(rows_file, {"point": "c", "status": "ok"})
    assert rows_file.read_bytes() == b'{"schema": 1, "point": "a", "status": "ok"}\n' \
                                     b'{"schema": 1, "point": "c", "status": "ok"}\n'
    assert (tmp_path / "runs.jsonl.torn").read_bytes() == torn + b"\n"


def test_writers_in_many_processes_never_interleave_rows(tmp_path):
    """Rows far larger than a pipe or page buffer, from 4 processes at once."""
    rows_file = tmp_path / "runs.jsonl"
    write = ("import sys; from pathlib import Path; from suite.results import append_row\n"
             "for i in range(25): append_row(Path(sys.argv[1]), {'point': f'{sys.argv[2]}-{i}', 'pad': sys.argv[2] "
             "* 200000})")
    writers = [subprocess.Popen([sys.executable, "-c", write, str(rows_file), name]) for name in "abcd"]
    assert [writer.wait() for writer in writers] == [0] * 4
    rows = read_rows(rows_file, warn=pytest.fail)
    assert sorted(row["point"] for row in rows) == sorted(f"{name}-{i}" for name in "abcd" for i in range(25))
    assert all(row["pad"] == row["point"][0] * 200000 for row in rows)


def test_a_fit_whose_loss_diverges_stops_at_that_step_and_says_so_last(tmp_path):
    result = foresight("fit", "--model.size=nano", "--model.lr=1e30", "--model.warmup_steps=0",
                       "--data.task=star_graph", *[f"--data.options.{k}={v}" for k, v in STAR_17.items()],
                       "--trainer.max_steps=50", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                       f"--trainer.default_root_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]  # after Lightning's own banner (the trainer had started)
    assert line.startswith("foresight: error: the training loss is ")
    step = int(line.split(" at step ")[1].split()[0])
    assert 0 < step < 50 and "allowed: a finite loss" in line
    assert not (tmp_path / "run/checkpoints/last.ckpt").exists()  # no checkpoint of a diverged model


@pytest.mark.slow
@pytest.mark.parametrize("key", [None, "0" * 40], ids=["no key", "a key and no server"])
def test_wandb_set_online_with_no_network_or_key_logs_offline_after_one_warning(key, tmp_path):
    env_home = tmp_path / "home"
    env_home.mkdir()
    env = {name: value for name, value in os.environ.items() if not name.startswith("WANDB_")}
    env |= {"WANDB_MODE": "online", "HOME": str(env_home), "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens
            "WANDB_INIT_TIMEOUT": "5"} | ({"WANDB_API_KEY": key} if key else {})
    args = ["fit", "--model.size=nano", "--data.task=star_graph", *[f"--data.options.{k}={v}" for k, v in
                                                                    STAR_17.items()],
            "--trainer.max_steps=3", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.logger=suite.tracking.SafeWandbLogger",
            f"--trainer.logger.save_dir={tmp_path / 'run'}", "--trainer.logger.name=online-test"]
    result = subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "UserWarning: wandb could not start online" in line]
    assert len(warnings) == 1, result.stderr[-3000:]  # (Python shows the warning's source line after it)
    assert "this run logs offline" in warnings[0]
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    (offline,) = (tmp_path / "run/wandb").glob("offline-run-*")
    assert any(offline.glob("*.wandb"))
