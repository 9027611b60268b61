"""Model sizes as a table: one entry per size, overriding only what differs from `ModelConfig`'s defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from suite.errors import UsageError, check_choice, check_range


@dataclass
class ModelConfig:
    """Shape of the decoder trunk: a Llama by default, other architectures by the fields after `arch`."""

    name: str = "custom"
    """Size name this config came from (informational)."""
    n_layer: int = 2
    """Transformer blocks in the trunk."""
    d_model: int = 64
    """Residual stream width."""
    n_head: int = 4
    """Attention heads; d_model must be divisible by it."""
    n_kv_head: int | None = None
    """Key/value heads for grouped-query attention; None means one per attention head."""
    d_ff: int | None = None
    """MLP hidden width; None means 8/3 * d_model rounded up to `multiple_of` (Llama's rule)."""
    multiple_of: int = 64
    """Rounding for the derived d_ff, so matmul shapes stay friendly to vector units."""
    vocab_size: int = 32000
    """Vocabulary size; training overrides it with the data's tokenizer size."""
    tie_embeddings: bool = True
    """Share the input embedding matrix with the unembedding."""
    rope_theta: float = 10000.0
    """Base of the rotary position embedding frequencies."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections are further scaled by 1/sqrt(2 * n_layer)."""
    # What a pretrained architecture changes (`suite.architectures` reads them from its config.json); the
    # defaults are the Llama trunk foresight trains from scratch.
    arch: str = "llama"
    """The Hugging Face `model_type` the trunk is: the weight names and config `foresight export` writes."""
    d_head: int | None = None
    """Width of an attention head; None means d_model / n_head (Gemma and Mistral may set their own)."""
    norm: Literal["rms", "layer"] = "rms"
    """RMSNorm, or LayerNorm with a bias (GPT-2, GPT-NeoX)."""
    norm_offset: float = 0.0
    """Norms scale by norm_offset + weight (Gemma stores its gains as differences from 1)."""
    activation: Literal["silu", "gelu", "gelu_tanh"] = "silu"
    """The MLP's activation: SiLU, exact GeLU, or GeLU's tanh approximation."""
    gated: bool = True
    """A gated MLP, down(act(gate(x)) * up(x)) (SwiGLU, GeGLU), or a plain one, down(act(up(x)))."""
    qkv_bias: bool = False
    """Biases on the query, key and value projections (Qwen2, GPT-2, GPT-NeoX)."""
    out_bias: bool = False
    """Biases on the attention's output projection and the MLP's (GPT-2, GPT-NeoX)."""
    rotary_fraction: float = 1.0
    """The share of each head's dimensions that RoPE rotates (GPT-NeoX: 0.25); 0: no rotary embedding."""
    positions: int = 0
    """A learned position embedding of this many positions added to the token embeddings (GPT-2); 0: none."""
    parallel_residual: bool = False
    """x + attn(norm1(x)) + mlp(norm2(x)) in one step (GPT-NeoX) instead of one after the other."""
    embed_scale: bool = False
    """Token embeddings multiplied by sqrt(d_model) (Gemma)."""
    window: int | None = None
    """Attention sees at most this many positions back (a sliding window); the trunk refuses longer passes."""

    def __post_init__(self) -> None:
        for field in ("n_layer", "d_model", "n_head", "vocab_size", "multiple_of"):
            check_range(f"model {field}", getattr(self, field), 1)
        check_choice("model norm", self.norm, ("rms", "layer"))
        check_choice("model activation", self.activation, ("silu", "gelu", "gelu_tanh"))
        check_range("model rotary_fraction", self.rotary_fraction, 0.0, 1.0)
        if self.d_head is None and self.d_model % self.n_head:
            raise UsageError(f"model d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.rotary_dim % 2:
            raise UsageError(f"model head_dim={self.head_dim} must be even for rotary embeddings (they rotate "
                             f"{self.rotary_dim} dimensions, head_dim x rotary_fraction={self.rotary_fraction})")
        if self.n_head % self.kv_heads:
            raise UsageError(f"model n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}")

    @property
    def head_dim(self) -> int:
        return self.d_head or self.d_model // self.n_head

    @property
    def max_positions(self) -> int | None:
        """The longest pass the trunk runs: its learned position table or sliding window; None: no limit."""
        return min(filter(None, (self.positions, self.window)), default=None)

    @property
    def rotary_dim(self) -> int:
        """The dimensions of each head that RoPE rotates (the first ones)."""
        return int(self.head_dim * self.rotary_fraction)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        hidden = int(8 * self.d_model / 3)
        return -(-hidden // self.multiple_of) * self.multiple_of

    @classmethod
    def from_name(cls, name: str, **overrides) -> ModelConfig:
        check_choice("size", name, SIZES)
        return cls(name=name, **{**SIZES[name], **overrides})

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# Each entry overrides ModelConfig's defaults. Approximate totals at the reference vocabulary of 32000 (tied
# embeddings count once); `foresight sizes --vocab-size V` prints exact counts for any vocabulary.
SIZES: dict[str, dict] = {
    "nano": dict(n_layer=2, d_model=64, n_head=4),  # ~0.1M in blocks: CPU seconds
    "micro": dict(n_layer=4, d_model=128, n_head=4),  # ~0.8M in blocks
    "tiny": dict(n_layer=6, d_model=256, n_head=8),  # ~4.8M in blocks
    "small": dict(n_layer=8, d_model=512, n_head=8),  # ~25M in blocks
    "base": dict(n_layer=12, d_model=768, n_head=12, tie_embeddings=False),  # ~134M
    "large": dict(n_layer=24, d_model=1024, n_head=16, tie_embeddings=False),  # ~370M
    "1b": dict(n_layer=16, d_model=2048, n_head=32, n_kv_head=8, d_ff=8192, rope_theta=500000.0),  # ~1.04B
}


def resolve(size: str | ModelConfig | dict, **overrides) -> ModelConfig:
    """A ModelConfig from a size name, a config, or a config's fields as a dict (as stored in checkpoints)."""
    if isinstance(size, str):
        return ModelConfig.from_name(size, **overrides)
    if isinstance(size, dict):
        size = ModelConfig(**size)
    return size.replace(**overrides) if overrides else size


def count_parameters(trunk, objective=None) -> dict[str, int]:
    """Parameters by part, each tensor counted once however often it is shared:
    trunk (its blocks), shared (embeddings, final norm and unembedding, which every objective's heads read too),
    objective (what the objective adds and trains), frozen (what it adds and never trains, e.g. a teacher model),
    and total (what training updates: trunk + shared + objective)."""
    seen: set[int] = set()

    def count(params) -> int:
        total = 0
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
        return total

    own = list(objective.parameters()) if objective is not None else []
    counts = {
        "trunk": count(trunk.blocks.parameters()),
        "shared": count([*trunk.embed.parameters(), *(trunk.position.parameters() if trunk.position else ()),
                         *trunk.final_norm.parameters(), *trunk.unembed.parameters()]),
        "objective": count(p for p in own if p.requires_grad),
        "frozen": count(p for p in own if not p.requires_grad),
    }
    counts["total"] = counts["trunk"] + counts["shared"] + counts["objective"]
    return counts
