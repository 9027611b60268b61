"""The Hugging Face architectures foresight's trunk can be: for each `model_type`, what its config.json sets in a
`ModelConfig` (and the first field the trunk cannot represent, refused in one line), the config `foresight export`
writes back, and where each of the trunk's weights lives in its safetensors (names, fused rows, layouts).

One table serves import (`suite.pretrained`) and export (`suite.export`), so the two cannot drift apart. The
weights are converted into foresight's own trunk rather than wrapping Hugging Face's modules, so every objective,
the static decoding passes, CUDA graphs, compiled blocks and KV-cache quantisation work on every architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from suite.errors import UsageError
from suite.sizes import ModelConfig

WHAT = "--model.init_from"

ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
"""Hugging Face's activation names -> the trunk's (`ModelConfig.activation`)."""
HF_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def refuse(path, name: str, value, allowed: str) -> UsageError:
    return UsageError(f"{WHAT} '{path}' has {name}={value!r}, which foresight's trunk does not implement; "
                      f"allowed: {allowed}")


def rope_settings(path, raw: dict) -> tuple[float, float]:
    """(rope_theta, partial rotary fraction) of a config, old or new style; scaled RoPE is refused."""
    rope = raw.get("rope_parameters") or {**(raw.get("rope_scaling") or {}),
                                          "rope_theta": raw.get("rope_theta", raw.get("rotary_emb_base"))}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        name = "rope_parameters.rope_type" if raw.get("rope_parameters") else "rope_scaling"
        raise refuse(path, name, kind, "'default' (plain RoPE, no scaling)")
    fraction = rope.get("partial_rotary_factor", raw.get("partial_rotary_factor", raw.get("rotary_pct", 1.0)))
    return float(rope.get("rope_theta") or 10000.0), float(fraction)


def expect(path, raw: dict, **expected) -> None:
    """Refuse the first field whose value (where set) is not the one the trunk implements."""
    for name, value in expected.items():
        if raw.get(name, value) != value:
            raise refuse(path, name, raw[name], repr(value))


def activation(path, raw: dict, name: str) -> str:
    value = raw.get(name)
    if value not in ACTIVATIONS:
        raise refuse(path, name, value, ", ".join(ACTIVATIONS))
    return ACTIVATIONS[value]


def llama_like(path, raw: dict, **features) -> dict:
    """The fields every decoder of Llama's config layout shares (Llama, Mistral, Qwen2, Gemma, Phi-3)."""
    theta, fraction = rope_settings(path, raw)
    d_model, n_head = raw["hidden_size"], raw["num_attention_heads"]
    head_dim = raw.get("head_dim") or d_model // n_head
    return dict(n_layer=raw["num_hidden_layers"], d_model=d_model, n_head=n_head,
                n_kv_head=raw.get("num_key_value_heads") or n_head, d_ff=raw["intermediate_size"],
                d_head=head_dim if head_dim * n_head != d_model else None, rope_theta=theta, rotary_fraction=fraction,
                norm_eps=float(raw["rms_norm_eps"]), **features)


def llama(path, raw: dict) -> dict:
    expect(path, raw, hidden_act="silu", attention_bias=False, mlp_bias=False, pretraining_tp=1)
    return llama_like(path, raw)


def mistral(path, raw: dict) -> dict:
    expect(path, raw, hidden_act="silu")
    return llama_like(path, raw, window=raw.get("sliding_window"))


def qwen2(path, raw: dict) -> dict:
    expect(path, raw, hidden_act="silu")
    return llama_like(path, raw, qkv_bias=True,
                      window=raw.get("sliding_window") if raw.get("use_sliding_window") else None)


def gemma(path, raw: dict) -> dict:
    expect(path, raw, attention_bias=False)
    act = activation(path, raw, "hidden_activation" if raw.get("hidden_activation") else "hidden_act")
    return llama_like(path, raw, norm_offset=1.0, activation=act, embed_scale=True)


def phi3(path, raw: dict) -> dict:
    expect(path, raw, hidden_act="silu")
    return llama_like(path, raw, window=raw.get("sliding_window"))


def gpt2(path, raw: dict) -> dict:
    expect(path, raw, scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False)
    d_model = raw["n_embd"]
    return dict(n_layer=raw["n_layer"], d_model=d_model, n_head=raw["n_head"], d_ff=raw.get("n_inner") or 4 * d_model,
                norm="layer", norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
                activation=activation(path, raw, "activation_function"), gated=False, qkv_bias=True, out_bias=True,
                rotary_fraction=0.0, positions=raw["n_positions"])


def gpt_neox(path, raw: dict) -> dict:
    expect(path, raw, attention_bias=True)
    theta, fraction = rope_settings(path, raw)
    return dict(n_layer=raw["num_hidden_layers"], d_model=raw["hidden_size"], n_head=raw["num_attention_heads"],
                d_ff=raw["intermediate_size"], norm="layer", norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
                activation=activation(path, raw, "hidden_act"), gated=False, qkv_bias=True, out_bias=True,
                rope_theta=theta, rotary_fraction=fraction,
                parallel_residual=bool(raw.get("use_parallel_residual", True)))


LLAMA_BLOCK = {
    "attn_norm.weight": ("input_layernorm.weight",),
    "attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.qkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "attn.proj.weight": ("self_attn.o_proj.weight",),
    "mlp_norm.weight": ("post_attention_layernorm.weight",),
    "mlp.gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),  # the order of gate_up(x).chunk(2, -1)
    "mlp.down.weight": ("mlp.down_proj.weight",),
}
PHI3_BLOCK = {**LLAMA_BLOCK, "attn.qkv.weight": ("self_attn.qkv_proj.weight",),
              "mlp.gate_up.weight": ("mlp.gate_up_proj.weight",)}
GPT2_BLOCK = {"attn_norm.weight": ("ln_1.weight",), "attn_norm.bias": ("ln_1.bias",),
              "attn.qkv.weight": ("attn.c_attn.weight",), "attn.qkv.bias": ("attn.c_attn.bias",),
              "attn.proj.weight": ("attn.c_proj.weight",), "attn.proj.bias": ("attn.c_proj.bias",),
              "mlp_norm.weight": ("ln_2.weight",), "mlp_norm.bias": ("ln_2.bias",),
              "mlp.up.weight": ("mlp.c_fc.weight",), "mlp.up.bias": ("mlp.c_fc.bias",),
              "mlp.down.weight": ("mlp.c_proj.weight",), "mlp.down.bias": ("mlp.c_proj.bias",)}
NEOX_BLOCK = {"attn_norm.weight": ("input_layernorm.weight",), "attn_norm.bias": ("input_layernorm.bias",),
              "attn.qkv.weight": ("attention.query_key_value.weight",),
              "attn.qkv.bias": ("attention.query_key_value.bias",),
              "attn.proj.weight": ("attention.dense.weight",), "attn.proj.bias": ("attention.dense.bias",),
              "mlp_norm.weight": ("post_attention_layernorm.weight",),
              "mlp_norm.bias": ("post_attention_layernorm.bias",),
              "mlp.up.weight": ("mlp.dense_h_to_4h.weight",), "mlp.up.bias": ("mlp.dense_h_to_4h.bias",),
              "mlp.down.weight": ("mlp.dense_4h_to_h.weight",), "mlp.down.bias": ("mlp.dense_4h_to_h.bias",)}
LLAMA_OUTER = {"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
               "unembed.weight": "lm_head.weight"}


def llama_config(config: ModelConfig) -> dict:
    return dict(hidden_size=config.d_model, intermediate_size=config.ffn_dim, num_attention_heads=config.n_head,
                num_key_value_heads=config.kv_heads, head_dim=config.head_dim, rms_norm_eps=config.norm_eps,
                hidden_act="silu", rope_parameters=rope_parameters(config))


def rope_parameters(config: ModelConfig) -> dict:
    rope = {"rope_type": "default", "rope_theta": config.rope_theta}
    return rope if config.rotary_fraction == 1.0 else {**rope, "partial_rotary_factor": config.rotary_fraction}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hf_class: str
    """The `transformers` class `foresight export` writes (and `AutoModelForCausalLM` loads)."""
    differs: str
    """What differs from the Llama trunk, and how foresight represents it (the README's table)."""
    read: Callable[[object, dict], dict]
    """config.json -> the `ModelConfig` fields beyond the ones every architecture has."""
    write: Callable[[ModelConfig], dict]
    """`ModelConfig` -> the `transformers` config's arguments (beyond vocabulary, depth and tying)."""
    outer: dict[str, str]
    """Trunk weights outside the blocks -> their names."""
    blocks: str
    """The prefix of block i's weights, with {i}."""
    block: dict[str, tuple[str, ...]]
    """Block weight -> the names it holds, fused by output rows in this order where there are several."""
    layout: str | None = None
    """How a block's weights are stored: None (as the trunk's), 'conv1d' (transposed: GPT-2), 'neox_qkv' (q, k
    and v interleaved per head: GPT-NeoX)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Other names a saved checkpoint may use for a weight (older saves)."""


ARCHITECTURES = {arch.model_type: arch for arch in (
    Architecture("llama", "LlamaForCausalLM", "the trunk itself (SmolLM and TinyLlama are Llamas)", llama,
                 llama_config, LLAMA_OUTER, "model.layers.{i}.", LLAMA_BLOCK),
    Architecture("mistral", "MistralForCausalLM", "a sliding attention window: passes up to the window are "
                 "exact, longer ones refused", mistral,
                 lambda c: {**llama_config(c), "sliding_window": c.window}, LLAMA_OUTER, "model.layers.{i}.",
                 LLAMA_BLOCK),
    Architecture("qwen2", "Qwen2ForCausalLM", "biases on q, k and v (`qkv_bias`)", qwen2,
                 llama_config, LLAMA_OUTER, "model.layers.{i}.", LLAMA_BLOCK),
    Architecture("gemma", "GemmaForCausalLM", "GeGLU (`activation=gelu_tanh`), norms scaling by 1 + weight "
                 "(`norm_offset`), embeddings times sqrt(d_model) (`embed_scale`), its own head width (`d_head`)",
                 gemma, lambda c: {**llama_config(c), "hidden_act": HF_ACTIVATIONS[c.activation],
                                   "hidden_activation": HF_ACTIVATIONS[c.activation]},
                 LLAMA_OUTER, "model.layers.{i}.", LLAMA_BLOCK),
    Architecture("phi3", "Phi3ForCausalLM", "q, k, v and gate, up already fused (as the trunk fuses them); "
                 "partial RoPE (`rotary_fraction`); a sliding window as Mistral's", phi3,
                 lambda c: {**llama_config(c), "sliding_window": c.window}, LLAMA_OUTER, "model.layers.{i}.",
                 PHI3_BLOCK),
    Architecture("gpt_neox", "GPTNeoXForCausalLM", "LayerNorm, biases, GeLU MLP (`norm=layer`, `qkv_bias`, "
                 "`out_bias`, `gated=false`), a parallel residual, RoPE on a quarter of each head "
                 "(`rotary_fraction`), q, k, v interleaved per head (reordered on load)", gpt_neox,
                 lambda c: dict(hidden_size=c.d_model, intermediate_size=c.ffn_dim, num_attention_heads=c.n_head,
                                hidden_act=HF_ACTIVATIONS[c.activation], layer_norm_eps=c.norm_eps,
                                use_parallel_residual=c.parallel_residual, attention_bias=True,
                                rope_parameters=rope_parameters(c)),
                 {"embed.weight": "gpt_neox.embed_in.weight", "final_norm.weight": "gpt_neox.final_layer_norm.weight",
                  "final_norm.bias": "gpt_neox.final_layer_norm.bias", "unembed.weight": "lm_head.weight"},
                 "gpt_neox.layers.{i}.", NEOX_BLOCK, "neox_qkv", {"lm_head.weight": "embed_out.weight"}),
    Architecture("gpt2", "GPT2LMHeadModel", "learned positions (`positions`, no RoPE), LayerNorm, biases, GeLU "
                 "MLP; its Conv1D weights are transposed on load", gpt2,
                 lambda c: dict(n_embd=c.d_model, n_inner=c.ffn_dim, n_head=c.n_head, n_positions=c.positions,
                                activation_function="gelu_new" if c.activation == "gelu_tanh" else c.activation,
                                layer_norm_epsilon=c.norm_eps),
                 {"embed.weight": "transformer.wte.weight", "position.weight": "transformer.wpe.weight",
                  "final_norm.weight": "transformer.ln_f.weight", "final_norm.bias": "transformer.ln_f.bias",
                  "unembed.weight": "lm_head.weight"}, "transformer.h.{i}.", GPT2_BLOCK, "conv1d"),
)}
SUPPORTED = ", ".join(ARCHITECTURES)


def architecture(path, model_type) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise refuse(path, "model_type", model_type, SUPPORTED)
    return ARCHITECTURES[model_type]


def model_config(path: str | Path, raw: dict) -> ModelConfig:
    """The trunk's config of a config.json; a UsageError naming the first field the trunk cannot represent."""
    arch = architecture(path, raw.get("model_type"))
    n_layer_key = "n_layer" if arch.model_type == "gpt2" else "num_hidden_layers"
    if raw.get(n_layer_key) is None:
        raise refuse(path, n_layer_key, None, "a config.json written by save_pretrained")
    fields = arch.read(path, raw)
    return ModelConfig(name=f"pretrained:{Path(path).name}", arch=arch.model_type, vocab_size=raw["vocab_size"],
                       tie_embeddings=bool(raw.get("tie_word_embeddings", arch.model_type in ("gpt2", "gemma"))),
                       init_std=float(raw.get("initializer_range", 0.02)), **fields)


def hf_config(config: ModelConfig, n_layer: int, **extra):
    """The `transformers` config of a trunk of this config with `n_layer` blocks."""
    from transformers import AutoConfig

    arch = ARCHITECTURES[config.arch]
    depth = {"n_layer" if arch.model_type == "gpt2" else "num_hidden_layers": n_layer}
    return AutoConfig.for_model(arch.model_type, vocab_size=config.vocab_size,
                                tie_word_embeddings=config.tie_embeddings, initializer_range=config.init_std,
                                **depth, **arch.write(config), **extra)


def weight_names(config: ModelConfig, parameters: set[str]) -> list[tuple[str, tuple[str, ...], list[int] | None]]:
    """Every trunk weight in `parameters` as (trunk name, its Hugging Face names, the output rows of each where it
    fuses several): the one mapping import and export both read. A trunk weight the table lacks is an error."""
    arch = ARCHITECTURES[config.arch]
    hd, kv = config.head_dim, config.kv_heads
    rows = {"attn.qkv": [config.n_head * hd, kv * hd, kv * hd], "mlp.gate_up": [config.ffn_dim, config.ffn_dim]}
    table = [(name, (hf,), None) for name, hf in arch.outer.items() if name in parameters]
    for i in range(config.n_layer):
        for name, hf in arch.block.items():
            if f"blocks.{i}.{name}" in parameters:
                split = rows.get(name.rpartition(".")[0]) if len(hf) > 1 else None
                table.append((f"blocks.{i}.{name}", tuple(arch.blocks.format(i=i) + part for part in hf), split))
    missing = parameters - {name for name, _, _ in table}
    assert not missing, f"{arch.model_type} maps no weight to {sorted(missing)}"
    return table


def to_trunk(config: ModelConfig, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A saved tensor (fused where the trunk fuses it) in the trunk's layout."""
    layout = ARCHITECTURES[config.arch].layout
    if layout == "conv1d" and name.startswith("blocks.") and tensor.dim() == 2:
        return tensor.t().contiguous()
    if layout == "neox_qkv" and ".attn.qkv." in name:  # [H, 3, hd, ...] -> [3, H, hd, ...]
        return tensor.reshape(config.n_head, 3, config.head_dim, -1).transpose(0, 1).reshape(tensor.shape)
    return tensor


def from_trunk(config: ModelConfig, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_trunk`: a trunk tensor in the saved layout."""
    layout = ARCHITECTURES[config.arch].layout
    if layout == "conv1d" and name.startswith("blocks.") and tensor.dim() == 2:
        return tensor.t().contiguous()
    if layout == "neox_qkv" and ".attn.qkv." in name:
        return tensor.reshape(3, config.n_head, config.head_dim, -1).transpose(0, 1).reshape(tensor.shape)
    return tensor
