"""`foresight report results/<sweep>`: the sweep's runs.jsonl as one comparison table against next-token prediction
(means over seeds with 95% confidence intervals, paired tests, cost ratios) in report.md, and plots in plots/.

Everything is computed from runs.jsonl alone (learning curves included: each row keeps its training curves), and
written deterministically: the same runs.jsonl gives a byte-identical report.md and plots, wherever the run folders
went."""

from __future__ import annotations

import sys
from pathlib import Path

from suite.errors import UsageError, check_writable
from suite.results import CURVES, SCHEMA, latest_rows, read_rows

# suite.evaluate (torch) and suite.statistics (scipy) are imported where they are used: a bad FOLDER or --alpha fails
# in a second

REFERENCE = "ntp"
"""The objective every other one is compared with."""
OVERHEADS = ("step_time_s", "train_memory_bytes", "peak_memory_bytes", "flops_per_token", "tokens_per_s")
"""Cost numbers of a row's `overhead` that are reported as ratios to the reference of the same size and seed."""
REQUIRED_AXES = ("objective", "size", "seed")


def metric_values(metrics: dict) -> dict[str, float]:
    """A task's numeric metrics by plain name (lm-eval writes "acc,none" beside "acc_stderr,none" and an alias)."""
    found = {}
    for key, value in metrics.items():
        name = key.split(",")[0]
        if "stderr" not in name and isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = float(value)
    return found


def primary_metric(task: str, metrics: dict[str, float]) -> str | None:
    """The metric that stands for `task`: its registered primary, or the only metric of a task foresight does not
    know."""
    from suite.evaluate import task_kind

    primary = task_kind(task)[1]
    if primary in metrics:
        return primary
    return next(iter(metrics)) if primary is None and len(metrics) == 1 else None


def group_key(row: dict) -> tuple:
    axes = row["axes"]
    return axes["objective"], axes.get("n"), axes["size"]


def label(objective: str, n) -> str:
    return objective if n is None else f"{objective} n={n}"


def size_order(size: str) -> tuple:
    from suite.sizes import SIZES

    return (list(SIZES).index(size), "") if size in SIZES else (len(SIZES), size)


def entry_order(entry: dict) -> tuple:
    """Sizes small to large; within a size the reference first, then objectives by name and n."""
    return size_order(entry["size"]), entry["objective"] != REFERENCE, entry["objective"], entry["n"] or 0


def split_rows(rows: list[dict], notes: list[str] | None = None) -> tuple[dict[tuple, dict[int, dict]], list[dict]]:
    """The newest compared rows grouped as {(objective, n, size): {seed: row}} with status ok, and the failed rows
    (of every role). Two point ids on one seed of one group (a sweep over another setting) keep the later row."""
    notes = [] if notes is None else notes
    groups: dict[tuple, dict[int, dict]] = {}
    failed = []
    for row in latest_rows(rows).values():
        if row.get("status") != "ok":
            failed.append(row)
            continue
        if row.get("role", "point") != "point":
            continue  # reverse language models exist for fsp_revlm; they answer a different question
        seeds = groups.setdefault(group_key(row), {})
        seed = row["axes"]["seed"]
        if seed in seeds:
            notes.append(f"points {seeds[seed]['point']} and {row['point']} share {label(*group_key(row)[:2])}, "
                         f"size {row['axes']['size']}, seed {seed}: only the later, {row['point']}, is compared")
        seeds[seed] = row
    return groups, failed


def comparison(rows: list[dict], alpha: float = 0.05, notes: list[str] | None = None) -> list[dict]:
    """One entry per (objective, n, size) over the ok points, sorted as the report's table: means over seeds with
    confidence intervals, cost ratios to the reference and paired tests against it (see the module docstring of
    suite.statistics). `notes` collects what was left out and why."""
    notes = [] if notes is None else notes
    groups, _ = split_rows(rows, notes)
    references = {size: seeds for (objective, _, size), seeds in groups.items() if objective == REFERENCE}
    entries = []
    for (objective, n, size), by_seed in groups.items():
        seeds = sorted(by_seed)
        ordered = [by_seed[seed] for seed in seeds]
        reference = references.get(size, {})
        entry = {"objective": objective, "n": n, "size": size, "seeds": seeds,
                 "points": [row["point"] for row in ordered], "run_dirs": [row.get("run_dir") for row in ordered],
                 "curves": [row.get("curves") or {} for row in ordered],
                 "scores": task_intervals(ordered), "families": family_intervals(ordered),
                 "overhead": overhead_ratios(by_seed, reference), "tests": {}, "family_tests": {}}
        if objective != REFERENCE:
            entry["tests"], entry["family_tests"] = paired_tests(entry, by_seed, reference, alpha, notes)
        entries.append(entry)
    return sorted(entries, key=entry_order)


def task_intervals(rows: list[dict]) -> dict[str, dict[str, dict]]:
    from suite.statistics import mean_interval

    values: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for task, metrics in sorted((row.get("scores") or {}).items()):
            for metric, value in metric_values(metrics).items():
                values.setdefault(task, {}).setdefault(metric, []).append(value)
    return {task: {metric: mean_interval(v).as_dict() for metric, v in metrics.items()}
            for task, metrics in values.items()}


def family_intervals(rows: list[dict]) -> dict[str, dict]:
    from suite.statistics import mean_interval

    values: dict[str, list[float]] = {}
    for row in rows:
        for family, value in sorted((row.get("families") or {}).items()):
            if isinstance(value, (int, float)):
                values.setdefault(family, []).append(float(value))
    return {family: mean_interval(v).as_dict() for family, v in values.items()}


def overhead_ratios(by_seed: dict[int, dict], reference: dict[int, dict]) -> dict[str, dict]:
    """Each cost number over the reference's on the same seed, averaged over the seeds where both have it (memory
    only where both measured the same kind of memory)."""
    ratios = {}
    for name in OVERHEADS:
        per_seed = []
        for seed in sorted(set(by_seed) & set(reference)):
            ours, theirs = by_seed[seed].get("overhead") or {}, reference[seed].get("overhead") or {}
            if name.endswith("memory_bytes") and ours.get("memory_kind") != theirs.get("memory_kind"):
                continue
            if isinstance(ours.get(name), (int, float)) and isinstance(theirs.get(name), (int, float)) and theirs[name]:
                per_seed.append(ours[name] / theirs[name])
        ratios[name] = {"ratio": sum(per_seed) / len(per_seed) if per_seed else None, "seeds": len(per_seed)}
    return ratios


def paired_tests(entry: dict, by_seed: dict[int, dict], reference: dict[int, dict], alpha: float,
                 notes: list[str]) -> tuple[dict, dict]:
    """Per task (on its primary metric) and per family (its tasks' documents pooled): documents paired by position
    within a seed, pooled over the seeds both groups have."""
    from suite.evaluate import task_kind
    from suite.statistics import paired_test

    pairs: dict[str, tuple[list, list, list]] = {}  # task -> (reference values, our values, seeds)
    for seed in sorted(set(by_seed) & set(reference)):
        ours, theirs = by_seed[seed].get("items") or {}, reference[seed].get("items") or {}
        for task in sorted(set(ours) & set(theirs)):
            if len(ours[task]) != len(theirs[task]):
                notes.append(f"{label(entry['objective'], entry['n'])}, size {entry['size']}, seed {seed}: {task} has "
                             f"{len(ours[task])} items, {REFERENCE} {len(theirs[task])}; not paired")
                continue
            reference_values, our_values, seeds = pairs.setdefault(task, ([], [], []))
            reference_values.extend(theirs[task])
            our_values.extend(ours[task])
            seeds.append(seed)
    tests, pooled = {}, {}
    for task, (reference_values, our_values, seeds) in pairs.items():
        if not reference_values:
            continue
        result = paired_test(reference_values, our_values)
        metric = primary_metric(task, entry["scores"].get(task) or {})
        tests[task] = {"metric": metric, "seeds": seeds, **result.as_dict(), "significant": result.p < alpha}
        family = task_kind(task)[0]
        if family is not None:
            family_reference, family_ours = pooled.setdefault(family, ([], []))
            family_reference.extend(reference_values)
            family_ours.extend(our_values)
    family_tests = {}
    for family, (reference_values, our_values) in sorted(pooled.items()):
        result = paired_test(reference_values, our_values)
        family_tests[family] = {**result.as_dict(), "significant": result.p < alpha}
    return tests, family_tests


# --- report.md -------------------------------------------------------------------------------------------------

def table_columns(entries: list[dict]) -> list[tuple[str, str, str | None]]:
    """(kind, name, metric) of each score column: the families the rows have, then each task's primary metric."""
    families = sorted({family for entry in entries for family in entry["families"]})
    columns = [("family", family, None) for family in families]
    tasks_metrics = {}
    for entry in entries:
        for task, metrics in entry["scores"].items():
            metric = primary_metric(task, metrics)
            if metric is not None:
                tasks_metrics.setdefault(task, metric)
    return columns + [("task", task, metric) for task, metric in sorted(tasks_metrics.items())]


def score_cell(entry: dict, kind: str, name: str, metric: str | None) -> str:
    interval = entry["families"].get(name) if kind == "family" else (entry["scores"].get(name) or {}).get(metric)
    if interval is None:
        return "—"
    cell = interval_text(interval, one_seed=" (1 seed, no CI)")
    if entry["objective"] == REFERENCE:
        return cell
    test = (entry["family_tests"] if kind == "family" else entry["tests"]).get(name)
    if test is None:
        return f"{cell} (no test)"
    return f"{cell} (p={test['p']:.2g}{'' if test['significant'] else ', n.s.'})"


def interval_text(interval: dict, one_seed: str = "") -> str:
    """A mean ± the half-width of its 95% interval; with one seed (no interval), the mean and `one_seed`."""
    if interval["half_width"] is None:
        return f"{interval['mean']:.3f}{one_seed}"
    return f"{interval['mean']:.3f} ± {interval['half_width']:.3f}"


def leading(entry: dict, several_sizes: bool) -> list[str]:
    """The cells that say which setting a table row is: size (when the table has several), objective, n, seeds."""
    return ([entry["size"]] if several_sizes else []) + [entry["objective"], str(entry["n"] or 1),
                                                          str(len(entry["seeds"]))]


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
    header += [name if kind == "family" else f"{name} {metric}" for kind, name, metric in columns]
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


def legend(alpha: float) -> str:
    return (
        "Family columns are the mean of the family's primary metrics (`foresight eval`); task columns are each "
        "task's primary metric. A cell is the mean over seeds ± the half-width of its 95% confidence interval "
        "(Student t: t.ppf(0.975, k-1) · sd / √k over k seeds); with one seed there is no interval "
        "(`1 seed, no CI`). "
        f"p is a two-sided paired test against {REFERENCE} of the same size: test documents paired by position "
        "within a seed, pooled over seeds; exact McNemar (binomial test on the discordant documents) when every "
        "per-document score is 0 or 1, else the Wilcoxon signed-rank test; a family pools its tasks' documents. "
        f"`n.s.`: p ≥ {alpha:g}, not significant; `no test`: no {REFERENCE} documents to pair with. "
        "Step time and memory are the point's median seconds per optimizer step and the memory training added to "
        "the resting model (activations, gradients, optimizer state: peak minus the memory at the start of "
        f"training) over those of {REFERENCE} with the same size and seed, averaged over seeds. n is the prediction "
        f"horizon ({REFERENCE}: 1).")


def provenance_lines(rows: list[dict]) -> list[str]:
    sources: dict[tuple, int] = {}
    for row in rows:
        source = (row.get("sweep_command") or row.get("command"), row.get("commit"), bool(row.get("dirty")))
        sources[source] = sources.get(source, 0) + 1

    def said(command, commit, dirty) -> str:
        where = f"at commit `{commit}`" if commit else "outside a git checkout"
        return f"`{command}` {where}" + (" with uncommitted changes" if dirty else "")

    alone = " Each row's `command` in runs.jsonl re-runs its point alone."
    if len(sources) == 1:
        return [f"Produced by {said(*next(iter(sources)))}." + alone]
    lines = [f"The rows do not come from one command and commit; {len(sources)} differ:", ""]
    return lines + [f"- {said(*source)}: {count} rows" for source, count in sources.items()] + ["", alone.strip()]


def failure_lines(failed: list[dict]) -> list[str]:
    if not failed:
        return ["None."]
    lines = []
    for row in sorted(failed, key=lambda row: row["point"]):
        axes = row["axes"]
        role = " (reverse LM)" if row.get("role") == "reverse_lm" else ""
        error = (str(row.get("error") or "").strip().splitlines() or ["no error recorded"])[0]
        lines.append(f"- `{row['point']}`{role}: {label(axes['objective'], axes.get('n'))}, size {axes['size']}, "
                     f"seed {axes['seed']}: {error}")
    return lines


def markdown(rows: list[dict], entries: list[dict], sweep: str, alpha: float, notes: list[str],
             plots: list[str]) -> str:
    groups, failed = split_rows(rows)
    newest = list(latest_rows(rows).values())
    compared = [row for seeds in groups.values() for row in seeds.values()]
    reverse = sum(1 for row in newest if row.get("role") == "reverse_lm")
    seeds = sorted({row["axes"]["seed"] for row in compared})
    sizes = sorted({row["axes"]["size"] for row in compared}, key=size_order)
    parts = [f"# Sweep `{sweep}`", "",
             f"{len(compared)} points compared ({len(entries)} settings of objective × n × size; sizes "
             f"{', '.join(sizes) or 'none'}; seeds {', '.join(map(str, seeds)) or 'none'}); {len(failed)} failed; "
             f"{reverse} reverse language models (for fsp_revlm) not compared.", "",
             *provenance_lines(newest), "", "## Comparison with next-token prediction", ""]
    parts += [markdown_table(entries), "", legend(alpha)] if entries else ["No point finished."]
    metrics = metric_tables(entries)
    if metrics:
        parts += ["", "## Every metric", "", "Each task's metrics, the mean over seeds ± the half-width of its 95% "
                  "confidence interval (no interval with one seed); p-values are for the primary metrics above.", "",
                  *metrics[:-1]]
    parts += ["", "## Failed points", "", *failure_lines(failed)]
    if plots:
        parts += ["", "## Plots", "", *[f"- [{Path(plot).stem}]({plot})" for plot in plots]]
    if notes:
        parts += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(parts) + "\n"


# --- plots -----------------------------------------------------------------------------------------------------

def score_value(entry: dict, kind: str, name: str, metric: str | None) -> tuple[float, float] | None:
    """(mean, error bar) of one score of an entry; the error bar is the CI half-width, 0 with one seed."""
    interval = entry["families"].get(name) if kind == "family" else (entry["scores"].get(name) or {}).get(metric)
    return None if interval is None else (interval["mean"], interval["half_width"] or 0.0)


def colors(entries: list[dict], by_objective: bool = False) -> dict[str, str]:
    """One color per objective and n (or per objective), the same in every plot."""
    labels = list(dict.fromkeys(entry["objective"] if by_objective else label(entry["objective"], entry["n"])
                                for entry in entries))
    return {name: f"C{index % 10}" for index, name in enumerate(labels)}


def plot_score_vs_n(entries: list[dict], path: Path) -> bool:
    """Per size and score: one line per objective over n; NTP is the point at n=1 and a dotted level."""
    from matplotlib.figure import Figure

    columns, sizes = table_columns(entries), sorted({entry["size"] for entry in entries}, key=size_order)
    if not any(score_value(entry, *column) for entry in entries for column in columns):
        return False
    fig = Figure(figsize=(4 * len(columns), 3.2 * len(sizes)), layout="constrained")
    for row_axes, size in zip(fig.subplots(len(sizes), len(columns), squeeze=False), sizes):
        for axis, (kind, name, metric) in zip(row_axes, columns):
            by_objective: dict[str, list] = {}
            for entry in entries:
                value = score_value(entry, kind, name, metric)
                if entry["size"] == size and value is not None:
                    by_objective.setdefault(entry["objective"], []).append((entry["n"] or 1, *value))
            for objective, points in by_objective.items():
                ns, means, errors = zip(*sorted(points))
                color = colors(entries, by_objective=True)[objective]
                axis.errorbar(ns, means, yerr=errors, marker="o", capsize=3, label=objective, color=color)
                if objective == REFERENCE:
                    axis.axhline(means[0], linestyle=":", color="black", linewidth=1)
            axis.set(title=f"{name} ({size})", xlabel="n (prediction horizon; NTP at 1)",
                     ylabel=metric or "family score")
            axis.legend(fontsize="small")
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
    palette = colors(entries)
    for axis, (title, value) in zip(fig.subplots(1, len(series), squeeze=False)[0], series):
        lines: dict[str, list] = {}
        for entry in shown:
            if value(entry) is not None:
                lines.setdefault(label(entry["objective"], entry["n"]), []).append((sizes.index(entry["size"]),
                                                                                   *value(entry)))
        for name, points in lines.items():
            xs, means, errors = zip(*sorted(points))
            axis.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=name, color=palette[name])
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


LOSSES = tuple(zip(CURVES, ("next-token loss (every objective has it)", "the objective's own training loss")))
"""The learning curves: what every objective shares, and what each one optimizes."""


def plot_learning_curves(entries: list[dict], path: Path) -> bool:
    """Per size and loss (LOSSES): the loss against step, one line per objective and n, the mean over the seeds
    logged at a step; from the rows' curves, so runs.jsonl alone redraws it."""
    from matplotlib.figure import Figure

    curves: dict[tuple[str, str], dict[str, list]] = {}  # (size, key) -> label -> [(step, loss)]
    for entry in entries:
        for key, _ in LOSSES:
            by_step: dict[int, list[float]] = {}
            for logged in entry["curves"]:
                for step, loss in logged.get(key, []):
                    by_step.setdefault(int(step), []).append(float(loss))
            if by_step:
                curves.setdefault((entry["size"], key), {})[label(entry["objective"], entry["n"])] = [
                    (step, sum(losses) / len(losses)) for step, losses in sorted(by_step.items())]
    if not curves:
        return False
    sizes = sorted({size for size, _ in curves}, key=size_order)
    fig = Figure(figsize=(5 * len(LOSSES), 3.5 * len(sizes)), layout="constrained")
    palette = colors(entries)
    for row_axes, size in zip(fig.subplots(len(sizes), len(LOSSES), squeeze=False), sizes):
        for axis, (key, title) in zip(row_axes, LOSSES):
            for name, points in curves.get((size, key), {}).items():
                steps, losses = zip(*points)
                axis.plot(steps, losses, label=name, color=palette[name])
            axis.set(title=f"{title} ({size})", xlabel="step", ylabel=key, yscale="log")
            if curves.get((size, key)):
                axis.legend(fontsize="small")
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
    }
    for name, make in makers.items():
        if make(plots / name):
            written.append(f"plots/{name}")
    return written


# --- the command -----------------------------------------------------------------------------------------------

def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha={alpha!r} is out of range; allowed: 0 < alpha < 1 (e.g. 0.05)")


def load_rows(folder: Path) -> tuple[list[dict], list[str]]:
    """The complete rows of folder/runs.jsonl and the notes on lines skipped; a UsageError when there is nothing to
    report on or report.md and plots/ cannot be written there."""
    if not folder.is_dir():
        raise UsageError(f"report folder {str(folder)!r} {'is a file' if folder.exists() else 'does not exist'}; "
                         "allowed: a sweep's results folder (results/<sweep>) holding runs.jsonl")
    path = folder / "runs.jsonl"
    if not path.is_file():
        raise UsageError(f"{str(folder)!r} has no runs.jsonl; allowed: a folder that `foresight sweep` wrote "
                         "runs.jsonl into")
    check_outputs(folder)
    warnings: list[str] = []
    rows = read_rows(path, warn=warnings.append)
    if not rows:
        raise UsageError(f"{path} has no complete rows; allowed: a runs.jsonl with at least one row written by "
                         "`foresight sweep`")
    for number, row in enumerate(rows, start=1):
        if row.get("schema") != SCHEMA:
            raise UsageError(f"{path}: row {number} ({row['point']}) has schema {row.get('schema')!r}; allowed: "
                             f"{SCHEMA} (this foresight's suite/results.py)")
        missing = [axis for axis in REQUIRED_AXES if axis not in (row.get("axes") or {})]
        if missing:
            raise UsageError(f"{path}: row {number} ({row['point']}) lacks axes {', '.join(missing)}; allowed: rows "
                             "in suite/results.py's schema")
    for message in warnings:  # only now: an error above is the one line a failed report prints
        print(f"foresight: warning: {message}", file=sys.stderr)
    return rows, [message.replace(str(path), "runs.jsonl") for message in warnings]  # not how FOLDER was spelled


def check_outputs(folder: Path) -> None:
    """report.md and plots/ can be written, before either is."""
    if (folder / "report.md").is_dir():
        raise UsageError(f"{str(folder / 'report.md')!r} is a folder; allowed: a report folder whose report.md is a "
                         "file or not there yet")
    check_writable("report folder", folder)
    check_writable("plots folder", folder / "plots")


def write_report(folder: Path, alpha: float = 0.05) -> Path:
    """folder/report.md and folder/plots/*.png from folder/runs.jsonl; returns the path of report.md."""
    return report_with_entries(folder, alpha)[0]


def report_with_entries(folder: Path, alpha: float = 0.05) -> tuple[Path, list[dict]]:
    """write_report, also returning the comparison it tabulated (for copies of the table elsewhere, e.g. wandb)."""
    folder = Path(folder)
    check_alpha(alpha)
    rows, notes = load_rows(folder)
    entries = comparison(rows, alpha, notes)
    plots = write_plots(folder, entries)
    sweep = next((str(row["sweep"]) for row in rows if row.get("sweep")), folder.resolve().name)
    path = folder / "report.md"
    path.write_text(markdown(rows, entries, sweep, alpha, notes, plots))
    return path, entries


def main(argv: list[str]) -> None:
    """`foresight report FOLDER [--alpha 0.05]`: write FOLDER/report.md and FOLDER/plots/, print the table last."""
    from jsonargparse import ArgumentParser

    from suite.errors import one_line

    parser = ArgumentParser(prog="foresight report", exit_on_error=False,
                            description="A sweep's comparison table against next-token prediction (means over seeds "
                                        "with 95% confidence intervals, paired tests, cost ratios) and plots.")
    parser.add_argument("folder", type=str, help="the sweep's results folder, holding runs.jsonl")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests")
    if not [arg for arg in argv if not arg.startswith("-")] and not {"-h", "--help"} & set(argv):
        raise UsageError("FOLDER is missing; allowed: `foresight report results/<sweep> [--alpha 0.05]`")
    try:
        args = parser.parse_args(argv)
    except Exception as err:  # jsonargparse's ArgumentError: one line, as every other foresight mistake
        raise UsageError(one_line(err)) from None
    path, entries = report_with_entries(Path(args.folder), args.alpha)
    print(f"written: {path} and {path.parent / 'plots'}/\n")
    print_table(path)
    from suite.tracking import wandb_sync_line

    for runs in sorted({str(Path(run_dir).parent) for entry in entries for run_dir in entry["run_dirs"] if run_dir}):
        line = wandb_sync_line(Path(runs))
        if line:
            print(f"\n{line}")


def print_table(report: Path) -> None:
    """The comparison table of a written report.md, on the terminal."""
    lines = [line for line in report.read_text().splitlines() if line.startswith("|")]
    print("\n".join(lines) if lines else "no point finished")

