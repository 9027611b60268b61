"""A Llama-style decoder trunk: embeddings, blocks (RMSNorm, RoPE, SwiGLU, causal SDPA), final norm and a shared
unembedding. It returns hidden states and never a loss: objectives own their losses and extra heads."""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from suite.quantize import KVQuant
from suite.sizes import ModelConfig


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


class Rope(NamedTuple):
    """What every block's attention reads about positions: the rotary cos and sin [T, head_dim], and, where
    attention stays within documents (`Trunk.within_documents`), which keys each query may see [B, T, T]; in a
    static-shaped pass (a cache with a `Cursor`), the pass's positions `at` [T] and the keys each sees [T, max_len]."""
    cos: torch.Tensor
    sin: torch.Tensor
    mask: torch.Tensor | None = None
    at: torch.Tensor | None = None


def document_mask(tokens: torch.Tensor, separator: int) -> torch.Tensor:
    """[B, T, T]: query t may attend key s when s <= t and both lie in the same document of a row packed with
    documents that each end with `separator` (the separator belongs to the document it ends)."""
    ends = tokens == separator
    document = ends.cumsum(1) - ends.long()
    T = tokens.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
    return (document[:, :, None] == document[:, None, :]) & causal


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    # The half-split rotation convention of Hugging Face's Llama, so exported q/k weights need no permutation.
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        # q, k and v in one matmul: one kernel launch instead of three.
        self.qkv = nn.Linear(config.d_model, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.proj = nn.Linear(self.n_head * self.head_dim, config.d_model, bias=False)

    def _qkv(self, x: torch.Tensor, rope: Rope):
        """Queries [B, H, T, hd], keys and values [B, H_kv, T, hd], with the rotary embedding applied."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        cos, sin = rope.cos.to(q.dtype), rope.sin.to(q.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def weights(self, x: torch.Tensor, rope: Rope, quant: KVQuant | None = None) -> torch.Tensor:
        """The causal attention weights [B, H, T, T] that `forward` applies without a cache (with one whose keys
        `quant` stores), written out (SDPA never forms them): for probes of what a head looks at, not for
        training."""
        q, k, _ = self._qkv(x, rope)
        if quant is not None:
            k = quant(k)
        k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        T = x.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)

    def forward(self, x: torch.Tensor, rope: Rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self._qkv(x, rope)
        offset = 0
        if cache is not None:
            offset = cache.length
            k, v = cache.write(layer, k, v)
        gqa = self.n_kv_head != self.n_head
        if rope.at is not None:  # static-shaped: every cached position, those not yet seen masked out
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=rope.mask, enable_gqa=gqa)
        elif offset == 0 and rope.mask is not None:  # causal within each document of a packed row
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=rope.mask[:, None], enable_gqa=gqa)
        elif offset == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=gqa)
        elif T == 1:  # one new query sees every cached position
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        else:  # several new queries after a cached prefix: causal, aligned to the end of the keys
            mask = torch.ones(T, offset + T, dtype=torch.bool, device=x.device).tril(offset)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        # gate and up projections fused into one matmul.
        self.gate_up = nn.Linear(config.d_model, 2 * config.ffn_dim, bias=False)
        self.down = nn.Linear(config.ffn_dim, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x))."""

    compiled: bool = False
    """Passes without a KV cache (training, validation losses, scoring) run through `torch.compile`
    (`compile_blocks`); cached passes (decoding) stay eager, so a cache's growing length never recompiles."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: Rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if cache is None and self.compiled:
            return _compiled_block()(self, x, rope)
        return self.eager(x, rope, cache, layer)

    def eager(self, x: torch.Tensor, rope: Rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


@functools.cache
def _compiled_block():
    """One compiled function for every block: parameters are graph inputs (torch.compile inlines modules), so the
    trunk's blocks and every head's share its graphs; a batch or sequence length it has not seen makes that
    dimension dynamic after one recompile instead of compiling each length anew."""
    return torch.compile(Block.eager, dynamic=None)


def compile_blocks(module: nn.Module) -> int:
    """Every `Block` inside `module` (a trunk's, the heads', a frozen model's) runs its passes without a KV cache
    compiled from now on; the weights, their names and the checkpoints stay as they are. Returns how many."""
    blocks = [m for m in module.modules() if isinstance(m, Block)]
    for block in blocks:
        block.compiled = True
    return len(blocks)


class Trunk(nn.Module):
    """`Trunk(input_ids) -> hidden [B, T, D]` before the final norm; `logits(hidden) -> [B, T, V]`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # The rotary cos/sin tables are a cache, not state: kept out of the buffers so that dtype casts, DDP's
        # buffer sync and checkpoints never touch them; `rope` rebuilds them in fp32 on the weights' device.
        self._rope_table = (torch.empty(0, config.head_dim), torch.empty(0, config.head_dim))
        self._document_mask: torch.Tensor | None = None
        self.apply(self.init_weights)
        if config.tie_embeddings:
            self.unembed.weight = self.embed.weight

    def init_weights(self, module: nn.Module) -> None:
        """Normal init; projections that write into the residual stream are scaled down by depth (GPT-2)."""
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        for proj in (getattr(module, "proj", None), getattr(module, "down", None)):
            if isinstance(proj, nn.Linear):
                nn.init.normal_(proj.weight, std=std / math.sqrt(2 * self.config.n_layer))

    def make_block(self) -> Block:
        """A fresh block of the trunk's kind and init, for objectives that build heads."""
        block = Block(self.config).to(device=self.embed.weight.device, dtype=self.embed.weight.dtype)
        block.apply(self.init_weights)
        return block

    @contextmanager
    def within_documents(self, tokens: torch.Tensor, separator: int | None):
        """Within the block, attention at positions 0.. of the rows `tokens` [B, T] (the trunk's and every head
        block's) stays within each document of the row (`document_mask`); with separator None, as everywhere
        else, it crosses documents."""
        self._document_mask = None if separator is None else document_mask(tokens, separator)
        try:
            yield
        finally:
            self._document_mask = None

    def rope(self, offset: int, length: int) -> Rope:
        """cos and sin [length, head_dim] of positions offset .. offset + length - 1 (and the document mask of
        positions 0 .. length - 1 within `within_documents`)."""
        end = offset + length
        cos, sin = self._rope_table
        device = self.embed.weight.device
        stale = cos.is_inference() and torch.is_grad_enabled()  # made in evaluation, now read by autograd
        if end > cos.shape[0] or cos.device != device or stale:  # grow geometrically: a cache, not a limit
            c = self.config
            inv_freq = 1.0 / c.rope_theta ** (torch.arange(0, c.head_dim, 2, device=device).float() / c.head_dim)
            positions = torch.arange(max(end, 2 * cos.shape[0], 256), device=device).float()
            freqs = torch.outer(positions, inv_freq)
            angles = torch.cat((freqs, freqs), dim=-1)
            cos, sin = self._rope_table = (angles.cos(), angles.sin())
        mask = self._document_mask
        if mask is not None and offset == 0:
            assert length <= mask.shape[1], (length, mask.shape)
            return Rope(cos[:end], sin[:end], mask[:, :length, :length])
        return Rope(cos[offset:end], sin[offset:end])

    def rope_of(self, cache: KVCache | None, length: int) -> Rope:
        """The positions of a pass of `length` tokens: after the cached ones, or at a static cache's cursor."""
        if cache is None or cache.cursor is None:
            return self.rope(0 if cache is None else cache.length, length)
        at = cache.cursor.at
        assert at is not None and at.shape[0] == length, (at, length)
        cos, sin = self._rope_table  # grown to max_len when the cache was made: never reallocated in a graph
        seen = torch.arange(cache.max_len, device=at.device)[None, :] <= at[:, None]
        return Rope(cos.index_select(0, at), sin.index_select(0, at), seen, at)

    def new_cache(self, batch: int, max_len: int, n_layer: int | None = None, cursor: Cursor | None = None) -> KVCache:
        """An empty cache for the trunk's blocks, or for `n_layer` blocks of the trunk's shape (a head's); with a
        `Cursor`, static-shaped (see `KVCache`)."""
        c = self.config
        if cursor is not None:
            self.rope(0, max_len)  # the rotary table covers every position before any pass is captured
        return KVCache(len(self.blocks) if n_layer is None else n_layer, batch, c.kv_heads, c.head_dim, max_len,
                       device=self.embed.weight.device, dtype=self.embed.weight.dtype, quant=self.kv_quant,
                       cursor=cursor)

    def new_cursor(self) -> Cursor:
        """A cursor on the trunk's device, for static-shaped caches (`new_cache`)."""
        return Cursor(self.embed.weight.device)

    kv_quant: KVQuant | None = None
    """Evaluation with a compressed KV cache: every cache the trunk makes stores keys and values through this
    quantiser, and a pass without a cache reads its keys and values through one too, so scoring, decoding and
    probes all attend to what the compressed cache holds. None (always, in training): no quantisation."""

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, depth: int | None = None) -> torch.Tensor:
        """The hidden states after every block, or after the first `depth` blocks (where heads branch off)."""
        if cache is None and self.kv_quant is not None:
            cache = self.new_cache(input_ids.shape[0], input_ids.shape[1])
        rope = self.rope_of(cache, input_ids.shape[1])
        x = self.embed(input_ids)
        for layer, block in enumerate(self.blocks[:depth]):
            x = block(x, rope, cache, layer)
        if cache is not None and cache.cursor is None:
            cache.length += input_ids.shape[1]
        return x

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.final_norm(hidden))

    @torch.no_grad()
    def attention_weights(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights [n_layer, B, H, T, T] over `input_ids` (see `Attention.weights`)."""
        rope = self.rope(0, input_ids.shape[1])
        x, maps = self.embed(input_ids), []
        cache = self.new_cache(*input_ids.shape) if self.kv_quant is not None else None
        for layer, block in enumerate(self.blocks):
            maps.append(block.attn.weights(block.attn_norm(x), rope, self.kv_quant))
            x = block(x, rope, cache, layer)
        return torch.stack(maps)
