"""Model sizes as a table: one entry per size, overriding only what differs from `ModelConfig`'s defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from suite.errors import UsageError, check_choice, check_range


@dataclass
class ModelConfig:
    """Shape of a Llama-style decoder trunk."""

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
    """SwiGLU hidden width; None means 8/3 * d_model rounded up to `multiple_of` (Llama's rule)."""
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

    def __post_init__(self) -> None:
        for field in ("n_layer", "d_model", "n_head", "vocab_size", "multiple_of"):
            check_range(f"model {field}", getattr(self, field), 1)
        if self.d_model % self.n_head:
            raise UsageError(f"model d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.head_dim % 2:
            raise UsageError(f"model head_dim={self.head_dim} must be even for rotary embeddings")
        if self.n_head % self.kv_heads:
            raise UsageError(f"model n_head={self.n_head} is not divisible by n_kv_head={self.n_kv_head}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

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
    trunk (its blocks), shared (embedding, final norm and unembedding, which every objective's heads read too),
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
        "shared": count([*trunk.embed.parameters(), *trunk.final_norm.parameters(), *trunk.unembed.parameters()]),
        "objective": count(p for p in own if p.requires_grad),
        "frozen": count(p for p in own if not p.requires_grad),
    }
    counts["total"] = counts["trunk"] + counts["shared"] + counts["objective"]
    return counts
