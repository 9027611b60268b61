"""`foresight bench overhead`: what each objective costs beyond next-token prediction. Training steps of every
objective at each horizon and size are timed interleaved with NTP's in one process; the measured step-time ratio is
set beside the analytic FLOP ratio (`suite.overhead.analytic_flops_per_token`), and efficiency = analytic ratio /
measured ratio says whether the extra time is the extra work (1.0) or foresight's overhead (< 1). Peak memory is the
weights plus the most a step adds: allocated on a GPU, resident in a fresh process on CPU (`foresight bench memory`'s
measurement)."""

from __future__ import annotations

import sys

from suite.bench import (NO_HORIZON, STAND_IN, answer_mask, describe_execution, execution, execution_options,
                         interleave, median, objectives_at, resolve_device)
from suite.errors import check_choice, check_range


def overhead(sizes: list[str] = ["nano", "micro", "tiny", "small"], horizons: list[int] = [2, 4, 8],
             vocab_size: int = 4096, seq_len: int = 256, batch_size: int = 8, rounds: int = 5,
             memory: bool = True, device: str = "auto", compile: bool = False, checkpoint_heads: bool = False,
             loss_kernel: str = "auto", quick: bool = False) -> tuple[dict, str]:
    """Step time (forward and backward) of every objective at each horizon n against NTP's, the analytic FLOP
    ratio, efficiency = FLOP ratio / time ratio, and the peak-memory ratio, at each size.

    Args:
        sizes: Model sizes.
        horizons: Values of n: n heads for parallel/causal MTP, n - 1 sequential modules, tau = n for FSP-BoW;
            FSP-RevLM has no horizon and is measured once per size.
        vocab_size: Vocabulary.
        seq_len: Tokens per sequence.
        batch_size: Sequences per step.
        rounds: Timed steps of each objective, interleaved with the others (after one warm-up step each); the
            median counts.
        memory: Also measure each step's peak memory, each in a fresh process (slower).
        device: cpu, cuda, or auto (cuda when available).
        compile: Every objective's blocks and chunked loss through torch.compile (--model.compile), NTP's too.
        checkpoint_heads: Head blocks recompute their activations in the backward pass (--model.checkpoint_heads).
        loss_kernel: auto, foresight or liger (--model.loss_kernel), for every objective alike.
        quick: A seconds-long run (nano, n = 2, 64 tokens, batch 2, 2 rounds), to check the bench itself.
    """
    from suite.sizes import SIZES, ModelConfig

    if quick:
        sizes, horizons, seq_len, batch_size, rounds = ["nano"], [2], 64, 2, 2
    device = resolve_device(device)
    for size in sizes:
        check_choice("size", size, SIZES)
    for n in horizons:
        check_range("horizons", n, 2, seq_len - 1)
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size),
                        ("rounds", rounds)):
        check_range(name, value, 1)
    settings = execution_options(compile, checkpoint_heads, loss_kernel)
    # after the checks: suite.overhead imports Lightning, seconds that a bad option need not wait for
    import torch

    import objectives
    from suite.bench.memory import _in_fresh_process
    from suite.checkpoints import attach_stand_ins
    from suite.model import Trunk
    from suite.overhead import analytic_flops_per_token

    rows = []
    for size in sizes:
        config = ModelConfig.from_name(size, vocab_size=vocab_size)
        points = {("ntp", 1): {"class_path": "ntp"}}
        for n in horizons:
            for label, spec in objectives_at(n, STAND_IN)[1:]:
                if label not in NO_HORIZON or n == horizons[0]:
                    points[(label, 1 if label in NO_HORIZON else n)] = spec
        tokens = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
        steps, flops, peaks, weights = {}, {}, {}, {}
        for key, spec in points.items():
            torch.manual_seed(0)
            trunk = Trunk(config).to(device)
            objective = objectives.from_spec(spec)
            attach_stand_ins(objective, trunk)
            objective.to(device)
            flops[key] = analytic_flops_per_token(trunk, objective, seq_len)

            def step(trunk=trunk, objective=objective, mask=answer_mask(objective, tokens)):
                with execution(settings, trunk, objective):
                    loss, _ = objective.loss(trunk, objective.hidden(trunk, tokens, mask), tokens, mask)
                loss.backward()
                for p in [*trunk.parameters(), *objective.parameters()]:
                    p.grad = None

            steps[key] = step
            weights[key] = sum(p.numel() * p.element_size() for p in {*trunk.parameters(),
                                                                      *objective.parameters()})
            if memory and device == "cuda":  # in this process: the allocator counts exactly what is live
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                step()
                peaks[key] = weights[key] + torch.cuda.max_memory_allocated() - before
        seconds = interleave(steps, rounds, device, warmup=2 if compile else 1)
        del steps
        base_time, base_flops = median(seconds[("ntp", 1)]), flops[("ntp", 1)]
        base_memory = None
        for (label, n), spec in points.items():
            row = {"size": size, "objective": label, "n": n, "seconds": seconds[(label, n)],
                   "flops_per_token": flops[(label, n)]}
            row["time_ratio"] = median(row["seconds"]) / base_time
            row["flop_ratio"] = row["flops_per_token"] / base_flops
            row["efficiency"] = row["flop_ratio"] / row["time_ratio"]
            if memory:  # on CPU resident memory is the whole process's (libraries too): a fresh process
                # per step, and what the step adds above its resting memory, plus the weights, as on a GPU
                row["peak_bytes"] = peaks.get((label, n)) or weights[(label, n)] + _in_fresh_process(
                    {"size": size, "vocab_size": vocab_size, "seq_len": seq_len, "batch_size": batch_size,
                     "device": device, "label": f"{size} {label} n={n}", "spec": spec,
                     "execution": {**settings, "compile": False}})["step_bytes"]
                base_memory = base_memory or row["peak_bytes"]
                row["memory_ratio"] = row["peak_bytes"] / base_memory
            rows.append(row)
            print(f"  {size} {label} n={n}: time x{row['time_ratio']:.2f}, FLOPs x{row['flop_ratio']:.2f}, "
                  f"efficiency {row['efficiency']:.2f}", file=sys.stderr)
        if device == "cuda":
            torch.cuda.empty_cache()
    report = {"config": {"sizes": sizes, "horizons": horizons, "vocab_size": vocab_size, "seq_len": seq_len,
                         "batch_size": batch_size, "rounds": rounds, "device": device, **settings,
                         "threads": torch.get_num_threads()},
              "rows": rows}
    return report, overhead_table(report)


def overhead_table(report: dict) -> str:
    c = report["config"]
    lines = [f"Objective overhead: one training step (forward and backward) against NTP's at the same size, "
             f"V={c['vocab_size']}, T={c['seq_len']}, batch {c['batch_size']}, {c['device']}{describe_execution(c)}; "
             f"median of {c['rounds']} interleaved steps. Efficiency = FLOP ratio / time ratio (1.0: the extra time "
             "is the extra work).",
             "",
             "| size | objective | n | time x NTP | FLOPs x NTP | efficiency | peak memory x NTP |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        memory = f"{row['memory_ratio']:.2f}" if "memory_ratio" in row else "-"
        lines.append(f"| {row['size']} | {row['objective']} | {row['n']} | {row['time_ratio']:.2f} | "
                     f"{row['flop_ratio']:.2f} | {row['efficiency']:.2f} | {memory} |")
    return "\n".join(lines)
