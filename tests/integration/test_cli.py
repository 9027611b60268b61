"""The `foresight` command end to end, in subprocesses, as a user runs it."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite.cli import main
from tests.reliability.test_bad_input import CASES, KEEP

CONFIGS = sorted((Path(__file__).parents[2] / "suite" / "configs").glob("*.yaml"))
SMALL_DATA = ["--data.options.num_train=2000", "--data.options.num_val=64", "--data.options.num_test=64"]


def foresight(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_fit_writes_a_checkpoint_and_resumes_from_last(tmp_path):
    root = tmp_path / "run"
    common = ["--model.size=nano", "--model.objective=NTP", "--data.task=star_graph", *SMALL_DATA,
              f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false"]
    first = foresight("fit", *common, "--trainer.max_steps=30", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    said = first.stdout + first.stderr
    assert "Total FLOPs: 0" not in said and "Total FLOPs: " in said  # the summary counts one sequence's forward
    assert "litlogger" not in said  # Lightning's advert
    last = root / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["global_step"] == 30
    assert checkpoint["tokens_seen"] == 30 * 64 * 26  # batch 64, 26 tokens per degree-2 length-4 graph
    assert checkpoint["hyper_parameters"]["objective"] == {"class_path": "objectives.ntp.NTP", "init_args": {}}
    assert checkpoint["hyper_parameters"]["size"]["name"] == "nano"
    assert checkpoint["datamodule_hyper_parameters"]["task"] == "star_graph"

    second = foresight("fit", *common, "--trainer.max_steps=45", "--ckpt_path=last", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Restored all states" in second.stderr + second.stdout
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == 45 and resumed["tokens_seen"] == 45 * 64 * 26
    assert not torch.equal(resumed["state_dict"]["trunk.embed.weight"], checkpoint["state_dict"]["trunk.embed.weight"])
    logs = list(root.glob("lightning_logs/version_*/config.yaml"))
    assert len(logs) == 2  # each run keeps its resolved config


def test_a_second_fresh_fit_into_a_run_folder_is_refused_unless_told_to_overwrite(tmp_path, capfd, monkeypatch):
    """Lightning would write last-v1.ckpt beside the first run's last.ckpt, and every command reading
    checkpoints/last.ckpt would silently read the old model."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "run"
    common = ["fit", "--model.size=nano", "--data.task=star_graph", *SMALL_DATA, f"--trainer.default_root_dir={root}",
              "--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0", "--trainer.logger=false"]
    main([*common, "--trainer.max_steps=5"])
    last = root / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([*common, "--trainer.max_steps=7"])
    lines = capfd.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1, lines
    assert f"--trainer.default_root_dir '{root}' already holds a run" in lines[0] and "--overwrite=true" in lines[0]
    assert last.read_bytes() == before and sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    main([*common, "--trainer.max_steps=7", "--overwrite=true"])
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no last-v1.ckpt
    assert torch.load(last, weights_only=False)["global_step"] == 7


def test_extending_a_finished_run_continues_the_order_of_an_uninterrupted_one(tmp_path, monkeypatch):
    """10 batches an epoch: stopped at 7 (mid-epoch) and at 10 (an epoch's end), then extended twice with larger
    max_steps: the batches, in order, are those of one 25-step run (before, the extension started a new epoch)."""
    monkeypatch.chdir(tmp_path)
    common = ["--data.options.num_train=640", "--data.options.num_val=8", "--data.options.num_test=8",
              "--data.batch_size=64", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
              "--trainer.limit_val_batches=0", "--trainer.callbacks+=tests.integration.batch_log.BatchLog"]

    def fit(root: str, steps: int, *extra: str) -> list[str]:
        main(["fit", *common, f"--trainer.callbacks.path={tmp_path / root}.log", f"--trainer.max_steps={steps}",
              f"--trainer.default_root_dir={tmp_path / root}", *extra])
        return (tmp_path / f"{root}.log").read_text().split()

    whole = fit("whole", 25)
    assert len(whole) == len(set(whole)) == 25
    for stops in ([7, 13], [10]):
        root = f"stopped_at_{stops[0]}"
        for steps in stops:
            fit(root, steps, *(["--ckpt_path=last"] if steps != stops[0] else []))
        assert fit(root, 25, "--ckpt_path=last") == whole, stops


def test_test_and_validate_score_a_checkpoint_on_the_data_it_was_trained_on(tmp_path):
    root = tmp_path / "run"
    data = ["--data.options.degree=3", "--data.options.num_train=300", "--data.options.num_val=30",
            "--data.options.num_test=30"]
    trained = foresight("fit", "--model.size=nano", "--data.task=star_graph", *data, "--trainer.max_steps=3",
                        f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                        "--trainer.limit_val_batches=0", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    last = str(root / "checkpoints" / "last.ckpt")
    plain = foresight("test", f"--ckpt_path={last}", f"--trainer.default_root_dir={tmp_path / 'scored'}",
                      "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "random_arm_acc" in plain.stdout and "0.3333" in plain.stdout  # 1/degree of the degree-3 graphs
    assert "warning" not in plain.stderr
    other = foresight("test", f"--ckpt_path={last}", "--data.options.degree=2", "--data.options.num_nodes=30",
                      f"--trainer.default_root_dir={tmp_path / 'other'}", "--trainer.enable_progress_bar=false",
                      cwd=tmp_path)
    warned = [line for line in other.stderr.splitlines() if line.startswith("foresight: warning:")]
    assert warned and "other data than it was trained on: options" in warned[0]
    assert "'degree': 2" in warned[0].split("(trained:")[0] and "'degree': 3" in warned[0].split("(trained:")[1]


def test_a_run_with_a_step_budget_validates_during_training_by_default(tmp_path):
    root = tmp_path / "run"
    result = foresight("fit", "--model.size=nano", "--data.task=star_graph", "--data.options.num_train=640",
                       "--data.options.num_val=16", "--data.options.num_test=16", "--trainer.max_steps=20",
                       f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    import csv

    (metrics,) = root.glob("lightning_logs/version_0/metrics.csv")
    steps = sorted({int(row["step"]) for row in csv.DictReader(metrics.open()) if row.get("val/loss")})
    assert steps == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]  # every 20 // 10 = 2 steps (Lightning logs step - 1)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_parse(config, tmp_path):
    result = foresight("fit", "--config", str(config), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "star_graph" in result.stdout and "class_path: objectives.NTP" in result.stdout


def test_a_shipped_config_by_name_and_an_objective_by_registry_name_from_any_folder(tmp_path):
    """`--config star_graph` finds the shipped file from outside the checkout; `--model.objective=parallel_mtp` (the
    registry name sweeps and `sizes` take) is the same objective as `ParallelMTP`."""
    result = foresight("fit", "--config", "star_graph", "--model.objective=parallel_mtp", "--model.objective.n=3",
                       "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "class_path: objectives.ParallelMTP" in result.stdout and "n: 3" in result.stdout
    assert "degree: 2" in result.stdout  # from the shipped config, not a default


def test_task_options_from_the_command_line_keep_their_types_in_the_resolved_config(tmp_path, capsys):
    import yaml

    with pytest.raises(SystemExit):  # --print_config prints and exits
        main(["fit", "--data.options.degree=3", "--data.options.loss_on=all", "--data.options.num_train=64",
              f"--trainer.default_root_dir={tmp_path}", "--print_config"])
    options = yaml.safe_load(capsys.readouterr().out)["data"]["options"]
    assert options == {"degree": 3, "loss_on": "all", "num_train": 64}  # before: degree '3', num_train '64'


def test_tasks_and_objectives_list_every_option_with_its_default(capsys):
    import inspect

    import objectives
    import tasks

    for kind, registry, flag in (("tasks", tasks.TASKS, "--data.options."),
                                 ("objectives", objectives.OBJECTIVES, "--model.objective.")):
        main([kind])
        text = capsys.readouterr().out
        for name, cls in registry.items():
            assert f"{name} ({cls.__name__}): " in text
            for option in list(inspect.signature(cls.__init__).parameters.values())[1:]:
                if option.kind in (option.VAR_POSITIONAL, option.VAR_KEYWORD):  # nn.Module's, for NTP
                    continue
                given = " (required)" if option.default is option.empty else f"={option.default!r}"
                assert f"{flag}{option.name}{given}  " in text, (name, option.name)
    main(["objectives", "FSPBoW"])  # either spelling
    assert capsys.readouterr().out.startswith("fsp_bow (FSPBoW): Future summary prediction")


def test_fit_help_names_every_task_and_objective(capsys):
    import objectives
    import tasks

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in tasks.TASKS:
        assert name in text.split("--data.task TASK A registered", 1)[1].split("--data.options", 1)[0], name
    objective_help = text.split("--model.objective OBJECTIVE The training", 1)[1].split("--model.lr", 1)[0]
    for name, cls in objectives.OBJECTIVES.items():
        assert f"{cls.__name__} ({name}" in objective_help, name


FIT_CASES = [case for case in CASES if case.args[0] in ("fit", "train") and not case.files]


@pytest.mark.parametrize("case", FIT_CASES, ids=[case.id for case in FIT_CASES])
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capfd, monkeypatch):
    """The fit cases of tests/reliability/test_bad_input.py (which runs them through the command, slow) that need
    no input files, in this process (fast)."""
    keep = tmp_path / "keep.txt"
    keep.write_text(KEEP)
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(case.argv())
    lines = capfd.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("foresight: error: ") and case.message in lines[0], lines[0]
    assert keep.read_text() == KEEP and sorted(tmp_path.iterdir()) == [keep]


def test_sizes_command_prints_every_size(tmp_path):
    result = foresight("sizes", "--vocab_size=26", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("nano", "micro", "tiny", "small", "base", "large", "1b"):
        assert f" {name} " in result.stdout
    assert "108,480" in result.stdout  # nano at vocabulary 26: 106,752 in blocks + 1,664 embedding + 64 final norm


def test_reverse_lm_then_future_summary_prediction_from_the_command_line(tmp_path):
    common = ["--model.size=nano", *SMALL_DATA, "--trainer.max_steps=4", "--trainer.enable_progress_bar=false",
              "--trainer.log_every_n_steps=1"]
    reverse = foresight("fit", *common, "--data.reverse=true", f"--trainer.default_root_dir={tmp_path / 'rev'}",
                        cwd=tmp_path)
    assert reverse.returncode == 0, reverse.stderr
    checkpoint = tmp_path / "rev" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["datamodule_hyper_parameters"]["reverse"] is True
    fsp = foresight("fit", *common, "--model.objective=FSPRevLM", f"--model.objective.reverse_lm={checkpoint}",
                    f"--trainer.default_root_dir={tmp_path / 'fsp'}", cwd=tmp_path)
    assert fsp.returncode == 0, fsp.stderr
    saved = torch.load(tmp_path / "fsp" / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["objective"]["init_args"]["reverse_lm"] == str(checkpoint)
    assert any(key.startswith("objective.reverse.") for key in saved["state_dict"])
    metrics = (next((tmp_path / "fsp").glob("lightning_logs/version_0/metrics.csv"))).read_text()
    assert "loss/fsp" in metrics and "params/frozen" in metrics


def test_multi_token_objective_options_from_the_command_line(tmp_path):
    result = foresight("fit", "--model.size=nano", *SMALL_DATA, "--trainer.max_steps=3",
                       "--model.objective=ParallelMTP", "--model.objective.n=4", "--model.objective.head_layers=2",
                       f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["hyper_parameters"]["objective"] == {
        "class_path": "objectives.parallel_mtp.ParallelMTP",
        "init_args": {"n": 4, "head_layers": 2, "loss_reduction": "sum", "head_weights": None, "match_params": False,
                      "headwise": None, "layout": "siblings", "branch_layer": None}}
    assert sum(key.startswith("objective.heads.") for key in saved["state_dict"]) == 3 * 2 * 6


HELPS = [["fit"], ["validate"], ["test"], ["sweep"], ["agent"], ["eval"], ["report"], ["dashboard"], ["export"],
         ["sizes"], ["bench"], ["bench", "memory"], ["bench", "decode"], ["bench", "throughput"],
         ["bench", "overhead"], ["probe"], ["probe", "attention"], ["probe", "compare"], ["tasks"], ["objectives"]]


LIGHTNINGS_OWN = {"Runs the full optimization routine:",
                  "Perform one evaluation epoch over the validation set:", "Perform one evaluation epoch over the test set:"}
"""Group titles from Lightning's docstrings (the subcommand's method)."""


@pytest.mark.parametrize("command", HELPS, ids=" ".join)
def test_every_commands_help_exits_0_and_reads_clean(command, capsys):
    """`--help` of every command and subcommand: status 0, and none of the artifacts a reader trips on (a group
    titled by a class's repr or by a sentence cut where its docstring's first line ends, jsonargparse's `foresight
    [options] fit` usage)."""
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
        raise SystemExit(0)  # a command that prints its help and returns
    shown = capsys.readouterr()
    assert exit.value.code in (0, None), shown.err[-1000:]
    text = shown.out
    assert "usage:" in text.lower() and "%%" not in text and "<class " not in text and "unknown" not in text, text
    assert f"usage: foresight {' '.join(command)}" in text and "[options] " not in text.split("\n", 1)[0]
    titles = [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
    ours = [title for title in titles if title not in LIGHTNINGS_OWN]
    assert all(not title.endswith((" an:", " a:", " the:", " every:", " and:", " of:")) for title in ours), ours
