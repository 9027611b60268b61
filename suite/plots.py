"""The plots of `foresight report`, drawn from the comparison (`suite.comparison`) alone: scores against n and
against size, cost ratios against size, and learning curves from the rows' curves. Written without the matplotlib
version in the file, so the same rows give byte-identical PNGs."""

from __future__ import annotations

from pathlib import Path

from suite.comparison import REFERENCE, label, size_order, table_columns
from suite.plot_style import chance, figure_legend, log_ticks, mean_curve, save, styles
from suite.plots_heads import plot_gradient_cosines, plot_head_losses, plot_plans


def score_value(entry: dict, kind: str, name: str, metric: str | None) -> tuple[float, float] | None:
    """(mean, error bar) of one score of an entry; the error bar is the CI half-width, 0 with one seed."""
    interval = entry["families"].get(name) if kind == "family" else (entry["scores"].get(name) or {}).get(metric)
    return None if interval is None else (interval["mean"], interval["half_width"] or 0.0)


OFFSET = 0.07
"""Horizontal offset between the objectives' points at one n in score_vs_n, so that no marker hides another."""


def plot_score_vs_n(entries: list[dict], path: Path) -> bool:
    """Per size and score: one line per objective over n, with its 95% interval over seeds, each objective
    shifted a little along n so that equal scores stay visible; NTP is the point at n=1 and a labelled dotted
    level, a task's chance level a labelled dash-dot line. A score whose means all lie in [0, 1] is drawn on that
    range: a wide interval of few seeds runs off it rather than squeezing the means into a corner."""
    from matplotlib.figure import Figure

    columns, sizes = table_columns(entries), sorted({entry["size"] for entry in entries}, key=size_order)
    if not any(score_value(entry, *column) for entry in entries for column in columns):
        return False
    fig = Figure(figsize=(4.5 * len(columns) + 2.5, 3.4 * len(sizes)), layout="constrained")
    style = styles(entries, lambda entry: entry["objective"])
    for row_axes, size in zip(fig.subplots(len(sizes), len(columns), squeeze=False), sizes):
        for axis, (kind, name, metric) in zip(row_axes, columns):
            by_objective: dict[str, list] = {}
            for entry in entries:
                value = score_value(entry, kind, name, metric)
                if entry["size"] == size and value is not None:
                    by_objective.setdefault(entry["objective"], []).append((entry["n"] or 1, *value))
            at_n: dict[int, list[str]] = {}  # the objectives with a point at each n, centred on n
            for objective, points in by_objective.items():
                for n, _, _ in points:
                    at_n.setdefault(n, []).append(objective)
            level = chance([e for e in entries if e["size"] == size], name, metric) if kind == "task" else None
            reference = None
            for objective, points in by_objective.items():
                ns, means, errors = zip(*sorted(points))
                shifted = [n + (at_n[n].index(objective) - (len(at_n[n]) - 1) / 2) * OFFSET for n in ns]
                axis.errorbar(shifted, means, yerr=errors, capsize=3, label=objective, **style[objective])
                reference = means[0] if objective == REFERENCE else reference
            merged = reference is not None and level is not None and abs(reference - level[0]) < 0.01
            if reference is not None:  # two lines on one level are one line with both names
                axis.axhline(reference, linestyle=":", color="black", linewidth=1, label=f"{REFERENCE} level (n = 1)"
                             + (f" = chance: {level[1]}" if merged else ""))
            if level is not None and not merged:
                axis.axhline(level[0], linestyle="-.", color="gray", linewidth=1, label=f"chance: {level[1]}")
            bars = any(len(entry["seeds"]) > 1 for entry in entries)
            axis.set(title=f"{name} ({size})", xlabel="n (prediction horizon; NTP at 1)",
                     ylabel=(metric or "family score") + (" (bars: 95% over seeds)" if bars else " (one seed)"))
            axis.set_xticks(sorted({n for points in by_objective.values() for n, _, _ in points}))
            means = [mean for points in by_objective.values() for _, mean, _ in points]
            if means and all(0.0 <= mean <= 1.0 for mean in means):
                axis.set_ylim(-0.05, 1.05)
    figure_legend(fig)
    save(fig, path)
    return True


def plot_by_size(entries: list[dict], series: list[tuple[str, callable]], path: Path, skip_reference: bool) -> bool:
    """One panel per (title, value of an entry or None), x the sizes small to large, one line per objective and n;
    with one size, one bar per objective and n. Ratios to NTP (skip_reference) get NTP's 1 as a labelled line."""
    from matplotlib.figure import Figure

    sizes = sorted({entry["size"] for entry in entries}, key=size_order)
    shown = [entry for entry in entries if not (skip_reference and entry["objective"] == REFERENCE)]
    if not any(value(entry) is not None for entry in shown for _, value in series):
        return False
    names = list(dict.fromkeys(label(entry["objective"], entry["n"]) for entry in shown))
    fig = Figure(figsize=(4.5 * len(series) + (0.25 * len(names) if len(sizes) == 1 else 2.5), 3.8),
                 layout="constrained")
    style = styles(shown, lambda entry: label(entry["objective"], entry["n"]))
    for axis, (title, value) in zip(fig.subplots(1, len(series), squeeze=False)[0], series):
        lines: dict[str, list] = {}
        for entry in shown:
            if value(entry) is not None:
                lines.setdefault(label(entry["objective"], entry["n"]), []).append((sizes.index(entry["size"]),
                                                                                   *value(entry)))
        if len(sizes) == 1:  # a line through one point per objective is a column of dots: bars
            for index, (name, ((_, mean, error),)) in enumerate(lines.items()):
                axis.bar(index, mean, yerr=error or None, capsize=3, color=style[name]["color"],
                         hatch=None if style[name]["linestyle"] == "-" else "//", label=name)
            axis.set_xticks(range(len(lines)), list(lines), rotation=45, ha="right", fontsize="small")
            axis.set(title=f"{title} ({sizes[0]})")
        else:
            for name, points in lines.items():
                xs, means, errors = zip(*sorted(points))
                axis.errorbar(xs, means, yerr=errors, capsize=3, label=name, **style[name])
            axis.set_xticks(range(len(sizes)), sizes)
            axis.set(title=title, xlabel="model size")
        if skip_reference:
            reference = axis.axhline(1.0, linestyle=":", color="black", linewidth=1, label=f"{REFERENCE} = 1")
            if len(sizes) == 1:  # the bars are named on the x axis; the reference line needs a legend of its own
                axis.legend(handles=[reference], fontsize="small", loc="upper left")
    if len(sizes) > 1:
        figure_legend(fig)
    save(fig, path)
    return True


def ratio_value(name: str):
    def value(entry: dict):
        ratio = entry["overhead"][name]["ratio"]
        return None if ratio is None else (ratio, 0.0)

    return value


LOSSES = (("train/loss/head_1", "next-token loss, training"), ("val/loss/head_1", "next-token loss, validation"))
"""The learning curves' loss panels: what every objective shares, its next-token head, on the training batches and
on the validation split side by side. What each objective adds (a sum over its heads, on another scale) is drawn
head by head in head_losses.png."""


def validation_panels(entries: list[dict]) -> list[tuple[str, str]]:
    """(key, title) of each task's primary score during training (`val/<task>/<metric>`), where rows have one."""
    panels = []
    for kind, task, metric in table_columns(entries):
        key = f"val/{task}/{metric}"
        if kind == "task" and any(key in logged for entry in entries for logged in entry["curves"]):
            panels.append((key, f"validation {task} {metric}"))
    return panels


def seed_curves(entry: dict, key: str) -> list[list[tuple[int, float]]]:
    """An entry's curve of `key` for each seed that logged it."""
    return [[(int(step), float(value)) for step, value in logged[key]] for logged in entry["curves"]
            if logged.get(key)]


def plot_learning_curves(entries: list[dict], path: Path) -> bool:
    """Per size: the losses (LOSSES, training beside validation) and each task's validation score against step,
    one line per objective and n, the mean over the seeds logged at a step, and in the validation score panels
    each seed faintly (a mean of a seed that solved the task and two that did not is no seed's curve), with the
    task's chance level; from the rows' curves, so runs.jsonl alone redraws it. Panels no row has are left out."""
    from matplotlib.figure import Figure

    curves: dict[tuple[str, str], dict[str, list]] = {}  # (size, key) -> label -> [(step, value)]
    for entry in entries:
        for key, _ in [*LOSSES, *validation_panels(entries)]:
            points = mean_curve(entry, key)
            if points:
                curves.setdefault((entry["size"], key), {})[label(entry["objective"], entry["n"])] = points
    panels = [(key, title) for key, title in [*LOSSES, *validation_panels(entries)]
              if any(drawn == key for _, drawn in curves)]
    if not curves:
        return False
    sizes = sorted({size for size, _ in curves}, key=size_order)
    fig = Figure(figsize=(5 * len(panels) + 2.5, 4 * len(sizes)), layout="constrained")
    style = styles(entries, lambda entry: label(entry["objective"], entry["n"]))
    by_label = {(entry["size"], label(entry["objective"], entry["n"])): entry for entry in entries}
    for row_axes, size in zip(fig.subplots(len(sizes), len(panels), squeeze=False), sizes):
        for axis, (key, title) in zip(row_axes, panels):
            loss = "/loss" in key
            for name, points in curves.get((size, key), {}).items():
                steps, values = zip(*points)
                axis.plot(steps, values, label=name, **style[name], markevery=max(1, len(steps) // 8))
                seeds = seed_curves(by_label[(size, name)], key)
                for seed in (seeds if not loss and len(seeds) > 1 else []):
                    axis.plot(*zip(*seed), color=style[name]["color"], linewidth=0.7, alpha=0.35,
                              label="_seed")  # `_`: no legend entry
            if not loss:
                task, metric = key.split("/")[1:3]
                level = chance([e for e in entries if e["size"] == size], task, metric)
                if level is not None:
                    axis.axhline(level[0], linestyle="-.", color="gray", linewidth=1, label=f"chance: {level[1]}")
            shown = f"{title} ({size})" + ("" if loss else "\nmean over seeds; faint: each seed")
            axis.set(title=shown, xlabel="step", ylabel=key, yscale="log" if loss else "linear")
            if loss:
                if axis.get_ylim()[0] < LOSS_FLOOR:  # a solved task's loss near 0 would flatten the rest
                    axis.set_ylim(bottom=LOSS_FLOOR)
                    axis.set_ylabel(f"{key} (from {LOSS_FLOOR:g})")
                log_ticks(axis)
    figure_legend(fig)
    save(fig, path)
    return True


LOSS_FLOOR = 1e-3
"""The lowest loss the learning curves show."""


NOT_DRAWN = {
    "score_vs_n.png": "no scores: the sweep evaluated no task",
    "score_vs_size.png": "the sweep has one model size",
    "overhead_vs_size.png": f"the sweep has one model size (the table has each objective's cost against "
                            f"{REFERENCE}), or no {REFERENCE} point of the same size and seed to divide by",
    "learning_curves.png": "no row has training curves; rows written before foresight kept them have none",
    "head_losses.png": "no objective with several heads has per-head training curves",
    "plans.png": "no row has per-head plan curves (measured on path tasks, by rows written since foresight measures "
                 "them)",
    "gradient_cosines.png": "no objective with several heads has gradient curves (rows before foresight logged them "
                            "have none)",
    "across_sizes.png": f"no objective has scores at 3 or more sizes beside {REFERENCE}'s",
}
"""Why each plot may be missing, said in the report."""


def write_plots(folder: Path, entries: list[dict], extra: dict | None = None) -> tuple[list[str], dict[str, str]]:
    """The plots that have something to show, written to folder/plots/: their paths relative to `folder`, and
    {plot: why it was not drawn} for the others; `extra` adds {name: make(path) -> drawn} of the report's own."""
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    written, missing = [], {}
    columns = table_columns(entries)
    several_sizes = len({entry["size"] for entry in entries}) > 1
    score_series = [(f"{name}" if kind == "family" else f"{name} {metric}",
                     lambda entry, column=(kind, name, metric): score_value(entry, *column))
                    for kind, name, metric in columns]
    makers = {
        "score_vs_n.png": lambda path: plot_score_vs_n(entries, path),
        "score_vs_size.png": lambda path: several_sizes and plot_by_size(entries, score_series, path, False),
        "overhead_vs_size.png": lambda path: several_sizes and plot_by_size(
            entries, [(f"step time / {REFERENCE}", ratio_value("step_time_s")),
                      (f"training memory / {REFERENCE}", ratio_value("train_memory_bytes"))], path, True),
        "learning_curves.png": lambda path: plot_learning_curves(entries, path),
        "head_losses.png": lambda path: plot_head_losses(entries, path),
        "plans.png": lambda path: plot_plans(entries, path),
        "gradient_cosines.png": lambda path: plot_gradient_cosines(entries, path),
        **(extra or {}),
    }
    for name, make in makers.items():
        if make(plots / name):
            written.append(f"plots/{name}")
        else:
            missing[name] = NOT_DRAWN[name]
    return written, missing
