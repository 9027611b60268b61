"""The task families a mix can draw on: every registered task but the mix itself, which sits one floor up."""

from __future__ import annotations

from suite.errors import build_registered
from tasks.base import Task
from tasks.biographies import Biographies
from tasks.corpus import Corpus
from tasks.countdown import Countdown
from tasks.humaneval import HumanEval
from tasks.python_stdlib import PythonStdlib
from tasks.sat import Sat
from tasks.star_graph import StarGraph
from tasks.synthetic_code import SyntheticCode
from tasks.tree_path import TreePath

COMPONENTS: dict[str, type[Task]] = {
    cls.name: cls for cls in (StarGraph, Countdown, Biographies, SyntheticCode, HumanEval, PythonStdlib, Corpus, TreePath,
                               Sat)}
"""Registry name -> class of the families that are tasks of their own."""


def build_component(name: str, **options) -> Task:
    """A mix component by registry name, its options checked against the class signature."""
    return build_registered("task", COMPONENTS, name, options)
