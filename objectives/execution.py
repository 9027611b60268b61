"""How an objective's heads and losses run, as opposed to what they compute: compiled or eager, head blocks'
activations kept or recomputed, which kernel takes the cross-entropy of the unembedding. `ObjectiveLM` sets it
around every loss (`--model.compile`, `--model.checkpoint_heads`, `--model.loss_kernel`), the benches around theirs;
every setting gives the same loss and gradients to float tolerance, so an objective never reads it."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from suite.errors import UsageError, check_choice

LOSS_KERNELS = ("auto", "foresight", "liger")


@dataclass(frozen=True)
class Execution:
    compile: bool = False
    """The chunked losses' per-chunk arithmetic (log-softmax, its gradient) runs through torch.compile: one fused
    kernel over each chunk of logits instead of several passes in fp32."""
    checkpoint_heads: bool = False
    """Head blocks keep only their input and recompute their activations in the backward pass, so a head's
    activations are never alive beside its logits (`objectives.heads.run_blocks`)."""
    loss_kernel: str = "foresight"
    """The cross-entropy of the logits x @ W.T: "foresight" (`objectives.fused`, every device), "liger"
    (Liger-Kernel's fused linear cross-entropy, Triton, CUDA only), or "auto": liger on CUDA tensors where it is
    installed (the `gpu` extra), foresight everywhere else."""

    def __post_init__(self):
        check_choice("loss_kernel", self.loss_kernel, LOSS_KERNELS)
        if self.loss_kernel == "liger" and not liger_installed():
            raise UsageError("--model.loss_kernel=liger needs Liger-Kernel, which is not installed; allowed: auto or "
                             "foresight, or pip install 'foresight-bench[gpu]' on a machine with CUDA")

    def kernel_for(self, x) -> str:
        """"foresight" or "liger": the kernel that takes the cross-entropy of hidden states `x`."""
        if self.loss_kernel == "liger" and not x.is_cuda:
            raise UsageError(f"--model.loss_kernel=liger runs on CUDA and the model is on {x.device.type}; allowed: "
                             "auto or foresight there")
        if self.loss_kernel == "auto":
            return "liger" if x.is_cuda and liger_installed() else "foresight"
        return self.loss_kernel


@functools.cache
def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


EXECUTION: ContextVar[Execution] = ContextVar("objective_execution", default=Execution())


@contextmanager
def executing(settings: Execution) -> Iterator[Execution]:
    """Within the block, heads and losses run as `settings` says."""
    token = EXECUTION.set(settings)
    try:
        yield settings
    finally:
        EXECUTION.reset(token)


def current() -> Execution:
    return EXECUTION.get()
