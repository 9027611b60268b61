"""`foresight tasks [NAME...]` and `foresight objectives [NAME...]`: every registered task family and objective
with its options, their defaults and what they mean, read from the class signature and docstring that the
parsers check options against (so the listing is never out of step with what is accepted)."""

from __future__ import annotations

import re
import shutil
import sys
import textwrap


def summary(cls: type) -> str:
    """The first sentence of the class's docstring, or of its module's."""
    doc = " ".join((cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").split())
    end = re.search(r"(?<!\.)\.\s(?=[A-Z(])", doc)  # not "x .. y", not "e.g. x"
    return doc if end is None else doc[:end.start() + 1]


REQUIRED = object()
"""The default of an option that has none."""


def options(cls: type) -> list[tuple[str, object, str]]:
    """(name, default or REQUIRED, help) of each option `cls` takes, as `suite.errors.parse_options` accepts
    them."""
    from suite.errors import class_options

    return [(action.dest, REQUIRED if action.required else action.default, " ".join((action.help or "").split()))
            for action in class_options(cls)[1]]


def listing(kind: str, registry: dict[str, type], names: list[str], flag: str) -> str:
    """The text of `foresight tasks|objectives`: each entry, its summary, and its options as `flag` + name."""
    from suite.errors import check_choice

    for name in names:
        check_choice(kind, name, registry)
    width = min(shutil.get_terminal_size((120, 24)).columns, 120)
    lines = []
    for name in names or registry:
        cls = registry[name]
        lines += textwrap.wrap(f"{name} ({cls.__name__}): {summary(cls)}", width, subsequent_indent="    ")
        for option, default, text in options(cls):
            given = " (required)" if default is REQUIRED else f"={default!r}"
            lines += textwrap.wrap(f"{flag}{option}{given}  {text}", width, initial_indent="  ",
                                   subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines).rstrip()


def main(kind: str, argv: list[str]) -> None:
    import objectives
    import tasks
    from suite.parsing import Parser

    registry, flag = ((tasks.TASKS, "--data.options.") if kind == "task" else
                      (objectives.OBJECTIVES, "--model.objective."))
    parser = Parser(prog=f"foresight {kind}s", description=f"Every registered {kind} with its options, defaults and "
                    f"docs (options are {flag}NAME=VALUE for fit, the same keys in a sweep's YAML).")
    parser.add_argument("names", nargs="*", type=str, help=f"only these {kind}s (default: all): "
                        f"{', '.join(registry)}")
    names = parser.parse_args(argv).names
    if kind == "objective":
        names = [objectives.resolve(name) for name in names]
    print(listing(kind, registry, names, flag))
