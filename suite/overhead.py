"""What an objective costs to train: step time, tokens/s, peak memory and FLOPs per token, counted and analytic.

`OverheadMonitor` is a Lightning callback (the sweep adds it to every point); it writes `overhead.json` into the
run folder when training ends. Ratios against next-token prediction are the report's business."""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn

from suite.model import Attention, Trunk
from suite.results import write_json


def analytic_flops_per_token(trunk, objective, seq_len: int) -> int:
    """Training FLOPs per token by the usual accounting (Kaplan et al.): a forward pass costs 2 per weight of every
    matrix a token goes through plus 4 * T * d per attention layer (QK^T and AV); training costs three forward
    passes for what learns and one for what is frozen (a teacher). Embedding lookups cost nothing; the shared
    unembedding counts once per head that computes logits with it."""

    def forward(modules, trainable: bool) -> int:
        total = 0
        for module in modules:
            # a trunk inside the objective (a teacher) runs its blocks only: it gives states, not logits
            teachers = [m.unembed for m in module.modules() if isinstance(m, Trunk) and m is not trunk]
            for sub in module.modules():
                if isinstance(sub, nn.Linear) and sub.weight.requires_grad == trainable and sub not in teachers:
                    total += 2 * sub.weight.numel()
                if isinstance(sub, Attention) and sub.qkv.weight.requires_grad == trainable:
                    total += 4 * seq_len * sub.n_head * sub.head_dim
        return total

    unembedding = 2 * trunk.unembed.weight.numel() * objective.logits_heads
    learned = forward([trunk.blocks, objective], trainable=True) + unembedding
    return 3 * learned + forward([objective], trainable=False)


MALLOC_LIVE = {"MALLOC_MMAP_THRESHOLD_": "65536"}
"""The environment of a process whose resident memory should be its live data: glibc keeps freed blocks below its
(self-raising) mmap threshold for reuse, so resident memory would count cached free memory; a fixed 64 KiB
threshold returns every tensor's memory when it is freed."""


def rss_bytes() -> int:
    """This process's resident memory now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux kibibytes


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def memory_now() -> int:
    return torch.cuda.memory_allocated() if _cuda() else rss_bytes()


def peak_memory() -> tuple[int, str]:
    """(bytes, kind): the GPU's high-water mark of allocated memory where there is one, else the process's maximum
    resident memory (which is why a sweep gives every point its own process)."""
    if _cuda():
        return torch.cuda.max_memory_allocated(), "cuda_max_allocated"
    return peak_rss_bytes(), "max_rss"


class OverheadMonitor(L.Callback):
    """Times every optimizer step (after the first `warmup` steps, which include allocation and caching) and, when
    training ends, writes `overhead.json`: median step time, tokens/s, FLOPs per token, peak memory
    (`peak_memory_bytes`, the whole process) and what training added to the memory the process rested at when
    training started (`train_memory_bytes`: activations, gradients, optimizer state; what objectives differ in)."""

    def __init__(self, warmup: int = 5, path: str | None = None):
        """
        Args:
            warmup: Steps not timed at the start of training.
            path: Where to write; default overhead.json in the trainer's default_root_dir.
        """
        self.warmup, self.path = warmup, path
        self.times: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0
        self.resting: int | None = None
        # where a fit's time goes (wall clock, seconds since the epoch where a time): what the steps themselves take
        # beside validation and everything else a point pays for (`suite.point.timing`)
        self.clock = {"fit_started_at": None, "train_ended_at": None, "validation_seconds": 0.0}
        self._validation = 0.0

    def on_fit_start(self, trainer, pl_module):
        self.clock["fit_started_at"] = time.time()

    def on_train_start(self, trainer, pl_module):
        self.resting = memory_now()  # the model, its data and everything imported: what training adds is on top

    def on_validation_start(self, trainer, pl_module):
        self._validation = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            self.clock["validation_seconds"] += time.perf_counter() - self._validation

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(trainer)
        self.times.append(time.perf_counter() - self._start)
        self.tokens.append(batch["tokens"].numel() * trainer.world_size)

    def summary(self, trainer, pl_module) -> dict:
        times = self.times[self.warmup:] or self.times
        tokens = self.tokens[self.warmup:] or self.tokens
        step_time = statistics.median(times) if times else None
        per_step = statistics.median(tokens) if tokens else None
        peak, kind = peak_memory()
        flops = pl_module.flops_per_batch
        per_device_tokens = per_step / trainer.world_size if per_step else None
        return {
            "step_time_s": step_time, "tokens_per_s": per_step / step_time if step_time else None,
            "steps_timed": len(times), "peak_memory_bytes": peak, "memory_kind": kind,
            "train_memory_bytes": peak - self.resting if self.resting is not None else None,
            "flops_per_token": flops / per_device_tokens if flops and per_device_tokens else None,
            "flops_per_token_analytic": analytic_flops_per_token(
                pl_module.trunk, pl_module.objective, pl_module.seq_len_seen) if pl_module.seq_len_seen else None,
            "params": pl_module.parameter_counts(),
            "clock": {**self.clock, "steps_seconds": sum(self.times), "train_ended_at": time.time()},
        }

    def on_train_end(self, trainer, pl_module):
        # a run resumed from its final checkpoint times nothing: keep what the run that trained wrote
        if trainer.is_global_zero and self.times:
            path = Path(self.path) if self.path else Path(trainer.default_root_dir) / "overhead.json"
            write_json(path, self.summary(trainer, pl_module))


def size_table(vocab_size: int = 32000, objective=None, seq_len: int | None = None) -> list[dict]:
    """Parameter counts of every size at a vocabulary, built on the meta device so `1b` costs no memory. With
    `seq_len`, also the training FLOPs per token of `objective` at that context by the usual accounting
    (`analytic_flops_per_token`) and their ratio to next-token prediction's."""
    from objectives import NTP, from_spec
    from suite.checkpoints import attach_stand_ins
    from suite.sizes import SIZES, ModelConfig, count_parameters

    rows = []
    for name in SIZES:
        config = ModelConfig.from_name(name, vocab_size=vocab_size)
        with torch.device("meta"):
            trunk = Trunk(config)
            replica = None
            if objective is not None:
                replica = from_spec(objective.spec())
                attach_stand_ins(replica, trunk)
        row = {"size": name, "n_layer": config.n_layer, "d_model": config.d_model, "n_head": config.n_head,
               **count_parameters(trunk, replica)}
        if seq_len is not None:
            ntp = analytic_flops_per_token(trunk, NTP(), seq_len)
            flops = ntp if replica is None else analytic_flops_per_token(trunk, replica, seq_len)
            row["train FLOP/token"] = flops
            row["x NTP"] = round(flops / ntp, 3)
        rows.append(row)
    return rows
