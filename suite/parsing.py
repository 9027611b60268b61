"""The command-line parser of every foresight command: jsonargparse's, raising its errors (the CLI prints them as
one line), taking only exact option names (an abbreviation such as `--trainer.max_step` is a typo to report, not
a guess to run), and answering an unknown option with the nearest known ones."""

from __future__ import annotations

import re

from jsonargparse import ArgumentParser

from suite.errors import nearest


class Exact:
    """Mixin for a jsonargparse parser class (foresight's own, LightningCLI's)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown and "did you mean" not in message:  # a subcommand's error passes through its parent's
            parser = getattr(ex, "subcommand_parser", None) or self
            known = [next(option for option in action.option_strings if option.startswith("--"))[2:]
                     for action in parser._actions if any(option.startswith("--") for option in action.option_strings)]
            message += nearest(unknown.group(1).split("=", 1)[0].lstrip("-"), known, prefix="--")
        super().error(message, ex)


class Parser(Exact, ArgumentParser):
    """`Parser(prog=..., description=...)` for foresight's own commands."""
