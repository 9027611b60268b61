"""`foresight report results/<sweep>`: the sweep's runs.jsonl as one comparison table against next-token prediction
(means over training seeds with 95% confidence intervals, seed-level tests, cost ratios) in report.md, and plots
in plots/ (`suite.plots`); the numbers come from `suite.comparison`.

Everything is computed from runs.jsonl alone (learning curves included: each row keeps its training curves), and
written deterministically: the same runs.jsonl gives a byte-identical report.md and plots, wherever the run folders
went."""

from __future__ import annotations

import sys
from pathlib import Path

from suite.comparison import REFERENCE, REQUIRED_AXES, comparison, label, size_order, split_rows, table_columns
from suite.errors import UsageError, check_writable
from suite.plots import write_plots
from suite.report_scaling import plot_across_sizes, scaling_lines, scaling_results
from suite.report_plan import decode_lines, first_step_lines, gradient_lines, legacy_layout_note
from suite.verdict import verdict_lines
from suite.report_tables import leading, leading_header, markdown_table, metric_tables, plural, render
from suite.results import SCHEMA, latest_rows, read_rows
from suite.settings import check_folder, stale


def legend(alpha: float) -> str:
    from suite.statistics import MIN_SEEDS

    return (
        "Family columns are the mean of the family's primary metrics (`foresight eval`); task columns are each "
        "task's primary metric. A cell is the mean over training seeds ± the half-width of its 95% confidence "
        "interval (Student t: t.ppf(0.975, k-1) · sd / √k over k seeds); a setting with one seed (the seeds "
        "column) has a bare mean: one seed gives no interval. "
        f"p is two-sided and seed-level: a paired t-test of the per-seed scores against {REFERENCE} of the same size "
        "and seed (Welch's t-test where the seeds differ); the seed, not the test document, is the unit of "
        f"replication. `n.s.`: p ≥ {alpha:g}, not significant; `too few seeds`: fewer than {MIN_SEEDS} seeds, no "
        f"p-value; `no test`: no {REFERENCE} to compare with. "
        "Step time and memory are the point's median seconds per optimizer step and the memory training added to "
        "the resting model (activations, gradients, optimizer state: peak minus the memory at the start of "
        f"training) over those of {REFERENCE} with the same size and seed, averaged over seeds. n is the prediction "
        f"horizon ({REFERENCE}: 1).")


REACH = 0.9
"""Time to accuracy: the first validation step at which a score reaches this share of NTP's final score."""


def time_lines(entries: list[dict]) -> list[str]:
    """report.md's "Time to NTP's level": per entry and task with validation curves of a primary metric that
    grows (accuracy), the first validation step of each seed at which it reached REACH x NTP's final score (mean
    over seeds) of the same size, or "—" where it did not within the budget."""
    from suite.comparison import LOWER_IS_BETTER

    several_sizes = len({entry["size"] for entry in entries}) > 1
    references = {entry["size"]: entry for entry in entries if entry["objective"] == REFERENCE}
    rows = []
    for kind, task, metric in table_columns(entries):
        key = f"val/{task}/{metric}"
        for entry in entries:
            reference = references.get(entry["size"])
            final = ((reference or {}).get("scores", {}).get(task) or {}).get(metric)
            if kind != "task" or metric in LOWER_IS_BETTER or not final or not final["mean"] > 0:
                continue
            target = REACH * final["mean"]
            reached = []
            for seed, curves in zip(entry["seeds"], entry["curves"]):
                steps = [step for step, value in curves.get(key, []) if value >= target]
                reached.append(f"s{seed}: {int(steps[0]) if steps else '—'}")
            if any(curves.get(key) for curves in entry["curves"]):
                rows.append(leading(entry, several_sizes) + [f"{task} {metric} ≥ {target:.3f}", ", ".join(reached)])
    if not rows:
        return []
    header = leading_header(several_sizes) + ["score", "first validation step that reached it, by seed"]
    return [render(header, rows), "", f"The level is {REACH:.0%} of {REFERENCE}'s final test score at the same size "
            "(the mean over its seeds); steps are those of the validation runs during training (every "
            "`val_check_interval` steps), `—` where the seed did not reach it within the budget: a plateau not yet "
            "left, which more steps may change."]


def difference_lines(entries: list[dict], alpha: float) -> list[str]:
    """report.md's "Differences from ntp": per compared entry and score, the difference with its interval over
    seeds, the hierarchical bootstrap interval, p, the smallest difference the seeds could detect, and each seed's
    own document-level test."""
    from suite.statistics import POWER

    several_sizes = len({entry["size"] for entry in entries}) > 1
    columns = table_columns(entries)
    rows = []
    for entry in entries:
        for kind, name, metric in columns:
            test = (entry["family_tests"] if kind == "family" else entry["tests"]).get(name)
            if entry["objective"] == REFERENCE or test is None:
                continue
            difference = f"{test['difference']:+.3f}" + ("" if test["half_width"] is None
                                                          else f" ± {test['half_width']:.3f}")
            seeded = test["p"] is not None  # with fewer seeds than a test needs, documents say nothing of seeds
            bootstrap = "—" if not (seeded and test.get("bootstrap")) else "[{:+.3f}, {:+.3f}]".format(
                *test["bootstrap"])
            p = "too few seeds" if test["p"] is None else f"{test['p']:.2g}"
            detectable = "—" if test["detectable"] is None else f"{test['detectable']:.3f}"
            within = ", ".join(f"s{seed}: {detail['p']:.2g}" for seed, detail in sorted(
                (test.get("within_seed") or {}).items(), key=lambda item: int(item[0]))) if seeded else ""
            within = within or "—"
            rows.append(leading(entry, several_sizes)[:-1] + [str(test["seeds"]), name if kind == "family" else
                                                              f"{name} {metric}", difference, bootstrap, p,
                                                              detectable, within])
    if not rows:
        return []
    header = leading_header(several_sizes) + ["score", f"Δ vs {REFERENCE} ± 95% (seeds)",
                                              "bootstrap 95% (seeds, then documents)", "p (seeds)",
                                              f"detectable Δ ({POWER:.0%} power)", "within one seed: p (documents)"]
    return [render(header, rows), "", (
        f"Δ is the mean over seeds of the score minus {REFERENCE}'s on the same seed, ± the half-width of its 95% "
        "Student-t interval over seeds. The bootstrap interval resamples seeds, then each resampled seed's test "
        "documents (a hierarchical bootstrap: it describes the spread, it is not the test; with 3 seeds it has 10 "
        f"distinct seed draws). p is the paired t-test of the table above. The detectable Δ is the smallest "
        f"difference that test finds at α = {alpha:g} with {POWER:.0%} power, given how much the seeds varied: a "
        "difference below it is not evidence of no difference. Within one seed, the two models' answers to the "
        "same documents are compared (exact McNemar for 0/1 scores, else Wilcoxon signed-rank): that says whether "
        "two trained models differ, not whether the objectives do.")]


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


def timing_line(rows: list[dict]) -> str | None:
    """Where a point's wall time went, on average over the finished rows that timed it (`suite.point.timing`)."""
    timed = [row["timing"] for row in rows if row.get("status") == "ok" and row.get("timing")]
    if not timed:
        return None

    def mean(key: str) -> float:
        return sum(t[key] for t in timed) / len(timed)

    wall = mean("steps") + mean("fixed")
    parts = ", ".join(f"{name} {mean(key):.1f} s" for key, name in (
        ("start_up", "start-up"), ("validation", "validation"), ("rest_of_fit", "the rest of the fit"),
        ("evaluation", "evaluation"), ("after", "recording")))
    return (f"A point took {wall:.1f} s on average ({len(timed)} timed): {mean('steps'):.1f} s of training steps and "
            f"{mean('fixed'):.1f} s fixed ({mean('fixed') / wall:.0%}: {parts}).")


def failure_lines(failed: list[dict], stale: dict[str, str]) -> list[str]:
    if not failed:
        return ["None."]
    lines = []
    for row in sorted(failed, key=lambda row: (row["point"] in stale, row["point"])):
        axes = row["axes"]
        role = " (reverse LM)" if row.get("role") == "reverse_lm" else ""
        error = (str(row.get("error") or "").strip().splitlines() or ["no error recorded"])[0]
        why = f" (**stale**, {stale[row['point']]}; `foresight sweep --retry-failed` drops it)" \
            if row["point"] in stale else ""
        lines.append(f"- `{row['point']}`{role}: {label(axes['objective'], axes.get('n'))}, size {axes['size']}, "
                     f"seed {axes['seed']}: {error}{why}")
    return lines


def markdown(rows: list[dict], entries: list[dict], sweep: str, alpha: float, notes: list[str],
             plots: list[str], missing: dict[str, str] | None = None, scaling: list[dict] | None = None) -> str:
    groups, failed = split_rows(rows)
    stale_rows = stale(list(latest_rows(rows).values()))
    newest = list(latest_rows(rows).values())
    compared = [row for seeds in groups.values() for row in seeds.values()]
    reverse = sum(1 for row in newest if row.get("role") == "reverse_lm")
    seeds = sorted({row["axes"]["seed"] for row in compared})
    sizes = sorted({row["axes"]["size"] for row in compared}, key=size_order)
    parts = [f"# Sweep `{sweep}`", "",
             f"{len(compared)} points compared ({len(entries)} settings of objective × n × size; sizes "
             f"{', '.join(sizes) or 'none'}; seeds {', '.join(map(str, seeds)) or 'none'}); "
             f"{len(failed) - len(stale_rows)} failed"
             f"{f' (and {len(stale_rows)} stale)' if stale_rows else ''}"
             + (f"; {plural(reverse, 'reverse language model')} (for fsp_revlm) not compared." if reverse else "."),
             "",
             *provenance_lines(newest), "", *([timing_line(newest), ""] if timing_line(newest) else [])]
    if entries:
        parts += ["## Verdict", "", *verdict_lines(entries), ""]
    parts += ["## Comparison with next-token prediction", ""]
    parts += [markdown_table(entries), "", legend(alpha)] if entries else ["No point finished."]
    differences = difference_lines(entries, alpha)
    if differences:
        parts += ["", f"## Differences from {REFERENCE}, and what the seeds can detect", "", *differences]
    across = scaling_lines(scaling or [])
    if across:
        parts += ["", "## Across sizes: where each objective meets NTP", "", *across[:-1]]
    reaching = time_lines(entries)
    if reaching:
        parts += ["", f"## Time to {REFERENCE}'s level", "", *reaching]
    plans = first_step_lines(entries) + decode_lines(entries, alpha)
    if plans:
        parts += ["", "## Where each head holds the plan", "", *plans[:-1]]
    gradients = gradient_lines(entries)
    if gradients:
        parts += ["", "## Each head's gradient on the shared state", "", *gradients[:-1]]
    metrics = metric_tables(entries)
    if metrics:
        parts += ["", "## Every metric", "", "Each task's metrics, the mean over seeds ± the half-width of its 95% "
                  "confidence interval (no interval with one seed); tests are for the primary metrics above.", "",
                  *metrics[:-1]]
    parts += ["", "## Failed points", "", *failure_lines(failed, stale_rows)]
    if plots or missing:
        parts += ["", "## Plots", "", *[f"- [{Path(plot).stem}]({plot})" for plot in plots],
                  *[f"- {Path(name).stem} is not drawn: {why}." for name, why in (missing or {}).items()]]
    notes = notes + legacy_layout_note(newest)
    if notes:
        parts += ["", "## Notes", "", *[f"- {note}" for note in notes]]
    return "\n".join(parts) + "\n"


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
    check_folder(list(latest_rows(rows).values()), folder)  # a report never averages two settings
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
    scaling = scaling_results(entries)
    several_sizes = len({entry["size"] for entry in entries}) > 1
    plots, missing = write_plots(folder, entries, {"across_sizes.png": lambda path: plot_across_sizes(scaling, path)}
                                 if several_sizes else None)
    sweep = next((str(row["sweep"]) for row in rows if row.get("sweep")), folder.resolve().name)
    path = folder / "report.md"
    path.write_text(markdown(rows, entries, sweep, alpha, notes, plots, missing, scaling))
    return path, entries


def main(argv: list[str]) -> None:
    """`foresight report FOLDER [--alpha 0.05]`: write FOLDER/report.md and FOLDER/plots/, print the table last."""
    from suite.parsing import Parser

    from suite.errors import one_line

    parser = Parser(prog="foresight report",
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
    """The verdict and the comparison table of a written report.md, on the terminal."""
    lines = report.read_text().splitlines()
    if "## Verdict" in lines:
        start = lines.index("## Verdict") + 2
        end = next((i for i in range(start, len(lines)) if not lines[i].startswith("- ")), len(lines))
        print("\n".join(line.replace("**", "").replace("`", "") for line in lines[start:end]) + "\n")
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        return print("no point finished")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    print("\n".join(lines[start:end]))
