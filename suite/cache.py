"""The KV cache of incremental decoding and the cursor of static-shaped passes (CUDA graphs), for the trunk's
blocks and every head's."""

from __future__ import annotations

import torch

from suite.quantize import KVQuant


class Cursor:
    """Where the passes of static-shaped decoding write and read (`KVCache` with a cursor): the positions of the
    current pass as a device tensor, in one buffer per pass width, so that a CUDA graph captured for a width reads
    its positions from the same memory at every replay. Every cache of one decoding shares one cursor."""

    def __init__(self, device=None):
        self.device = device
        self.buffers: dict[int, torch.Tensor] = {}
        self.at: torch.Tensor | None = None
        """Positions [width] of the pass about to run."""

    def seek(self, start: int, width: int) -> torch.Tensor:
        """The next pass covers positions start .. start + width - 1 (written on the device, no host copy)."""
        buffer = self.buffers.get(width)
        if buffer is None:
            buffer = self.buffers[width] = torch.empty(width, dtype=torch.long, device=self.device)
        torch.arange(start, start + width, out=buffer)
        self.at = buffer
        return buffer


class KVCache:
    """Preallocated keys and values of `n_layer` attention layers for incremental decoding.

    Positions [0, length) are filled. `crop(n)` rolls the cache back to n positions (speculative decoding discards
    rejected drafts that way); the stale entries beyond are simply overwritten later.

    With a `Cursor` the cache is static-shaped: a pass writes at the cursor's positions and attends over all
    `max_len` positions under a mask (position s is seen from position t when s <= t), so a pass of a given width
    has the same shapes wherever it is, as a CUDA graph needs; stale entries past a pass's positions are masked
    out until a later pass overwrites them. Its `length` is then the caller's to keep."""

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int,
                 device=None, dtype=torch.float32, quant: KVQuant | None = None, cursor: Cursor | None = None):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.quant = quant
        """Keys and values are stored as this quantiser gives them back (`suite.quantize`); None: as computed."""
        self.cursor = cursor

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H, T, hd] at positions [length, length + T) (at the cursor's positions, with one); return
        all keys and values up to there (all `max_len` of them, with a cursor)."""
        if self.quant is not None:
            k, v = self.quant(k), self.quant(v)
        if self.cursor is not None:
            self.k[layer].index_copy_(2, self.cursor.at, k)
            self.v[layer].index_copy_(2, self.cursor.at, v)
            return self.k[layer], self.v[layer]
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def crop(self, length: int) -> None:
        assert 0 <= length <= self.length, (length, self.length)
        self.length = length
