"""Prediction heads and `head_losses`, which runs an objective's heads so that only one head's logits and activations
are alive at a time; `only_heads` and `head_scales` weigh each head's loss and gradient apart (the scale checks)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from objectives import execution
from objectives.base import Metrics
from objectives.fused import GRADIENT_SINK, Accumulators, linear_cross_entropy


def embed(trunk, ids: torch.Tensor) -> torch.Tensor:
    """`trunk.embed(ids)` for heads that read token embeddings (DeepSeek-style modules). Inside a headwise pass the
    embedding's gradient is added in place to the pass's accumulator instead of arriving as a dense V x D tensor."""
    sink = GRADIENT_SINK.get()
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
    cached ones, which the cache then holds too (incremental drafting; a static cache's at its cursor). With
    `checkpoint_heads` set (`objectives.execution`) a training pass recomputes each block's activations in the
    backward pass."""
    rope = trunk.rope_of(cache, x.shape[1])
    recompute = cache is None and torch.is_grad_enabled() and execution.current().checkpoint_heads
    for layer, block in enumerate(blocks):
        if recompute:  # keep the block's input only; its activations come back in the backward pass
            x = checkpoint(block, x, rope, use_reentrant=False)
        else:
            x = block(x, rope, cache, layer)
    if cache is not None and cache.cursor is None:
        cache.length += x.shape[1]
    return x


class Readout(nn.Module):
    """A linear head in place of head blocks (parallel MTP's head_layers = 0): x W, a D x D map of its own that starts
    as the identity, before the shared final norm and unembedding. It takes a block's arguments and ignores the
    positions and cache, so `run_blocks` and `objectives.stack` run it as they run blocks."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)
        nn.init.eye_(self.proj.weight)

    def forward(self, x: torch.Tensor, rope=None, cache=None, layer: int = 0) -> torch.Tensor:
        return self.proj(x)


@dataclass
class Head:
    """One prediction head for `head_losses`.

    `step(hidden, previous)` maps the trunk output and the previous head's state to this head's state [B, T, D];
    None means the state is the trunk output itself (the next-token head). `loss(state)` returns this head's
    weighted contribution to the total loss and its metrics. `label` names the head in its metrics and in
    `only_heads`; "head_1" is always the next-token head."""

    loss: Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    label: str = ""


def token_head(trunk, targets: torch.Tensor, weight: float, label: str,
               step: Callable | None = None) -> Head:
    """A head that predicts `targets` through the trunk's shared final norm and unembedding; metrics are the
    unweighted `loss/{label}` and `acc/{label}`."""

    def loss(state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        value, mean, accuracy = linear_cross_entropy(trunk.final_norm(state), trunk.unembed.weight, targets, weight)
        return value, {f"loss/{label}": mean, f"acc/{label}": accuracy}

    return Head(loss, step, label)


_ALL_AT_ONCE: ContextVar[bool] = ContextVar("all_heads_at_once", default=False)


@dataclass
class _Selection:
    labels: frozenset[str] | None  # the heads whose losses count; None: all
    seen: list[str]  # every head's label, in order, as head_losses met them


_SELECTED: ContextVar[_Selection | None] = ContextVar("selected_heads", default=None)


@contextmanager
def only_heads(labels=None):
    """Within this block `head_losses` sums the losses of the heads labelled `labels` only (all of them when None),
    on the plain graph; every head's state is still computed, so a chained head reads what it would in training.
    Yields the list of every head's label, filled as the heads run: how `head_scales` finds them."""
    selection = _Selection(None if labels is None else frozenset(labels), [])
    token = _SELECTED.set(selection)
    try:
        yield selection.seen
    finally:
        _SELECTED.reset(token)


def head_scales(objective, trunk, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, dict]:
    """Each head's weighted loss and the norm of its gradient on the trunk's parameters (the shared model every
    checkpoint is), one head at a time: {label: {"loss", "grad_norm"}}. At initialisation this says whether an
    auxiliary loss swamps the next-token loss ("head_1"); `ObjectiveLM` logs it as `init/...` before step 0. On a
    frozen trunk (nothing shared is trained) the norm is on the objective's own parameters instead."""
    params = [p for p in trunk.parameters() if p.requires_grad] or [p for p in objective.parameters()
                                                                     if p.requires_grad]
    with torch.no_grad(), only_heads() as labels:
        objective.loss(trunk, objective.hidden(trunk, tokens, mask), tokens, mask)
    scales = {}
    for label in labels:
        with only_heads([label]):
            loss, _ = objective.loss(trunk, objective.hidden(trunk, tokens, mask), tokens, mask)
        grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad and params else []
        norm = torch.sqrt(sum((g.float().pow(2).sum() for g in grads if g is not None), torch.zeros(())))
        scales[label] = {"loss": float(loss.detach()), "grad_norm": float(norm)}
    return scales


def head_gradients(objective, trunk, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each head's gradient on the state the heads share (`objective.hidden`: the trunk output, or the trunk's state
    where heads branch off below it), one head's weighted loss at a time: {label: [B, T, D]}. What the heads ask of
    the shared state, side by side: a head whose gradient points against the next-token head's ("head_1") pulls the
    trunk away from what next-token prediction needs. Callable inside `torch.inference_mode` (validation)."""
    with torch.inference_mode(False), torch.enable_grad():
        tokens = tokens.clone()  # tensors made under inference mode cannot be saved for a backward pass
        mask = None if mask is None else mask.clone()
        hidden = objective.hidden(trunk, tokens, mask).detach().requires_grad_()
        with torch.no_grad(), only_heads() as labels:
            objective.loss(trunk, hidden, tokens, mask)
        grads = {}
        for label in labels:
            with only_heads([label]):
                loss, _ = objective.loss(trunk, hidden, tokens, mask)
            grad = torch.autograd.grad(loss, hidden, allow_unused=True)[0] if loss.requires_grad else None
            grads[label] = torch.zeros_like(hidden) if grad is None else grad
    return grads


def gradient_alignment(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """From `head_gradients`: norm/<label> for every head, and cos/<label>, the cosine between each other head's
    gradient and the next-token head's (0 where either is zero)."""
    flat = {label: grad.detach().flatten().float() for label, grad in grads.items()}
    found = {f"norm/{label}": vector.norm() for label, vector in flat.items()}
    first = flat.get("head_1")
    for label, vector in flat.items():
        if first is not None and label != "head_1":
            found[f"cos/{label}"] = torch.nn.functional.cosine_similarity(vector, first, dim=0, eps=1e-30)
    return found


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
    selection = _SELECTED.get()
    plain = not headwise or len(heads) == 1 or _ALL_AT_ONCE.get() or selection is not None
    if plain or not (torch.is_grad_enabled() and hidden.requires_grad):
        total, metrics, state = hidden.new_zeros(()), {}, hidden
        for head in heads:
            state = hidden if head.step is None else head.step(hidden, state)
            loss, head_metrics = head.loss(state)
            metrics.update(head_metrics)
            if selection is not None:
                selection.seen.append(head.label)
                if selection.labels is not None and head.label not in selection.labels:
                    continue
            total = total + loss
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
        accumulators = Accumulators(inputs)
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

        token = GRADIENT_SINK.set(accumulators)
        try:
            with torch.enable_grad():
                _run_heads(heads, chained, leaf, backprop)
        finally:
            GRADIENT_SINK.reset(token)
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
