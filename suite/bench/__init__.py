"""`foresight bench NAME`: measurements that put what is compared side by side in one run (interleaved where they
are timings), print a markdown table last, and write JSON with the commit, command, machine and versions under
`results/bench/`.

  memory      peak memory of a training step, every objective against NTP (suite/bench/memory.py)
  decode      greedy against self-speculative decoding with each MTP objective's heads (suite/bench/decode.py)
  throughput  training tokens/s of foresight's trunk against Hugging Face's LlamaForCausalLM (throughput.py)
  overhead    each objective's step time against NTP's, beside its FLOP ratio (suite/bench/overhead.py)
  prepare     `foresight prepare` in MB/s and tokens/s, stage by stage (suite/bench/prepare.py)
  corpus      training tokens/s on a prepared corpus against the same rows in memory; peak RSS of fits on
              corpora of different sizes (suite/bench/corpus.py)
  kv          a sweep's checkpoints scored with the KV cache at 8, 4, 2, 1 bits against uncompressed, the drops
              compared with NTP's across seeds (suite/bench/kv.py)
  architectures  a frozen-trunk step of an objective's heads on every supported architecture's trunk against the
              Llama trunk's, at one shape (suite/bench/architectures.py)"""

from __future__ import annotations

import importlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from suite.errors import UsageError, check_choice, check_writable
from suite.provenance import provenance

BENCHES = ("memory", "decode", "throughput", "overhead", "prepare", "corpus", "kv", "architectures")


def bench_function(name: str) -> Callable:
    """The function of bench `name`: `suite.bench.<name>.<name>(..., quick) -> (report, table)`."""
    check_choice("bench", name, BENCHES)
    return getattr(importlib.import_module(f"suite.bench.{name}"), name)


def resolve_device(device: str) -> str:
    """cpu or cuda; auto means cuda where there is one."""
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' is not available on this machine; allowed: cpu")
    return device


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def interleave(candidates: dict[str, Callable[[], object]], rounds: int, device: str,
               warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call of every candidate: `warmup` untimed calls each, then `rounds` rounds that call every
    candidate once, in an order rotated each round, so drift in the machine's speed (clocks, caches, other load)
    falls on all of them alike rather than on whichever ran last."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    synchronize(device)
    seconds: dict[str, list[float]] = {label: [] for label in candidates}
    labels = list(candidates)
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            start = time.perf_counter()
            candidates[label]()
            synchronize(device)
            seconds[label].append(time.perf_counter() - start)
    return seconds


def execution(settings: dict | None, *modules):
    """The context a bench runs its steps in: `objectives.execution.Execution(**settings)` (compile,
    checkpoint_heads, loss_kernel: as `ObjectiveLM` runs), with every block of `modules` compiled where it says so."""
    from objectives.execution import Execution, executing
    from suite.model import compile_blocks

    chosen = Execution(**(settings or {}))
    if chosen.compile:
        for module in modules:
            compile_blocks(module)
    return executing(chosen)


def execution_options(compile: bool, checkpoint_heads: bool, loss_kernel: str) -> dict:
    """A bench's execution options, checked before anything runs (a bad kernel fails in one line, at once)."""
    import dataclasses

    from objectives.execution import Execution

    return dataclasses.asdict(Execution(compile=compile, checkpoint_heads=checkpoint_heads, loss_kernel=loss_kernel))


def describe_execution(config: dict) -> str:
    """", compiled, head blocks checkpointed, liger loss": how a bench's steps ran, for its table's first line."""
    parts = [", compiled" if config.get("compile") else ""]
    if config.get("checkpoint_heads"):
        parts.append(", head blocks checkpointed")
    if config.get("loss_kernel", "auto") != "auto":
        parts.append(f", {config['loss_kernel']} loss")
    return "".join(parts)


def median(values: list[float]) -> float:
    return statistics.median(values)


def objectives_at(n: int, reverse_lm: str) -> list[tuple[str, dict]]:
    """Every objective at horizon n, as (label, spec): n heads for parallel/causal/self-distilled MTP, n - 1
    sequential modules, tau = n for FSP-BoW; FSP-RevLM (no horizon) reads `reverse_lm`."""
    return [
        ("ntp", {"class_path": "ntp"}),
        ("parallel_mtp", {"class_path": "parallel_mtp", "init_args": {"n": n}}),
        ("causal_mtp", {"class_path": "causal_mtp", "init_args": {"n": n}}),
        ("sequential_mtp", {"class_path": "sequential_mtp", "init_args": {"depth": n - 1}}),
        ("fsp_bow", {"class_path": "fsp_bow", "init_args": {"tau": n}}),
        ("fsp_revlm", {"class_path": "fsp_revlm", "init_args": {"reverse_lm": reverse_lm}}),
        ("teacherless", {"class_path": "teacherless"}),
        ("self_distill_mtp", {"class_path": "self_distill_mtp", "init_args": {"n": n}}),
    ]


NO_HORIZON = ("fsp_revlm", "teacherless")
"""The objectives of `objectives_at` that are the same at every n: a bench measures them once, at n = 1."""


def answer_mask(objective, tokens):
    """None, or for an objective that needs prompts (teacherless) a loss mask whose last quarter of each row is the
    answer: the benches' random rows have no prompt of their own."""
    if not objective.needs_prompts:
        return None
    import torch

    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, tokens.shape[1] - max(tokens.shape[1] // 4, 1):] = True
    return mask


def has_headwise(spec: dict) -> bool:
    """Whether the objective of `spec` has a `headwise` option (a choice of one graph or one head at a time)."""
    import inspect

    import objectives

    return "headwise" in inspect.signature(type(objectives.from_spec(spec)).__init__).parameters


STAND_IN = "(an untrained stand-in of the trunk's shape)"
"""What FSP-RevLM's reverse_lm names in a bench: no file; the bench attaches a fresh model of the trunk's shape
(`suite.checkpoints.attach_stand_ins`), for FSP-RevLM's cost, not its skill."""


def main(argv: list[str]) -> None:
    """`foresight bench NAME [--quick] [--out FOLDER] [options]`: run the bench, write its JSON (with provenance)
    to FOLDER/NAME-DEVICE[-quick].json, print its table last."""
    from jsonargparse import ActionYesNo
    from suite.parsing import Parser

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: foresight bench NAME [options]; NAME: {', '.join(BENCHES)}; "
              "`foresight bench NAME --help` lists its options")
        return
    bench = bench_function(argv[0])
    parser = Parser(prog=f"foresight bench {argv[0]}", description=bench.__doc__)
    parser.add_function_arguments(bench, skip={"quick"})
    parser.add_argument("--quick", action=ActionYesNo, default=False,
                        help="seconds on a tiny config: checks the bench, measures nothing worth keeping")
    parser.add_argument("--out", default="results/bench", help="folder for the JSON file")
    options = parser.parse_args(argv[1:]).as_dict()
    folder = Path(options.pop("out"))
    check_writable("--out", folder)  # before minutes of measuring, not after
    origin = provenance(["bench", *argv])  # the code as it starts: a file edited while it runs is not what ran
    report, table = bench(**options)
    report = {"bench": argv[0], **origin, **report}
    path = folder / f"{argv[0]}-{report['config']['device']}{'-quick' if options['quick'] else ''}.json"
    from suite.results import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, report)
    print(f"written: {path}\n")
    print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
