"""Fault injection for the reliability tests. With FORESIGHT_FAULT=<moment> in its environment, a process kills its
whole process group with SIGKILL at that moment, as a node failure, the OOM killer or a preempted job would: the
sweep and its point die together, nothing gets to clean up. Unset (always, outside the tests), nothing happens.

Moments:
    eval   a sweep point has been scored by lm-eval but has not saved eval.json
    row    half of a row has been written to runs.jsonl (a torn line)"""

from __future__ import annotations

import os
import signal

MOMENTS = ("eval", "row")


def armed(moment: str) -> bool:
    return os.environ.get("FORESIGHT_FAULT") == moment


def die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)


def fault(moment: str) -> None:
    """Die here when FORESIGHT_FAULT names this moment."""
    if armed(moment):
        die()
