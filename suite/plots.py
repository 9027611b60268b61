"""The plots of `foresight report`, drawn from the comparison (`suite.comparison`) alone: scores against n and
against size, cost ratios against size, and learning curves from the rows' curves. Written without the matplotlib
version in the file, so the same rows give byte-identical PNGs."""

from __future__ import annotations

from pathlib import Path

from suite.comparison import REFERENCE, label, size_order, table_columns
from suite.results import CURVES

def score_value(entry: dict, kind: str, name: str, metric: str | None) -> tuple[float, float] | None:
    """(mean, error bar) of one score of an entry; the error bar is the CI half-width, 0 with one seed."""
    interval = entry["families"].get(name) if kind == "family" else (entry["scores"].get(name) or {}).get(metric)
    return None if interval is None else (interval["mean"], interval["half_width"] or 0.0)


def line_styles(entries: list[dict], by_objective: bool = False) -> dict[str, dict]:
    """matplotlib color and linestyle per objective and n (or per objective): ten colors, solid, then dashed,
    then dotted, so that no two lines of a plot look alike."""
    labels = list(dict.fromkeys(entry["objective"] if by_objective else label(entry["objective"], entry["n"])
                                for entry in entries))
    return {name: {"color": f"C{index % 10}", "linestyle": DASHES[index // 10 % len(DASHES)]}
            for index, name in enumerate(labels)}


DASHES = ("-", "--", ":", "-.")
"""Linestyles in order: for the eleventh line on (`line_styles`), and for each seed where seeds are drawn one by
one (by its position among an entry's seeds)."""


def plot_score_vs_n(entries: list[dict], path: Path) -> bool:
    """Per size and score: one line per objective over n, with its 95% interval over seeds; NTP is the point at
    n=1 and a dotted level. A score whose means all lie in [0, 1] is drawn on that range: a wide interval of few
    seeds runs off it rather than squeezing the means into a corner."""
    from matplotlib.figure import Figure

    columns, sizes = table_columns(entries), sorted({entry["size"] for entry in entries}, key=size_order)
    if not any(score_value(entry, *column) for entry in entries for column in columns):
        return False
    fig = Figure(figsize=(4 * len(columns) + 2, 3.2 * len(sizes)), layout="constrained")
    styles = line_styles(entries, by_objective=True)
    for row_axes, size in zip(fig.subplots(len(sizes), len(columns), squeeze=False), sizes):
        for axis, (kind, name, metric) in zip(row_axes, columns):
            by_objective: dict[str, list] = {}
            for entry in entries:
                value = score_value(entry, kind, name, metric)
                if entry["size"] == size and value is not None:
                    by_objective.setdefault(entry["objective"], []).append((entry["n"] or 1, *value))
            for objective, points in by_objective.items():
                ns, means, errors = zip(*sorted(points))
                axis.errorbar(ns, means, yerr=errors, marker="o", capsize=3, label=objective, **styles[objective])
                if objective == REFERENCE:
                    axis.axhline(means[0], linestyle=":", color="black", linewidth=1)
            axis.set(title=f"{name} ({size})", xlabel="n (prediction horizon; NTP at 1)",
                     ylabel=(metric or "family score") + " (bars: 95% over seeds)")
            means = [mean for points in by_objective.values() for _, mean, _ in points]
            if means and all(0.0 <= mean <= 1.0 for mean in means):
                axis.set_ylim(-0.05, 1.05)
    handles = {line.get_label(): line for axis in fig.axes for line in axis.containers}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    save(fig, path)
    return True


def plot_by_size(entries: list[dict], series: list[tuple[str, callable]], path: Path, skip_reference: bool) -> bool:
    """One panel per (title, value of an entry or None), x the sizes small to large, one line per objective and n."""
    from matplotlib.figure import Figure

    sizes = sorted({entry["size"] for entry in entries}, key=size_order)
    shown = [entry for entry in entries if not (skip_reference and entry["objective"] == REFERENCE)]
    if not any(value(entry) is not None for entry in shown for _, value in series):
        return False
    fig = Figure(figsize=(4.5 * len(series), 3.5), layout="constrained")
    styles = line_styles(entries)
    for axis, (title, value) in zip(fig.subplots(1, len(series), squeeze=False)[0], series):
        lines: dict[str, list] = {}
        for entry in shown:
            if value(entry) is not None:
                lines.setdefault(label(entry["objective"], entry["n"]), []).append((sizes.index(entry["size"]),
                                                                                   *value(entry)))
        for name, points in lines.items():
            xs, means, errors = zip(*sorted(points))
            axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name, **styles[name])
        if skip_reference:
            axis.axhline(1.0, linestyle=":", color="black", linewidth=1)
        axis.set_xticks(range(len(sizes)), sizes)
        axis.set(title=title, xlabel="model size")
        if lines:
            axis.legend(fontsize="small")
    save(fig, path)
    return True


def ratio_value(name: str):
    def value(entry: dict):
        ratio = entry["overhead"][name]["ratio"]
        return None if ratio is None else (ratio, 0.0)

    return value


LOSSES = tuple(zip(CURVES, ("next-token loss (all have it)", "the objective's own loss")))
"""The learning curves: what every objective shares, and what each one optimizes."""


def mean_curve(entry: dict, key: str) -> list[tuple[int, float]]:
    """An entry's curve of `key`: at each step, the mean over the seeds that logged it there."""
    by_step: dict[int, list[float]] = {}
    for logged in entry["curves"]:
        for step, value in logged.get(key, []):
            by_step.setdefault(int(step), []).append(float(value))
    return [(step, sum(values) / len(values)) for step, values in sorted(by_step.items())]


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
    """Per size: the two losses (LOSSES) and each task's validation score against step, one line per objective
    and n, the mean over the seeds logged at a step, and in the validation panels each seed faintly (a mean of a
    seed that solved the task and two that did not is no seed's curve); from the rows' curves, so runs.jsonl alone
    redraws it."""
    from matplotlib.figure import Figure

    panels = [*LOSSES, *validation_panels(entries)]
    curves: dict[tuple[str, str], dict[str, list]] = {}  # (size, key) -> label -> [(step, value)]
    for entry in entries:
        for key, _ in panels:
            points = mean_curve(entry, key)
            if points:
                curves.setdefault((entry["size"], key), {})[label(entry["objective"], entry["n"])] = points
    if not curves:
        return False
    sizes = sorted({size for size, _ in curves}, key=size_order)
    fig = Figure(figsize=(5.5 * len(panels) + 2, 4 * len(sizes)), layout="constrained")
    styles = line_styles(entries)
    by_label = {(entry["size"], label(entry["objective"], entry["n"])): entry for entry in entries}
    for row_axes, size in zip(fig.subplots(len(sizes), len(panels), squeeze=False), sizes):
        for axis, (key, title) in zip(row_axes, panels):
            loss = key.startswith("train/")
            for name, points in curves.get((size, key), {}).items():
                steps, values = zip(*points)
                axis.plot(steps, values, label=name, **styles[name], marker="." if len(steps) < 30 else None)
                seeds = seed_curves(by_label[(size, name)], key)
                for seed in (seeds if not loss and len(seeds) > 1 else []):
                    axis.plot(*zip(*seed), color=styles[name]["color"], linewidth=0.7, alpha=0.35,
                              label="_seed")  # `_`: no legend entry
            shown = f"{title} ({size})" + ("" if loss else "\nmean over seeds; faint: each seed")
            axis.set(title=shown, xlabel="step", ylabel=key, yscale="log" if loss else "linear")
            if loss and axis.get_ylim()[0] < LOSS_FLOOR:  # a solved task's loss near 0 would flatten the rest
                axis.set_ylim(bottom=LOSS_FLOOR)
                axis.set_ylabel(f"{key} (from {LOSS_FLOOR:g})")
    # one legend for the figure: every panel has the same lines
    handles = {line.get_label(): line for axis in fig.axes for line in axis.get_lines()
               if not line.get_label().startswith("_")}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")
    save(fig, path)
    return True


LOSS_FLOOR = 1e-3
"""The lowest loss the learning curves show."""


def plot_head_losses(entries: list[dict], path: Path) -> bool:
    """One panel per multi-head entry: each head's training loss against step (head_1 is the next-token head),
    one line per seed (color: the head; line: the seed), and NTP's next-token loss (its mean over seeds) dotted:
    whether an objective starves its next-token head, and which head learns, seed by seed."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    reference = {entry["size"]: mean_curve(entry, "train/loss/head_1") for entry in entries
                 if entry["objective"] == REFERENCE}
    shown = []
    for entry in entries:
        heads = sorted({key for logged in entry["curves"] for key in logged
                        if key.startswith("train/loss/")}, key=lambda key: (not key.endswith("head_1"), key))
        if len(heads) > 1:
            shown.append((entry, heads))
    if not shown:
        return False
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.5 * rows), layout="constrained")
    for axis, (entry, heads) in zip(fig.subplots(rows, columns, squeeze=False).flat, shown):
        legend = []
        for index, key in enumerate(heads):
            color = f"C{index % 10}"
            for position, logged in enumerate(entry["curves"]):
                if logged.get(key):
                    steps, values = zip(*logged[key])
                    axis.plot(steps, values, color=color, linewidth=1,
                              linestyle=DASHES[position % len(DASHES)])
            legend.append(Line2D([], [], color=color, label=key.removeprefix("train/loss/")))
        if reference.get(entry["size"]):
            steps, values = zip(*reference[entry["size"]])
            axis.plot(steps, values, ":", color="black", linewidth=1.5)
            legend.append(Line2D([], [], color="black", linestyle=":", label=f"{REFERENCE} head_1"))
        if len(entry["curves"]) > 1:
            legend += [Line2D([], [], color="gray", linestyle=DASHES[position % len(DASHES)],
                              label=f"seed {seed}") for position, seed in enumerate(entry["seeds"])]
        axis.set(title=f"{label(entry['objective'], entry['n'])} ({entry['size']})", xlabel="step",
                 ylabel="training loss", yscale="log")
        axis.legend(handles=legend, fontsize="x-small", ncol=2)
    for axis in list(fig.axes)[len(shown):]:
        axis.set_visible(False)
    save(fig, path)
    return True


def save(fig, path: Path) -> None:
    # no Software key: the PNG depends on the data, not on the matplotlib version that drew it
    fig.savefig(path, dpi=100, metadata={"Software": None})


def write_plots(folder: Path, entries: list[dict]) -> list[str]:
    """The plots that have something to show, written to folder/plots/; their paths relative to `folder`."""
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    written = []
    columns = table_columns(entries)
    several_sizes = len({entry["size"] for entry in entries}) > 1
    score_series = [(f"{name}" if kind == "family" else f"{name} {metric}",
                     lambda entry, column=(kind, name, metric): score_value(entry, *column))
                    for kind, name, metric in columns]
    makers = {
        "score_vs_n.png": lambda path: plot_score_vs_n(entries, path),
        "score_vs_size.png": lambda path: several_sizes and plot_by_size(entries, score_series, path, False),
        "overhead_vs_size.png": lambda path: plot_by_size(
            entries, [(f"step time / {REFERENCE}", ratio_value("step_time_s")),
                      (f"training memory / {REFERENCE}", ratio_value("train_memory_bytes"))], path, True),
        "learning_curves.png": lambda path: plot_learning_curves(entries, path),
        "head_losses.png": lambda path: plot_head_losses(entries, path),
    }
    for name, make in makers.items():
        if make(plots / name):
            written.append(f"plots/{name}")
    return written
