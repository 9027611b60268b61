"""Mistakes a user can make: one exception type, the checks that raise it, and option parsing against a signature.
The CLI prints a UsageError as a single line and exits non-zero."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A bad value from the user: the message names the value and what is allowed."""


def nearest(word: str, choices, prefix: str = "") -> str:
    """"; did you mean 'x'?" for the choices closest to a mistyped `word` (difflib's ratio), each written after
    `prefix` (e.g. "--"), or nothing."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(choice) for choice in choices], n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(prefix + choice) for choice in close)}?" if close else ""


def check_choice(what: str, value, allowed) -> None:
    """Raise a UsageError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise UsageError(f"unknown {what} {value!r}; known: {', '.join(map(str, allowed))}{nearest(value, allowed)}")


def check_range(what: str, value, low=None, high=None) -> None:
    """Raise a UsageError unless low <= value <= high (either bound may be None)."""
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"<= {high}" if low is None else f"in [{low}, {high}]"
        raise UsageError(f"{what}={value!r} is out of range; allowed: {bounds}")


def check_writable(what: str, folder) -> None:
    """Raise a UsageError unless `folder` is a folder this process can write, or one that `mkdir -p` can make: the
    nearest folder of it and its parents that exists takes an unnamed temporary file. Makes and leaves nothing."""
    folder = Path(folder)
    try:
        existing = next(path for path in (folder, *folder.parents) if path.exists())
        if not existing.is_dir():
            raise UsageError(f"{what} {str(folder)!r} cannot be written ({str(existing)!r} is a file); allowed: a "
                             "folder you can write")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise UsageError(f"{what} {str(folder)!r} cannot be written ({err.strerror or type(err).__name__}); allowed: a "
                         "folder you can write") from None


NOISE = re.compile(r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*|"
                   r"Given value: NestedArg.*|Expected a path but .* either not accessible or invalid|"
                   r"Expected a NoneType)$")


def one_line(message, key_prefix: str = "--") -> str:
    """A parser message (jsonargparse's nested union errors span many lines) folded into one readable line, its
    keys written as options (`key_prefix` + key)."""
    message = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", str(message))
    message = re.sub(r'Parser key "([\w.]+)":', key_prefix + r"\1:", message)
    message = re.sub(r"the following arguments are required: (.+)", lambda m: "missing required options: " + ", ".join(
        key_prefix + key.strip() for key in m.group(1).split(",")), message)
    lines = [re.sub(r"^- ", "", line.strip()) for line in message.splitlines()]
    kept = [line for line in lines if line and not NOISE.match(line)]
    return " ".join(kept).replace(": :", ":").replace("Expected a int", "Expected an int")


def class_options(cls: type):
    """A jsonargparse parser of `cls.__init__`'s options, and the actions of those options (their dest, default,
    help and whether required): what parse_options checks against and `foresight tasks|objectives` lists."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, fail_untyped=False)
    return parser, [action for action in parser._actions if action.dest not in ("help", "config")]


def parse_options(what: str, cls: type, options: dict) -> dict:
    """`options` checked and typed against `cls.__init__`'s signature (strings from the command line such as
    '3' become ints); an unknown key or a wrong type is a UsageError that names it."""
    parser, actions = class_options(cls)
    accepted = [action.dest for action in actions]
    for key in options:
        if key not in accepted:
            raise UsageError(f"{what}: unknown option {key!r}; allowed: {', '.join(accepted) or 'none'}"
                             f"{nearest(key, accepted)}")
    try:
        return parser.parse_object(dict(options)).as_dict()
    except Exception as err:  # jsonargparse raises its ArgumentError; the message is what the user needs
        raise UsageError(f"{what}: {one_line(err, key_prefix='')}") from None


def build_registered(kind: str, registry: dict[str, type], name: str, options: dict | None = None):
    """Instantiate registry[name] with `options`, every mistake a one-line UsageError."""
    check_choice(kind, name, registry)
    cls = registry[name]
    return cls(**parse_options(f"{kind} {name}", cls, options or {}))
