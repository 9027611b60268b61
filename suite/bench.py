"""`foresight bench NAME`: measurements that put each objective beside next-token prediction in one run, print a
markdown table last, and write JSON with the commit, command, machine and versions under `results/bench/`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from suite.errors import UsageError, check_choice, check_range
from suite.overhead import MALLOC_LIVE, memory_now, peak_memory
from suite.provenance import provenance


def measure_step(point: dict) -> dict:
    """One objective's training step (forward and backward) on random tokens, in this process: its peak memory,
    the memory it rests at before the step, and the time of a second, warm step."""
    import torch

    import objectives
    from suite.model import Trunk
    from suite.sizes import ModelConfig

    torch.manual_seed(0)
    device = torch.device(point["device"])
    config = ModelConfig.from_name(point["size"], vocab_size=point["vocab_size"])
    trunk = Trunk(config).to(device)
    objective = objectives.from_spec(point["spec"])
    objective.attach(trunk)
    objective.to(device)
    tokens = torch.randint(0, config.vocab_size, (point["batch_size"], point["seq_len"]), device=device)
    cuda = device.type == "cuda"

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss, _ = objective.loss(trunk, trunk(tokens), tokens)
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
    return {"resting_bytes": resting, "peak_bytes": peak, "step_bytes": peak - resting, "seconds": step()}


def _in_fresh_process(point: dict) -> dict:
    env = {**os.environ, **MALLOC_LIVE}
    result = subprocess.run([sys.executable, "-m", "suite.bench", "_measure", json.dumps(point)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {point['label']} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory(size: str = "small", vocab_size: int = 32768, seq_len: int = 1024, batch_size: int = 1, n: int = 4,
           device: str = "auto", quick: bool = False) -> tuple[dict, str]:
    """Peak memory of one training step of every objective at horizon n, against next-token prediction and against
    the same objective with all heads in one graph (headwise=False), each measured in a fresh process (CPU: max
    resident memory; GPU: max allocated).

    Args:
        size: Model size (d=512 for `small`).
        vocab_size: Vocabulary; large vocabularies are where the heads' logits dominate memory.
        seq_len: Tokens per sequence.
        batch_size: Sequences per step.
        n: Tokens predicted ahead: n heads for parallel/causal MTP, n - 1 sequential modules, tau = n for FSP-BoW.
        device: cpu, cuda, or auto (cuda when available).
        quick: A seconds-long run on a tiny config (nano, vocabulary 512, 64 tokens), to check the bench itself.
    """
    import torch

    from suite.checkpoints import save_trunk
    from suite.model import Trunk
    from suite.sizes import ModelConfig

    if quick:
        size, vocab_size, seq_len, batch_size = "nano", 512, 64, 2
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    check_choice("device", device, ("cpu", "cuda"))
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' is not available on this machine; allowed: cpu")
    check_range("n", n, 2, seq_len - 1)
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size)):
        check_range(name, value, 1)
    config = ModelConfig.from_name(size, vocab_size=vocab_size)

    with tempfile.TemporaryDirectory() as scratch:
        reverse_lm = Path(scratch) / "reverse.ckpt"  # a stand-in reverse model of the same shape: memory, not skill
        with torch.device("cpu"):
            save_trunk(reverse_lm, Trunk(config), {"reverse": True})
        objectives_at_n = [
            ("ntp", {"class_path": "ntp"}),
            ("parallel_mtp", {"class_path": "parallel_mtp", "init_args": {"n": n}}),
            ("causal_mtp", {"class_path": "causal_mtp", "init_args": {"n": n}}),
            ("sequential_mtp", {"class_path": "sequential_mtp", "init_args": {"depth": n - 1}}),
            ("fsp_bow", {"class_path": "fsp_bow", "init_args": {"tau": n}}),
            ("fsp_revlm", {"class_path": "fsp_revlm", "init_args": {"reverse_lm": str(reverse_lm)}}),
        ]
        common = {"size": size, "vocab_size": vocab_size, "seq_len": seq_len, "batch_size": batch_size,
                  "device": device}
        rows = []
        for label, spec in objectives_at_n:
            row = {"objective": label}
            for mode in ("headwise", "all_at_once") if label != "ntp" else ("headwise",):
                mode_spec = {**spec, "init_args": {**spec.get("init_args", {}), "headwise": mode == "headwise"}}
                if label == "ntp":
                    mode_spec = spec
                row[mode] = _in_fresh_process({**common, "label": f"{label} {mode}", "spec": mode_spec})
                print(f"  measured {label} {mode}: peak {row[mode]['peak_bytes'] / 2**20:,.0f} MiB", file=sys.stderr)
            rows.append(row)

    ntp = rows[0]["headwise"]
    for row in rows:
        for mode in ("headwise", "all_at_once"):
            if mode in row:
                row[mode]["peak_ratio"] = row[mode]["peak_bytes"] / ntp["peak_bytes"]
                row[mode]["step_ratio"] = row[mode]["step_bytes"] / ntp["step_bytes"]
                row[mode]["time_ratio"] = row[mode]["seconds"] / ntp["seconds"]
    report = {"config": {**common, "n": n, "d_model": config.d_model, "n_layer": config.n_layer}, "rows": rows}
    return report, memory_table(report)


def memory_table(report: dict) -> str:
    c = report["config"]
    mib = 2 ** 20
    lines = [f"Peak memory of one training step, {c['size']} (d={c['d_model']}, {c['n_layer']} layers), "
             f"V={c['vocab_size']}, T={c['seq_len']}, batch {c['batch_size']}, n={c['n']}, {c['device']} "
             "(CPU: max resident memory; GPU: max allocated); 'step' is the peak above the model's resting memory.",
             "",
             "| objective | peak MiB | x NTP | step MiB | x NTP | all heads at once: step MiB | x NTP | step s "
             "| x NTP |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        h, a = row["headwise"], row.get("all_at_once")
        naive = f"{a['step_bytes'] / mib:,.0f} | {a['step_ratio']:.2f}" if a else "- | -"
        lines.append(f"| {row['objective']} | {h['peak_bytes'] / mib:,.0f} | {h['peak_ratio']:.2f} | "
                     f"{h['step_bytes'] / mib:,.0f} | {h['step_ratio']:.2f} | {naive} | {h['seconds']:.2f} | "
                     f"{h['time_ratio']:.2f} |")
    return "\n".join(lines)


BENCHES = {"memory": memory}


def main(argv: list[str]) -> None:
    """`foresight bench NAME [--quick] [--out FOLDER] [options]`: run the bench, write its JSON (with provenance)
    to FOLDER/NAME-DEVICE[-quick].json, print its table last."""
    from jsonargparse import ActionYesNo, ArgumentParser

    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: foresight bench NAME [options]; NAME: {', '.join(BENCHES)}; "
              "`foresight bench NAME --help` lists its options")
        return
    check_choice("bench", argv[0], BENCHES)
    bench = BENCHES[argv[0]]
    parser = ArgumentParser(prog=f"foresight bench {argv[0]}", description=bench.__doc__, exit_on_error=False)
    parser.add_function_arguments(bench, skip={"quick"})
    parser.add_argument("--quick", action=ActionYesNo, default=False,
                        help="seconds on a tiny config: checks the bench, measures nothing worth keeping")
    parser.add_argument("--out", default="results/bench", help="folder for the JSON file")
    options = parser.parse_args(argv[1:]).as_dict()
    folder = Path(options.pop("out"))
    _check_writable(folder)
    report, table = bench(**options)
    report = {"bench": argv[0], **provenance(["bench", *argv]), **report}
    path = folder / f"{argv[0]}-{report['config']['device']}{'-quick' if options['quick'] else ''}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {path}\n")
    print(table)


def _check_writable(folder: Path) -> None:
    """Fail before minutes of measuring, not after."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UsageError(f"--out {str(folder)!r} is not a writable folder ({err.strerror}); allowed: a folder you "
                         "can write") from None


if __name__ == "__main__":
    if sys.argv[1:2] == ["_measure"]:  # a measurement's fresh process: one JSON line on stdout
        print(json.dumps(measure_step(json.loads(sys.argv[2]))))
