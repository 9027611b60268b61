"""`foresight bench corpus`: what training on a prepared corpus costs beside a task held in memory.

Speed: the same model's training steps (forward, loss, backward, fused AdamW), each on the next batch of a loader,
timed interleaved in one process: the corpus's loader (rows read from memory-mapped Arrow as batches ask for them)
against a loader over the same rows held in memory as one tensor, both in the same seeded order. Memory: the peak
resident memory of `foresight fit` processes on corpora of different sizes, which must not grow with the corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from suite.bench import interleave, median
from suite.errors import check_choice, check_range


def loaders(path: str, seq_len: int, batch_size: int) -> dict:
    """The corpus's training loader and one over the same rows in memory, each an endless iterator of batches."""
    import torch

    from suite.data import packed_rows, training_loader
    from tasks import Examples, build

    rows = build("corpus", path=path, seq_len=seq_len).rows("train")
    streamed = training_loader(rows, batch_size, collate_fn=packed_rows)
    tokens = torch.stack([rows[i] for i in range(len(rows))]).long()
    memory = training_loader(Examples(tokens, torch.ones_like(tokens, dtype=torch.bool),
                                      torch.zeros(len(tokens), dtype=torch.long)), batch_size)

    def endless(loader):
        while True:
            yield from loader

    return {"rows": len(rows), "corpus": endless(streamed), "in_memory": endless(memory)}


def step_on(batches, size: str, vocab_size: int):
    import torch

    from objectives import NTP
    from suite.model import Trunk
    from suite.sizes import ModelConfig

    torch.manual_seed(0)
    trunk = Trunk(ModelConfig.from_name(size, vocab_size=vocab_size))
    objective = NTP()
    objective.attach(trunk)
    optimizer = torch.optim.AdamW(trunk.parameters(), lr=1e-4, fused=True)

    def run():
        tokens = next(batches)["tokens"]
        objective.loss(trunk, trunk(tokens), tokens)[0].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run


def peak_rss(path: str, size: str, seq_len: int, batch_size: int, steps: int) -> dict:
    """`foresight fit` on the corpus for `steps` steps in a process of its own: its peak resident memory."""
    with tempfile.TemporaryDirectory(prefix="foresight-bench-corpus-") as root:
        command = [sys.executable, "-m", "suite.cli", "fit", "--data.task=corpus", f"--data.options.path={path}",
                   f"--data.options.seq_len={seq_len}", f"--data.batch_size={batch_size}", f"--model.size={size}",
                   f"--trainer.max_steps={steps}", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                   "--trainer.limit_val_batches=2",
                   f"--trainer.default_root_dir={root}"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # the rusage of this child alone
        process.returncode = os.waitstatus_to_exitcode(status)
        error = process.stderr.read()
        if process.returncode != 0:
            raise RuntimeError(f"fit on {path} failed: {error.strip().splitlines()[-1:]}")
    from tasks.corpus import read_manifest

    manifest = read_manifest(path)
    return {"path": path, "text_bytes": manifest["text_bytes"], "train_tokens": manifest["splits"]["train"]["tokens"],
            "peak_rss_bytes": usage.ru_maxrss * 1024}


def corpus(path: str, rss: list[str] | None = None, size: str = "nano", seq_len: int = 256, batch_size: int = 16,
           rounds: int = 40, rss_steps: int = 200, quick: bool = False) -> tuple[dict, str]:
    """Training tokens/s on a prepared corpus against the same rows in memory; peak RSS of fits on corpora of
    different sizes.

    Args:
        path: A folder `foresight prepare` wrote: the speed comparison trains on it.
        rss: Prepared folders of different sizes (smallest first) for the memory comparison, e.g. `--rss [A, B]`;
            default: `path` alone.
        size: Model size.
        seq_len: Tokens per row.
        batch_size: Rows per step.
        rounds: Timed steps of each loader, alternating (after one warm-up step each); the median counts.
        rss_steps: Training steps of each memory run.
        quick: nano, 64 tokens, batch 4, 3 rounds, 5 steps: checks the bench, measures nothing worth keeping.
    """
    import torch

    from suite.sizes import SIZES
    from tasks.corpus import read_manifest

    if quick:
        seq_len, batch_size, rounds, rss_steps = 64, 4, 3, 5
    check_choice("size", size, SIZES)
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("rounds", rounds),
                        ("rss_steps", rss_steps)):
        check_range(name, value, 1)
    vocab_size = read_manifest(path, "--path")["tokenizer"]["vocab_size"]
    for folder in rss or []:
        read_manifest(folder, "--rss")
    built = loaders(path, seq_len, batch_size)
    seconds = interleave({label: step_on(built[label], size, vocab_size) for label in ("corpus", "in_memory")},
                         rounds, "cpu")
    tokens = batch_size * seq_len
    speed = {f"{label}_tokens_per_s": tokens / median(seconds[label]) for label in seconds}
    speed["ratio"] = speed["corpus_tokens_per_s"] / speed["in_memory_tokens_per_s"]
    print(f"  corpus {speed['corpus_tokens_per_s']:,.0f} tok/s, in memory {speed['in_memory_tokens_per_s']:,.0f} "
          f"tok/s ({speed['ratio']:.3f}x)", file=sys.stderr)
    memory = [peak_rss(folder, size, seq_len, batch_size, rss_steps) for folder in (rss or [path])]
    for run in memory:
        run["ratio"] = run["peak_rss_bytes"] / memory[0]["peak_rss_bytes"]
        print(f"  {run['text_bytes'] / 1e6:,.0f} MB corpus: peak RSS {run['peak_rss_bytes'] / 2 ** 20:,.0f} MiB",
              file=sys.stderr)
    report = {"config": {"path": path, "rss": rss or [path], "size": size, "seq_len": seq_len,
                         "batch_size": batch_size, "rounds": rounds, "rss_steps": rss_steps, "device": "cpu",
                         "threads": torch.get_num_threads(), "rows": built["rows"]},
              "speed": {**speed, "corpus_seconds": seconds["corpus"], "in_memory_seconds": seconds["in_memory"]},
              "memory": memory}
    return report, corpus_table(report)


def corpus_table(report: dict) -> str:
    c, speed = report["config"], report["speed"]
    lines = [f"Training on a prepared corpus ({c['rows']:,} rows of {c['seq_len']} tokens, batch {c['batch_size']}, "
             f"{c['size']}, cpu, {c['threads']} threads); median of {c['rounds']} steps each, interleaved.",
             "",
             "| data | tokens/s | / in memory |",
             "| --- | --- | --- |",
             f"| in memory (one tensor) | {speed['in_memory_tokens_per_s']:,.0f} | 1.000 |",
             f"| corpus (memory-mapped Arrow) | {speed['corpus_tokens_per_s']:,.0f} | {speed['ratio']:.3f} |",
             "",
             f"Peak resident memory of `foresight fit` on each corpus ({c['rss_steps']} steps):",
             "",
             "| text | training tokens | peak RSS | / smallest |",
             "| --- | --- | --- | --- |"]
    for run in report["memory"]:
        lines.append(f"| {run['text_bytes'] / 1e6:,.1f} MB | {run['train_tokens']:,} | "
                     f"{run['peak_rss_bytes'] / 2 ** 20:,.0f} MiB | {run['ratio']:.3f} |")
    return "\n".join(lines)
