"""The first words of a report, in the terminal and at the top of report.md: whether the suite can see a win at this
task and budget (its positive controls against NTP), then each objective against NTP on each task's primary score
(Δ with its interval over seeds, p, and what the seeds could detect), in plain words; and a note where an
objective scores below chance, pointing at the curves that say why."""

from __future__ import annotations

from suite.comparison import LOWER_IS_BETTER, REFERENCE, label
from suite.report_tables import direction


def is_better(metric: str, difference: float) -> bool:
    return difference < 0 if metric in LOWER_IS_BETTER else difference > 0


def _difference(test: dict) -> str:
    hw = test.get("half_width")
    seeds = f"{test['seeds']} seed{'s' if test['seeds'] != 1 else ''}"
    p = "too few seeds for a test" if test["p"] is None else f"p = {test['p']:.2g}"
    return f"Δ {test['difference']:+.3f}" + ("" if hw is None else f" ± {hw:.3f}") + f" ({p}, {seeds})"


def control_lines(entries: list[dict]) -> list[str]:
    """For each entry the sweep marked as a positive control, whether it beat NTP on each task's primary score at
    the seed level: a failed or unjudged control says no row is evidence that an objective does not help."""
    lines = []
    for entry in entries:
        for task, test in sorted(entry["tests"].items()) if entry.get("control") else ():
            said = (f"`{label(entry['objective'], entry['n'])}` (size {entry['size']}) against {REFERENCE} on {task} "
                    f"{test['metric']} ({direction(test['metric'])}): {_difference(test)}")
            if is_better(test["metric"], test["difference"]) and test["significant"]:
                lines.append(f"- **The suite can see a win here**: the control wins. {said}.")
            elif test["p"] is None:
                lines.append(f"- **The control cannot be judged** with fewer than 3 seeds, and so no row below can be: "
                             f"a tour of the machinery, not a verdict. {said}.")
            else:
                lines.append(f"- **The control did not win**: at this budget the suite cannot see a win it should, so "
                             f"no row below is evidence that an objective does not help. {said}.")
    return lines or ["- No positive control in this sweep: no setting known to beat next-token prediction was trained "
                     "at this budget, so a row that shows no win is not evidence that the objective does not help (a "
                     "sweep entry marked `control: true` is one; README, \"Sweeps\")."]


def objective_lines(entries: list[dict]) -> list[str]:
    """Each objective that is neither NTP nor a control, against NTP on each task's primary score."""
    lines = []
    for entry in entries:
        if entry["objective"] == REFERENCE or entry.get("control"):
            continue
        for task, test in sorted(entry["tests"].items()):
            name = f"`{label(entry['objective'], entry['n'])}` (size {entry['size']})"
            if test["p"] is None:
                word = "not tested"
            elif test["significant"]:
                word = "**better** than NTP" if is_better(test["metric"], test["difference"]) else "**worse** than NTP"
            else:
                detectable = test.get("detectable")
                word = "no difference shown" + (f" (the seeds could detect |Δ| ≥ {detectable:.3f})"
                                                if detectable is not None else "")
            lines.append(f"- {name}: {word} on {task} {test['metric']} ({direction(test['metric'])}): "
                         f"{_difference(test)}.")
    return lines


BELOW = 0.8
"""A seed is said to score below chance when its score is under this share of what guessing scores."""


def chance_notes(entries: list[dict]) -> list[str]:
    """A note for each entry with seeds whose primary score is well below what guessing scores (under BELOW x
    chance), with its next-token head's final training loss beside NTP's: a stalled next-token head
    (plots/head_losses.png) is the usual reason."""
    from suite.comparison import primary_metric, seed_values
    from suite.plot_style import chance, mean_curve

    reference = {entry["size"]: entry for entry in entries if entry["objective"] == REFERENCE}
    notes = []
    for entry in entries:
        for task, metrics in sorted(entry["scores"].items()):
            metric = primary_metric(task, {name: value["mean"] for name, value in metrics.items()})
            level = chance([entry], task, metric)
            if metric is None or level is None or metric in LOWER_IS_BETTER:
                continue
            scores = seed_values(entry.get("by_seed") or {}, ("scores", task, metric))
            below = {seed: value for seed, value in sorted(scores.items()) if value < BELOW * level[0]}
            if not below:
                continue
            mine = mean_curve({"curves": [entry["by_seed"][seed].get("curves") or {} for seed in below]},
                              "train/loss/head_1")
            theirs = mean_curve(reference.get(entry["size"], {"curves": []}), "train/loss/head_1")
            ours = entry["objective"] == REFERENCE
            loss = (f"; the next-token head's training loss ends at {mine[-1][1]:.3f} there"
                    + (f", {REFERENCE}'s at {theirs[-1][1]:.3f}" if theirs and not ours else "")) if mine else ""
            notes.append(f"- `{label(entry['objective'], entry['n'])}` scores well below chance ({level[1]}) on {task} "
                         f"{metric} on {len(below)} of {len(scores)} seeds ("
                         + ", ".join(f"seed {seed}: {value:.3f}" for seed, value in below.items())
                         + f"){loss}: plots/head_losses.png shows each head's curve.")
    return notes


def verdict_lines(entries: list[dict]) -> list[str]:
    """The verdict: the controls, then the objectives, then the notes below chance."""
    return [*control_lines(entries), *objective_lines(entries), *chance_notes(entries)]
