"""`foresight bench decode`: tokens/s of greedy decoding against self-speculative decoding with each MTP objective's
own heads, on models it trains first (or on a checkpoint), both timed interleaved in one process, prompt by prompt,
and their outputs compared token for token."""

from __future__ import annotations

import inspect
import sys
import time

from suite.bench import interleave, resolve_device
from suite.errors import UsageError, check_range

PROMPT_TOKENS = 32
"""Prompt length for documents that have no prompt of their own (a corpus): their first tokens."""

DRAFTING = [("parallel_mtp", "n"), ("causal_mtp", "n"), ("sequential_mtp", "depth")]
"""The objectives whose heads draft, and the option that sets their horizon (depth = n - 1)."""


def trained_models(task: str, options: dict, size: str, horizons: list[int], steps: int, batch_size: int, lr: float,
                   device: str, compile: bool = False) -> tuple[list[tuple[str, int, object, dict]], object]:
    """(objective, n, ObjectiveLM, training figures) for every drafting objective at every horizon, trained on
    `task` through Lightning as `foresight fit` trains, and the task."""
    import lightning as L

    from objectives import OBJECTIVES
    from suite.data import TaskData
    from suite.module import ObjectiveLM

    models = []
    data = TaskData(task, options, batch_size=batch_size)  # one task and tokenizer for all: building them is slow
    for name, option in DRAFTING:
        for n in horizons:
            L.seed_everything(0, verbose=False)  # the same weights and batch order for each model
            objective = OBJECTIVES[name](**{option: n if option == "n" else n - 1})
            model = ObjectiveLM(size, objective=objective, vocab_size=data.vocab_size, lr=lr,
                                warmup_steps=min(100, steps // 10), compile=compile)
            trainer = L.Trainer(max_steps=steps, accelerator=device, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                precision="bf16-mixed" if device == "cuda" else "32-true")
            start = time.perf_counter()
            trainer.fit(model, data)
            seconds = time.perf_counter() - start
            loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
            print(f"  trained {name} n={n}: {steps} steps in {seconds:.0f} s, loss {loss:.3f}", file=sys.stderr)
            models.append((name, n, model.to(device).eval(), {"train_seconds": seconds, "train_loss": loss}))
    return models, data.task


def checkpoint_models(paths: list[str], device: str):
    """(objective, n, model, {"checkpoint": path}) of each checkpoint, and the task of the first; every one must
    have been trained on the same data (the prompts are its test split)."""
    import tasks
    from suite import checkpoints

    models, data = [], None
    for path in paths:
        model, checkpoint = checkpoints.load_model(path)
        model.trunk.to(device).eval()
        model.objective.to(device).eval()
        settings = {key: (checkpoint.get("datamodule_hyper_parameters") or {}).get(key) for key in ("task", "options")}
        if data is not None and settings != data:
            raise UsageError(f"--checkpoint {path!r} was trained on other data than {paths[0]!r}; allowed: "
                             "checkpoints of one task and its options (their heads are compared on its prompts)")
        data = settings
        models.append((model.objective.name, model.objective.n, model, {"checkpoint": path}))
    return models, tasks.build(data["task"] or "star_graph", **(data["options"] or {}))


def prompts_of(task, count: int, prompt_tokens: int):
    """The first `count` test examples' prompts; documents without one (a corpus, plain text) give their first
    `prompt_tokens` tokens."""
    examples = task.examples("test")
    starts = examples.prompt_len.tolist()
    lengths = (examples.tokens != 0).sum(1).tolist()
    chosen = []
    for i in range(min(count, len(starts))):
        start = starts[i] if starts[i] < lengths[i] else min(prompt_tokens, lengths[i] - 1)
        chosen.append(examples.tokens[i, :start][None])
    return chosen


def decode(checkpoint: str | list[str] | None = None, task: str = "synthetic_code", size: str = "micro", steps: int = 600,
           batch_size: int = 32, lr: float = 3e-3, horizons: list[int] = [2, 4], prompts: int = 24,
           max_new_tokens: int = 96, device: str = "auto", graphs: bool = False, compile: bool = False,
           quick: bool = False) -> tuple[dict, str]:
    """Greedy against self-speculative decoding (batch size 1, KV-cached both) for parallel, causal and sequential
    MTP at each horizon: tokens/s of each, their ratio, tokens per trunk pass and each head's acceptance rate, and
    whether the outputs are identical (they must be).

    Args:
        checkpoint: Decode with this checkpoint (or these, `[A, B]`: heads trained on data against heads
            self-distilled on one pretrained model, say) instead of training models first.
        task: The task to train on and take prompts from (its test split), e.g. synthetic_code or star_graph.
        size: Model size to train.
        steps: Training steps per model.
        batch_size: Training batch size.
        lr: Peak learning rate.
        horizons: The n of each objective to train (n = 2 is one draft head).
        prompts: Test prompts to decode, one at a time, each with both decoders.
        max_new_tokens: Tokens to decode per prompt (fewer where the model ends with <eos>).
        device: cpu, cuda, or auto (cuda when available).
        graphs: Also decode both ways with static-shaped passes (CUDA graphs on a GPU: `generate(graphs=True)`),
            timed beside the eager ones, and the outputs of all four compared.
        compile: Train the models compiled (--model.compile); decoding is not compiled.
        quick: A seconds-long run (nano, 20 steps, 3 prompts), to check the bench itself.
    """
    import torch

    import tasks as task_registry
    from suite.decoding import DecodeStats, generate

    if checkpoint is not None:  # the options that train models have nothing to train
        defaults = {name: p.default for name, p in inspect.signature(decode).parameters.items()}
        given = {"task": task, "size": size, "steps": steps, "batch_size": batch_size, "lr": lr, "horizons": horizons,
                 "compile": compile}
        conflicting = [f"--{name}" for name, value in given.items() if value != defaults[name]]
        if conflicting:
            raise UsageError(f"--checkpoint decodes the checkpoint's own model, so {', '.join(conflicting)} (for "
                             "training models first) cannot be given with it; allowed: --checkpoint with --prompts, "
                             "--max_new_tokens, --device, --graphs, --quick")
    if quick:
        size, steps, batch_size, prompts, max_new_tokens = "nano", 20, 8, 3, 16
    device = resolve_device(device)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("prompts", prompts),
                        ("max_new_tokens", max_new_tokens)):
        check_range(name, value, 1)
    for n in horizons:
        check_range("horizons", n, 2)
    if checkpoint is None:
        if task not in task_registry.TASKS:
            raise UsageError(f"unknown task {task!r}; known: {', '.join(task_registry.TASKS)}")
        options = {"num_train": 2000 if quick else 20000, "num_val": 8, "num_test": max(prompts, 8)}
        models, data_task = trained_models(task, options, size, horizons, steps, batch_size, lr, device, compile)
    else:
        models, data_task = checkpoint_models([checkpoint] if isinstance(checkpoint, str) else checkpoint, device)
    eos = data_task.tokenizer.token_to_id("<eos>")
    inputs = [prompt.to(device) for prompt in prompts_of(data_task, prompts, PROMPT_TOKENS)]

    ways = [("greedy", False, False), ("speculative", True, False)]
    if graphs:
        ways += [("graphs_greedy", False, True), ("graphs_speculative", True, True)]
    rows = []
    for name, n, model, training in models:
        for _, speculative, static in ways:  # warm up: first calls pay for allocations, kernels and graph capture
            generate(model, inputs[0], max_new_tokens, speculative=speculative, eos_id=eos, graphs=static)
        ops = {label: operations_per_pass(lambda: generate(model, inputs[0], max_new_tokens, speculative=speculative,
                                                              eos_id=eos, graphs=static))
               for label, speculative, static in ways}
        outputs: dict[str, list[torch.Tensor]] = {label: [] for label, _, _ in ways}
        stats = DecodeStats()
        seconds = {label: 0.0 for label, _, _ in ways}
        passes = {label: 0 for label, _, _ in ways}  # trunk passes, the prompts' included
        tokens = 0

        for prompt in inputs:
            def run(label: str, speculative: bool, static: bool, prompt=prompt):
                out, call = generate(model, prompt, max_new_tokens, speculative=speculative, eos_id=eos,
                                     graphs=static)
                outputs[label].append(out)
                passes[label] += call.trunk_passes
                if label == "speculative":
                    stats.add(call)
                return call

            timing = interleave({label: (lambda way=way: run(*way)) for way in ways for label in [way[0]]},
                                rounds=2, device=device, warmup=0)
            for label in seconds:
                seconds[label] += sum(timing[label])
            out = outputs["greedy"][-1][0]
            tokens += 2 * (int((out == eos).nonzero()[0]) + 1 if (out == eos).any() else len(out))
        identical = all(torch.equal(a, b) for label in outputs for a, b in zip(outputs["greedy"], outputs[label]))
        row = {"objective": name, "n": n, **training, "tokens": tokens,  # training: how, or which checkpoint
               **{f"{label}_tokens_per_s": tokens / seconds[label] for label in seconds},
               "speedup": seconds["greedy"] / seconds["speculative"], "identical": identical,
               **{f"{label}_trunk_passes": passes[label] for label in passes},
               "pass_cost": pass_cost(seconds, passes, ""), "ops_per_pass": ops,
               **{f"decode_{k}": v for k, v in stats.as_dict().items()}}
        if graphs:
            row["graphs_speedup"] = seconds["graphs_greedy"] / seconds["graphs_speculative"]
            row["graphs_over_eager_greedy"] = seconds["greedy"] / seconds["graphs_greedy"]
            row["graphs_pass_cost"] = pass_cost(seconds, passes, "graphs_")
        rows.append(row)
        print(f"  decoded {name} n={n}: {row['speedup']:.2f}x, {stats.tokens_per_pass:.2f} tokens per pass"
              + (f", with graphs {row['graphs_speedup']:.2f}x" if graphs else "") + f", identical: {identical}",
              file=sys.stderr)
    report = {"config": {"checkpoint": checkpoint, "task": task if checkpoint is None else data_task.name,
                         "size": size, "steps": steps, "batch_size": batch_size, "lr": lr, "prompts": len(inputs),
                         "max_new_tokens": max_new_tokens, "device": device, "graphs": graphs, "compile": compile,
                         "dtype": "bf16-mixed training, fp32 decoding" if device == "cuda" else "fp32"},
              "rows": rows}
    if not all(row["identical"] for row in rows):
        print("speculative output differed from greedy output: a bug in foresight's decoding", file=sys.stderr)
    return report, decode_table(report)


def operations_per_pass(call) -> float:
    """Tensor operations dispatched per trunk pass by `call()` (a `generate` call), views excluded: on a GPU each
    is a kernel launch, except inside a replayed CUDA graph, whose operations are not dispatched again (there the
    count is what still runs outside the graphs)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        launched = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.launched += not func.is_view
            return func(*args, **(kwargs or {}))

    with Count() as count:
        _, stats = call()
    return count.launched / stats.trunk_passes


def pass_cost(seconds: dict, passes: dict, way: str) -> float:
    """Seconds a speculative pass takes over seconds a greedy step takes, each way's prompts' passes included: the
    speedup is tokens per pass over this. It is the decoder's own cost, the heads' drafting included; how often the
    drafts hold is the model's."""
    def step(label: str) -> float:
        return seconds[way + label] / passes[way + label]

    return step("speculative") / step("greedy")


def decode_table(report: dict) -> str:
    c = report["config"]
    source = f"checkpoint {c['checkpoint']}" if c["checkpoint"] else f"{c['size']} trained {c['steps']} steps on {c['task']}"
    lines = [f"Greedy vs self-speculative decoding, batch 1, {source}, {c['prompts']} test prompts x up to "
             f"{c['max_new_tokens']} tokens, {c['device']} ({c['dtype']}); both KV-cached, timed interleaved"
             + ("; graphs: static-shaped passes, CUDA graphs on a GPU (the same passes run eagerly on a CPU)."
                if c.get("graphs") else "."),
             "",
             "| objective | n | greedy tok/s | speculative tok/s | speedup | pass / greedy step: time | ops "
             "| tokens / trunk pass | acceptance by head | identical |"
             + (" graphs: greedy tok/s | speculative tok/s | speedup | pass / greedy step: time | ops |"
                if c.get("graphs") else ""),
             "|" + " --- |" * (15 if c.get("graphs") else 10)]

    def ops(row: dict, way: str) -> str:
        return f"{row['ops_per_pass'][way + 'speculative'] / row['ops_per_pass'][way + 'greedy']:.2f}"

    for row in report["rows"]:
        rates = " ".join(f"{rate:.2f}" for rate in row["decode_acceptance"]) or "-"
        graphed = (f" {row['graphs_greedy_tokens_per_s']:,.0f} | {row['graphs_speculative_tokens_per_s']:,.0f} | "
                   f"{row['graphs_speedup']:.2f} | {row['graphs_pass_cost']:.2f} | {ops(row, 'graphs_')} |"
                   if c.get("graphs") else "")
        lines.append(f"| {row['objective']} | {row['n']} | {row['greedy_tokens_per_s']:,.0f} | "
                     f"{row['speculative_tokens_per_s']:,.0f} | {row['speedup']:.2f} | {row['pass_cost']:.2f} | "
                     f"{ops(row, '')} | {row['decode_tokens_per_pass']:.2f} | {rates} | "
                     f"{'yes' if row['identical'] else 'NO'} |" + graphed)
    return "\n".join(lines)
