"""The objective interface and what every objective shares: shifted targets, the token loss, and `head_losses`, which
runs an objective's prediction heads so that only one head's logits and activations are alive at a time."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import addmm_flop, register_flop_formula

from suite.errors import UsageError

IGNORE = -100
"""Target value that contributes nothing to a loss (F.cross_entropy's ignore_index)."""

Metrics = dict[str, torch.Tensor]

Drafter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""draft(hidden, tokens) -> [B, n - 1] token ids: an objective's greedy drafts for self-speculative decoding.

tokens [B, C + 1] are every token decided so far: the trunk has read x_0 .. x_{C-1}, and x_C is the next-token head's
choice after them. hidden [B, m, D] is the trunk output at the positions it read since the previous call (C - m ..
C - 1; the whole prompt on the first call). The drafts are x_{C+1} .. x_{C+n-1}. A drafter keeps its own KV caches
between calls; the positions it is given never go back, so it never needs to be told about rejected drafts."""

HEADWISE_VOCAB_RATIO = 8
"""`headwise=None` runs heads one at a time when vocab_size >= this x d_model (see `Objective.use_headwise`)."""


def future_targets(tokens: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Targets for predicting x_{t+k} at position t: `tokens` shifted left by k, IGNORE where t+k runs past the
    end of the sequence or where `mask[t+k]` says that token is not a prediction target."""
    assert k >= 1, k
    targets = torch.full_like(tokens, IGNORE)
    if k < tokens.shape[1]:
        future = tokens[:, k:]
        if mask is not None:
            future = future.masked_fill(~mask[:, k:], IGNORE)
        targets[:, :-k] = future
    return targets


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the targets that are not IGNORE, and top-1 accuracy on them, from full logits.

    A batch with no targets gives loss 0 (still attached to the graph) rather than NaN."""
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    valid = flat_targets != IGNORE
    count = valid.sum().clamp(min=1)
    loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum") / count
    with torch.no_grad():
        accuracy = ((flat_logits.argmax(-1) == flat_targets) & valid).sum() / count
    return loss, accuracy


CHUNK_LOGITS = 2 ** 24
"""Logits per chunk in `fused_linear_loss` (64 MiB in fp32): 512 positions at a 32k vocabulary."""

@register_flop_formula(torch.ops.aten.addmm_)
def _inplace_addmm_flops(accumulator_shape, a_shape, b_shape, *args, **kwargs) -> int:
    """The fused loss accumulates the unembedding's gradient with an in-place addmm_, which torch's FLOP counter
    does not count by default: counted FLOPs per token must see the work that is done."""
    return addmm_flop(accumulator_shape, a_shape, b_shape)


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
        sink = _SINK.get()
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
    top-1 accuracy, computed by `fused_linear_loss`. x: [..., D], weight: [V, D], targets: [...] with IGNORE."""
    x, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    valid = targets != IGNORE
    safe = targets.clamp(min=0)

    def cross_entropy(logits: torch.Tensor, rows: slice, gradient: bool):
        chosen, right = safe[rows], valid[rows]
        correct = ((logits.argmax(-1) == chosen) & right).sum()
        # one fused kernel, in fp32 at least whatever came in
        logp = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        del logits
        per_position = -logp.gather(1, chosen[:, None]).squeeze(1)
        if not gradient:
            return per_position, correct, None
        grad = logp.exp_()  # softmax minus the one-hot target, in the log-probabilities' memory
        grad[torch.arange(len(chosen), device=chosen.device), chosen] -= 1.0
        return per_position, correct, grad

    return fused_linear_loss(x, weight, cross_entropy, valid, scale, chunk_logits)


def embed(trunk, ids: torch.Tensor) -> torch.Tensor:
    """`trunk.embed(ids)` for heads that read token embeddings (DeepSeek-style modules). Inside a headwise pass the
    embedding's gradient is added in place to the pass's accumulator instead of arriving as a dense V x D tensor."""
    sink = _SINK.get()
    into = sink.buffer(trunk.embed.weight) if sink is not None and trunk.embed.weight.requires_grad else None
    if into is None or not torch.is_grad_enabled():
        return trunk.embed(ids)
    return _EmbeddingInto.apply(ids, trunk.embed.weight, into)


class _EmbeddingInto(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, into):
        ctx.save_for_backward(ids)
        ctx.into = into
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        ctx.into.index_add_(0, ids.reshape(-1), grad.reshape(-1, grad.shape[-1]).to(ctx.into.dtype))
        return None, None, None


def run_blocks(trunk, blocks: nn.ModuleList, x: torch.Tensor, cache=None) -> torch.Tensor:
    """`x` [B, T, D] through head blocks built with `trunk.make_block()`, at the trunk's positions 0..T-1, or,
    with a `KVCache` of those blocks (`trunk.new_cache(batch, length, len(blocks))`), at the positions after the
    cached ones, which the cache then holds too (incremental drafting)."""
    offset = 0 if cache is None else cache.length
    rope = trunk.rope(offset, x.shape[1])
    for layer, block in enumerate(blocks):
        x = block(x, rope, cache, layer)
    if cache is not None:
        cache.length = offset + x.shape[1]
    return x


@dataclass
class Head:
    """One prediction head for `head_losses`.

    `step(hidden, previous)` maps the trunk output and the previous head's state to this head's state [B, T, D];
    None means the state is the trunk output itself (the next-token head). `loss(state)` returns this head's
    weighted contribution to the total loss and its metrics."""

    loss: Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def token_head(trunk, targets: torch.Tensor, weight: float, label: str,
               step: Callable | None = None) -> Head:
    """A head that predicts `targets` through the trunk's shared final norm and unembedding; metrics are the
    unweighted `loss/{label}` and `acc/{label}`."""

    def loss(state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        value, mean, accuracy = linear_cross_entropy(trunk.final_norm(state), trunk.unembed.weight, targets, weight)
        return value, {f"loss/{label}": mean, f"acc/{label}": accuracy}

    return Head(loss, step)


_ALL_AT_ONCE: ContextVar[bool] = ContextVar("all_heads_at_once", default=False)


class _Accumulators:
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


_SINK: ContextVar[_Accumulators | None] = ContextVar("headwise_accumulators", default=None)


@contextmanager
def all_heads_at_once():
    """Within this block `head_losses` builds the plain graph whatever `headwise` says: what torch's FLOP counter
    needs (its module hooks cannot run inside the per-head backward calls), and the reference memory figures use."""
    token = _ALL_AT_ONCE.set(True)
    try:
        yield
    finally:
        _ALL_AT_ONCE.reset(token)


def head_losses(hidden: torch.Tensor, heads: list[Head], params: list[torch.Tensor], chained: bool = False,
                headwise: bool = True) -> tuple[torch.Tensor, Metrics]:
    """The sum of the heads' losses over the trunk output `hidden`, and their metrics.

    chained: head k's `step` reads head k-1's state (causal MTP, DeepSeek-style modules); otherwise it ignores it.
    headwise: run each head's forward and backward one after another inside the forward pass (Gloeckle et al.'s
    sequential backward), so that only one head's logits and activations are ever alive; their gradients wait in
    an autograd node until the real backward, where they flow into `hidden` and `params` like any others. That
    keeps Lightning's automatic optimization, gradient accumulation, AMP scaling and DDP's gradient hooks as they
    are. Parallel heads cost no extra compute; chained heads recompute each head's forward once, because a head's
    gradient needs the heads after it. `params` must hold every trainable tensor the heads use besides `hidden`.
    headwise=False, or a single head, is the plain graph over all heads at once: the reference the tests and
    `foresight bench memory` compare against, and the faster choice when logits are small (see `Objective`)."""
    plain = not headwise or len(heads) == 1 or _ALL_AT_ONCE.get()
    if plain or not (torch.is_grad_enabled() and hidden.requires_grad):
        total, metrics, state = hidden.new_zeros(()), {}, hidden
        for head in heads:
            state = hidden if head.step is None else head.step(hidden, state)
            loss, head_metrics = head.loss(state)
            total, metrics = total + loss, {**metrics, **head_metrics}
        return total, metrics
    metrics: Metrics = {}
    trainable = [p for p in params if p.requires_grad]
    total = _HeadwiseLoss.apply(heads, chained, metrics, hidden, *trainable)
    return total, metrics


class _HeadwiseLoss(torch.autograd.Function):
    """Forward: every head's loss and its gradients, head by head. Backward: those gradients, scaled."""

    @staticmethod
    def forward(ctx, heads, chained, metrics, hidden, *params):
        leaf = hidden.detach().requires_grad_()
        inputs = [leaf, *params]
        accumulators = _Accumulators(inputs)
        total = hidden.new_zeros((), dtype=torch.promote_types(hidden.dtype, torch.float32))

        def backprop(head: Head, previous: torch.Tensor | None, upstream: torch.Tensor | None):
            """One head's forward and backward; returns the gradient for the previous head's state. A function so
            that the head's graph, logits and gradients die when it returns, before the next head starts."""
            nonlocal total
            state = leaf if head.step is None else head.step(leaf, previous)
            loss, head_metrics = head.loss(state)
            outputs, seeds = [loss], [torch.ones_like(loss)]
            if upstream is not None and head.step is not None:
                outputs.append(state)
                seeds.append(upstream)
            wrt = inputs + ([previous] if previous is not None else [])
            result = torch.autograd.grad(outputs, wrt, seeds, allow_unused=True)
            for i, grad in enumerate(result[: len(inputs)]):
                accumulators.add(i, grad)
            total += loss.detach().to(total.dtype)
            metrics.update(head_metrics)
            if head.step is None:  # this head's state is the trunk output: the chain's gradient ends there
                accumulators.add(0, upstream)
                return None
            return result[-1] if previous is not None else None

        token = _SINK.set(accumulators)
        try:
            with torch.enable_grad():
                _run_heads(heads, chained, leaf, backprop)
        finally:
            _SINK.reset(token)
        ctx.grads = accumulators.grads
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grads, ctx.grads = ctx.grads, None  # used once: scaled in place
        return (None, None, None, *(None if g is None else g.mul_(grad_total.to(g.dtype)) for g in grads))


def _run_heads(heads: list[Head], chained: bool, leaf: torch.Tensor, backprop) -> None:
    """Every head's backprop in the order it needs: parallel heads in turn; a chain from its last head back, after
    a pass without a graph that records each head's state ([B, T, D] each; activations dropped)."""
    if not chained:
        for head in heads:
            backprop(head, None, None)
        return
    with torch.no_grad():
        states, state = [], leaf
        for head in heads:
            state = leaf if head.step is None else head.step(leaf, state)
            states.append(state)
    upstream = None  # d(total of later heads) / d(this head's state)
    for k in reversed(range(len(heads))):
        previous = states[k - 1].detach().requires_grad_() if k and heads[k].step is not None else None
        upstream = backprop(heads[k], previous, upstream)


class Objective(nn.Module):
    """A training objective: owns its extra heads, builds its targets from the token batch, returns its loss.

    Subclasses set `name` (the registry key), store every constructor argument as an attribute of the same name
    (so `spec()` can rebuild them), and build their heads in `attach`, which sees the trunk. Objectives that draft
    future tokens also define `draft_logits(trunk, input_ids) -> [B, T, n, V]`: drafts of x_{t+1..t+n} from
    x_{<=t} only, and `drafter`, which drafts the same tokens incrementally, with KV caches, for decoding."""

    name: ClassVar[str]
    n: int = 1
    """How many future tokens a position predicts: x_{t+1} .. x_{t+n}."""
    progress: float = 0.0
    """Fraction of training done, set by ObjectiveLM before each step (for loss-weight schedules)."""

    @classmethod
    def horizon_options(cls, n: int) -> dict | None:
        """The options that make this objective predict n tokens ahead (a sweep's `n` axis), or None if it has no
        horizon (NTP, future summary prediction): then the axis does not apply and the point is not repeated."""
        return None

    @property
    def logits_heads(self) -> int:
        """How many heads compute vocabulary logits through the shared unembedding (for analytic FLOPs)."""
        return self.n

    def attach(self, trunk) -> None:
        """Build the objective's own modules for `trunk` (a `suite.model.Trunk`); called once, before training."""

    def drafter(self, trunk, batch: int, max_len: int) -> Drafter | None:
        """A fresh `Drafter` for decoding `batch` sequences of up to `max_len` tokens, or None when the objective has
        no heads that predict tokens (future summary prediction predicts a summary, not tokens)."""
        return None

    def loss(self, trunk, hidden: torch.Tensor, tokens: torch.Tensor,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
        """The training loss for `tokens` [B, T] whose trunk output is `hidden` [B, T, D], and metrics to log.

        `mask` [B, T] (bool) marks the tokens that count as prediction targets; None means all of them."""
        raise NotImplementedError

    def check_sequence_length(self, length: int) -> None:
        """Raise a UsageError if sequences of `length` tokens leave no target for the farthest prediction."""
        if self.n >= length:
            raise UsageError(f"{self.name} predicts {self.n} tokens ahead, too many for sequences of {length} "
                             f"tokens; allowed: n < {length}")

    def use_headwise(self, trunk) -> bool:
        """The objective's `headwise` setting; None means: run heads one at a time when the vocabulary is at least
        8x the model width, where each head's logits and their gradient outweigh its activations (there it saves a
        third of a step's memory at no cost in time; with a small vocabulary it saves nothing and costs 5-20%)."""
        setting = getattr(self, "headwise", None)
        if setting is not None:
            return bool(setting)
        return trunk.config.vocab_size >= HEADWISE_VOCAB_RATIO * trunk.config.d_model

    def head_params(self, trunk) -> list[torch.Tensor]:
        """What the heads read besides the trunk output: the objective's own parameters and the trunk's shared
        embedding, final norm and unembedding (each tensor once)."""
        shared = [*trunk.embed.parameters(), *trunk.final_norm.parameters(), *trunk.unembed.parameters()]
        return list({id(p): p for p in [*self.parameters(), *shared]}.values())

    def spec(self) -> dict:
        """Class path and constructor arguments, enough to rebuild this objective (stored in checkpoints)."""
        params = [name for name, p in inspect.signature(type(self).__init__).parameters.items()
                  if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "init_args": {p: getattr(self, p) for p in params}}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.spec()["init_args"].items())
