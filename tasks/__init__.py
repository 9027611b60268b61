"""Task families: generators, tokenizers and scorers; their lm-eval YAMLs sit beside them."""

from __future__ import annotations

from suite.errors import build_registered
from tasks.base import EOS, SPECIAL_TOKENS, SPLITS, Examples, Task, encode_documents
from tasks.biographies import Biographies
from tasks.corpus import Corpus
from tasks.countdown import Countdown
from tasks.humaneval import HumanEval
from tasks.mix import Mix
from tasks.python_stdlib import PythonStdlib
from tasks.sat import Sat
from tasks.registry import COMPONENTS
from tasks.star_graph import StarGraph
from tasks.synthetic_code import SyntheticCode
from tasks.tree_path import TreePath

TASKS: dict[str, type[Task]] = {**COMPONENTS, Mix.name: Mix, Corpus.name: Corpus}
"""Registry name -> class. Adding a task family is one file and one entry in `tasks.registry.COMPONENTS`."""


def build(name: str, **options) -> Task:
    """A task by registry name, its options checked against the class signature."""
    return build_registered("task", TASKS, name, options)


__all__ = ["EOS", "SPECIAL_TOKENS", "SPLITS", "TASKS", "Biographies", "Corpus", "Countdown", "Examples", "HumanEval",
           "Mix", "PythonStdlib", "Sat", "StarGraph", "SyntheticCode", "Task", "TreePath", "build", "encode_documents"]
