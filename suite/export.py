"""`foresight export`: a checkpoint's next-token model as a Hugging Face directory (config.json,
model.safetensors, tokenizer files) of the trunk's architecture (a Llama, or what `--model.init_from` read: Qwen2,
Gemma, GPT-2, ...) that `AutoModelForCausalLM` and `AutoTokenizer` load with no foresight code.

The exported model is the trunk (embeddings, blocks, final norm, unembedding): every objective's checkpoint is a
plain causal LM. An objective's extra heads, which such a model has no place for, are written beside it
(foresight_heads.safetensors and foresight_heads.json), where `--model.init_from` finds them again."""

from __future__ import annotations

import sys

from pathlib import Path

import torch

from suite import architectures, checkpoints
from suite.errors import UsageError, check_writable
from suite.evaluate import write_tasks
from suite.model import Trunk
from suite.pretrained import HEADS_FILE, HEADS_SPEC

MAX_POSITIONS = 4096
"""Written as max_position_embeddings where positions are rotary (no learned table): only the length HF tools
assume."""

SPECIAL_TOKENS = {"eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
"""The roles HF tokenizers know, by the names foresight's task tokenizers give them."""


def hf_config(trunk: Trunk, tokenizer=None, eos_id: int | None = None):
    """The `transformers` config of a trunk, of its architecture (`suite.architectures`): the blocks it holds (an
    objective may have removed some), not its config's; without a tokenizer, no special-token ids (the end of text
    is `eos_id`, or the tokenizer's <eos>)."""
    c = trunk.config
    extra = {} if c.arch == "gpt2" else {"max_position_embeddings": MAX_POSITIONS}
    if eos_id is None and tokenizer is not None:
        eos_id = tokenizer.token_to_id("<eos>")
    return architectures.hf_config(
        c, len(trunk.blocks), bos_token_id=None, eos_token_id=eos_id,
        pad_token_id=tokenizer.token_to_id("<pad>") if tokenizer else None, dtype=trunk.embed.weight.dtype,
        **extra)


def hf_state_dict(trunk: Trunk) -> dict[str, torch.Tensor]:
    """The trunk's weights under its architecture's names (`suite.architectures.weight_names`), fused matrices
    split by output rows, laid out as that architecture saves them."""
    weights = trunk.state_dict()
    config = trunk.config.replace(n_layer=len(trunk.blocks))
    state = {}
    for name, hf, rows in architectures.weight_names(config, set(weights)):
        tensor = architectures.from_trunk(config, name, weights[name])
        state.update(zip(hf, tensor.split(rows) if rows else (tensor,)))
    # slices of a fused matrix share its storage, which safetensors refuses to write: give each its own
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def hf_tokenizer(tokenizer, eos_id: int | None = None):
    """A `tokenizers.Tokenizer` wrapped for `transformers`, its special-token roles set where the vocabulary has
    them (the end of text: the token `eos_id`, as a pretrained model's data names it, or <eos>). No cleanup of
    spaces on decode, so HF decodes exactly as foresight does."""
    from transformers import PreTrainedTokenizerFast

    vocab = tokenizer.get_vocab()
    roles = {role: token for role, token in SPECIAL_TOKENS.items() if token in vocab}
    if eos_id is not None:
        roles["eos_token"] = tokenizer.id_to_token(eos_id)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False, **roles)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out whose files would be written over, unless told to, so nothing already there is lost; and
    one that cannot be written, before a large checkpoint is read for nothing."""
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {str(out)!r} is a file; allowed: a new or empty folder")
        if out.is_dir() and not overwrite and any(out.iterdir()):
            raise UsageError(f"--out {str(out)!r} is not empty; allowed: a new or empty folder, or --overwrite to "
                             "write over the export's files there")
    except OSError as err:
        raise UsageError(f"--out {str(out)!r} cannot be read ({err.strerror}); allowed: a folder you can write") \
            from None
    check_writable("--out", out)


def trained_tasks(checkpoint: dict) -> list[str]:
    """The lm-eval tasks of what the checkpoint was trained on (a mix: its scored components)."""
    from suite.evaluate import foresight_tasks

    data = checkpoint.get("datamodule_hyper_parameters") or {}
    if data.get("task") == "mix":
        from tasks.mix import DEFAULT_COMPONENTS

        components = (data.get("options") or {}).get("components") or DEFAULT_COMPONENTS
        return [name for name in components if name in foresight_tasks()]
    return [data["task"]] if data.get("task") in foresight_tasks() else []


def write_heads(checkpoint: dict, out: Path) -> None:
    """The checkpoint's objective weights (none for NTP) as HEADS_FILE, and its objective spec as HEADS_SPEC."""
    import json

    from safetensors.torch import save_file

    heads = {name[len("objective."):]: tensor.detach().clone().contiguous()
             for name, tensor in checkpoint["state_dict"].items() if name.startswith("objective.")}
    if heads:  # each tensor its own copy: safetensors refuses shared storage
        save_file(heads, str(out / HEADS_FILE))
        spec = {"objective": checkpoint["hyper_parameters"].get("objective"), "tensors": sorted(heads)}
        (out / HEADS_SPEC).write_text(json.dumps(spec, indent=2) + "\n")


def export_hf(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """The checkpoint and the folder to write the Hugging Face directory to.

    Writes a foresight checkpoint's next-token model as a Hugging Face directory of its architecture (a Llama
    unless it was fitted from another) and returns it, with an
    lm-eval task folder (`lm_eval_tasks/`, the test documents of the tasks it was trained on) for
    `lm_eval --model hf --model_args pretrained=DIR --include_path DIR/lm_eval_tasks`.

    Args:
        checkpoint: A .ckpt file written by `foresight fit` (any objective).
        out: The folder to write: config.json, generation_config.json, model.safetensors, the tokenizer files,
            lm_eval_tasks/ and, for an objective with heads, foresight_heads.safetensors and .json.
        overwrite: Write into a folder that is not empty (files of the same names are replaced).
    """
    out = Path(out)
    check_out(out, overwrite)
    trunk, stored = checkpoints.load_trunk(checkpoint)
    tokenizer = checkpoints.load_tokenizer(stored)
    answering = checkpoints.answering_objective(stored)
    if answering.decoding != "autoregressive":
        print(f"foresight: warning: {checkpoint} was trained with {answering.name}, which answers in one pass over "
              "the prompt and dummy tokens; Hugging Face generation decodes token by token, so its answers are not "
              "the model's (`foresight eval` and the foresight lm-eval model decode it as trained)", file=sys.stderr)
    from transformers import AutoModelForCausalLM  # after the checks: a bad input fails without the seconds it takes

    eos_id = (stored.get("TaskData") or {}).get("separator")
    config = hf_config(trunk, tokenizer, eos_id)
    with torch.device("meta"):  # no memory and no init for weights that are replaced at once
        model = AutoModelForCausalLM.from_config(config)
    # strict: every weight the architecture expects is mapped, and nothing else (its non-persistent buffers aside)
    state = hf_state_dict(trunk)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - ({"lm_head.weight"} if config.tie_word_embeddings else set()):
        raise AssertionError(f"export of {trunk.config.arch}: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()  # one shared matrix, as trained
    try:
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        hf_tokenizer(tokenizer, config.eos_token_id).save_pretrained(out)
        write_tasks(trained_tasks(stored), stored, out / "lm_eval_tasks")
        write_heads(stored, out)
    except OSError as err:
        raise UsageError(f"--out {str(out)!r} cannot be written ({err.strerror}); allowed: a folder you can "
                         "write") from None
    return out


def main(argv: list[str]) -> None:
    """`foresight export --checkpoint PATH --out DIR [--overwrite]`: write the checkpoint's next-token model as a
    Hugging Face directory (of its architecture) and print the directory."""
    from jsonargparse import ActionYesNo
    from suite.parsing import Parser

    parser = Parser(prog="foresight export",
                    description="Write a checkpoint's next-token model as a Hugging Face directory (Llama, or the "
                                "architecture it was fitted from).")
    parser.add_function_arguments(export_hf, skip={"overwrite"})
    parser.add_argument("--overwrite", action=ActionYesNo, default=False,
                        help="write into a folder that is not empty (files of the same names are replaced)")
    options = parser.parse_args(argv).as_dict()
    print(export_hf(**options))
