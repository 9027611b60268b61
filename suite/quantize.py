"""Keys and values of the KV cache stored at fewer bits, for asking whether a model's answers survive a compressed
cache (evaluation only; training never quantises).

Each token's key (and value) vector of each head is cut into groups of `group` channels; a group at b >= 2 bits is
quantised uniformly between its minimum and maximum (a scale and a zero point per group, 2^b levels); at 1 bit it
keeps only each channel's sign and the group's norm (the QJL idea: sign bits and one norm). `rotate` first turns
every vector by one fixed random orthogonal matrix of the head dimension (the PolarQuant / TurboQuant idea:
outlier channels spread over all of them) and turns it back after dequantising; queries would be rotated alike, so
attention scores before quantisation are unchanged, which is the same as rotating back here. 16 bits is no
quantisation at all: the cache is what it always was, bit for bit.

This is quantise-then-dequantise in floating point: the cache holds the values that b-bit storage would give back,
not packed b-bit integers, so it measures what compression does to the answers, not the memory it saves.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from suite.errors import UsageError

BITS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class KVQuant:
    bits: int = 16
    group: int | None = None
    """Channels per scale, dividing the head dimension; None: the whole head vector."""
    rotate: bool = False
    seed: int = 0
    """Seed of the rotation."""

    @classmethod
    def of(cls, bits: int = 16, group: int | None = None, rotate: bool = False, seed: int = 0) -> KVQuant | None:
        """The quantiser these options ask for, checked; None where they ask for none (16 bits)."""
        if bits not in BITS:
            raise UsageError(f"kv_bits={bits} is not a supported width; allowed: {', '.join(map(str, BITS))}")
        if bits == 16 and (rotate or group is not None):
            given = "kv_rotate" if rotate else f"kv_group={group}"
            raise UsageError(f"{given} needs a quantised cache; allowed: with kv_bits 1, 2, 4 or 8")
        if group is not None and group < 1:
            raise UsageError(f"kv_group={group} is out of range; allowed: >= 1, dividing the head dimension")
        return None if bits == 16 else cls(bits, group, rotate, seed)

    def check(self, head_dim: int) -> None:
        if self.group is not None and head_dim % self.group:
            raise UsageError(f"kv_group={self.group} does not divide the head dimension {head_dim}; allowed: a "
                             f"divisor of {head_dim}")

    def as_dict(self) -> dict:
        return {"bits": self.bits, "group": self.group, "rotate": self.rotate, "seed": self.seed}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., head_dim] as b-bit storage would give it back."""
        head_dim = x.shape[-1]
        self.check(head_dim)
        dtype = x.dtype
        x = x.float()
        turn = rotation(head_dim, self.seed, x.device) if self.rotate else None
        if turn is not None:
            x = x @ turn
        group = self.group or head_dim
        grouped = x.reshape(*x.shape[:-1], head_dim // group, group)
        if self.bits == 1:
            norm = grouped.norm(dim=-1, keepdim=True)
            restored = torch.where(grouped >= 0, 1.0, -1.0) * norm / math.sqrt(group)
        else:
            low, high = grouped.amin(dim=-1, keepdim=True), grouped.amax(dim=-1, keepdim=True)
            scale = (high - low) / (2 ** self.bits - 1)
            levels = torch.where(scale > 0, (grouped - low) / scale.clamp_min(torch.finfo(x.dtype).tiny), 0)
            restored = levels.round().clamp(0, 2 ** self.bits - 1) * scale + low
        x = restored.reshape(x.shape)
        if turn is not None:
            x = x @ turn.T
        return x.to(dtype)


@functools.lru_cache(maxsize=16)
def rotation(size: int, seed: int, device=None) -> torch.Tensor:
    """A fixed random orthogonal matrix [size, size], uniform over the orthogonal group (QR of a seeded Gaussian
    matrix, with the signs of R's diagonal moved into Q); computed once per size, seed and device."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float().to(device)
