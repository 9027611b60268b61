"""`foresight eval`: lm-eval scores a checkpoint the way training-time validation does; bad input is one line."""

import json
import subprocess
import sys

import lightning as L
import pytest
import torch

from suite import ObjectiveLM, TaskData
from suite.cli import main
from suite.checkpoints import task_options
from suite.evaluate import evaluate, family_scores
from suite.errors import UsageError

STAR = {"num_train": 3200, "num_val": 64, "num_test": 96}


@pytest.fixture(scope="module")
def star_checkpoint(tmp_path_factory):
    """A nano model trained a little on the star graph, and its Lightning test-split scores."""
    folder = tmp_path_factory.mktemp("star")
    L.seed_everything(0)
    data = TaskData(options=STAR, batch_size=32, eval_batch_size=96)
    model = ObjectiveLM("nano", vocab_size=data.vocab_size, lr=3e-3, warmup_steps=10)
    trainer = L.Trainer(max_steps=250, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=folder)
    trainer.fit(model, data)
    tested = trainer.test(model, data, verbose=False)[0]
    path = folder / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, tested


def test_lm_eval_scores_equal_lightning_test_scores(star_checkpoint, tmp_path):
    path, tested = star_checkpoint
    report = evaluate(str(path), ["star_graph"], tmp_path)
    scores = report["results"]["star_graph"]
    assert 0.0 < tested["test/star_graph/arm_acc"]  # the model has learned something to compare
    assert scores["path_acc,none"] == pytest.approx(tested["test/star_graph/path_acc"], abs=1e-6)
    assert scores["arm_acc,none"] == pytest.approx(tested["test/star_graph/arm_acc"], abs=1e-6)
    assert report["families"] == {"reasoning": scores["path_acc,none"]}
    written = [json.loads(line) for line in (tmp_path / "tasks" / "star_graph.jsonl").read_text().splitlines()]
    assert len(written) == STAR["num_test"] and written[0].keys() == {"prompt", "answer"}
    # speculative decoding of an NTP checkpoint: no drafts, the same answers, one token per trunk pass
    fast = evaluate(str(path), ["star_graph"], tmp_path / "speculative", speculative=True)
    for metric in ("path_acc,none", "arm_acc,none"):
        assert fast["results"]["star_graph"][metric] == scores[metric]
    assert report["decoding"]["speculative"] is False and fast["decoding"]["speculative"] is True
    assert fast["decoding"]["tokens_per_pass"] == 1.0 and fast["decoding"]["drafted"] == []
    assert fast["decoding"]["row_tokens"] == report["decoding"]["row_tokens"] > 0


def test_eval_reports_where_each_head_holds_the_plan(star_checkpoint, tmp_path):
    """An NTP checkpoint's plan: one head, whose first step (teacher-forced) is recomputed here from its logits at
    the answer's first node, and no plan decoding (one head drafts nothing beyond next-token decoding)."""
    from suite.checkpoints import load_trunk
    import tasks

    path, _ = star_checkpoint
    plan = evaluate(str(path), ["star_graph"], tmp_path)["plan"]["star_graph"]
    task = tasks.build("star_graph", **STAR)
    trunk, _ = load_trunk(path)
    examples = task.examples("test")
    with torch.no_grad():
        predicted = trunk.logits(trunk(examples.tokens)).argmax(-1)
    first = task.prompt_len + 1  # the first step after the source
    expected = (predicted[:, first - 1] == examples.tokens[:, first]).float().mean().item()
    assert plan["examples"] == STAR["num_test"] and list(plan["first_step"]) == ["head_1"]
    assert plan["first_step"]["head_1"] == pytest.approx(expected, abs=1e-6)
    assert plan["heads"]["head_1"][1] == plan["first_step"]["head_1"] and plan["decode"] == {}


def test_task_options_come_from_the_checkpoint():
    star = {"datamodule_hyper_parameters": {"task": "star_graph", "options": {"degree": 3}}}
    mix = {"datamodule_hyper_parameters": {"task": "mix", "options": {"options": {"countdown": {"count": 3}}}}}
    assert task_options(star, "star_graph") == {"degree": 3} and task_options(star, "countdown") == {}
    assert task_options(mix, "countdown") == {"count": 3} and task_options(None, "star_graph") == {}


def test_family_scores_average_primary_metrics():
    results = {"star_graph": {"path_acc,none": 0.5, "arm_acc,none": 0.9}, "humaneval": {"pass_at_1,none": 0.25},
               "python_stdlib": {"bits_per_byte,none": 3.0}, "other": {"acc,none": 1.0}}
    assert family_scores(results) == {"code": 0.25, "reasoning": 0.5}


def one_line_error(args, capfd, monkeypatch, folder) -> str:
    """Run `foresight eval ARGS` in this process; it must exit 2 with one line on stderr. Returns that line."""
    monkeypatch.chdir(folder)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit:
        main(["eval", *args])
    lines = capfd.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1 and lines[0].startswith("foresight: error: "), lines
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--tasks", "star_graph,chess"], "unknown task 'chess' for --tasks; known: star_graph"),
    (["--tasks", ""], "--tasks is empty"),
    (["--tasks", "star_graph", "--limit", "0"], "--limit=0 is out of range; allowed: >= 1"),
    (["--tasks", "star_graph", "--checkpoint", "missing.ckpt"], "checkpoint 'missing.ckpt' does not exist"),
    (["--tasks", "star_graph"], "--checkpoint is required"),
])
def test_bad_input_is_one_line(args, message, tmp_path, capfd, monkeypatch):
    assert message in one_line_error(args, capfd, monkeypatch, tmp_path)


def test_corrupt_checkpoint_and_mismatched_tokenizer_are_refused(star_checkpoint, tmp_path, capfd, monkeypatch):
    path, _ = star_checkpoint
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(path.read_bytes()[:2000])
    message = one_line_error(["--checkpoint", str(broken), "--tasks", "star_graph"], capfd, monkeypatch, tmp_path)
    assert "cannot be read" in message
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["TaskData"]["tokenizer"] = TaskData(options={"num_nodes": 30}).task.tokenizer.to_str()
    mismatched = tmp_path / "mismatched.ckpt"
    torch.save(checkpoint, mismatched)
    message = one_line_error(["--checkpoint", str(mismatched), "--tasks", "star_graph"], capfd, monkeypatch, tmp_path)
    assert "tokenizer of 36 tokens but a model of 26" in message


def test_the_installed_command_writes_results_and_prints_the_table(star_checkpoint, tmp_path):
    path, _ = star_checkpoint
    result = subprocess.run([sys.executable, "-m", "suite.cli", "eval", "--checkpoint", str(path), "--tasks",
                             "star_graph,countdown", "--limit", "8", "--out", str(tmp_path)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(next(tmp_path.glob("results_*.json")).read_text())
    assert report["limit"] == 8 and report["n_samples"]["star_graph"]["effective"] == 8
    assert report["command"].startswith("foresight eval --checkpoint") and "star_graph" in report["results"]
    assert "| **reasoning** | family score |" in result.stdout
    # countdown was never trained on: said on stderr, under the table and in the results file
    assert report["trained_on"] == ["star_graph"] and report["untrained_tasks"] == ["countdown"]
    assert "foresight: warning: the model was never trained on countdown (trained on: star_graph)" in result.stderr
    assert "not trained on: countdown (the model was trained on star_graph;" in result.stdout
    assert "fatal: not a git repository" not in result.stderr  # lm-eval's git_hash is foresight's commit


def test_lm_evals_git_hash_is_the_commit_of_foresights_code():
    import lm_eval.evaluator

    import suite.lm_eval_model  # noqa: F401  registers the models, and the commit lookup
    from suite.provenance import git_commit

    assert lm_eval.evaluator.get_git_commit_hash() == git_commit()["commit"]


def test_lm_eval_from_the_shell_scores_what_foresight_eval_scores(star_checkpoint, tmp_path):
    """`foresight lm-eval` is lm-eval's own command line (its flags, its results file) with the `foresight` model
    and task registered: it scores the checkpoint as `foresight eval` does, document for document."""
    path, _ = star_checkpoint
    ours = evaluate(str(path), ["star_graph"], tmp_path / "ours", limit=20)["results"]["star_graph"]
    result = subprocess.run([sys.executable, "-m", "suite.cli", "lm-eval", "--model", "foresight", "--model_args",
                             f"checkpoint={path}", "--tasks", "star_graph", "--limit", "20", "--batch_size", "8",
                             "--output_path", str(tmp_path / "shell")], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "shell").rglob("results_*.json")).read_text())
    assert theirs["n-samples"]["star_graph"]["effective"] == 20
    for metric in ("path_acc,none", "arm_acc,none"):
        assert theirs["results"]["star_graph"][metric] == ours[metric]
    assert "|star_graph|" in result.stdout.replace(" ", "")


def test_foresight_and_hugging_face_models_score_the_same(star_checkpoint, tmp_path):
    """The exported Llama directory, through lm-eval's own `hf` model and the task folder export writes, scores
    what the checkpoint scores through `foresight`."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from suite.export import export_hf

    path, _ = star_checkpoint
    ours = evaluate(str(path), ["star_graph"], tmp_path / "ours", limit=48)["results"]["star_graph"]
    folder = export_hf(path, tmp_path / "hf")
    assert sorted(p.name for p in (folder / "lm_eval_tasks").iterdir()) == ["star_graph.jsonl", "star_graph.yaml"]
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=["star_graph"], limit=48,
        task_manager=TaskManager(include_path=str(folder / "lm_eval_tasks")), device="cpu", batch_size=16,
        bootstrap_iters=0)["results"]["star_graph"]
    assert theirs["path_acc,none"] == ours["path_acc,none"] and theirs["arm_acc,none"] == ours["arm_acc,none"]


@pytest.mark.slow
def test_selfcheck_passes_for_every_family_with_all_of_humaneval(tmp_path):
    """Gold answers score 100% and empty ones 0% through lm-eval's scoring, humaneval's 164 canonical solutions
    included (run in the sandbox)."""
    result = subprocess.run([sys.executable, "-m", "suite.cli", "eval", "--selfcheck", "--tasks",
                             "star_graph,tree_path,countdown,sat,biographies,synthetic_code,humaneval", "--out",
                             str(tmp_path)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| humaneval | pass_at_1 | 1.0000 | 0.0000 |" in result.stdout
    assert "selfcheck passed" in result.stdout


def test_lm_eval_tasks_without_their_data_fail_in_one_line(star_checkpoint, tmp_path, capfd, monkeypatch):
    path, _ = star_checkpoint
    message = one_line_error(["--checkpoint", str(path), "--tasks", "star_graph,mmlu", "--limit", "2"], capfd,
                             monkeypatch, tmp_path)
    assert "lm-eval tasks ['mmlu'] need their datasets from the Hugging Face hub" in message


def test_a_mix_checkpoint_is_scored_per_component_with_its_own_tokenizer(tmp_path):
    """Train on a small mix through the CLI, then evaluate two components: each reads the mix's options and
    tokenizer from the checkpoint."""
    mix = ("{components: {star_graph: 1, countdown: 1}, train_tokens: 20000, seq_len: 64, vocab_size: 400, "
           "options: {star_graph: {num_train: 300, num_test: 24, degree: 3}, countdown: {num_train: 300, "
           "num_test: 24, count: 3}}}")
    fit = subprocess.run([sys.executable, "-m", "suite.cli", "fit", "--data.task=mix", f"--data.options={mix}",
                          "--trainer.max_steps=3", f"--trainer.default_root_dir={tmp_path}",
                          "--trainer.enable_progress_bar=false"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    report = evaluate(str(checkpoint), ["star_graph", "countdown"], tmp_path / "eval", limit=4)
    assert set(report["results"]) == {"star_graph", "countdown"}
    docs = [json.loads(line) for line in (tmp_path / "eval" / "tasks" / "star_graph.jsonl").read_text().splitlines()]
    assert len(docs) == 24 and docs[0]["prompt"].count("|") == 3 * 3 - 1  # degree 3, path length 4: 9 edges
    countdown = [json.loads(line) for line in (tmp_path / "eval" / "tasks" / "countdown.jsonl").read_text()
                 .splitlines()]
    assert len(countdown[0]["prompt"].split("->")[0].split()) == 3  # count 3


def test_lm_eval_arguments_are_read_and_rewritten_as_lm_eval_reads_them(star_checkpoint, tmp_path):
    from suite.lm_eval_cli import model_arg, option, prepared_argv, without

    argv = ["--model", "foresight", "--tasks=star_graph,arc_easy", "--include_path", "mine", "--limit", "3"]
    assert option(argv, "--tasks") == "star_graph,arc_easy" and option(argv, "--include_path") == "mine"
    assert option(argv, "--device") is None
    assert without(argv, "--include_path") == ["--model", "foresight", "--tasks=star_graph,arc_easy", "--limit", "3"]
    assert model_arg("batch_size=4,checkpoint=a/b.ckpt", "checkpoint") == "a/b.ckpt"
    assert model_arg("pretrained=x", "checkpoint") is None
    path, _ = star_checkpoint
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "extra.yaml").write_text("task: extra\n")
    rewritten = prepared_argv(["--model_args", f"checkpoint={path}", "--tasks", "star_graph,extra",
                               "--include_path", str(mine)], tmp_path / "folder")
    assert rewritten[-2:] == ["--include_path", str(tmp_path / "folder")] and rewritten.count("--include_path") == 1
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["include_path", "star_graph.jsonl",
                                                                        "star_graph.yaml"]
    assert (tmp_path / "folder" / "include_path" / "extra.yaml").read_text() == "task: extra\n"
    assert prepared_argv(["--tasks", "arc_easy"], tmp_path / "none") == ["--tasks", "arc_easy"]  # nothing to add
    with pytest.raises(UsageError, match="--include_path 'nowhere' is not a folder"):
        prepared_argv(["--tasks", "star_graph", "--include_path", "nowhere"], tmp_path / "bad")


def test_an_evaluation_of_code_says_whether_programs_reads_are_confined(monkeypatch, capsys):
    from suite import sandbox
    from suite.evaluate import code_confinement

    assert code_confinement(["star_graph", "countdown"]) is None  # no program runs
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)  # as a user without root and without bubblewrap
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    found = code_confinement(["star_graph", "humaneval"])
    assert found["reads"] == "not confined"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"foresight: warning: model-written programs' reads are not confined here ({found['how']})"]
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 0)
    assert code_confinement(["synthetic_code"])["reads"] == "confined" and capsys.readouterr().err == ""


def test_a_compressed_kv_cache_is_recorded_and_changes_only_what_it_should(star_checkpoint, tmp_path, monkeypatch):
    """kv_bits=16 is no quantisation; 1 bit is recorded in the results; lm-eval's model arguments (strings, as
    `lm_eval --model_args kv_bits=2,kv_group=8,kv_rotate=true` passes them) reach the trunk, checked."""
    import suite.lm_eval_model as models
    from suite.quantize import KVQuant

    path, _ = star_checkpoint
    plain = evaluate(str(path), ["star_graph"], tmp_path / "plain", limit=24)
    assert plain["kv_cache"] == {"bits": 16}
    squeezed = evaluate(str(path), ["star_graph"], tmp_path / "one_bit", limit=24, kv_quant=KVQuant(bits=1))
    assert squeezed["kv_cache"] == {"bits": 1, "group": None, "rotate": False, "seed": 0}
    built = []  # the quantiser of the model evaluate builds: the rotation that scores is the one it was given
    monkeypatch.setattr(models.ForesightLM, "__init__", lambda self, *args, __init__=models.ForesightLM.__init__,
                        **kwargs: __init__(self, *args, **kwargs) or built.append(self.trunk.kv_quant))
    turned = evaluate(str(path), ["star_graph"], tmp_path / "turned", limit=24,
                      kv_quant=KVQuant(2, rotate=True, seed=3))
    assert turned["kv_cache"]["seed"] == 3 and built == [KVQuant(2, rotate=True, seed=3)]
    monkeypatch.undo()
    assert models.ForesightLM(str(path), kv_bits="16").trunk.kv_quant is None
    model = models.ForesightLM(str(path), kv_bits="2", kv_group="8", kv_rotate="true")
    assert model.trunk.kv_quant == KVQuant(bits=2, group=8, rotate=True)
    assert models.ForesightLM(str(path), kv_bits="2", kv_rotate="true", kv_seed="3").trunk.kv_quant.seed == 3
    with pytest.raises(UsageError, match="kv_group=5 does not divide the head dimension 16"):
        models.ForesightLM(str(path), kv_bits="4", kv_group="5")
    with pytest.raises(UsageError, match="kv_rotate='yes' is not a boolean; allowed: true, false"):
        models.ForesightLM(str(path), kv_bits="4", kv_rotate="yes")
