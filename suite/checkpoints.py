"""Reading foresight checkpoints (Lightning's format) without Lightning: the trunk, its config, the data settings."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from objectives.base import Objective
from suite.errors import UsageError
from suite.model import Trunk
from suite.sizes import resolve


def vocabulary_fits(tokens: int, rows: int, pretrained: bool) -> bool:
    """Whether a tokenizer of `tokens` tokens goes with a model of `rows` embedding rows: the same number, or, for a
    model fitted from a pretrained one (whose rows are often padded past its tokenizer), no more."""
    return tokens == rows or (pretrained and tokens < rows)


def read(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> dict:
    """A checkpoint written by `foresight fit` (ObjectiveLM), with a one-line UsageError when the file is missing,
    unreadable or not one of ours. Checkpoints are pickles: load only files you trust, as with any torch checkpoint.
    `mmap` maps the tensors' bytes instead of reading them (cheap, for a look at names and shapes)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {str(path)!r} does not exist; allowed: a .ckpt file written by foresight fit")
    try:
        # mmap reads only zip archives (what torch.save writes): anything else is loaded plainly, to fail the same way
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # truncated or foreign files raise many kinds of errors; all mean the same to a user
        raise UsageError(f"{what} {str(path)!r} cannot be read ({type(err).__name__}); allowed: a .ckpt file "
                         "written by foresight fit") from None
    if not isinstance(checkpoint, dict) or "size" not in checkpoint.get("hyper_parameters", {}):
        raise UsageError(f"{what} {str(path)!r} is not a foresight checkpoint (no model size in its hyperparameters)")
    return checkpoint


def describe(hparams: dict, other: dict | None = None) -> str:
    """A checkpoint's model in words: objective (with the options that differ from `other`'s), size, vocabulary."""
    def spec(hp: dict) -> dict:
        objective = hp.get("objective") or "NTP"
        return {"class_path": objective} if isinstance(objective, str) else objective

    options, theirs = spec(hparams).get("init_args") or {}, spec(other or {}).get("init_args") or {}
    differing = ", ".join(f"{key}={value!r}" for key, value in options.items() if theirs.get(key) != value)
    size = hparams.get("size") or {}
    return (f"{str(spec(hparams)['class_path']).rsplit('.', 1)[-1]}{f' ({differing})' if differing else ''}, "
            f"size {size.get('name')}, vocabulary {size.get('vocab_size')}")


def check_resumes(path: str | Path, module: torch.nn.Module, what: str = "--ckpt_path") -> None:
    """A UsageError unless the checkpoint at `path` holds weights of `module`'s names and shapes (the same objective,
    size and vocabulary), read memory-mapped: a bad checkpoint is refused before a run starts, not midway."""
    stored = read(path, what, mmap=True)
    ours = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    saved = {key: tuple(value.shape) for key, value in (stored.get("state_dict") or {}).items()}
    if saved != ours:
        first = sorted(set(ours) ^ set(saved)) or sorted(key for key in ours if ours[key] != saved[key])
        hparams = getattr(module, "hparams", {})
        raise UsageError(f"{what} {str(path)!r} holds a model of {describe(stored['hyper_parameters'], hparams)} "
                         f"(weight {first[0]!r} differs); allowed: a checkpoint of this run's model, "
                         f"{describe(hparams, stored['hyper_parameters'])}")


def load_trunk(path: str | Path, what: str = "checkpoint") -> tuple[Trunk, dict]:
    """The trunk stored in a checkpoint, with its weights, and the checkpoint itself."""
    checkpoint = read(path, what)
    prefix = "trunk."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    # an objective may have removed trunk blocks (ParallelMTP's match_params): count the blocks that were saved
    blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    trunk = Trunk(resolve(checkpoint["hyper_parameters"]["size"], n_layer=blocks))
    if trunk.embed.weight.device.type != "meta":  # on the meta device (FLOP counting) only the shapes matter
        trunk.load_state_dict(state)
    return trunk, checkpoint


def attach(objective: Objective, trunk: Trunk) -> dict[str, Trunk]:
    """`objective.attach(trunk)`, handed each of its `frozen_models` loaded from its checkpoint (with a one-line
    UsageError when the checkpoint was not trained with the data settings the objective needs); returns them."""
    frozen = {}
    for option, (path, settings) in objective.frozen_models().items():
        what = f"{objective.name} {option}"
        model, checkpoint = load_trunk(path, what=what)
        data = checkpoint.get("datamodule_hyper_parameters") or {}
        for key, value in settings.items():
            if data.get(key) != value:
                flag = f"--data.{key}={str(value).lower()}"
                raise UsageError(f"{what} {str(path)!r} was not trained with {flag} (its data has {key}="
                                 f"{data.get(key)!r}); allowed: a checkpoint of foresight fit {flag}")
        frozen[option] = model
    objective.attach(trunk, **frozen)
    return frozen


def attach_stand_ins(objective: Objective, trunk: Trunk, configs: dict | None = None) -> None:
    """`objective.attach(trunk)` with a fresh model for each frozen model, read from no file, of the shape in
    `configs` (option -> ModelConfig) or else the trunk's own: for counting parameters and FLOPs (on the meta
    device), where only shapes matter."""
    configs = configs or {}
    objective.attach(trunk, **{option: Trunk(configs.get(option, trunk.config))
                               for option in objective.frozen_models()})


@dataclass
class Model:
    """A checkpoint's trunk and its objective with the objective's heads: what `suite.decoding.generate` decodes
    with, read without Lightning (an `ObjectiveLM` has the same two attributes)."""

    trunk: Trunk
    objective: Objective


def load_model(path: str | Path, what: str = "checkpoint") -> tuple[Model, dict]:
    """The trunk and the objective's heads stored in a checkpoint of an objective with heads that draft tokens, and
    the checkpoint. Built the way `ObjectiveLM` builds them (an objective may remove trunk blocks as it attaches)."""
    import objectives

    checkpoint = read(path, what)
    hparams = checkpoint["hyper_parameters"]
    objective = objectives.from_spec(hparams.get("objective", "ntp"))
    if type(objective).drafter is objectives.Objective.drafter:
        raise UsageError(f"{what} {str(path)!r} was trained with {objective.name}, which has no heads that draft "
                         "tokens; allowed: a checkpoint of ntp, parallel_mtp, causal_mtp or sequential_mtp")
    trunk = Trunk(resolve(hparams["size"]))
    attach(objective, trunk)
    model = Model(trunk, objective)
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(("trunk.", "objective."))}
    torch.nn.Module.load_state_dict(torch.nn.ModuleDict({"trunk": trunk, "objective": objective}), state)
    return model, checkpoint


def load_readable(path: str | Path) -> tuple[Model, dict]:
    """A checkpoint's model as its every head can be read (`Objective.head_logits`, `inputs`): with the objective's
    heads where they draft tokens (`load_model`), else the trunk and the objective unattached (the next-token head
    alone, with the inputs it trained on: a teacherless model's dummies); and the checkpoint."""
    import objectives

    trunk, checkpoint = load_trunk(path)
    objective = objectives.from_spec(checkpoint["hyper_parameters"].get("objective") or "ntp")
    if type(objective).drafter is objectives.Objective.drafter:
        return Model(trunk, objective), checkpoint
    return load_model(path)


def answering_objective(checkpoint: dict) -> Objective:
    """What a checkpoint's model answers with when it is asked without its heads: its own objective when that
    decodes in one pass (teacherless, whose answers must come from dummy inputs), else next-token prediction, the
    causal LM every checkpoint is."""
    import objectives

    objective = objectives.from_spec(checkpoint.get("hyper_parameters", {}).get("objective") or "ntp")
    return objective if objective.decoding == "one_pass" else objectives.NTP()  # built, not attached: no weights


def load_tokenizer(checkpoint: dict):
    """The `tokenizers.Tokenizer` a checkpoint's model was trained with: stored by TaskData in the checkpoint, or
    rebuilt from the data settings for checkpoints without one."""
    from tokenizers import Tokenizer

    stored = checkpoint.get("TaskData", {}).get("tokenizer")
    if stored is not None:
        return Tokenizer.from_str(stored)
    data = checkpoint.get("datamodule_hyper_parameters")
    if not data:
        raise UsageError("the checkpoint holds no tokenizer and no data settings to rebuild one; allowed: a "
                         "checkpoint written by foresight fit")
    import tasks

    return tasks.build(data.get("task", "star_graph"), **(data.get("options") or {})).tokenizer


def save_trunk(path: str | Path, trunk: Trunk, data: dict | None = None) -> None:
    """A checkpoint that `load_trunk` reads: the trunk alone (e.g. a stand-in reverse model for a benchmark).
    `data` holds the data module's settings, e.g. {"reverse": True}."""
    import dataclasses

    torch.save({"hyper_parameters": {"size": dataclasses.asdict(trunk.config)},
                "state_dict": {f"trunk.{k}": v for k, v in trunk.state_dict().items()},
                "datamodule_hyper_parameters": dict(data or {})}, path)


def trained_on(checkpoint: dict | None) -> list[str]:
    """The foresight tasks a checkpoint was trained on: its task, or the components of its mix."""
    data = (checkpoint or {}).get("datamodule_hyper_parameters") or {}
    if data.get("task") == "mix":
        return list(((data.get("options") or {}).get("components") or {}))
    return [data["task"]] if data.get("task") else []


def task_options(checkpoint: dict | None, name: str) -> dict:
    """The options `name` was trained with: the checkpoint's own task, or its component in a mix; else none."""
    data = (checkpoint or {}).get("datamodule_hyper_parameters") or {}
    options = data.get("options") or {}
    if data.get("task") == name:
        return dict(options)
    if data.get("task") == "mix":
        return dict((options.get("options") or {}).get(name, {}))
    return {}
