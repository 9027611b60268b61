"""Task families: generators, tokenizers and scorers; their lm-eval YAMLs sit beside them."""

from __future__ import annotations

from suite import errors
from tasks.base import SPLITS, Examples, Task
from tasks.star_graph import StarGraph

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (StarGraph,)}
"""Registry name -> class. Adding a task family is one file and one entry here."""


def build(name: str, **options) -> Task:
    """A task by registry name, its options checked against the class signature."""
    return errors.build("task", TASKS, name, options)


__all__ = ["SPLITS", "TASKS", "Examples", "StarGraph", "Task", "build"]
