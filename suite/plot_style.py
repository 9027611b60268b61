"""How the report's plots tell lines apart: one colour per objective in every plot (the registry's order, so
parallel MTP has the same colour in the learning curves as in the score plots of any sweep), and within an
objective a line style and marker per setting (a labelled variant, a horizon n), so that no two lines look alike;
plus the reference lines every plot labels (next-token prediction's level, a task's chance level)."""

from __future__ import annotations

import inspect
from pathlib import Path

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
DASHES = ("-", "--", "-.", ":")
"""Line styles in order: for the settings of one objective, and for each seed where seeds are drawn one by one."""
OTHER = "C9"
"""The colour of a label whose objective is not registered (rows of an older foresight)."""


def objective_colour(registry_name: str) -> str:
    import objectives

    names = list(objectives.OBJECTIVES)
    return f"C{names.index(registry_name)}" if registry_name in names else OTHER


def styles(entries: list[dict], name) -> dict[str, dict]:
    """matplotlib `color`, `linestyle` and `marker` for each line `name(entry)` of the entries: the colour is the
    entry's objective's; the k-th line of one objective gets the k-th line style and marker."""
    found: dict[str, dict] = {}
    per_objective: dict[str, int] = {}
    for entry in entries:
        line = name(entry)
        if line in found:
            continue
        k = per_objective.get(entry["registry_name"], 0)
        per_objective[entry["registry_name"]] = k + 1
        found[line] = {"color": objective_colour(entry["registry_name"]), "linestyle": DASHES[k % len(DASHES)],
                       "marker": MARKERS[k % len(MARKERS)]}
    return found


def chance(entries: list[dict], task: str, metric: str | None) -> tuple[float, str] | None:
    """(level, label) of what guessing scores on `task`'s `metric` with the options the entries were scored with
    (their data's, as `foresight eval` reads them), where the task says (`Task.chance`) and every entry agrees."""
    import tasks
    from suite.checkpoints import task_options

    cls = tasks.TASKS.get(task)
    if cls is None or metric is None or not entries:
        return None
    defaults = {key: p.default for key, p in inspect.signature(cls.__init__).parameters.items()
                if p.default is not p.empty}
    levels = {cls.chance(metric, {**defaults, **task_options({"datamodule_hyper_parameters": entry.get("data")},
                                                             task)}) for entry in entries}
    return levels.pop() if len(levels) == 1 and None not in levels else None


def log_ticks(axis) -> None:
    """Tick labels on a log y axis at 1, 2 and 5 of each decade, in plain numbers (matplotlib labels only the
    decades, which leaves a loss curve spanning one decade with two labels)."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def figure_legend(fig, skip=("_",)) -> None:
    """One legend for the figure, right of the panels: every labelled line or bar of every panel, once."""
    handles: dict[str, object] = {}
    for axis in fig.axes:
        for handle, text in zip(*axis.get_legend_handles_labels()):
            if not text.startswith(skip):
                handles.setdefault(text, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")


def mean_curve(entry: dict, key: str) -> list[tuple[int, float]]:
    """An entry's curve of `key`: at each step, the mean over the seeds that logged it there."""
    by_step: dict[int, list[float]] = {}
    for logged in entry["curves"]:
        for step, value in logged.get(key, []):
            by_step.setdefault(int(step), []).append(float(value))
    return [(step, sum(values) / len(values)) for step, values in sorted(by_step.items())]


def save(fig, path: Path) -> None:
    # no Software key: the PNG depends on the data, not on the matplotlib version that drew it
    fig.savefig(path, dpi=100, metadata={"Software": None})
