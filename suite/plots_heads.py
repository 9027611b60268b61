"""The report's plots of what happens inside each head, one panel per setting, every seed drawn: each head's training
loss, where each head holds the plan (the first step as each head predicts it, at every validation), and how each
head's gradient on the shared state lines up with the next-token head's. From the rows' curves alone."""

from __future__ import annotations

import re
from pathlib import Path

from suite.comparison import REFERENCE, label
from suite.plot_style import DASHES, chance, log_ticks, mean_curve, save

HEAD = re.compile(r"head_(\d+)$")


def head_keys(entry: dict, pattern: re.Pattern) -> list[str]:
    """The curve keys of an entry that match `pattern`: the next-token head's (head_1) first, then by name."""
    keys = {key for logged in entry["curves"] for key in logged if pattern.fullmatch(key)}
    return sorted(keys, key=lambda key: (not key.endswith("/head_1"), key))


def seed_panels(shown: list[tuple[dict, list[str]]], path: Path, ylabel: str, draw_extra=None, log: bool = False,
                ylim: tuple[float, float] | None = None, name=lambda key: key.rsplit("/", 1)[-1]) -> bool:
    """One panel per (entry, keys): each key's curve for every seed (colour: the key, line style: the seed), and
    whatever `draw_extra(axis, entry)` adds (reference lines, returning their legend handles)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not shown:
        return False
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(4.5 * columns, 3.5 * rows), layout="constrained")
    for axis, (entry, keys) in zip(fig.subplots(rows, columns, squeeze=False).flat, shown):
        legend = []
        for index, key in enumerate(keys):
            head = HEAD.search(key)  # a head keeps its colour in every plot (head_2 is C1 wherever it is drawn)
            color = f"C{(int(head.group(1)) - 1 if head else index) % 10}"
            for position, logged in enumerate(entry["curves"]):
                if logged.get(key):
                    steps, values = zip(*logged[key])
                    axis.plot(steps, values, color=color, linewidth=1, linestyle=DASHES[position % len(DASHES)])
            legend.append(Line2D([], [], color=color, label=name(key)))
        legend += draw_extra(axis, entry) if draw_extra else []
        if len(entry["curves"]) > 1:
            legend += [Line2D([], [], color="gray", linestyle=DASHES[position % len(DASHES)], label=f"seed {seed}")
                       for position, seed in enumerate(entry["seeds"])]
        axis.set(title=f"{label(entry['objective'], entry['n'])} ({entry['size']})", xlabel="step", ylabel=ylabel)
        if log:
            axis.set_yscale("log")
            log_ticks(axis)
        if ylim:
            axis.set_ylim(*ylim)
        axis.legend(handles=legend, fontsize="x-small", ncol=2)
    for axis in list(fig.axes)[len(shown):]:
        axis.set_visible(False)
    save(fig, path)
    return True


def plot_head_losses(entries: list[dict], path: Path) -> bool:
    """Each head's training loss against step (head_1 is the next-token head), seed by seed, and NTP's next-token
    loss (its mean over seeds) dotted: whether an objective starves its next-token head, and which head learns."""
    from matplotlib.lines import Line2D

    reference = {entry["size"]: mean_curve(entry, "train/loss/head_1") for entry in entries
                 if entry["objective"] == REFERENCE}
    pattern = re.compile(r"train/loss/.+")
    shown = [(entry, keys) for entry in entries for keys in [head_keys(entry, pattern)] if len(keys) > 1]

    def ntp(axis, entry):
        if not reference.get(entry["size"]):
            return []
        axis.plot(*zip(*reference[entry["size"]]), ":", color="black", linewidth=1.5)
        return [Line2D([], [], color="black", linestyle=":", label=f"{REFERENCE} head_1")]

    return seed_panels(shown, path, "training loss", ntp, log=True)


def plot_plans(entries: list[dict], path: Path) -> bool:
    """Per setting and path task: the first step as each head predicts it (teacher-forced, on the validation
    split) against step, seed by seed, with the level a guess between the arms scores. A head that rises above it
    holds the plan, whether or not next-token decoding reads it."""
    from matplotlib.lines import Line2D

    pattern = re.compile(r"val/[^/]+/first_step/head_\d+")
    shown = [(entry, keys) for entry in entries for keys in [head_keys(entry, pattern)] if keys]

    def guess(axis, entry):
        task = next(iter(head_keys(entry, pattern))).split("/")[1]
        level = chance([entry], task, "arm_acc")
        if level is None:
            return []
        axis.axhline(level[0], linestyle="-.", color="gray", linewidth=1)
        return [Line2D([], [], color="gray", linestyle="-.", label=f"guess: {level[1]}")]

    return seed_panels(shown, path, "first step right (teacher-forced)", guess, ylim=(-0.03, 1.03))


def plot_gradient_cosines(entries: list[dict], path: Path) -> bool:
    """Per multi-head setting: the cosine between each extra head's gradient on the shared state and the
    next-token head's, at every validation, seed by seed: below 0 the head pulls the shared state against what
    next-token prediction needs."""
    from matplotlib.lines import Line2D

    pattern = re.compile(r"val/grad/cos/.+")
    shown = [(entry, keys) for entry in entries for keys in [head_keys(entry, pattern)] if keys]

    def zero(axis, entry):
        axis.axhline(0.0, color="black", linewidth=0.8)
        return [Line2D([], [], color="black", linewidth=0.8, label="orthogonal")]

    return seed_panels(shown, path, "cosine with head_1's gradient", zero, ylim=(-1.03, 1.03),
                       name=lambda key: f"{key.rsplit('/', 1)[-1]} · head_1")
