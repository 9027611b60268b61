"""The `foresight` command: `fit|validate|test` through LightningCLI, plus foresight's own commands.

Every mistake a user can make ends as one line on stderr (`foresight: error: ...`) and exit status 2."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

USAGE = """usage: foresight COMMAND [options]

commands:
  fit        train a model (LightningCLI: --model.*, --data.*, --trainer.*, --config FILE, --ckpt_path=last)
  validate   score a checkpoint on the validation split (--ckpt_path=PATH)
  test       score a checkpoint on the test split (--ckpt_path=PATH)
  prepare    your documents as a tokenized dataset folder (SOURCE... --out DIR; token ids saved by datasets)
  sweep      train, score and cost a grid of objectives x n x sizes x seeds (--config FILE [--shard i/N])
  agent      run sweep points for a wandb sweep agent
  eval       score a checkpoint on task families through lm-eval (--checkpoint PATH --tasks a,b)
  lm-eval    lm-eval's own command line with foresight's model and tasks registered
             (--model foresight --model_args checkpoint=PATH --tasks star_graph ...; every lm_eval flag)
  report     tables with confidence intervals and significance, and plots, of a sweep's results
  dashboard  a wandb report comparing a sweep's runs (--entity E --project P)
  export     write a checkpoint as a Hugging Face Llama directory (--checkpoint PATH --out DIR)
  tasks      every task family with its options, defaults and docs (`foresight tasks star_graph`)
  objectives every objective with its options, defaults and docs (`foresight objectives parallel_mtp`)
  sizes      parameter counts of every model size, with an objective's heads
  bench      measurements against next-token prediction: `foresight bench memory|decode|throughput|overhead`
  probe      what a trained model attends to: `foresight probe attention --checkpoint PATH` (star graph),
             `foresight probe compare DIR...` (probes side by side)

`foresight COMMAND --help` lists a command's options."""

QUIET = (  # Lightning advice that does not apply: the splits are tensors in memory, runs are short on purpose
    r".*does not have many workers.*",
    r".*smaller than the logging interval.*",
    r".*LightningCLI's args parameter is intended.*",
    r".*`tensorboardX` has been removed.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # Lightning's own use of a torch API
    r".*Checkpoint directory .* exists and is not empty.*",  # resuming: a fresh fit there is refused (fresh_run_folder)
    r".*The dirpath has changed from.*",
)


ADVERTS = ("💡 Tip:",)
"""Lightning's log lines that sell a product (litlogger, litmodels) rather than say something about the run."""


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTS)


def quiet() -> None:
    """Lightning's advice that does not apply (QUIET), its adverts, and the seed line, off for this process."""
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())
    # The seed is in every run's config.yaml; saying it on stderr would bury a one-line error after it.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)


def _cli_class():
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from suite.fit_args import CKPT_NAMES, fresh_run_folder, validation_schedule
    from suite.parsing import Exact
    from suite.tracking import Checkpoint

    class Parser(Exact, LightningArgumentParser):
        """Exact option names only, the nearest known ones suggested for an unknown one."""

    class ForesightCLI(LightningCLI):
        trained_data: dict = {}
        """The data settings of the checkpoint that validate/test score (`checkpoint_data`)."""

        def __init__(self, *args, **kwargs):
            # the module's configure_optimizers owns the optimizer and schedule (--model.lr, --model.warmup_steps):
            # no --optimizer/--lr_scheduler groups that would silently replace them
            super().__init__(*args, parser_class=Parser, auto_configure_optimizers=False, **kwargs)

        def _add_subcommands(self, parser, **kwargs) -> None:
            super()._add_subcommands(parser, **kwargs)
            for name, subparser in parser._subcommands_action._name_parser_map.items():
                subparser.prog = f"foresight {name}"  # not jsonargparse's `foresight [options] fit`

        @staticmethod
        def subcommands():
            return {name: spec for name, spec in LightningCLI.subcommands().items() if name != "predict"}

        def add_arguments_to_parser(self, parser):
            parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
            # Checkpoints live at a fixed place under the run's root, so `--ckpt_path=last` finds last.ckpt.
            parser.add_lightning_class_args(Checkpoint, "checkpoint")
            parser.add_argument("--overwrite", type=bool, default=False,
                                help="fit: start afresh in a --trainer.default_root_dir that already holds a run "
                                     "(its checkpoints are removed); without it such a folder is refused")
            parser.set_defaults({"checkpoint.save_last": True, "checkpoint.every_n_train_steps": 500})
            parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath",
                                  compute_fn=lambda root: os.path.join(root, "checkpoints"))

        def parse_arguments(self, parser, args):
            super().parse_arguments(parser, args)
            # LightningCLI reads the hyperparameters of --ckpt_path next: a file that is not a checkpoint fails here
            from suite.checkpoints import read

            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path is not None and ckpt_path not in CKPT_NAMES:
                read(ckpt_path, "--ckpt_path", mmap=True)
            if ckpt_path is not None and subcommand:
                resume_without_source(self.config[subcommand], ckpt_path)
            data = self.config[subcommand].get("data") or {} if subcommand else {}
            differs = {key: (value, data.get(key)) for key, value in self.trained_data.items()
                       if data.get(key) != value}
            if differs:
                said = ", ".join(f"{key} {given!r} (trained: {value!r})" for key, (value, given) in differs.items())
                print(f"foresight: warning: {subcommand} scores the checkpoint on other data than it was trained on: "
                      f"{said}", file=sys.stderr)

        def instantiate_trainer(self, **kwargs):
            # before the trainer prints or writes anything, so a mistake is the only line on stderr
            from lightning.fabric.utilities.exceptions import MisconfigurationException

            from suite.checkpoints import check_resumes
            from suite.errors import UsageError, check_writable

            self.model.check_data(self.datamodule)
            config = self.config_init[self.subcommand]
            root = config.trainer.default_root_dir or "."
            check_writable("--trainer.default_root_dir", root)
            ckpt_path = config.get("ckpt_path")
            if ckpt_path == "last":  # where this run's `last` is, if it is there
                ckpt_path = os.path.join(root, "checkpoints", "last.ckpt") if os.path.isfile(
                    os.path.join(root, "checkpoints", "last.ckpt")) else None
            if ckpt_path is not None and ckpt_path not in CKPT_NAMES:  # `last` is a file or None by now
                check_resumes(ckpt_path, self.model)
            if self.subcommand == "fit" and config.get("ckpt_path") is None:
                fresh_run_folder(root, bool(config.get("overwrite")))
            try:
                return super().instantiate_trainer(**{**validation_schedule(config.trainer), **kwargs})
            except MisconfigurationException as err:  # Lightning's checks of the trainer's own options
                raise UsageError(f"--trainer: {err}") from None

    return ForesightCLI


def resume_without_source(config, ckpt_path: str) -> None:
    """A run fitted from `--model.init_from=DIR` resumes from its checkpoint's config (the architecture included)
    instead of reading DIR again, which may since have moved or gone."""
    from suite.checkpoints import read

    model = config.get("model")
    if model is None or model.get("init_from") is None or model.get("size") is not None:
        return
    if ckpt_path == "last":
        ckpt_path = os.path.join(config.trainer.default_root_dir or ".", "checkpoints", "last.ckpt")
    if os.path.isfile(ckpt_path):
        model["size"] = read(ckpt_path, "--ckpt_path", mmap=True)["hyper_parameters"]["size"]


def lightning_main(argv: list[str]):
    """`foresight fit|validate|test ARGS`; returns the LightningCLI (its trainer, model and data) after the run.
    `validate` and `test` of a checkpoint read the data it was trained with unless data flags say otherwise (then a
    warning names what differs): a model is never scored on another task's split without a word."""
    from suite.fit_args import check_config_files, checkpoint_data, class_named_objectives

    argv = class_named_objectives(check_config_files(argv))
    trained = checkpoint_data(argv)
    if trained:  # before the user's flags, which override them
        import json

        flags = [f"--data.{key}={value if isinstance(value, str) else json.dumps(value)}"
                 for key, value in trained.items()]
        argv = [argv[0], *flags, *argv[1:]]
    from suite.data import TaskData
    from suite.module import ObjectiveLM

    cli_class = _cli_class()
    cli_class.trained_data = trained
    return cli_class(
        ObjectiveLM, TaskData, args=argv, seed_everything_default=0,
        trainer_defaults={"default_root_dir": "runs/default", "log_every_n_steps": 10, "gradient_clip_val": 1.0},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False},
    )


def check_fit_config(config: dict, what: str) -> None:
    """Parse a `foresight fit` configuration as `fit --config FILE` would, through the same LightningCLI parser,
    without building a model or data or training: a UsageError names `what` and the option it does not accept."""
    import tempfile

    import yaml
    from jsonargparse import ArgumentError

    from suite.data import TaskData
    from suite.errors import UsageError, one_line
    from suite.module import ObjectiveLM

    class ParseOnly(_cli_class()):
        def instantiate_classes(self) -> None:
            pass

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(config, file, sort_keys=False)
        file.flush()
        try:
            ParseOnly(ObjectiveLM, TaskData, args=["fit", "--config", file.name], parser_kwargs={"exit_on_error": False},
                      save_config_callback=None)
        except (ArgumentError, UsageError) as err:
            message = one_line(err).replace(f"{file.name}", "its fit config")
            raise UsageError(f"{what}: {message}") from None


def sizes_main(argv: list[str]) -> None:
    from typing import Any, Dict

    from suite.parsing import Parser
    from rich.console import Console
    from rich.table import Table

    import objectives
    from suite.errors import check_range
    from suite.overhead import size_table

    parser = Parser(prog="foresight sizes", description="Parameter counts of every model size.")
    parser.add_argument("--vocab_size", type=int, default=32000, help="vocabulary to count embeddings at")
    parser.add_argument("--objective", type=str, default="ntp", help="registry name of the objective whose "
                        f"heads to count: {', '.join(objectives.OBJECTIVES)}")
    parser.add_argument("--options", type=Dict[str, Any], default={}, help="the objective's options, e.g. '{n: 4}'")
    parser.add_argument("--seq_len", type=int, default=2048, help="context for the training FLOPs per token "
                        "(analytic: 6 per trained weight, 4 * T * d per attention layer, each head's unembedding)")
    args = parser.parse_args(argv)
    check_range("vocab_size", args.vocab_size, 1)
    check_range("seq_len", args.seq_len, 1)
    objective = objectives.build(args.objective, **args.options)
    rows = size_table(args.vocab_size, objective, args.seq_len)
    table = Table(title=f"foresight model sizes at vocabulary {args.vocab_size}, objective {objective!r}, "
                        f"FLOPs at context {args.seq_len}")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "size" else "right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else f"{v:.2f}" if isinstance(v, float) else str(v)
                        for v in row.values()))
    Console(width=max(Console().width, 160)).print(table)


def module_main(module: str):
    """A command whose `main(argv)` lives in `suite.<module>` (imported only when the command runs)."""

    def run(argv: list[str]) -> None:
        import importlib

        importlib.import_module(f"suite.{module}").main(argv)

    return run


COMMANDS = {"fit": lightning_main, "validate": lightning_main, "test": lightning_main,
            "sweep": module_main("sweep"), "agent": module_main("agent"), "eval": module_main("evaluate"),
            "lm-eval": module_main("lm_eval_cli"), "prepare": module_main("prepare"),
            "report": module_main("report"), "dashboard": module_main("dashboard"), "export": module_main("export"),
            "sizes": sizes_main, "bench": module_main("bench"), "probe": module_main("probe"),
            "tasks": lambda argv: catalog("task", argv), "objectives": lambda argv: catalog("objective", argv)}


def catalog(kind: str, argv: list[str]) -> None:
    from suite.catalog import main

    main(kind, argv)


def _explain(message: str, argv: list[str]) -> str:
    """Parser messages said the way foresight says every mistake: an unresolvable objective class with the known
    ones, an objective's unknown option with the accepted ones and the nearest, an unknown option with where the
    known ones are listed."""
    import objectives
    from suite.errors import UsageError, parse_options

    unknown = re.match(r"--model\.objective: Expected a dot import path string: (\S+)", message)
    option = re.search(r"Problem with given class_path '([\w.]+)': Option '(\w+)' is not accepted", message)
    try:
        if unknown:
            objectives.resolve(unknown.group(1))
        if option:
            name = objectives.resolve(option.group(1))
            parse_options(f"objective {name}", objectives.OBJECTIVES[name], {option.group(2): None})
    except UsageError as err:
        return str(err).replace("; known:", " for --model.objective; known:", 1) if unknown else str(err)
    if message.startswith("unrecognized arguments:"):
        command = argv[:2] if argv[0] == "bench" and len(argv) > 1 and not argv[1].startswith("-") else argv[:1]
        return f"{message}; allowed: the options `foresight {' '.join(command)} --help` lists"
    return message


def fail(message: str) -> None:
    print(f"foresight: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] not in COMMANDS:
        fail(f"unknown command {argv[0]!r}; known: {', '.join(COMMANDS)}")
    quiet()
    from jsonargparse import ArgumentError

    from suite.errors import UsageError, one_line

    command = COMMANDS[argv[0]]
    try:
        command(argv if command is lightning_main else argv[1:])
    except BrokenPipeError:  # `foresight sweep --dry-run | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except Exception as err:
        cause = _user_error(err, (UsageError, ArgumentError))
        if cause is None:
            raise  # a bug, not a bad input: keep the traceback
        fail(_explain(one_line(cause), argv))


def _user_error(err: BaseException, kinds: tuple) -> BaseException | None:
    """The user's mistake behind `err`: itself or an exception it was raised from (jsonargparse wraps errors
    from the classes it instantiates)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kinds):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


if __name__ == "__main__":
    main()
