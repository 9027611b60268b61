"""Independent heads run as one: `stack_blocks` turns G transformer blocks of one shape into a single block whose
batch holds G groups of rows, group g through block g's weights. Every matmul becomes one batched matmul and every
other kernel (norms, rotary embedding, attention, activations) runs once over all the groups, so drafting with
parallel MTP's n - 1 heads launches as many kernels as one head does: what a launch-bound decoding step pays for.

The stacked weights are copies: `refresh` reads the heads' weights into them again where they changed since. The
block's forward is `Block`'s own code, with its linear layers and norms swapped for the grouped ones below."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Grouped(nn.Module):
    """G modules' weights stacked into one buffer `weight` (a copy: `refresh` reads them again where they changed
    since, an optimizer step or a load, as their tensors' versions tell)."""

    def __init__(self, sources: list[nn.Module]):
        super().__init__()
        self.sources = sources  # a plain list: the heads' own modules are not this module's children
        self.register_buffer("weight", self.stacked(), persistent=False)
        self.read = self.versions()

    def stacked(self) -> torch.Tensor:
        return torch.stack([source.weight.detach() for source in self.sources])

    def versions(self) -> tuple:
        return tuple((source.weight.data_ptr(), source.weight._version) for source in self.sources)

    def refresh(self) -> None:
        if self.versions() != self.read:
            self.weight.copy_(self.stacked())
            self.read = self.versions()


class GroupedLinear(Grouped):
    """G linear layers of one shape, applied to G groups of rows: input [G * B, ..., in]."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__(linears)
        self.bias = GroupedBias(linears) if linears[0].bias is not None else None

    def stacked(self) -> torch.Tensor:
        return super().stacked().transpose(1, 2).contiguous()  # [G, in, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups, size = self.weight.shape[0], x.shape[-1]
        y = torch.bmm(x.reshape(groups, -1, size), self.weight)
        if self.bias is not None:
            y = y + self.bias.weight[:, None]
        return y.view(*x.shape[:-1], y.shape[-1])


class GroupedBias(Grouped):
    """The biases of G layers, stacked [G, out] (kept in `weight`, as every grouped tensor is)."""

    def stacked(self) -> torch.Tensor:
        return torch.stack([source.bias.detach() for source in self.sources])

    def versions(self) -> tuple:
        return tuple((source.bias.data_ptr(), source.bias._version) for source in self.sources)


class GroupedNorm(Grouped):
    """G norms of one kind and shape (RMSNorm, Gemma's offset RMSNorm, LayerNorm), applied to G groups of rows:
    input [G * B, ..., D]."""

    def __init__(self, norms: list[nn.Module]):
        super().__init__(norms)
        first = norms[0]
        self.eps, self.shape = first.eps, tuple(first.normalized_shape)
        self.offset = getattr(first, "offset", 0.0)
        self.layer = isinstance(first, nn.LayerNorm)
        self.bias = GroupedBias(norms) if self.layer else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.weight.shape[0]
        normed = F.layer_norm(x, self.shape, eps=self.eps) if self.layer else F.rms_norm(x, self.shape, eps=self.eps)
        y = normed.view(groups, -1, *x.shape[1:])
        scale = [groups, *[1] * (x.dim() - 1), -1]
        y = y * (self.weight + self.offset).view(scale)
        if self.bias is not None:
            y = y + self.bias.weight.view(scale)
        return y.view(x.shape)


def grouped_kind(module: nn.Module):
    """The grouped module that stacks modules of this one's kind; None for modules without weights of their own."""
    if isinstance(module, nn.Linear):
        return GroupedLinear
    if isinstance(module, (nn.RMSNorm, nn.LayerNorm)) and module.weight is not None:
        return GroupedNorm
    return None


def stack_blocks(blocks: list[nn.Module]) -> nn.Module:
    """One block that runs `blocks` (same class and shapes) side by side: its input's batch is len(blocks) groups
    of B rows, group g through blocks[g]; a KV cache for it holds len(blocks) * B rows."""
    placeholder = torch.empty(0)  # the copy's own weights are replaced below: not worth copying
    stacked = copy.deepcopy(blocks[0], {id(p): placeholder for p in blocks[0].parameters()})
    for name, module in list(stacked.named_modules()):
        grouped = grouped_kind(module)
        if grouped is None:
            continue
        parent, _, child = name.rpartition(".")
        setattr(stacked.get_submodule(parent), child, grouped([block.get_submodule(name) for block in blocks]))
    leftover = [name for name, _ in stacked.named_parameters()]
    if leftover:
        raise ValueError(f"stack_blocks cannot group the parameters {leftover}; allowed: blocks whose parameters "
                         "are in nn.Linear, nn.RMSNorm and nn.LayerNorm layers")
    return stacked.requires_grad_(False)


def refresh(stacked: nn.Module) -> None:
    """Read the source blocks' current weights into a stacked block (after training steps, say)."""
    for module in stacked.modules():
        if isinstance(module, Grouped):
            module.refresh()
