"""`foresight sweep` end to end: real points (nano, a few steps) in their own processes, rows, run folders, offline
wandb runs, shards, and one-line errors for bad sweep files (kills and other faults: tests/reliability)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import objectives
import tasks
from suite import ObjectiveLM
from suite import sweep as sweeps
from suite.grid import SHIPPED
from suite.cli import main
from suite.results import read_rows
from tests.conftest import STAR_17, wandb_records

DATA = {"task": "star_graph", "options": STAR_17, "batch_size": 16}


def write_sweep(folder: Path, **settings) -> Path:
    config = {"name": "toy", "data": DATA, "sizes": ["nano"], "seeds": [0], "n": [2],
              "objectives": ["ntp", "parallel_mtp"], "budget": {"steps": 6}, "eval": {"tasks": ["star_graph"],
                                                                                      "limit": 4}}
    config.update(settings)
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def foresight(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "offline"}, **kwargs)


def test_a_two_point_sweep_writes_run_folders_rows_and_offline_wandb_runs_and_reruns_as_a_no_op(tmp_path):
    config = write_sweep(tmp_path)
    result = foresight("sweep", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_rows(tmp_path / "results/toy/runs.jsonl")
    assert [(row["axes"]["objective"], row["axes"]["n"], row["status"]) for row in rows] == [
        ("ntp", None, "ok"), ("parallel_mtp", 2, "ok")]
    for row in rows:
        run = tmp_path / row["run_dir"]
        assert {"config.yaml", "metrics.jsonl", "eval.json", "overhead.json", "trained.json"} <= {
            p.name for p in run.iterdir()}
        assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 6
        resolved = yaml.safe_load((run / "config.yaml").read_text())  # LightningCLI's own record of the fit
        assert resolved["trainer"]["max_steps"] == 6 and resolved["seed_everything"] == 0
        assert resolved["model"]["objective"]["class_path"].endswith("NTP" if row["axes"]["n"] is None
                                                                     else "ParallelMTP")
        seq_len = tasks.build("star_graph", **STAR_17).seq_len
        assert row["train"]["steps"] == 6 and row["train"]["tokens"] == 6 * 16 * seq_len
        assert row["overhead"]["flops_per_token"] == row["overhead"]["flops_per_token_analytic"]
        assert row["overhead"]["step_time_s"] > 0 and row["overhead"]["train_memory_bytes"] is not None
        assert len(row["items"]["star_graph"]) == 4 and set(row["items"]["star_graph"]) <= {0.0, 1.0}
        assert row["scores"]["star_graph"]["path_acc"] == sum(row["items"]["star_graph"]) / 4
        assert row["families"] == {"reasoning": row["scores"]["star_graph"]["path_acc"]}
        model = ObjectiveLM("nano", objectives.build(row["axes"]["objective"], **row["objective"]["init_args"]),
                            vocab_size=23)
        assert row["params"] == model.parameter_counts()
        assert row["command"].startswith(f"foresight agent --config {config} --point {row['point']}")
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses = [[record["step"], record["train/loss"]] for record in logged if "train/loss" in record]
        assert losses and row["curves"]["train/loss"] == losses  # 6 steps: fewer than CURVE_POINTS, all kept

        # the point's wandb run, offline under runs/toy/wandb: grouped, typed, tagged, with the summary
        (folder,) = (tmp_path / "runs/toy/wandb").glob(f"offline-run-*-{row['point']}")
        records = wandb_records(folder)
        assert records["run"]["run_group"] == "toy"
        assert records["run"]["job_type"] == row["axes"]["objective"]
        assert {"size=nano", "data=star_graph", "seed=0"} <= set(records["run"]["tags"])
        assert records["config"]["objective_name"] == row["axes"]["objective"] and records["config"]["n"] == row[
            "axes"]["n"]
        lightning = records["config"]["objective"]  # Lightning's hyperparameters, beside ours: every init argument
        assert lightning["class_path"] == row["objective"]["class_path"]
        assert row["objective"]["init_args"].items() <= lightning["init_args"].items()
        summary = records["summary"]
        assert summary["eval/star_graph/path_acc"] == row["scores"]["star_graph"]["path_acc"]
        assert summary["family/reasoning"] == row["families"]["reasoning"]
        assert summary["overhead/step_time_s"] == row["overhead"]["step_time_s"]
        assert summary["params/total"] == row["params"]["total"]
        assert any("train/loss" in step for step in records["history"])
    (comparison,) = (tmp_path / "runs/toy/wandb").glob("offline-run-*-toy-comparison")
    assert wandb_records(comparison)["run"]["job_type"] == "comparison"
    report = (tmp_path / "results/toy/report.md").read_text()
    assert "| parallel_mtp | 2 | 1 |" in report and "| ntp | 1 | 1 |" in report
    assert "| ntp | 1 | 1 |" in result.stdout  # the table, printed
    assert "wandb sync runs/toy/wandb/offline-run-*" in result.stdout

    # rerunning trains nothing and writes nothing
    before = (tmp_path / "results/toy/runs.jsonl").read_bytes()
    again = foresight("sweep", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 points, 2 already finished" in again.stdout
    assert (tmp_path / "results/toy/runs.jsonl").read_bytes() == before

    # the dry run's estimate is now calibrated against the two finished points of this machine
    assert all(row["wall_seconds"] > row["train"]["seconds"] > 0 for row in rows)
    from suite.estimate import si

    speed = sum(row["overhead"]["flops_per_token_analytic"] * row["train"]["tokens"] for row in rows) / sum(
        row["train"]["seconds"] for row in rows)
    dry = foresight("sweep", "--config", str(config), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert f"the speed finished points of the same task and size under results reached on this machine (star_graph " \
        f"nano {si(speed, 'FLOP/s')})" in dry.stdout and "start, evaluate and record (measured)" in dry.stdout \
        and "GFLOP |" in dry.stdout

    # one results folder, one setting: the same sweep name on other data is refused before anything runs
    assert all(row["setting"] == {**sweeps.sweep_setting(sweeps.load_sweep(str(config)))} for row in rows)
    before = (tmp_path / "results/toy/runs.jsonl").read_bytes()
    other = write_sweep(tmp_path, data={**DATA, "options": {**STAR_17, "num_nodes": 18}})
    refused = foresight("sweep", "--config", str(other), cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "sweep 'toy' differs from the rows already in results/toy (data.options.num_nodes: 18 here, 17 there); " \
           "allowed: a new sweep name, or --results elsewhere" in refused.stderr
    assert (tmp_path / "results/toy/runs.jsonl").read_bytes() == before


def test_a_point_whose_loss_diverges_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    config = write_sweep(tmp_path, objectives=["ntp", "fsp_revlm"], model={"lr": 1.0e+30, "warmup_steps": 0},
                         budget={"steps": 3}, eval={})
    result = foresight("sweep", "--config", str(config), cwd=tmp_path)
    # every point ran (or was said not to), the report is written, and the exit status says the sweep failed
    assert result.returncode == 1, result.stderr[-3000:]
    assert "foresight: error: 3 of 3 points did not finish" in result.stderr.strip().splitlines()[-1]
    rows = {row["point"].split("-")[0]: row for row in read_rows(tmp_path / "results/toy/runs.jsonl")}
    assert set(rows) == {"reverse", "ntp", "fsp_revlm"}
    for name in ("reverse", "ntp"):
        assert rows[name]["status"] == "failed"
        assert "the training loss is" in rows[name]["error"] and "at step" in rows[name]["error"]
    # the reverse model failed, so fsp_revlm never started; said so, not retried silently
    assert rows["fsp_revlm"]["status"] == "failed" and "did not finish" in rows["fsp_revlm"]["error"]
    assert "Failed points" in (tmp_path / "results/toy/report.md").read_text()


def test_the_shards_partition_the_grid_and_a_reverse_model_travels_with_its_readers(tmp_path):
    sweep = sweeps.load_sweep(str(write_sweep(
        tmp_path, sizes=["nano", "micro"], seeds=[0, 1, 2], n=[2, 4, 8],
        objectives=["ntp", "parallel_mtp", "causal_mtp", "sequential_mtp", "fsp_bow", "fsp_revlm"])))
    points = sweeps.grid(sweep)
    # per size and seed: ntp, 3 horizons of each of 3 MTP objectives, fsp_bow, fsp_revlm and its reverse model
    assert len(points) == 2 * 3 * (1 + 3 * 3 + 1 + 1 + 1)
    assert len({point.id for point in points}) == len(points)
    assert not any(point.objective == "ntp" and point.n is not None for point in points)
    for count in (1, 2, 3, 5, 7, 100):
        shards = [sweeps.shard(points, index, count) for index in range(count)]
        ids = [point.id for part in shards for point in part]
        assert sorted(ids) == sorted(point.id for point in points) and len(ids) == len(set(ids))
        for part in shards:
            inside = {point.id for point in part}
            assert all(point.needs in inside for point in part if point.needs)
            # a reverse model comes before the points that read it
            order = [point.id for point in part]
            assert all(order.index(point.needs) < order.index(point.id) for point in part if point.needs)
    assert sweeps.shard(points, 1, 3) == sweeps.shard(sweeps.grid(sweep), 1, 3)  # deterministic


def test_the_wandb_sweep_config_hands_each_point_to_foresight_agent(tmp_path, capsys):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args, load_sweep_config

    from suite import agent

    config = write_sweep(tmp_path)
    main(["sweep", "--config", str(config), "--export-wandb-sweep", str(tmp_path / "wandb_sweep.yaml")])
    exported = load_sweep_config(str(tmp_path / "wandb_sweep.yaml"))
    expected = [point.id for point in sweeps.grid(sweeps.load_sweep(str(config)))]
    assert exported["method"] == "grid" and exported["parameters"] == {"point": {"values": expected}}
    for point_id in expected:  # what a wandb agent runs for the point, as wandb builds it
        args = create_sweep_command_args({"args": {"point": {"value": point_id}}})["args"]
        command = create_sweep_command(list(exported["command"]))
        argv = [part for chunk in command for part in (args if chunk == "${args}" else [chunk])]
        assert argv[:2] == ["foresight", "agent"]
        sweep = sweeps.load_sweep(argv[argv.index("--config") + 1])
        assert agent.find_point(sweep, argv[-1].split("=", 1)[1])[0].id == point_id


@pytest.mark.parametrize("content, expected", [
    ("name: toy\nbudget: {steps: 3\n", "is not valid YAML"),
    ("- a\n- b\n", "holds list; allowed: a mapping"),
    ("name: toy\nbudget: {steps: 3}\nsizes: [nano, huge]\n", "unknown size 'huge' in the sweep; known: nano"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [ntp, nope]\n", "unknown objective 'nope'"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: []\n", "sweep objectives=[] is empty"),
    ("name: toy\nbudget: {steps: 3}\nn: [0]\n", "sweep n=0 is not a horizon"),
    ("name: toy\nbudget: {steps: 0}\n", "sweep budget={'steps': 0}"),
    ("name: toy\nbudget: {epochs: 3}\n", "allowed: {steps: N} or {tokens: N}"),
    ("name: toy\nbudget: {steps: 3}\nlr: 0.1\n", "unknown keys ['lr']"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{parallel_mtp: {heads: 3}}]\n", "heads"),
    ("name: toy\nbudget: {steps: 3}\neval: {tasks: [nope]}\n", "unknown task 'nope' for --tasks"),
    ("name: toy\nbudget: {steps: 3}\ndata: {task: nope}\n", "unknown task 'nope' in the sweep's data"),
    ("name: toy\nbudget: {steps: 3}\nn: [1]\nobjectives: [parallel_mtp]\n", "has an empty grid"),
    ("name: toy/../x\nbudget: {steps: 3}\n", "is not a plain name"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{objective: ntp, colour: red}]\n", "has unknown keys ['colour']"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{objective: ntp, label: a b}]\n",
     "sweep label 'a b' is not a plain"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [ntp, {objective: ntp}]\n", "give label 'ntp' twice"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{objective: ntp, label: x, control: yes please}]\n",
     "control='yes please'; allowed: true or false"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{objective: fsp_bow, n: [2]}]\n", "fsp_bow has no horizon"),
    ("name: toy\nbudget: {steps: 3}\nobjectives: [{objective: ntp, label: x, data: {options: {answer_order: up}}}]\n",
     "answer_order: Expected a typing.Literal['forward', 'reverse']. Got value: up"),
])
def test_a_bad_sweep_file_is_one_line_naming_the_problem_and_results_stay_untouched(tmp_path, capsys, content,
                                                                                     expected):
    results = tmp_path / "results/toy"
    results.mkdir(parents=True)
    (results / "runs.jsonl").write_text('{"point": "kept"}\n')
    (tmp_path / "bad.yaml").write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--config", str(tmp_path / "bad.yaml"), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("foresight: error: ") and err.count("\n") == 1 and expected in err, err
    assert (results / "runs.jsonl").read_text() == '{"point": "kept"}\n'


def test_an_unwritable_results_folder_or_a_bad_shard_is_one_line_before_anything_runs(tmp_path, capsys):
    config = write_sweep(tmp_path)
    (tmp_path / "results").write_text("a file where the results folder should be")
    for argv, expected in (
            (["--results", str(tmp_path / "results")], "cannot be written"),
            (["--shard", "3/3"], "index 3 is not in [0, 2]"),
            (["--shard", "half"], "is not i/N")):
        with pytest.raises(SystemExit):
            main(["sweep", "--config", str(config), *argv])
        err = capsys.readouterr().err
        assert err.startswith("foresight: error: ") and err.count("\n") == 1 and expected in err, err
    assert (tmp_path / "results").read_text() == "a file where the results folder should be"
    assert not (tmp_path / "runs").exists()


def test_the_readme_sweep_commands_name_the_shipped_quickstart_and_one_of_its_points(tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    quickstart = sweeps.load_sweep("quickstart")
    ids = {point.id for point in sweeps.grid(quickstart)}
    named = re.findall(r"--config quickstart --point (\S+)", readme)
    assert named and set(named) <= ids
    # the sweep file quoted in the README is the shipped one, key for key
    quoted = re.search(r"# suite/sweeps/quickstart.yaml.*?\n(.*?)```", readme, re.S).group(1)
    (tmp_path / "quoted.yaml").write_text(quoted)
    assert sweeps.grid(sweeps.load_sweep(str(tmp_path / "quoted.yaml"))) == sweeps.grid(quickstart)


def test_a_token_budget_is_the_same_number_of_steps_for_every_point(tmp_path):
    from suite.point import max_steps

    sweep = sweeps.load_sweep(str(write_sweep(tmp_path, budget={"tokens": 10_000},
                                              objectives=["ntp", "parallel_mtp", "fsp_revlm"])))
    seq_len = tasks.build("star_graph", **STAR_17).seq_len
    specs = [sweeps.point_spec(sweep, point, tmp_path / "runs", tmp_path / "results") for point in sweeps.grid(sweep)]
    # 16 sequences a step: the budget rounded up to whole steps
    assert {max_steps(spec) for spec in specs} == {-(-10_000 // (16 * seq_len))}
    two_devices = {**specs[0], "trainer": {"devices": 2}}
    assert max_steps(two_devices) == -(-10_000 // (2 * 16 * seq_len))


def test_a_row_records_the_commands_that_rerun_its_point_and_its_sweep_with_their_folders(tmp_path):
    from suite.point import base_row

    sweep = sweeps.load_sweep("quickstart")
    point = sweeps.grid(sweep)[2]
    default = base_row(sweeps.point_spec(sweep, point, Path("runs/quickstart"), Path("results/quickstart")))
    assert default["sweep_command"] == "foresight sweep --config quickstart"
    assert default["command"] == f"foresight agent --config quickstart --point {point.id} --runs runs --results results"
    moved = base_row(sweeps.point_spec(sweep, point, Path("scratch/quickstart"), Path("results/cpu/quickstart")))
    assert moved["sweep_command"] == "foresight sweep --config quickstart --runs scratch --results results/cpu"
    assert moved["axes"] == {"objective": point.objective, "label": point.objective, "control": False, "n": point.n,
                             "size": "nano", "seed": 0, "data": "star_graph"}


SHIPPED_GRIDS = [("quickstart", 12), ("tour", 11), ("star_graph_planning", 24), ("mix_horizon", 15), ("overhead_sizes", 40),
                 ("star_graph_planning_paper", 42), ("star_graph_planning_500k", 42), ("stdlib_corpus", 12),
                 ("tree_path_planning", 21), ("sat_planning", 21), ("star_graph_kv", 15),
                 ("star_graph_heads_micro", 39), ("star_graph_heads_nano", 36), ("size_ladder", 45),
                 ("size_ladder_gpu", 75)]


@pytest.mark.parametrize("name, points", SHIPPED_GRIDS)
def test_every_shipped_sweep_loads_and_has_the_grid_its_results_say(name, points, request, tmp_path, monkeypatch):
    assert {path.stem for path in SHIPPED.glob("*.yaml")} == {name for name, _ in SHIPPED_GRIDS}
    if name in ("stdlib_corpus", "size_ladder", "size_ladder_gpu"):  # the folder the README's prepare writes (or
        (tmp_path / "data").mkdir()                                   # the user's): a prepared one stands in
        for folder in ("stdlib", "your_corpus"):
            (tmp_path / "data" / folder).symlink_to(request.getfixturevalue("prepared_corpus"))
        monkeypatch.chdir(tmp_path)
    if name == "size_ladder_gpu":  # rows of 1,024 tokens: longer than the stand-in corpus's splits
        shipped = yaml.safe_load((SHIPPED / f"{name}.yaml").read_text())
        shipped["data"]["options"]["seq_len"] = 128
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(shipped))
        name = str(tmp_path / f"{name}.yaml")
    sweep = sweeps.load_sweep(name)
    assert sweep.name == Path(name).stem and len(sweeps.grid(sweep)) == points


def test_labelled_entries_get_their_own_data_horizons_and_ids(tmp_path):
    config = write_sweep(tmp_path, objectives=[
        "ntp", {"objective": "ntp", "label": "ntp_reverse", "data": {"options": {"answer_order": "reverse"}},
                "control": True},
        {"objective": "parallel_mtp", "label": "siblings", "options": {"layout": "siblings"}, "n": [4]}], n=[2, 4])
    points = sweeps.grid(sweeps.load_sweep(str(config)))
    by_label = {point.label: point for point in points}
    assert [point.label for point in points] == ["ntp", "ntp_reverse", "siblings"]  # siblings at its own n only
    assert by_label["siblings"].n == 4 and by_label["siblings"].options == {"layout": "siblings", "n": 4}
    assert by_label["ntp_reverse"].data["options"] == {**STAR_17, "answer_order": "reverse"}
    assert by_label["ntp_reverse"].control and not by_label["ntp"].control
    assert by_label["ntp"].data == DATA
    assert by_label["ntp_reverse"].id.startswith("ntp_reverse-nano-s0-") and by_label["ntp_reverse"].id[-8:] != \
        by_label["ntp"].id[-8:]


@pytest.mark.parametrize("settings, option", [
    ({"model": {"warmup": 5}}, "point ntp-nano-s0-"),
    ({"trainer": {"max_step": 3}}, "point ntp-nano-s0-"),
    ({"data": {**DATA, "batch": 8}}, "point ntp-nano-s0-"),
], ids=["model option", "trainer option", "data option"])
def test_a_dry_run_parses_every_points_fit_config_and_refuses_what_fit_would(tmp_path, settings, option):
    """What every real point would fail on (and the sweep record as failed) is a one-line error before anything
    runs, naming the point and the option."""
    config = write_sweep(tmp_path, **settings)
    result = foresight("sweep", "--config", str(config), "--dry-run", cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"foresight: error: sweep 'toy' {option}") and "does not accept option" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
