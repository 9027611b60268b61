"""`foresight bench memory`: peak memory of one training step of every objective beside next-token prediction, each
in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from suite.bench import STAND_IN, answer_mask, has_headwise, objectives_at, resolve_device
from suite.errors import check_choice, check_range


def measure_step(point: dict) -> dict:
    """One objective's training step (forward and backward) on random tokens, in this process: its peak memory,
    the memory it rests at before the step, the bytes of its weights, and the time of a second, warm step."""
    import torch

    import objectives
    from suite.bench import execution
    from suite.checkpoints import attach_stand_ins
    from suite.model import Trunk
    from suite.overhead import memory_now, peak_memory  # imports Lightning: here, not before the options are checked
    from suite.sizes import ModelConfig

    torch.manual_seed(0)
    device = torch.device(point["device"])
    config = ModelConfig.from_name(point["size"], vocab_size=point["vocab_size"])
    trunk = Trunk(config).to(device)
    objective = objectives.from_spec(point["spec"])
    attach_stand_ins(objective, trunk)
    objective.to(device)
    tokens = torch.randint(0, config.vocab_size, (point["batch_size"], point["seq_len"]), device=device)
    mask = answer_mask(objective, tokens)
    cuda = device.type == "cuda"

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with execution(point.get("execution"), trunk, objective):
            loss, _ = objective.loss(trunk, objective.hidden(trunk, tokens, mask), tokens, mask)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    resting = memory_now()
    step()
    peak, _ = peak_memory()
    for p in [*trunk.parameters(), *objective.parameters()]:
        p.grad = None
    weights = sum(p.numel() * p.element_size() for p in {*trunk.parameters(), *objective.parameters()})
    return {"resting_bytes": resting, "peak_bytes": peak, "step_bytes": peak - resting, "weight_bytes": weights,
            "seconds": step()}


def _in_fresh_process(point: dict) -> dict:
    from suite.overhead import MALLOC_LIVE

    env = {**os.environ, **MALLOC_LIVE}
    result = subprocess.run([sys.executable, "-m", "suite.bench.memory", json.dumps(point)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {point['label']} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


MODES = ("headwise", "checkpointed", "all_at_once")
"""How a step runs its heads: one at a time (`headwise`, the default where logits are large), one at a time with
the head blocks' activations recomputed in the backward pass (`checkpointed`, --model.checkpoint_heads), or all in
one graph (`all_at_once`, the reference)."""


def modes(label: str, spec: dict) -> tuple[str, ...]:
    """The modes an objective is measured in: NTP has one head and no head block (all three are the same step);
    an objective without a headwise option has no all-at-once mode; teacherless has no head blocks."""
    if label in ("ntp", "teacherless"):
        return ("headwise",)
    return MODES if has_headwise(spec) else ("headwise", "checkpointed")


def memory(size: str = "small", vocab_size: int = 32768, seq_len: int = 1024, batch_size: int = 1, n: int = 4,
           objectives: list[str] | None = None, device: str = "auto", quick: bool = False) -> tuple[dict, str]:
    """Peak memory of one training step of every objective at horizon n, against next-token prediction, with its
    head blocks' activations recomputed (checkpoint_heads) and with all heads in one graph (headwise=False), each
    measured in a fresh process (CPU: max resident memory; GPU: max allocated).

    Args:
        size: Model size (d=512 for `small`).
        vocab_size: Vocabulary; large vocabularies are where the heads' logits dominate memory.
        seq_len: Tokens per sequence.
        batch_size: Sequences per step.
        n: Tokens predicted ahead: n heads for parallel/causal MTP, n - 1 sequential modules, tau = n for FSP-BoW.
        objectives: Measure these only, beside NTP (the reference), e.g. [parallel_mtp, sequential_mtp]; every
            objective when not given.
        device: cpu, cuda, or auto (cuda when available).
        quick: A seconds-long run on a tiny config (nano, vocabulary 512, 64 tokens; NTP and parallel MTP, in
            every mode), to check the bench itself.
    """
    from suite.sizes import ModelConfig

    if quick:
        size, vocab_size, seq_len, batch_size = "nano", 512, 64, 2
    device = resolve_device(device)
    check_range("n", n, 2, seq_len - 1)
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size)):
        check_range(name, value, 1)
    config = ModelConfig.from_name(size, vocab_size=vocab_size)

    objectives_at_n = objectives_at(n, STAND_IN)
    if objectives is not None:
        known = [label for label, _ in objectives_at_n]
        for name in objectives:
            check_choice("objective", name, known)
        objectives_at_n = [(label, spec) for label, spec in objectives_at_n if label == "ntp" or label in objectives]
    if quick:  # every mode, in four processes rather than twenty (`bench overhead --quick` measures each objective)
        objectives_at_n = objectives_at_n[:2]
    common = {"size": size, "vocab_size": vocab_size, "seq_len": seq_len, "batch_size": batch_size,
              "device": device}
    rows = []
    for label, spec in objectives_at_n:
        row = {"objective": label}
        for mode in modes(label, spec):
            mode_spec = ({**spec, "init_args": {**spec.get("init_args", {}), "headwise": mode != "all_at_once"}}
                         if has_headwise(spec) else spec)
            execution = {"checkpoint_heads": True} if mode == "checkpointed" else {}
            row[mode] = _in_fresh_process({**common, "label": f"{label} {mode}", "spec": mode_spec,
                                           "execution": execution})
            print(f"  measured {label} {mode}: peak {row[mode]['peak_bytes'] / 2**20:,.0f} MiB", file=sys.stderr)
        rows.append(row)

    ntp = rows[0]["headwise"]
    for row in rows:
        for mode in MODES:
            if mode in row:
                row[mode]["peak_ratio"] = row[mode]["peak_bytes"] / ntp["peak_bytes"]
                row[mode]["step_ratio"] = row[mode]["step_bytes"] / ntp["step_bytes"]
                row[mode]["model_ratio"] = model_bytes(row[mode]) / model_bytes(ntp)
                row[mode]["time_ratio"] = row[mode]["seconds"] / ntp["seconds"]
    report = {"config": {**common, "n": n, "d_model": config.d_model, "n_layer": config.n_layer}, "rows": rows}
    return report, memory_table(report)


def model_bytes(measured: dict) -> int:
    """Weights plus what a step adds: a GPU's peak allocation, and on a CPU the peak without the process's runtime
    (Python, torch, its libraries: over 600 MiB here, the same for every objective, which would dilute ratios)."""
    return measured["weight_bytes"] + measured["step_bytes"]


def memory_table(report: dict) -> str:
    c = report["config"]
    mib = 2 ** 20
    lines = [f"Peak memory of one training step, {c['size']} (d={c['d_model']}, {c['n_layer']} layers), "
             f"V={c['vocab_size']}, T={c['seq_len']}, batch {c['batch_size']}, n={c['n']}, {c['device']} "
             "(CPU: max resident memory; GPU: max allocated). 'Model' is the weights plus the peak above the "
             "memory the process rests at: what a GPU's allocator counts, without the CPU process's runtime.",
             "",
             "| objective | peak MiB | x NTP | model MiB | x NTP | checkpointed heads: model MiB | x NTP | all heads at "
             "once: model MiB | x NTP | step s | x NTP |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        h = row["headwise"]
        cells = [f"{model_bytes(row[mode]) / mib:,.0f} | {row[mode]['model_ratio']:.2f}" if mode in row else "- | -"
                 for mode in MODES]
        lines.append(f"| {row['objective']} | {h['peak_bytes'] / mib:,.0f} | {h['peak_ratio']:.2f} | "
                     f"{' | '.join(cells)} | {h['seconds']:.2f} | {h['time_ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # a measurement's fresh process: one JSON line on stdout
    print(json.dumps(measure_step(json.loads(sys.argv[1]))))
