"""The decoder trunk: embeddings, blocks (pre-norm causal SDPA attention and an MLP), final norm and an
unembedding. By default a Llama (RMSNorm, RoPE, SwiGLU, no biases); the `ModelConfig` fields after `arch` give the
few things other architectures change (LayerNorm, biases, GeLU, partial or no RoPE, learned positions, a parallel
residual, scaled embeddings), so a pretrained model of another kind runs as this same trunk. It returns hidden
states and never a loss: objectives own their losses and extra heads."""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from suite.cache import Cursor, KVCache
from suite.errors import UsageError
from suite.quantize import KVQuant
from suite.sizes import ModelConfig

__all__ = ["Attention", "Block", "Cursor", "KVCache", "MLP", "Rope", "Trunk", "compile_blocks", "document_mask"]


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


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the first cos.shape[-1] dimensions of each head of x [B, H, T, hd]; the rest pass unrotated."""
    width = cos.shape[-1]
    if width == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    if width == 0:
        return x
    rotated, rest = x[..., :width], x[..., width:]
    return torch.cat((rotated * cos + rotate_half(rotated) * sin, rest), dim=-1)


class OffsetRMSNorm(nn.RMSNorm):
    """RMSNorm scaling by offset + weight (Gemma's): the weight starts at zero, a gain of one."""

    def __init__(self, dim: int, eps: float, offset: float):
        super().__init__(dim, eps=eps)
        self.offset = offset
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight + self.offset, self.eps)


def make_norm(config: ModelConfig) -> nn.Module:
    """The config's norm over d_model: RMSNorm (with Gemma's offset gain where it has one) or LayerNorm."""
    if config.norm == "layer":
        return nn.LayerNorm(config.d_model, eps=config.norm_eps)
    if config.norm_offset:
        return OffsetRMSNorm(config.d_model, config.norm_eps, config.norm_offset)
    return nn.RMSNorm(config.d_model, eps=config.norm_eps)


ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "gelu_tanh": functools.partial(F.gelu, approximate="tanh")}


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        # q, k and v in one matmul: one kernel launch instead of three.
        self.qkv = nn.Linear(config.d_model, (self.n_head + 2 * self.n_kv_head) * self.head_dim,
                             bias=config.qkv_bias)
        self.proj = nn.Linear(self.n_head * self.head_dim, config.d_model, bias=config.out_bias)

    def _qkv(self, x: torch.Tensor, rope: Rope):
        """Queries [B, H, T, hd], keys and values [B, H_kv, T, hd], with the rotary embedding applied (to the
        first `ModelConfig.rotary_dim` dimensions of each head)."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        cos, sin = rope.cos.to(q.dtype), rope.sin.to(q.dtype)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

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
    """down(act(gate(x)) * up(x)) with gate and up fused into one matmul (`gate_up`), or, not gated,
    down(act(up(x)))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.act = ACTIVATIONS[config.activation]
        if config.gated:
            self.gate_up = nn.Linear(config.d_model, 2 * config.ffn_dim, bias=config.out_bias)
        else:
            self.up = nn.Linear(config.d_model, config.ffn_dim, bias=config.out_bias)
        self.down = nn.Linear(config.ffn_dim, config.d_model, bias=config.out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "gate_up"):
            return self.down(self.act(self.up(x)))
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.act(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then + mlp(norm(x)); with a parallel residual,
    x + attn(norm1(x)) + mlp(norm2(x))."""

    compiled: bool = False
    """Passes without a KV cache (training, validation losses, scoring) run through `torch.compile`
    (`compile_blocks`); cached passes (decoding) stay eager, so a cache's growing length never recompiles."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = make_norm(config)
        self.attn = Attention(config)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.parallel = config.parallel_residual

    def forward(self, x: torch.Tensor, rope: Rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        if cache is None and self.compiled:
            return _compiled_block()(self, x, rope)
        return self.eager(x, rope, cache, layer)

    def eager(self, x: torch.Tensor, rope: Rope, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        attended = self.attn(self.attn_norm(x), rope, cache, layer)
        if self.parallel:
            return x + attended + self.mlp(self.mlp_norm(x))
        x = x + attended
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
        self.position = nn.Embedding(config.positions, config.d_model) if config.positions else None
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_norm = make_norm(config)
        self.unembed = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # The rotary cos/sin tables are a cache, not state: kept out of the buffers so that dtype casts, DDP's
        # buffer sync and checkpoints never touch them; `rope` rebuilds them in fp32 on the weights' device.
        self._rope_table = (torch.empty(0, config.rotary_dim), torch.empty(0, config.rotary_dim))
        self._document_mask: torch.Tensor | None = None
        self.apply(self.init_weights)
        if config.tie_embeddings:
            self.unembed.weight = self.embed.weight

    def init_weights(self, module: nn.Module) -> None:
        """Normal init, zero biases; projections that write into the residual stream are scaled down by depth
        (GPT-2)."""
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
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
            width = c.rotary_dim
            inv_freq = 1.0 / c.rope_theta ** (torch.arange(0, width, 2, device=device).float() / max(width, 1))
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
            self.check_length(max_len)
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
        x = self.embedding(input_ids, 0 if cache is None or cache.cursor is not None else cache.length, rope.at)
        for layer, block in enumerate(self.blocks[:depth]):
            x = block(x, rope, cache, layer)
        if cache is not None and cache.cursor is None:
            cache.length += input_ids.shape[1]
        return x

    def embedding(self, input_ids: torch.Tensor, offset: int = 0, at: torch.Tensor | None = None) -> torch.Tensor:
        """The blocks' input for tokens at positions offset.. (or at `at`): token embeddings, scaled where the
        architecture scales them, plus learned position embeddings where it has them."""
        c = self.config
        x = self.embed(input_ids)
        if c.embed_scale:
            x = x * torch.tensor(c.d_model ** 0.5, dtype=x.dtype)
        end = offset + input_ids.shape[1]
        if at is None:  # a static pass's positions were checked when its cache was made
            self.check_length(end)
        if self.position is not None:
            x = x + self.position(torch.arange(offset, end, device=x.device) if at is None else at)
        return x

    def check_length(self, end: int) -> None:
        """Refuse positions past a learned position table or a sliding attention window (which the trunk does not
        implement: within it, attention is the same as without)."""
        c = self.config
        limit = c.max_positions
        if limit is not None and end > limit:
            what = "a learned position table" if limit == c.positions else "a sliding attention window"
            raise UsageError(f"the model ({c.arch}) has {what} of {limit} positions; a pass reaches position {end}; "
                             f"allowed: sequences of at most {limit} tokens")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.unembed(self.final_norm(hidden))

    @torch.no_grad()
    def attention_weights(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every layer's attention weights [n_layer, B, H, T, T] over `input_ids` (see `Attention.weights`)."""
        rope = self.rope(0, input_ids.shape[1])
        x, maps = self.embedding(input_ids), []
        cache = self.new_cache(*input_ids.shape) if self.kv_quant is not None else None
        for layer, block in enumerate(self.blocks):
            maps.append(block.attn.weights(block.attn_norm(x), rope, self.kv_quant))
            x = block(x, rope, cache, layer)
        return torch.stack(maps)
