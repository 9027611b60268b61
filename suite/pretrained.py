"""A local Hugging Face Llama directory as foresight's trunk: the inverse of `foresight export`.

`read_llama(DIR)` reads config.json (the fields the trunk represents, and a one-line refusal naming the first one
it does not), the weights from its safetensors files (split into the trunk's fused q/k/v and gate/up matrices) and
its tokenizer.json. Nothing is downloaded: a name that is not a local directory is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from suite.errors import UsageError
from suite.sizes import ModelConfig

WHAT = "--model.init_from"
HEADS_FILE, HEADS_SPEC = "foresight_heads.safetensors", "foresight_heads.json"
"""What `foresight export` writes beside the Llama for an objective with heads: its weights and its spec, which
`init_from` reads back, so a model retrofitted with heads round-trips."""


@dataclass
class Pretrained:
    path: str
    config: ModelConfig
    state: dict[str, torch.Tensor]
    """The trunk's state dict (`Trunk.load_state_dict` takes it)."""
    tokenizer: object
    """The directory's `tokenizers.Tokenizer`."""
    heads: dict[str, torch.Tensor] | None = None
    """An objective's weights that `foresight export` wrote beside the Llama, under the objective's names."""
    heads_objective: dict | None = None
    """The spec of the objective those heads belong to."""


def refuse(path, field: str, value, allowed: str) -> UsageError:
    return UsageError(f"{WHAT} '{path}' has {field}={value!r}, which foresight's trunk does not implement; "
                      f"allowed: {allowed}")


def llama_model_config(path: str | Path, raw: dict) -> ModelConfig:
    """The trunk's config of a Llama config.json; a UsageError naming the first field the trunk cannot represent."""
    if raw.get("model_type") != "llama":
        raise refuse(path, "model_type", raw.get("model_type"), "llama (LlamaForCausalLM)")
    for field, expected in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False),
                            ("pretraining_tp", 1)):
        if raw.get(field, expected) != expected:
            raise refuse(path, field, raw[field], repr(expected))
    rope = raw.get("rope_parameters") or {**(raw.get("rope_scaling") or {}), "rope_theta": raw.get("rope_theta")}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        field = "rope_parameters.rope_type" if raw.get("rope_parameters") else "rope_scaling"
        raise refuse(path, field, kind, "'default' (plain RoPE, no scaling)")
    d_model, n_head = raw["hidden_size"], raw["num_attention_heads"]
    if raw.get("head_dim", d_model // n_head) * n_head != d_model:
        raise refuse(path, "head_dim", raw["head_dim"], f"hidden_size / num_attention_heads = {d_model // n_head}")
    return ModelConfig(name=f"pretrained:{Path(path).name}", n_layer=raw["num_hidden_layers"], d_model=d_model,
                       n_head=n_head, n_kv_head=raw.get("num_key_value_heads") or n_head,
                       d_ff=raw["intermediate_size"], vocab_size=raw["vocab_size"],
                       tie_embeddings=bool(raw.get("tie_word_embeddings", False)),
                       rope_theta=float(rope.get("rope_theta") or 10000.0), norm_eps=float(raw["rms_norm_eps"]),
                       init_std=float(raw.get("initializer_range", 0.02)))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's safetensors files (one file, or the shards its index names)."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        ["model.safetensors"]
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise UsageError(f"{WHAT} '{path}' has no {missing[0]}; allowed: a directory written by save_pretrained "
                         "with safetensors weights")
    weights = {}
    for name in files:
        weights.update(load_file(str(path / name)))
    return weights


LLAMA_NAMES = {"embed.weight": ("model.embed_tokens.weight",), "final_norm.weight": ("model.norm.weight",),
               "unembed.weight": ("lm_head.weight",)}
"""Trunk weight -> the `LlamaForCausalLM` weights it holds, outside the blocks."""
LLAMA_BLOCK_NAMES = {
    "attn_norm.weight": ("input_layernorm.weight",),
    "attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.proj.weight": ("self_attn.o_proj.weight",),
    "mlp_norm.weight": ("post_attention_layernorm.weight",),
    "mlp.gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),  # the order of gate_up(x).chunk(2, -1)
    "mlp.down.weight": ("mlp.down_proj.weight",),
}
"""Block weight (under blocks.{i}.) -> the Llama weights under model.layers.{i}. it holds, fused by output rows
in this order where there are several (RoPE already uses HF's rotate_half convention: no permutation of q, k)."""


def llama_names(config: ModelConfig) -> list[tuple[str, tuple[str, ...], list[int] | None]]:
    """Every trunk weight as (trunk name, its Llama names, the output rows of each): the one mapping that import
    (`trunk_state`) and export (`suite.export.llama_state_dict`) both read."""
    hd = config.head_dim
    rows = {"attn.qkv.weight": [config.n_head * hd, config.kv_heads * hd, config.kv_heads * hd],
            "mlp.gate_up.weight": [config.ffn_dim, config.ffn_dim]}
    table = [(name, llama, None) for name, llama in LLAMA_NAMES.items()]
    for i in range(config.n_layer):
        table += [(f"blocks.{i}.{name}", tuple(f"model.layers.{i}.{part}" for part in llama), rows.get(name))
                  for name, llama in LLAMA_BLOCK_NAMES.items()]
    return table


def trunk_state(config: ModelConfig, weights: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """`LlamaForCausalLM` weights under the trunk's names, fused where the trunk fuses them (`llama_names`); tied
    embeddings share one tensor."""
    def take(name: str) -> torch.Tensor:
        if name not in weights:
            raise UsageError(f"{WHAT} '{path}' has no weight {name!r}; allowed: a LlamaForCausalLM's weights")
        return weights[name].float()

    state = {}
    for name, llama, _ in llama_names(config):
        if name == "unembed.weight" and config.tie_embeddings:
            continue
        state[name] = torch.cat([take(part) for part in llama])
    if config.tie_embeddings:
        state["unembed.weight"] = state["embed.weight"]
    return state


def read_llama(path: str | Path) -> Pretrained:
    """The trunk's config, weights and tokenizer of a local Llama directory."""
    from tokenizers import Tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{WHAT} '{path}' is not a local directory; allowed: a directory written by "
                         "LlamaForCausalLM.save_pretrained (foresight downloads nothing: save a hub model to disk "
                         "first)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{WHAT} '{path}' has no config.json; allowed: a directory written by save_pretrained")
    config = llama_model_config(path, json.loads(config_file.read_text()))
    if not (folder / "tokenizer.json").is_file():
        raise UsageError(f"{WHAT} '{path}' has no tokenizer.json; allowed: a directory with its tokenizer saved "
                         "beside the model (tokenizer.save_pretrained)")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if tokenizer.get_vocab_size() > config.vocab_size:
        raise UsageError(f"{WHAT} '{path}' has a tokenizer of {tokenizer.get_vocab_size()} tokens for a model of "
                         f"{config.vocab_size}; allowed: a tokenizer that fits the model's vocabulary")
    heads, objective = None, None
    if (folder / HEADS_SPEC).is_file():
        from safetensors.torch import load_file

        objective = json.loads((folder / HEADS_SPEC).read_text())["objective"]
        heads = load_file(str(folder / HEADS_FILE))
    return Pretrained(str(path), config, trunk_state(config, read_weights(folder), path), tokenizer, heads, objective)
