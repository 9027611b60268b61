"""`foresight eval`: score a checkpoint through lm-eval on foresight's task families (and on lm-eval's own tasks
where their data is on the machine), offline, and write lm-eval's results with one score per family.

Family scores: the mean over the evaluated tasks of a family of each task's primary metric (star_graph path_acc
and countdown acc for reasoning; biographies acc for knowledge; synthetic_code and humaneval pass_at_1 for code;
mmlu, arc and triviaqa count where they ran). Corpora (python_stdlib: bits per byte) feed no family."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import math
import os
import sys
from pathlib import Path

import yaml

from suite import checkpoints
from suite.checkpoints import task_options, trained_on
from suite.errors import UsageError, check_range, check_writable
from suite.provenance import provenance
from suite.plan import plans
from suite.quantize import KVQuant

TEMPLATES = Path(__file__).resolve().parents[1] / "tasks"


class _TemplateLoader(yaml.SafeLoader):
    """Reads a task YAML for its names only: lm-eval's `!function` tags stay unresolved."""


_TemplateLoader.add_constructor("!function", lambda loader, node: None)


@functools.cache
def foresight_tasks() -> dict[str, str]:
    """lm-eval task name -> the foresight task whose documents it reads: one entry per YAML template beside the
    tasks (a variant, like humaneval_pass_at_k, reads the documents of the template it includes)."""
    import tasks

    found = {}
    for path in sorted(TEMPLATES.glob("*.yaml")):
        config = yaml.load(path.read_text(), Loader=_TemplateLoader)
        name = config["task"]
        found[name] = name if name in tasks.TASKS else Path(config["include"]).stem
    order = list(tasks.TASKS)  # the registry's order, each variant after its task
    return dict(sorted(found.items(), key=lambda item: (order.index(item[1]), item[0] != item[1])))

EXTERNAL = {  # lm-eval's own tasks foresight reports, when their data is on the machine: family, primary metric
    "mmlu": ("knowledge", "acc"), "triviaqa": ("knowledge", "exact_match"),
    "arc_easy": ("reasoning", "acc"), "arc_challenge": ("reasoning", "acc"),
}


def task_kind(task: str) -> tuple[str | None, str | None]:
    """(family, primary metric) of an lm-eval task name, as `foresight eval` scores it; (None, None) if unknown."""
    import tasks

    if task in foresight_tasks():
        source = tasks.TASKS[foresight_tasks()[task]]
        return source.family, source.primary
    return EXTERNAL.get(task, (None, None))


def document_value(metric: str, value):
    """One document's value of `metric` from lm-eval's logged sample: the number itself, or for bits per byte
    (logged as the pair (log-likelihood, bytes) that lm-eval aggregates over documents) the document's own
    -log-likelihood / bytes / ln 2."""
    if metric == "bits_per_byte" and isinstance(value, (list, tuple)) and len(value) == 2 and value[1]:
        return -float(value[0]) / float(value[1]) / math.log(2)
    return value


def item_scores(samples: dict) -> dict[str, list[float]]:
    """{task: the primary metric of each test document, in document order} from lm-eval's logged samples: what the
    report pairs against NTP (bits per byte: each document's own). Tasks whose per-document value is no number are
    left out."""
    items = {}
    for task, logged in (samples or {}).items():
        primary = task_kind(task)[1]
        values = sorted((sample["doc_id"], document_value(primary, sample.get(primary))) for sample in logged)
        if primary and values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in values):
            items[task] = [float(v) for _, v in values]
    return items


def untrained(checkpoint: dict | None, names: list[str]) -> list[str]:
    """The foresight tasks among `names` whose family the checkpoint never trained on: scored with the task's
    default options, which is rarely what a user means, so `foresight eval` says so."""
    seen = trained_on(checkpoint)
    return [name for name in names if name in foresight_tasks() and foresight_tasks()[name] not in seen]


def check_same_tokenizer(task, checkpoint: dict | None) -> None:
    """A UsageError when a task read from the user's files (a prepared corpus) now has another tokenizer than the
    checkpoint that was trained on it: the folder was prepared again since, and its test split is not the one the
    model was held out from."""
    data = (checkpoint or {}).get("datamodule_hyper_parameters") or {}
    if not task.streaming or data.get("task") != task.name:
        return
    if checkpoints.load_tokenizer(checkpoint).to_str() != task.tokenizer.to_str():
        raise UsageError(f"corpus '{task.path}' has another tokenizer than the checkpoint's (it was prepared again "
                         "since the model trained on it); allowed: the prepared folder the checkpoint was trained on")


def write_tasks(names: list[str], checkpoint: dict | None, folder: Path) -> None:
    """Each foresight task's test documents as JSONL and a YAML that includes the shipped template with the data
    path, generation settings and metric names of this instance: the folder is an lm-eval --include_path."""
    import tasks

    folder.mkdir(parents=True, exist_ok=True)
    built: dict[str, object] = {}
    for name in names:
        source = foresight_tasks()[name]
        if source not in built:
            built[source] = tasks.build(source, **task_options(checkpoint, source))
        task = built[source]
        check_same_tokenizer(task, checkpoint)
        data = folder / f"{source}.jsonl"
        if not data.exists():
            data.write_text("".join(json.dumps(doc) + "\n" for doc in task.documents("test")))
        config = {"include": str(TEMPLATES / f"{name}.yaml"), "task": name,
                  "dataset_kwargs": {"data_files": {"test": str(data)}}}
        if name == source and getattr(task, "generation", None) and task.family is not None:
            config["generation_kwargs"] = {**task.generation, "do_sample": False}
        if hasattr(task, "metrics"):
            config["metric_list"] = [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                                     for m in task.metrics]
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def family_scores(results: dict) -> dict[str, float]:
    families: dict[str, list[float]] = {}
    for name, metrics in results.items():
        family, primary = task_kind(name)
        value = metrics.get(f"{primary},none")
        if family is not None and isinstance(value, (int, float)):
            families.setdefault(family, []).append(float(value))
    return {family: sum(values) / len(values) for family, values in sorted(families.items())}


def run_lm_eval(model, names: list[str], include: Path, limit: int | None, seed: int,
                log_samples: bool = False) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    # indexing lm-eval's thousands of own task YAMLs takes seconds: only when one of them is asked for
    external = [n for n in names if n not in foresight_tasks()]
    manager = TaskManager(include_path=str(include), include_defaults=bool(external))
    try:
        return lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, limit=limit,
                                       random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                       fewshot_random_seed=seed, log_samples=log_samples, bootstrap_iters=0)
    except Exception as err:  # lm-eval's own tasks fail deep in `datasets` when their data is not on the machine
        text = f"{type(err).__name__}: {err}"
        if external and any(word in text for word in ("offline", "Offline", "connect", "resolve", "Couldn't")):
            raise UsageError(f"lm-eval tasks {external} need their datasets from the Hugging Face hub, which are not "
                             "on this machine and cannot be downloaded offline; allowed: tasks whose data is in the "
                             "local datasets cache, or foresight's own: " + ", ".join(foresight_tasks())) from None
        raise


def evaluate(checkpoint: str | None, names: list[str], out: Path, limit: int | None = None, batch_size: int = 16,
             device: str = "cpu", seed: int = 0, answer: str | None = None, items: bool = False,
             speculative: bool = False, kv_quant=None, decode: str = "next", progress=None) -> dict:
    """lm-eval's results for `names` on a checkpoint (or, with answer="gold"/"empty", on the oracle), with family
    scores, what generation took (`suite.decoding.DecodeStats`), and with `items` each document's primary metric
    (see item_scores). `speculative` decodes greedy generations with the objective's heads drafting; `kv_quant`
    (a `suite.quantize.KVQuant`) scores with a compressed KV cache; `decode` (head_k, vote) writes answers from the
    heads' drafts instead of the next-token head (`suite.plan`). For path tasks the checkpoint trained on, `plan`
    holds where each head keeps the plan on the test split (`plans`)."""
    import suite.lm_eval_model as models  # registers foresight and foresight-oracle with lm-eval

    confined = code_confinement(names)
    data = checkpoints.read(checkpoint) if checkpoint else None
    check_own_corpus(names, data, checkpoint)
    if answer is None:  # before anything is written: a checkpoint the model cannot be built from fails here
        kv = kv_quant.as_dict() if kv_quant is not None else {}
        model = models.ForesightLM(checkpoint, batch_size=batch_size, device=device, speculative=speculative,
                                   decode=decode, progress=progress,
                                   **{f"kv_{key}": value for key, value in kv.items()})
    else:
        model = models.OracleLM(answer)
    unseen = untrained(data, names) if data is not None else []
    if unseen:
        print(f"foresight: warning: the model was never trained on {', '.join(unseen)} (trained on: "
              f"{', '.join(trained_on(data)) or 'nothing recorded'}): scored on the default options' test split",
              file=sys.stderr)
    write_tasks([n for n in names if n in foresight_tasks()], data, out / "tasks")
    results = run_lm_eval(model, names, out / "tasks", limit, seed, log_samples=items)
    report = {"checkpoint": checkpoint, "tasks": names, "limit": limit,
              "families": family_scores(results["results"]), "results": results["results"],
              "n_samples": results.get("n-samples"), "configs": results.get("configs"),
              "versions": results.get("versions")}
    if data is not None:
        report["trained_on"], report["untrained_tasks"] = trained_on(data), unseen
    if confined is not None:
        report["sandbox"] = confined
    if answer is None:
        report["decoding"] = {"speculative": speculative, "rule": decode, **model.decode_stats.as_dict()}
        report["kv_cache"] = kv_quant.as_dict() if kv_quant is not None else {"bits": 16}
        report["plan"] = plans(checkpoint, data, names, device) if kv_quant is None else {}
    if items:
        report["items"] = item_scores(results.get("samples"))
    return report


def check_own_corpus(names: list[str], data: dict | None, checkpoint: str | None) -> None:
    """A task read from the user's files (`corpus`) is scored on the folder a checkpoint trained on, which only the
    checkpoint names: a UsageError, before anything is written, for a checkpoint that trained on none."""
    import tasks

    for name in names:
        task = tasks.TASKS.get(foresight_tasks().get(name, ""))
        if data is not None and task is not None and task.streaming and name not in trained_on(data):
            raise UsageError(f"--tasks {name} scores the test documents of the {name} a checkpoint trained on, and "
                             f"{checkpoint} trained on {', '.join(trained_on(data)) or 'nothing recorded'}; allowed: "
                             f"a checkpoint of `foresight fit --data.task={name}`")


def code_confinement(names: list[str]) -> dict | None:
    """What the programs of the code tasks among `names` can read (`suite.sandbox.confinement`), said in one line
    on stderr before any runs where reads are not confined; None when no code task is asked for."""
    if not any(task_kind(name)[0] == "code" for name in names):
        return None
    from suite.sandbox import confinement

    confined = confinement()
    if confined["reads"] != "confined":
        print(f"foresight: warning: model-written programs' reads are not confined here ({confined['how']})",
              file=sys.stderr)
    return confined


def check_names(names: list[str]) -> None:
    known = [*foresight_tasks(), *EXTERNAL]
    for name in names:
        if name not in known:
            raise UsageError(f"unknown task {name!r} for --tasks; known: {', '.join(known)} (other lm-eval task "
                             "names run with lm_eval itself)")


def check_device(device: str) -> None:
    """A UsageError unless `device` is a torch device this machine has: cpu, cuda, cuda:N."""
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise UsageError(f"unknown device {device!r} for --device; allowed: cpu, cuda, cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} is not available on this machine; allowed: cpu")


def main(argv: list[str]) -> None:
    from jsonargparse import ActionYesNo
    from suite.parsing import Parser

    parser = Parser(prog="foresight eval",
                    description="Score a checkpoint on task families through lm-eval, offline.")
    parser.add_argument("--checkpoint", type=str, help="a checkpoint written by foresight fit")
    parser.add_argument("--tasks", type=str, required=True, help=f"comma-separated: {', '.join(foresight_tasks())}, "
                        f"or lm-eval's {', '.join(EXTERNAL)} where their data is on the machine")
    parser.add_argument("--limit", type=int, help="score only the first N documents of each task")
    parser.add_argument("--out", type=str, help="results folder (default: eval/ beside the checkpoint's folder)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speculative", action=ActionYesNo, default=False,
                        help="decode greedy generations self-speculatively with the objective's heads (same text)")
    parser.add_argument("--decode", type=str, default="next",
                        help="next (next-token decoding), or plan decoding from the heads' drafts: head_K (each "
                             "token from head K, K tokens back) or vote (every head's log-probabilities added)")
    parser.add_argument("--kv_bits", type=int, default=16,
                        help="score with keys and values stored at 1, 2, 4 or 8 bits (16: as computed)")
    parser.add_argument("--kv_group", type=int, help="channels per quantisation scale (default: the head dimension)")
    parser.add_argument("--kv_rotate", action=ActionYesNo, default=False,
                        help="turn keys and values by a fixed random orthogonal matrix before quantising")
    parser.add_argument("--selfcheck", action=ActionYesNo, default=False,
                        help="score every task's gold answers (must be 100 percent) and empty answers (must be 0)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    if not names:
        raise UsageError("--tasks is empty; allowed: a comma-separated list of " + ", ".join(foresight_tasks()))
    check_names(names)
    if args.limit is not None:
        check_range("--limit", args.limit, 1)
    check_range("--batch_size", args.batch_size, 1)
    check_device(args.device)
    kv_quant = KVQuant.of(args.kv_bits, args.kv_group, args.kv_rotate)
    if args.selfcheck and (args.checkpoint or args.speculative or kv_quant):
        given = "--checkpoint" if args.checkpoint else "--speculative" if args.speculative else "--kv_bits"
        raise UsageError(f"--selfcheck scores gold and empty answers, not a model: it takes no {given}; allowed: "
                         "--selfcheck with --tasks and --limit, or --checkpoint without --selfcheck")
    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(variable, "1")
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()  # "Generating test split" for every task: noise before a one-line error
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    if args.selfcheck:
        out = Path(args.out or f"runs/selfcheck/{stamp}")
        check_writable("--out", out)
        return selfcheck(names, out, args.limit)
    if not args.checkpoint:
        raise UsageError("--checkpoint is required (or --selfcheck); allowed: a .ckpt file written by foresight fit")
    checkpoints.read(args.checkpoint, mmap=True)  # a bad path fails here, before lm-eval starts
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "eval"
    check_writable("--out", out)
    origin = provenance(["eval", *argv])  # the code as it starts
    report = evaluate(args.checkpoint, names, out / stamp, args.limit, args.batch_size, args.device, args.seed,
                      speculative=args.speculative, kv_quant=kv_quant, decode=args.decode)
    report = {**origin, **report}
    path = out / f"results_{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"written: {path}\n")
    print(results_table(report))


def results_table(report: dict) -> str:
    lines = ["| task | metric | value |", "| --- | --- | --- |"]
    for task, metrics in report["results"].items():
        for key, value in metrics.items():
            if key.endswith(",none") and isinstance(value, (int, float)) and "stderr" not in key:
                lines.append(f"| {task} | {key.split(',')[0]} | {value:.4f} |")
    for family, value in report["families"].items():
        lines.append(f"| **{family}** | family score | {value:.4f} |")
    if report.get("untrained_tasks"):
        lines.append(f"\nnot trained on: {', '.join(report['untrained_tasks'])} (the model was trained on "
                     f"{', '.join(report['trained_on']) or 'nothing recorded'}; these are scored with their default "
                     "options)")
    kv = report.get("kv_cache") or {}
    if kv.get("bits", 16) != 16:
        width = f"{kv['bits']} bit{'s' if kv['bits'] > 1 else ''}"
        lines.append(f"\nKV cache at {width} (groups of {kv['group'] or 'a whole head'}"
                     f"{', rotated' if kv['rotate'] else ''}): keys and values as such a cache gives them back")
    decoding = report.get("decoding") or {}
    if decoding.get("rule", "next") != "next":
        lines.append(f"\ndecoding: plan decoding by {decoding['rule']} from the heads' drafts, NOT next-token decoding "
                     "(it says whether the model knows the answer, not whether its next-token head writes it)")
    from suite.plan import plan_lines

    lines += plan_lines(report.get("plan") or {})
    if decoding.get("speculative"):
        rates = ", ".join(f"head {k} {rate:.2f}" for k, rate in enumerate(decoding["acceptance"], start=2))
        lines.append(f"\nspeculative decoding: {decoding['tokens_per_pass']:.2f} tokens per trunk pass; "
                     f"acceptance {rates or '-'}")
    return "\n".join(lines)


def selfcheck(names: list[str], out: Path, limit: int | None) -> None:
    """Every generation task scored through lm-eval with its gold answers and with empty answers."""
    import tasks

    checked = [n for n in names if n in foresight_tasks() and tasks.TASKS[foresight_tasks()[n]].family is not None]
    skipped = sorted(set(names) - set(checked))
    failures, lines = [], ["| task | metric | gold | empty |", "| --- | --- | --- | --- |"]
    gold = evaluate(None, checked, out / "gold", limit, answer="gold")["results"]
    empty = evaluate(None, checked, out / "empty", limit, answer="empty")["results"]
    for name in checked:
        for key, value in gold[name].items():
            if not key.endswith(",none") or "stderr" in key or not isinstance(value, (int, float)):
                continue
            blank = empty[name][key]
            lines.append(f"| {name} | {key.split(',')[0]} | {value:.4f} | {blank:.4f} |")
            if value != 1.0 or blank != 0.0:
                failures.append(f"{name} {key.split(',')[0]}: gold {value:.4f}, empty {blank:.4f}")
    print("\n".join(lines))
    if skipped:
        print(f"\nnot checked (no answers to score): {', '.join(skipped)}")
    if failures:
        print("\nselfcheck FAILED: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("\nselfcheck passed: gold answers score 1, empty answers 0, on every metric")
