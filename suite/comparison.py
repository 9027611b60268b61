"""The comparison a report tabulates, computed from runs.jsonl rows alone: per (label, n, size), the means over
training seeds with 95% confidence intervals, cost ratios to next-token prediction, and seed-level tests against
it (`suite.statistics.seed_test`), with the documents of each seed compared within that seed as a detail."""

from __future__ import annotations

from suite.results import latest_rows

# suite.evaluate (torch) and suite.statistics (scipy) are imported where they are used: a bad FOLDER or --alpha fails
# in a second

REFERENCE = "ntp"
"""The objective every other one is compared with."""
OVERHEADS = ("step_time_s", "train_memory_bytes", "peak_memory_bytes", "flops_per_token", "tokens_per_s")
"""Cost numbers of a row's `overhead` that are reported as ratios to the reference of the same size and seed."""
REQUIRED_AXES = ("objective", "size", "seed")
LOWER_IS_BETTER = {"bits_per_byte", "byte_perplexity", "word_perplexity"}
"""Primary metrics where a smaller value wins (a positive control must lower them)."""


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
    """(label, n, size): what a report compares; the label is the objective's name unless the sweep named a
    variant (a control, an ablation)."""
    axes = row["axes"]
    return axes.get("label") or axes["objective"], axes.get("n"), axes["size"]


def label(objective: str, n) -> str:
    return objective if n is None else f"{objective} n={n}"


def size_order(size: str) -> tuple:
    from suite.sizes import SIZES

    return (list(SIZES).index(size), "") if size in SIZES else (len(SIZES), size)


def entry_order(entry: dict) -> tuple:
    """Sizes small to large; within a size the reference first, its positive controls beside it, then objectives by
    name and n."""
    return (size_order(entry["size"]), entry["objective"] != REFERENCE, not entry.get("control"), entry["objective"],
            entry["n"] or 0)


def split_rows(rows: list[dict], notes: list[str] | None = None) -> tuple[dict[tuple, dict[int, dict]], list[dict]]:
    """The newest compared rows grouped as {(objective, n, size): {seed: row}} with status ok, and the failed rows
    (of every role). Two point ids on one seed of one group (a sweep over another setting) keep the later row."""
    notes = [] if notes is None else notes
    groups: dict[tuple, dict[int, dict]] = {}
    failed = []
    for row in latest_rows(rows).values():
        if row.get("status") == "dropped":  # a stale failed row, dropped by `foresight sweep --retry-failed`
            continue
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
    """One entry per (label, n, size) over the ok points, sorted as the report's table: means over seeds with
    confidence intervals, cost ratios to the reference and seed-level tests against it (see the module docstring
    of suite.statistics). An entry's "objective" is its label. `notes` collects what was left out and why."""
    notes = [] if notes is None else notes
    groups, _ = split_rows(rows, notes)
    references = {size: seeds for (objective, _, size), seeds in groups.items() if objective == REFERENCE}
    entries = []
    for (objective, n, size), by_seed in groups.items():
        seeds = sorted(by_seed)
        ordered = [by_seed[seed] for seed in seeds]
        reference = references.get(size, {})
        entry = {"objective": objective, "registry_name": ordered[0]["axes"]["objective"],
                 "control": any(row["axes"].get("control") for row in ordered), "n": n, "size": size,
                 "seeds": seeds, "points": [row["point"] for row in ordered],
                 "run_dirs": [row.get("run_dir") for row in ordered],
                 "data": (ordered[0].get("config") or {}).get("data"),
                 "curves": [row.get("curves") or {} for row in ordered],
                 "plans": [row.get("plan") or {} for row in ordered], "by_seed": by_seed,
                 "scores": task_intervals(ordered), "families": family_intervals(ordered),
                 "overhead": overhead_ratios(by_seed, reference), "tests": {}, "family_tests": {}}
        if objective != REFERENCE:
            entry["tests"], entry["family_tests"] = seed_tests(entry, by_seed, reference, alpha, notes)
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


def seed_tests(entry: dict, by_seed: dict[int, dict], reference: dict[int, dict], alpha: float,
               notes: list[str]) -> tuple[dict, dict]:
    """Per task (its primary metric) and per family: `seed_test` of the per-seed scores against the reference's
    at the same size, with the hierarchical bootstrap where both have per-document scores; and, per seed both
    have, the documents of that seed compared within it (`paired_test`, "within_seed")."""
    from suite.statistics import paired_test, seed_test

    tests = {}
    for task in sorted(entry["scores"]):
        metric = primary_metric(task, entry["scores"][task] or {})
        ours, theirs = seed_values(by_seed, ("scores", task, metric)), seed_values(reference, ("scores", task, metric))
        if metric is None or not theirs:
            continue
        items, within = ({}, {}), {}
        for seed in sorted(set(ours) & set(theirs)):
            mine, other = (by_seed[seed].get("items") or {}).get(task), (reference[seed].get("items") or {}).get(task)
            if mine is None or other is None:
                continue
            if len(mine) != len(other):
                notes.append(f"{label(entry['objective'], entry['n'])}, size {entry['size']}, seed {seed}: {task} has "
                             f"{len(mine)} items, {REFERENCE} {len(other)}; not paired")
                continue
            items[0][seed], items[1][seed] = other, mine
            within[seed] = paired_test(other, mine).as_dict()
        bootstrap = items if items[0] and set(items[0]) == set(ours) & set(theirs) else None
        result = seed_test(theirs, ours, alpha, bootstrap)
        tests[task] = {"metric": metric, **result.as_dict(), "within_seed": within,
                       "significant": result.p is not None and result.p < alpha}
    family_tests = {}
    for family in sorted(entry["families"]):
        theirs = seed_values(reference, ("families", family))
        if theirs:
            result = seed_test(theirs, seed_values(by_seed, ("families", family)), alpha)
            family_tests[family] = {**result.as_dict(), "significant": result.p is not None and result.p < alpha}
    return tests, family_tests


def seed_values(by_seed: dict[int, dict], path: tuple) -> dict[int, float]:
    """{seed: the number at `path` in the seed's row} (e.g. ("scores", task, metric)), where the row has one."""
    found = {}
    for seed, row in by_seed.items():
        value = row
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[seed] = float(value)
    return found


def table_columns(entries: list[dict]) -> list[tuple[str, str, str | None]]:
    """(kind, name, metric) of each score column: the families the rows have, then each task's primary metric; a
    family of one task says what its task says, so it has no column of its own."""
    from suite.evaluate import task_kind

    tasks_metrics = {}
    for entry in entries:
        for task, metrics in entry["scores"].items():
            metric = primary_metric(task, metrics)
            if metric is not None:
                tasks_metrics.setdefault(task, metric)
    members: dict[str, int] = {}
    for task in tasks_metrics:
        members[task_kind(task)[0]] = members.get(task_kind(task)[0], 0) + 1
    families = sorted({family for entry in entries for family in entry["families"] if members.get(family, 0) != 1})
    return [("family", family, None) for family in families] + [
        ("task", task, metric) for task, metric in sorted(tasks_metrics.items())]

