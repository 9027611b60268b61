"""The cells and tables of `foresight report`'s report.md (and of the sweep's wandb.Table): a score as its mean
over seeds ± the half-width of its 95% interval, with the seed-level test against NTP; rows led by the setting."""

from __future__ import annotations

from suite.comparison import LOWER_IS_BETTER, REFERENCE, table_columns


def direction(metric: str | None) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def score_cell(entry: dict, kind: str, name: str, metric: str | None) -> str:
    interval = entry["families"].get(name) if kind == "family" else (entry["scores"].get(name) or {}).get(metric)
    if interval is None:
        return "—"
    cell = interval_text(interval)
    if entry["objective"] == REFERENCE:
        return cell
    test = (entry["family_tests"] if kind == "family" else entry["tests"]).get(name)
    if test is None:
        return f"{cell} (no test)"
    if test["p"] is None:
        return cell if interval["half_width"] is None else f"{cell} (too few seeds)"
    return f"{cell} (p={test['p']:.2g}{'' if test['significant'] else ', n.s.'})"


def interval_text(interval: dict) -> str:
    """A mean ± the half-width of its 95% interval; with one seed (no interval), the mean (the caption says why)."""
    if interval["half_width"] is None:
        return f"{interval['mean']:.3f}"
    return f"{interval['mean']:.3f} ± {interval['half_width']:.3f}"


def leading(entry: dict, several_sizes: bool) -> list[str]:
    """The cells that say which setting a table row is: size (when the table has several), objective (its label;
    a positive control says so), n, seeds."""
    name = entry["objective"] + (" (control)" if entry.get("control") else "")
    return ([entry["size"]] if several_sizes else []) + [name, str(entry["n"] or 1), str(len(entry["seeds"]))]


def leading_header(several_sizes: bool) -> list[str]:
    return (["size"] if several_sizes else []) + ["objective", "n", "seeds"]


def ratio_cell(entry: dict, name: str) -> str:
    ratio = entry["overhead"][name]["ratio"]
    return "—" if ratio is None else f"{ratio:.2f}×"


def table(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The comparison table as a header and rows of cells: report.md's table, and the sweep's wandb.Table."""
    several_sizes = len({entry["size"] for entry in entries}) > 1
    columns = table_columns(entries)
    header = leading_header(several_sizes)
    header += [f"{name} (higher is better)" if kind == "family" else f"{name} {metric} ({direction(metric)})"
               for kind, name, metric in columns]
    header += ["step time / NTP", "memory / NTP"]
    rows = []
    for entry in entries:
        cells = leading(entry, several_sizes) + [score_cell(entry, *column) for column in columns]
        cells += [ratio_cell(entry, "step_time_s"), ratio_cell(entry, "train_memory_bytes")]
        rows.append(cells)
    return header, rows


def markdown_table(entries: list[dict]) -> str:
    return render(*table(entries))


def render(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


NOT_METRICS = {"sample_len"}
"""Numbers lm-eval reports beside the metrics (documents scored), left out of the every-metric tables."""


def metric_tables(entries: list[dict]) -> list[str]:
    """report.md's "Every metric" section: for each task with more than one metric (e.g. biographies' recall by
    exposure, star_graph's arm_acc), every metric's mean over seeds ± its 95% half-width."""
    several_sizes = len({entry["size"] for entry in entries}) > 1
    metrics: dict[str, list[str]] = {}
    for entry in entries:
        for task, values in entry["scores"].items():
            names = metrics.setdefault(task, [])
            names += [name for name in values if name not in NOT_METRICS and name not in names]
    parts = []
    for task, names in sorted(metrics.items()):
        if len(names) < 2:
            continue
        rows = []
        for entry in entries:
            intervals = [(entry["scores"].get(task) or {}).get(name) for name in names]
            rows.append(leading(entry, several_sizes) + ["—" if interval is None else interval_text(interval)
                                                         for interval in intervals])
        parts += [f"### {task}", "", render(leading_header(several_sizes) + names, rows), ""]
    return parts


def plural(count: int, noun: str) -> str:
    """'1 reverse language model', '2 reverse language models'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
