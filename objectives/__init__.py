"""Training objectives behind one interface (`objectives.base.Objective`), and their registry."""

from __future__ import annotations

from objectives.base import IGNORE, Objective, future_targets, token_loss
from objectives.fused import linear_cross_entropy
from objectives.heads import Head, head_losses
from objectives.causal_mtp import CausalMTP
from objectives.fsp_bow import FSPBoW
from objectives.fsp_revlm import FSPRevLM
from objectives.ntp import NTP
from objectives.parallel_mtp import ParallelMTP
from objectives.self_distill_mtp import SelfDistillMTP
from objectives.sequential_mtp import SequentialMTP
from objectives.teacherless import Teacherless
from suite.errors import UsageError, build_registered, nearest

OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls for cls in (NTP, ParallelMTP, CausalMTP, SequentialMTP, FSPBoW, FSPRevLM, Teacherless,
                              SelfDistillMTP)}
"""Registry name -> class. Adding an objective is one file and one entry here."""


def resolve(name: str) -> str:
    """The registry name of an objective named either way, `parallel_mtp` or `ParallelMTP` (the class, as
    `fit --model.objective` takes it): every command takes both spellings."""
    for key, cls in OBJECTIVES.items():
        if name in (key, cls.__name__, f"objectives.{cls.__name__}", f"{cls.__module__}.{cls.__qualname__}"):
            return key
    known = ", ".join(f"{key} ({cls.__name__})" for key, cls in OBJECTIVES.items())
    spellings = [spelling for key, cls in OBJECTIVES.items() for spelling in (key, cls.__name__)]
    raise UsageError(f"unknown objective {name!r}; known: {known}{nearest(name, spellings)}")


def build(name: str, **options) -> Objective:
    """An objective by registry or class name, its options checked against the class signature."""
    return build_registered("objective", OBJECTIVES, resolve(name), options)


def from_spec(spec: dict | str | Objective) -> Objective:
    """An objective from `Objective.spec()` output, a registry or class name, or an instance (returned as is).

    Only registered classes resolve, so a checkpoint cannot name arbitrary code to run."""
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, str):
        spec = {"class_path": spec}
    return build(spec.get("class_path", ""), **spec.get("init_args", {}))


__all__ = ["IGNORE", "NTP", "OBJECTIVES", "CausalMTP", "FSPBoW", "FSPRevLM", "Head", "Objective", "ParallelMTP",
           "SelfDistillMTP", "SequentialMTP", "Teacherless", "build", "from_spec", "resolve", "future_targets",
           "head_losses", "linear_cross_entropy", "token_loss"]
