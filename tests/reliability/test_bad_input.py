"""Bad input through the `foresight` command, in a subprocess as a user runs it: every mistake ends as exit status 2
and one line on stderr, `foresight: error: ...`, that names the bad value and what is allowed; no traceback; and
the working folder is left byte for byte as it was (a seeded keep.txt and the case's own input files).

The cases run two at a time in a module fixture; each test then checks one case's outcome."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

KNOWN_SIZES = "nano, micro, tiny, small, base, large, 1b"
SHIPPED_SWEEPS = ", ".join(sorted(path.stem for path in (Path(__file__).resolve().parents[2] / "suite/sweeps").glob(
    "*.yaml")))  # the sweep files shipped in the package, which `--config NAME` finds
FIT_SAFE = ["--trainer.max_steps=1"]  # put before a fit case's own options: a fit that wrongly starts ends soon
NOT_A_CHECKPOINT = "allowed: a .ckpt file written by foresight fit"
KEEP = "results already written\n"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    message: str  # a part of the one error line
    files: dict[str, str] = field(default_factory=dict)  # inputs the case needs: text, or a CHECKPOINTS key

    @property
    def id(self) -> str:
        return " ".join(self.args)

    def argv(self) -> list[str]:
        return [self.args[0], *FIT_SAFE, *self.args[1:]] if self.args[0] == "fit" else list(self.args)


# Input files. Checkpoints are made once (see `checkpoint_files`) and copied under ckpt/, so `foresight eval`'s
# default --out (eval/ beside the checkpoint's folder) falls inside the case's folder too.
REVERSE = "ckpt/reverse.ckpt"  # NTP on reversed star graphs, vocabulary 23 (tests/conftest.py: reverse_lm)
FSP_BOW = "ckpt/fsp_bow.ckpt"  # FSP-BoW on forward star graphs, vocabulary 26: no heads that draft tokens
HALF = "ckpt/half.ckpt"  # the first half of reverse.ckpt's bytes
CHECKPOINTS = (REVERSE, FSP_BOW, HALF)

BAD_YAML = "model:\n  size: [nano\ntrainer: {max_steps: 1}\n"
SWEEP = "name: toy\nbudget: {steps: 1}\nobjectives: [ntp]\n"
ROW = ('{"schema": %d, "sweep": "toy", "point": "ntp-nano-s0", "role": "point", "status": "ok", '
       '"axes": {"objective": "ntp", "n": null, "size": "nano", "seed": 0, "data": "star_graph"}}\n')
TOY = {"results/toy/runs.jsonl": ROW % 1, "results/toy/report.md": "# toy\n\nan earlier report\n"}
SET_ROW = ('{"schema": 1, "sweep": "toy", "point": "ntp-nano-s%d", "role": "point", "status": "ok", '
           '"axes": {"objective": "ntp", "n": null, "size": "nano", "seed": %d, "data": "%s"}, '
           '"setting": {"data": {"task": "%s"}, "model": {}, "trainer": {}, "budget": {"steps": 1}, "eval": {}}}\n')
"""A finished row of the toy sweep on seed S and a task: a results folder of two tasks is two settings."""


def unreadable(what: str, args) -> list[Case]:
    """A missing file, half a checkpoint and a text file, each given where a checkpoint goes (`args(path)` are the
    case's arguments): each refused in one line that names the file as `what`."""
    return [Case(args("missing.ckpt"), f"{what} 'missing.ckpt' does not exist; " + NOT_A_CHECKPOINT),
            Case(args(HALF), f"{what} '{HALF}' cannot be read (RuntimeError); " + NOT_A_CHECKPOINT, {HALF: ""}),
            Case(args("keep.txt"), f"{what} 'keep.txt' cannot be read (UnpicklingError); " + NOT_A_CHECKPOINT)]


CASES = [
    # fit: unknown names, out-of-range numbers, wrong types
    Case(("fit", "--model.size=giant"), f"unknown size 'giant'; known: {KNOWN_SIZES}"),
    Case(("fit", "--model.objective=Medusa"), "unknown objective 'Medusa' for --model.objective; known: "
         "ntp (NTP), parallel_mtp (ParallelMTP), causal_mtp (CausalMTP), sequential_mtp (SequentialMTP), "
         "fsp_bow (FSPBoW), fsp_revlm (FSPRevLM), teacherless (Teacherless)"),
    Case(("fit", "--model.objective=parallel_mpt"), "unknown objective 'parallel_mpt' for --model.objective; known: "
         "ntp (NTP)"),
    Case(("fit", "--model.objective=fsp_bow", "--model.objective.tao=4"),
         "objective fsp_bow: unknown option 'tao'; allowed: tau, weighting, loss_weight, head_layers, headwise; did "
         "you mean 'tau'?"),
    Case(("fit", "--trainer.max_step=3"),  # an abbreviation is a typo, not max_steps
         "unrecognized arguments: --trainer.max_step=3; did you mean '--trainer.max_steps'"),
    Case(("fit", "--data.options.bogus=3"), "task star_graph: unknown option 'bogus'; allowed: degree, path_length, "
         "num_nodes, num_train, num_val, num_test, seed, loss_on, answer_order"),
    Case(("fit", "--data.options.degre=3"), "task star_graph: unknown option 'degre'; allowed: degree, "),
    Case(("fit", "--config", "star_grap"), "--config 'star_grap' does not exist; allowed: a YAML file of options or "
         "a shipped config by name: star_graph; did you mean 'star_graph'?"),
    Case(("fit", "--model.objective=ParallelMTP", "--model.objective.n=0"),
         "parallel_mtp n=0 is out of range; allowed: >= 1"),
    Case(("fit", "--model.objective=CausalMTP", "--model.objective.n=26"),
         "causal_mtp predicts 26 tokens ahead, too many for sequences of 26 tokens; allowed: n < 26"),
    Case(("fit", "--model.objective=SequentialMTP", "--model.objective.depth=x"), "depth: Expected an int"),
    Case(("fit", "--model.objective=FSPBoW", "--model.objective.tau=1"),
         "fsp_bow tau=1 is out of range; allowed: >= 2"),
    Case(("fit", "--model.loss_kernel=fast"), "--model.loss_kernel: Expected a typing.Literal['auto', 'foresight', "
                                             "'liger']. Got value: fast"),
    Case(("fit", "--model.loss_kernel=liger"), "--model.loss_kernel=liger needs Liger-Kernel, which is not installed; "
                                              "allowed: auto or foresight"),
    Case(("fit", "--data.task=chess"), "unknown task 'chess'; known: star_graph"),
    Case(("fit", "--data.options.degree=1"), "star_graph degree=1 is out of range; allowed: >= 2"),
    Case(("fit", "--data.options.path_length=1"), "star_graph path_length=1 is out of range; allowed: >= 2"),
    Case(("fit", "--data.options.num_nodes=4"), "star_graph num_nodes=4 is too small for degree=2, path_length=4"),
    Case(("fit", "--data.options.degree=two"), "degree: Expected an int. Got value: two"),
    Case(("fit", "--data.task=sat", "--data.options.num_vars=2"), "sat num_vars=2 is out of range; allowed: >= 3"),
    Case(("fit", "--data.task=tree_path", "--data.options.num_nodes=9"),
         "tree_path num_nodes=9 is too small for branching=2, depth=3; allowed: >= the tree's 15 nodes"),
    Case(("fit", "--data.batch_size=0"), "batch_size=0 is out of range; allowed: >= 1"),
    Case(("fit", "--model.lr=-0.1"), "lr=-0.1 is out of range; allowed: >= 0.0"),
    Case(("fit", "--trainer.max_steps=-5"), "--trainer: `max_steps` must be a non-negative integer or -1 (infinite "
         "steps). You passed in -5."),
    # fit: config files
    Case(("fit", "--config", "missing.yaml"), "--config 'missing.yaml' does not exist; allowed: a YAML file of "
         "options or a shipped config by name: star_graph"),
    Case(("fit", "--config", "bad.yaml"), "--config 'bad.yaml' is not valid YAML (while parsing a flow sequence",
         {"bad.yaml": BAD_YAML}),
    # fit: the reverse model of FSP-RevLM
    *unreadable("fsp_revlm reverse_lm",
                lambda path: ("fit", "--model.objective=FSPRevLM", f"--model.objective.reverse_lm={path}")),
    Case(("fit", "--model.objective=FSPRevLM", f"--model.objective.reverse_lm={REVERSE}"),
         f"fsp_revlm reverse_lm '{REVERSE}' has vocabulary size 23; allowed: the model's own, 26", {REVERSE: ""}),
    Case(("fit", "--model.objective=FSPRevLM", f"--model.objective.reverse_lm={FSP_BOW}"),
         f"fsp_revlm reverse_lm '{FSP_BOW}' was not trained with --data.reverse=true (its data has reverse=False); "
         "allowed: a checkpoint of "
         "foresight fit --data.reverse=true", {FSP_BOW: ""}),
    # fit: the checkpoint to resume from, the run's folder
    *unreadable("--ckpt_path", lambda path: ("fit", f"--ckpt_path={path}")),
    Case(("fit", f"--ckpt_path={REVERSE}"), f"--ckpt_path '{REVERSE}' holds a model of NTP, size nano, vocabulary "
         "23 (weight 'trunk.embed.weight' differs); allowed: a checkpoint of this run's model, NTP, size nano, "
         "vocabulary 26", {REVERSE: ""}),
    Case(("fit", "--trainer.default_root_dir=keep.txt/run"), "--trainer.default_root_dir 'keep.txt/run' cannot be "
         "written ('keep.txt' is a file); allowed: a folder you can write"),
    Case(("train",), "unknown command 'train'; known: fit, validate, test, sweep, agent, eval, lm-eval, prepare, "
         "report, dashboard, export, sizes, bench, probe, tasks, objectives"),

    # sweep
    Case(("sweep", "--config", "missing.yaml"),
         "sweep file 'missing.yaml' does not exist; allowed: a YAML path, or a shipped sweep: " + SHIPPED_SWEEPS),
    Case(("sweep", "--config", "bad.yaml"), "sweep file 'bad.yaml' is not valid YAML (while parsing a flow sequence",
         {"bad.yaml": BAD_YAML}),
    Case(("sweep", "--config", "sweep.yaml"), f"unknown size 'giant' in the sweep; known: {KNOWN_SIZES}",
         {"sweep.yaml": SWEEP + "sizes: [giant]\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "unknown objective 'medusa'; known: ntp (NTP), parallel_mtp "
         "(ParallelMTP), causal_mtp (CausalMTP), sequential_mtp (SequentialMTP), fsp_bow (FSPBoW)",
         {"sweep.yaml": SWEEP + "objectives: [ntp, medusa]\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "sweep n=0 is not a horizon; allowed: integers >= 1",
         {"sweep.yaml": SWEEP + "n: [0]\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "sweep budget={'steps': 'many'}; allowed: {steps: N} or {tokens: N}",
         {"sweep.yaml": SWEEP.replace("steps: 1", "steps: many")}),
    Case(("sweep", "--config", "sweep.yaml"), "unknown task 'chess' for --tasks; known: star_graph, countdown",
         {"sweep.yaml": SWEEP + "eval: {tasks: [chess]}\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "objective fsp_bow: unknown option 'tao'; allowed: tau, weighting, "
         "loss_weight, head_layers, headwise; did you mean 'tau'?", {"sweep.yaml": SWEEP + "objectives: [{fsp_bow: "
                                                                     "{tao: 4}}]\n"}),
    Case(("sweep", "--config", "sweep.yaml", "--dryrun"),
         "unrecognized arguments: --dryrun; did you mean '--dry-run'", {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml", "--shard", "2/2"), "--shard '2/2': index 2 is not in [0, 1]",
         {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml", "--shard", "x"),
         "--shard 'x' is not i/N; allowed: e.g. 0/4 (shard 0 of 4)", {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml", "--dry-run", "--flops_per_s", "fast"),
         "--flops_per_s: Expected a float. Got value: fast", {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml", "--results", "keep.txt/results"), "--results folder "
         "'keep.txt/results/toy' cannot be written ('keep.txt' is a file); allowed: a folder you can write",
         {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml", "--runs", "keep.txt/runs"), "--runs folder 'keep.txt/runs/toy' cannot "
         "be written ('keep.txt' is a file); allowed: a folder you can write", {"sweep.yaml": SWEEP}),
    Case(("sweep", "--config", "sweep.yaml"), "sweep seed 'a' is not an integer; allowed: seeds: a list of integers",
         {"sweep.yaml": SWEEP + "seeds: [a]\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "sweep 'toy' point ntp-nano-s0-", {"sweep.yaml": SWEEP + "data: {task: "
         "corpus, options: {path: nowhere}}\n"}),  # without --dry-run: no row, no run folder
    Case(("sweep", "--config", "sweep.yaml"), "corpus path 'nowhere' has no foresight.json (not a finished "
         "`foresight prepare` folder)", {"sweep.yaml": SWEEP + "data: {task: corpus, options: {path: nowhere}}\n"}),
    Case(("sweep", "--config", "sweep.yaml"), "sweep 'toy' differs from the rows already in results/toy (data.task: "
         '"star_graph" here, "countdown" there); allowed: a new sweep name, or --results elsewhere',
         {"sweep.yaml": SWEEP, "results/toy/runs.jsonl": SET_ROW % (0, 0, "countdown", "countdown")}),

    # eval
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph,chess"), "unknown task 'chess' for --tasks; "
         "known: star_graph, countdown, biographies", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--task", "star_graph"),  # an abbreviation is a typo
         "unrecognized arguments: --task star_graph; did you mean '--tasks'?", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--limit", "0"),
         "--limit=0 is out of range; allowed: >= 1", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--limit", "all"),
         "--limit: Expected an int. Got value: all", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--device", "tpu"),
         "unknown device 'tpu' for --device; allowed: cpu, cuda, cuda:N", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--kv_bits", "3"),
         "kv_bits=3 is not a supported width; allowed: 1, 2, 4, 8, 16", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--kv_rotate"),
         "kv_rotate needs a quantised cache; allowed: with kv_bits 1, 2, 4 or 8", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--kv_bits", "4", "--kv_group", "5"),
         "kv_group=5 does not divide the head dimension 16; allowed: a divisor of 16", {REVERSE: ""}),
    *unreadable("checkpoint", lambda path: ("eval", "--checkpoint", path, "--tasks", "star_graph")),
    Case(("eval", "--checkpoint", FSP_BOW, "--tasks", "star_graph", "--speculative"),
         f"checkpoint '{FSP_BOW}' was trained with fsp_bow, which has no heads that draft tokens; allowed: a "
         "checkpoint of ntp, parallel_mtp, causal_mtp or sequential_mtp", {FSP_BOW: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "corpus"), f"--tasks corpus scores the test documents of "
         f"the corpus a checkpoint trained on, and {REVERSE} trained on star_graph; allowed: a checkpoint of "
         "`foresight fit --data.task=corpus`", {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--decode", "vote"),
         "plan decoding rule 'vote' is not one of NTP's; allowed: none (it drafts with the next-token head alone)",
         {REVERSE: ""}),
    Case(("eval", "--checkpoint", REVERSE, "--tasks", "star_graph", "--out", "keep.txt/eval"),
         "--out 'keep.txt/eval' cannot be written ('keep.txt' is a file); allowed: a folder you can write",
         {REVERSE: ""}),
    Case(("eval", "--selfcheck", "--checkpoint", REVERSE, "--tasks", "star_graph"), "--selfcheck scores gold and "
         "empty answers, not a model: it takes no --checkpoint; allowed: --selfcheck with --tasks and --limit, or "
         "--checkpoint without --selfcheck", {REVERSE: ""}),

    # export
    *unreadable("checkpoint", lambda path: ("export", "--checkpoint", path, "--out", "hf")),
    Case(("export", "--checkpoint", REVERSE, "--out", "keep.txt/hf"),
         "--out 'keep.txt/hf' cannot be written ('keep.txt' is a file); allowed: a folder you can write",
         {REVERSE: ""}),
    Case(("export", "--checkpoint", REVERSE, "--out", "keep.txt"),
         "--out 'keep.txt' is a file; allowed: a new or empty folder", {REVERSE: ""}),
    Case(("export", "--checkpoint", REVERSE, "--out", "hf"), "--out 'hf' is not empty; allowed: a new or empty "
         "folder, or --overwrite to write over the export's files there",
         {REVERSE: "", "hf/config.json": '{"a model": "already here"}\n'}),
    Case(("export", "--checkpoint", REVERSE), "missing required options: --out", {REVERSE: ""}),
    Case(("export", "--checkpoint", REVERSE, "--out", "hf", "--dtype", "fp16"), "unrecognized arguments: --dtype "
         "fp16; allowed: the options `foresight export --help` lists", {REVERSE: ""}),

    # tasks, objectives
    Case(("tasks", "star_grap"), "unknown task 'star_grap'; known: star_graph, countdown, biographies, "
         "synthetic_code, humaneval, python_stdlib, corpus, tree_path, sat, mix; did you mean 'star_graph'?"),
    Case(("objectives", "Medusa"), "unknown objective 'Medusa'; known: ntp (NTP)"),

    # report
    Case(("report",), "FOLDER is missing; allowed: `foresight report results/<sweep> [--alpha 0.05]`"),
    Case(("report", "results/absent"), "report folder 'results/absent' does not exist; allowed: a sweep's results "
         "folder (results/<sweep>) holding runs.jsonl", TOY),
    Case(("report", "keep.txt"), "report folder 'keep.txt' is a file; allowed: a sweep's results folder"),
    Case(("report", "results"), "'results' has no runs.jsonl; allowed: a folder that `foresight sweep` wrote "
         "runs.jsonl into", TOY),
    Case(("report", "results/toy"), "results/toy/runs.jsonl has no complete rows; allowed: a runs.jsonl with at "
         "least one row", {**TOY, "results/toy/runs.jsonl": '{"schema": 1, "poi'}),
    Case(("report", "results/toy"), "results/toy/runs.jsonl: row 1 (ntp-nano-s0) has schema 0; allowed: 1",
         {**TOY, "results/toy/runs.jsonl": ROW % 0}),
    Case(("report", "results/toy", "--alpha", "0"), "--alpha=0.0 is out of range; allowed: 0 < alpha < 1", TOY),
    Case(("report", "results/toy"), 'results/toy holds rows of more than one setting (data.task: "star_graph" in '
         'some, "countdown" in others); allowed: one setting a results folder',
         {"results/toy/runs.jsonl": SET_ROW % (0, 0, "star_graph", "star_graph") + SET_ROW % (1, 1, "countdown",
                                                                                               "countdown")}),
    Case(("report", "results/toy", "--alpha", "often"), "--alpha: Expected a float. Got value: often", TOY),
    Case(("report", "results/toy"), "plots folder 'results/toy/plots' cannot be written ('results/toy/plots' is a "
         "file); allowed: a folder you can write", {**TOY, "results/toy/plots": "not a folder\n"}),

    # bench
    Case(("bench", "speed"), "unknown bench 'speed'; known: memory, decode, throughput, overhead"),
    Case(("bench", "memory", "--size", "huge"), f"unknown size 'huge'; known: {KNOWN_SIZES}"),
    Case(("bench", "memory", "--n", "1"), "n=1 is out of range; allowed: in [2, 1023]"),
    Case(("bench", "memory", "--n", "64", "--seq_len", "32"), "n=64 is out of range; allowed: in [2, 31]"),
    Case(("bench", "memory", "--device", "tpu"), "unknown device 'tpu'; known: cpu, cuda"),
    Case(("bench", "memory", "--objectives", "[parallel_mtp,medusa]"),
         "unknown objective 'medusa'; known: ntp, parallel_mtp, causal_mtp"),
    Case(("bench", "memory", "--out", "keep.txt/bench"),
         "--out 'keep.txt/bench' cannot be written ('keep.txt' is a file); allowed: a folder you can write"),
    Case(("bench", "memory", "--out", "/proc/foresight"), "--out '/proc/foresight' cannot be written ("),
    Case(("bench", "throughput", "--dtype", "fp16"), "unknown dtype 'fp16'; known: fp32, bf16"),
    Case(("bench", "throughput", "--sizes", "[micro,huge]"), f"unknown size 'huge'; known: {KNOWN_SIZES}"),
    Case(("bench", "overhead", "--rounds", "x"), "--rounds: Expected an int. Got value: x"),
    Case(("bench", "overhead", "--rounds", "0"), "rounds=0 is out of range; allowed: >= 1"),
    Case(("bench", "overhead", "--horizons", "[2,0]"), "horizons=0 is out of range; allowed: in [2, 255]"),
    Case(("bench", "decode", "--horizons", "[1]"), "horizons=1 is out of range; allowed: >= 2"),
    Case(("bench", "decode", "--task", "poetry"), "unknown task 'poetry'; known: star_graph, countdown"),
    *unreadable("checkpoint", lambda path: ("bench", "decode", "--checkpoint", path)),
    Case(("bench", "decode", "--checkpoint", FSP_BOW), f"checkpoint '{FSP_BOW}' was trained with fsp_bow, which has "
         "no heads that draft tokens; allowed: a checkpoint of ntp, parallel_mtp, causal_mtp or sequential_mtp",
         {FSP_BOW: ""}),
    Case(("bench", "decode", "--checkpoint", REVERSE, "--horizons", "[2,3]", "--steps", "10"),
         "--checkpoint decodes the checkpoint's own model, so --steps, --horizons (for training models first) "
         "cannot be given with it; allowed: --checkpoint with --prompts, --max_new_tokens, --device, --graphs, --quick",
         {REVERSE: ""}),
    Case(("bench", "memory", "--bogus", "1"),
         "unrecognized arguments: --bogus 1; allowed: the options `foresight bench memory --help` lists"),
]


@pytest.fixture(scope="module")
def checkpoint_files(reverse_lm, tmp_path_factory) -> dict[str, bytes]:
    """The bytes of each checkpoint in CHECKPOINTS: real ones, as `foresight fit` writes them."""
    import lightning as L

    from objectives import FSPBoW
    from suite import ObjectiveLM, TaskData

    data = TaskData(options={"num_train": 64, "num_val": 8, "num_test": 8}, batch_size=16)
    model = ObjectiveLM("nano", objective=FSPBoW(tau=4), vocab_size=data.vocab_size)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    fsp_bow = tmp_path_factory.mktemp("fsp_bow") / "fsp_bow.ckpt"
    trainer.save_checkpoint(fsp_bow)
    reverse = reverse_lm.read_bytes()
    return {REVERSE: reverse, FSP_BOW: fsp_bow.read_bytes(), HALF: reverse[: len(reverse) // 2]}


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder`: a file's bytes, None for a folder."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))}


def run_case(case: Case, folder: Path, checkpoints: dict[str, bytes]) -> tuple[subprocess.CompletedProcess, dict]:
    """The case's command in `folder`, seeded with keep.txt and the case's files; the result and the snapshot before."""
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text(KEEP)
    for name, text in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(checkpoints[name] if name in CHECKPOINTS else text.encode())
    before = snapshot(folder)
    result = subprocess.run([sys.executable, "-m", "suite.cli", *case.argv()], cwd=folder, capture_output=True,
                            text=True, timeout=300)
    return result, before


@pytest.fixture(scope="module")
def outcomes(request, checkpoint_files, tmp_path_factory) -> dict[int, tuple]:
    """{case number: (result, snapshot before, folder)} of every selected case, run two at a time (each starts
    Python, and most import torch)."""
    selected = [item.callspec.params["number"] for item in request.session.items
                if item.path == request.path and hasattr(item, "callspec")]
    root = tmp_path_factory.mktemp("bad_input")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {number: pool.submit(run_case, CASES[number], root / str(number), checkpoint_files)
                   for number in selected}
        return {number: (*future.result(), root / str(number)) for number, future in futures.items()}


@pytest.mark.parametrize("number", [
    # fit imports Lightning (seconds each): the fit cases with input files are in the slow set; those without are
    # tests/integration/test_cli.py's, in one process (the same message, the folder left as it was), fast
    pytest.param(i, marks=[pytest.mark.slow] if case.args[0] == "fit" else [], id=f"{i}-{case.id}")
    for i, case in enumerate(CASES) if case.args[0] != "fit" or case.files])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(number, outcomes):
    case, (result, before, folder) = CASES[number], outcomes[number]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("foresight: error: ") and case.message in lines[0], lines[0]
    assert snapshot(folder) == before
