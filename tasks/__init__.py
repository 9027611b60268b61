"""Task families: generators, tokenizers and scorers; their lm-eval YAMLs sit beside them."""

from __future__ import annotations

from suite import errors
from tasks.base import EOS, SPECIAL_TOKENS, SPLITS, Examples, Task, encode_documents
from tasks.humaneval import HumanEval
from tasks.mix import Mix
from tasks.python_stdlib import PythonStdlib
from tasks.star_graph import StarGraph

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (StarGraph, HumanEval, PythonStdlib, Mix)}
"""Registry name -> class. Adding a task family is one file and one entry here."""


def build(name: str, **options) -> Task:
    """A task by registry name, its options checked against the class signature."""
    return errors.build("task", TASKS, name, options)


__all__ = ["EOS", "SPECIAL_TOKENS", "SPLITS", "TASKS", "Examples", "HumanEval", "Mix", "PythonStdlib", "StarGraph", "Task", "build",
           "encode_documents"]
