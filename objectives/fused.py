"""Losses of the logits x @ W.T that never hold more than a chunk of them (`fused_linear_loss`, and the
cross-entropy on it), and the gradient sink that a headwise pass of `objectives.heads.head_losses` collects into."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar

import torch
from torch.utils.flop_counter import addmm_flop

from objectives import execution
from objectives.base import IGNORE

CHUNK_LOGITS = 2 ** 24
"""Logits per chunk in `fused_linear_loss` (64 MiB in fp32): 512 positions at a 32k vocabulary."""


def _inplace_addmm_flops(accumulator_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return addmm_flop(accumulator_shape, a_shape, b_shape)


FLOP_FORMULAS = {torch.ops.aten.addmm_: _inplace_addmm_flops}
"""What torch's FLOP counter must be told to count the fused loss (`FlopCounterMode(custom_mapping=...)`): it
accumulates the unembedding's gradient with an in-place addmm_, which the counter does not count by default.
Handed to the counter that needs it, not registered for the whole process."""


ChunkLoss = Callable[[torch.Tensor, slice, bool], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
"""chunk_loss(logits [rows, V], rows slice, gradient) -> (loss per position [rows] in fp32, a metric summed over the
chunk, and when `gradient` is True d(loss per position) / d(logits) [rows, V], else None). The logits come in the
matmul's dtype (bf16 under autocast) and belong to the callback: it may overwrite them or let them go."""


def fused_linear_loss(x: torch.Tensor, weight: torch.Tensor, chunk_loss: ChunkLoss, valid: torch.Tensor,
                      scale: float = 1.0, chunk_logits: int = CHUNK_LOGITS) -> tuple[torch.Tensor, torch.Tensor]:
    """`scale` times the mean over `valid` positions of a loss of the logits x @ weight.T, and a metric's mean,
    without ever holding more than `chunk_logits` logits.

    Positions go through in chunks; with a gradient wanted, each chunk's loss gradient is taken in the forward pass
    and folded straight into the gradients of x and weight (the weight's in place), so logits and their gradient
    die with the chunk: the fused linear cross-entropy of Liger-Kernel and Cut Cross-Entropy, in plain PyTorch,
    for any loss of the logits. The backward pass only scales the stored gradients. Inside `head_losses`'s headwise
    pass the weight's gradient goes straight into the pass's accumulator (there, a head's loss is seeded with 1).
    x: [N, D] (already normed), weight: [V, D], valid: [N] bool."""
    rows = max(1, chunk_logits // weight.shape[0])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        sink = GRADIENT_SINK.get()
        into = sink.buffer(weight) if sink is not None and weight.requires_grad else None
        return _FusedLinearLoss.apply(x, weight, chunk_loss, valid, rows, scale, into)
    return _fused_forward(x, weight, chunk_loss, valid, rows, scale, None, None)


def _fused_forward(x, weight, chunk_loss, valid, rows, scale, grad_x, grad_w):
    """The chunk loop; it fills grad_x and adds to grad_w (for `scale` times the mean) when they are given."""
    dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 at least: softmax in bf16 loses too much
    count = valid.sum().clamp(min=1)
    per_position_scale = scale * valid.to(dtype) / count  # d(loss) / d(each position's loss)
    total, metric = x.new_zeros((), dtype=dtype), x.new_zeros((), dtype=dtype)
    for start in range(0, x.shape[0], rows):
        rows_here = slice(start, start + rows)
        # the only reference to the logits goes to the callback, so they die as soon as it is done with them
        per_position, chunk_metric, grad = chunk_loss(x[rows_here] @ weight.T, rows_here, grad_x is not None)
        total += (per_position * valid[rows_here]).sum()
        metric += chunk_metric
        if grad_x is not None:
            # the positions' scales go on the [rows, D] sides of the two matmuls, never over the [rows, V] gradient;
            # the matmuls run in the logits' dtype, as autograd would run them (in-place ones are not autocast)
            grad = grad.to(_autocast_dtype(x.device.type) or torch.promote_types(x.dtype, weight.dtype))
            here = per_position_scale[rows_here, None]
            grad_x[rows_here] = ((grad @ weight.to(grad.dtype)).to(dtype) * here).to(x.dtype)
            grad_w.add_((grad.T @ (x[rows_here].to(dtype) * here).to(grad.dtype)).to(grad_w.dtype))
        del grad, per_position  # before the next chunk's logits exist, not after
    mean = total / count
    return scale * mean, mean.detach(), metric / count


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs matmuls in on this kind of device, or None where it is off (or has no autocast:
    the meta device, where the FLOP counter runs)."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except RuntimeError:
        return None


class _FusedLinearLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, chunk_loss, valid, rows, scale, into):
        grad_x = torch.empty_like(x)
        grad_w = into if into is not None else torch.zeros_like(weight)
        loss, mean, metric = _fused_forward(x, weight, chunk_loss, valid, rows, scale, grad_x, grad_w)
        ctx.save_for_backward(grad_x, None if into is not None else grad_w)
        ctx.mark_non_differentiable(mean, metric)
        return loss, mean, metric

    @staticmethod
    def backward(ctx, grad_loss, grad_mean, grad_metric):
        grad_x, grad_w = ctx.saved_tensors  # used once: scaled in place rather than copied (V x D for the weight)
        if grad_w is None:  # the weight's gradient already went into head_losses's accumulator, for a seed of 1
            torch._assert_async(grad_loss == 1, "a fused loss inside head_losses must be a head's loss as it is")
        else:
            grad_w = grad_w.mul_(grad_loss.to(grad_w.dtype))
        return grad_x.mul_(grad_loss.to(grad_x.dtype)), grad_w, None, None, None, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: float = 1.0,
                         chunk_logits: int = CHUNK_LOGITS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`scale` times `token_loss`'s mean cross-entropy of the logits x @ weight.T, the unscaled mean (detached) and
    top-1 accuracy, computed by `fused_linear_loss`, or by Liger-Kernel's fused kernel where the execution
    settings choose it (`objectives.execution`). x: [..., D], weight: [V, D], targets: [...] with IGNORE."""
    x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    valid = targets != IGNORE
    settings = execution.current()
    if settings.kernel_for(x) == "liger":
        return _liger_cross_entropy(x, weight, targets, valid, scale)
    safe = targets.clamp(min=0)
    chunk = _compiled_cross_entropy_chunk() if settings.compile else cross_entropy_chunk

    def cross_entropy(logits: torch.Tensor, rows: slice, gradient: bool):
        return chunk(logits, safe[rows], valid[rows], gradient)

    return fused_linear_loss(x, weight, cross_entropy, valid, scale, chunk_logits)


def cross_entropy_chunk(logits: torch.Tensor, chosen: torch.Tensor, right: torch.Tensor, gradient: bool):
    """One chunk's cross-entropy per position [rows] (fp32 at least), its count of right top-1 guesses, and with
    `gradient` d(loss per position) / d(logits) [rows, V]: softmax minus the one-hot target."""
    correct = ((logits.argmax(-1) == chosen) & right).sum()
    logp = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
    del logits
    per_position = -logp.gather(1, chosen[:, None]).squeeze(1)
    if not gradient:
        return per_position, correct, None
    grad = logp.exp_()  # in the log-probabilities' memory
    grad[torch.arange(len(chosen), device=chosen.device), chosen] -= 1.0
    return per_position, correct, grad


@functools.cache
def _compiled_cross_entropy_chunk():
    """`cross_entropy_chunk` through torch.compile: the reductions and the gradient in one or two fused kernels
    (the last, shorter chunk makes the row count dynamic after one recompile)."""
    return torch.compile(cross_entropy_chunk, dynamic=None)


def _liger_cross_entropy(x, weight, targets, valid, scale):
    """Liger-Kernel's fused linear cross-entropy (Triton; it also takes the gradient in the forward pass, chunk by
    chunk): the same three values as `linear_cross_entropy`, and 0 where no position has a target."""
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    if not bool(valid.any()):  # Liger divides by the count of targets; ours gives 0, still attached to the graph
        zero = (x.sum() + weight.sum()) * 0.0
        return zero.float(), zero.detach().float(), zero.detach().float()
    out = liger_fused_linear_cross_entropy(x, weight, targets, ignore_index=IGNORE, reduction="mean",
                                           return_token_accuracy=True)
    loss = out.loss.float()
    return loss * scale, loss.detach(), out.token_accuracy.detach().float()


class Accumulators:
    """The gradients a headwise pass collects, by parameter; fused losses add into them in place."""

    def __init__(self, inputs: list[torch.Tensor]):
        self.grads: list[torch.Tensor | None] = [None] * len(inputs)
        self.slot = {id(t): i for i, t in enumerate(inputs)}

    def buffer(self, param: torch.Tensor) -> torch.Tensor | None:
        i = self.slot.get(id(param))
        if i is None:
            return None
        if self.grads[i] is None:
            self.grads[i] = torch.zeros_like(param)
        return self.grads[i]

    def add(self, i: int, grad: torch.Tensor | None) -> None:
        if grad is not None:  # in place: a second copy of the unembedding's gradient would be V x D more memory
            if self.grads[i] is None:
                self.grads[i] = grad
            else:
                self.grads[i] += grad


GRADIENT_SINK: ContextVar[Accumulators | None] = ContextVar("headwise_accumulators", default=None)

