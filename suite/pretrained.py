"""A local Hugging Face directory as foresight's trunk: the inverse of `foresight export`.

`read_pretrained(DIR)` reads config.json (its architecture, `suite.architectures`, and the fields the trunk
represents, with a one-line refusal naming the first one it does not), the weights from its safetensors files
(fused and laid out as the trunk holds them) and its tokenizer.json. Nothing is downloaded: a name that is not a
local directory is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from suite.architectures import ARCHITECTURES, WHAT, model_config, to_trunk, weight_names
from suite.errors import UsageError
from suite.sizes import ModelConfig

HEADS_FILE, HEADS_SPEC = "foresight_heads.safetensors", "foresight_heads.json"
"""What `foresight export` writes beside the model for an objective with heads: its weights and its spec, which
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
    """An objective's weights that `foresight export` wrote beside the model, under the objective's names."""
    heads_objective: dict | None = None
    """The spec of the objective those heads belong to."""


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


def trunk_state(config: ModelConfig, weights: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """The saved weights under the trunk's names, fused and laid out as the trunk holds them
    (`suite.architectures.weight_names`); tied embeddings share one tensor."""
    from suite.model import Trunk

    arch = ARCHITECTURES[config.arch]
    base = arch.blocks.split(".")[0] + "."  # older saves of some models lack the base model's prefix

    def take(name: str) -> torch.Tensor:
        for candidate in (name, arch.aliases.get(name), name.removeprefix(base)):
            if candidate in weights:
                return weights[candidate].float()
        raise UsageError(f"{WHAT} '{path}' has no weight {name!r}; allowed: a {arch.hf_class}'s weights")

    with torch.device("meta"):
        parameters = set(Trunk(config).state_dict())
    state = {}
    for name, hf, _ in weight_names(config, parameters):
        if name == "unembed.weight" and config.tie_embeddings:
            continue
        state[name] = to_trunk(config, name, torch.cat([take(part) for part in hf]))
    if config.tie_embeddings:
        state["unembed.weight"] = state["embed.weight"]
    return state


def read_pretrained(path: str | Path) -> Pretrained:
    """The trunk's config, weights and tokenizer of a local Hugging Face directory of a supported architecture."""
    from tokenizers import Tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"{WHAT} '{path}' is not a local directory; allowed: a directory written by "
                         "save_pretrained (foresight downloads nothing: save a hub model to disk "
                         "first)")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{WHAT} '{path}' has no config.json; allowed: a directory written by save_pretrained")
    config = model_config(path, json.loads(config_file.read_text()))
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
