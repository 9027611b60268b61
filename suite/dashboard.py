"""`foresight dashboard --entity E --project P [--sweep NAME]`: a wandb report (built with wandb-workspaces) that
compares a sweep's runs: scores by objective and n, overhead by size, learning curves grouped by objective.

Saving the report needs the network and a wandb login; `--dry-run` prints the report's JSON instead, which is how
the tests check it offline. The keys it plots are the ones `foresight sweep` writes into each point's run: history
`train/loss` and `train/loss/head_1` against `trainer/global_step`, summary `family/<family>`, `eval/<task>/<metric>`, `overhead/<name>`,
`params/total`, and config `sweep`, `objective_name`, `n`, `size_name`, `seed` (Lightning's hyperparameters
own `objective` and `size`)."""

from __future__ import annotations

from suite.errors import UsageError

FAMILIES = ("reasoning", "knowledge", "code")
OVERHEAD = ("overhead/step_time_s", "overhead/train_memory_bytes", "overhead/tokens_per_s",
            "overhead/flops_per_token")


def runset(wr, entity: str, project: str, sweep: str | None, groupby: list[str], name: str):
    filters = f"Config('sweep') = '{sweep}'" if sweep else ""
    return wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=groupby)


def build(entity: str, project: str, sweep: str | None = None, tasks: dict[str, str] | None = None,
          families: list[str] | None = None):
    """The report object (nothing is sent). `tasks`: {task: primary metric} to plot beside the family scores;
    `families`: the families to plot (those the sweep's rows have; all of FAMILIES when unknown)."""
    import wandb_workspaces.reports.v2 as wr

    where = f"sweep `{sweep}`" if sweep else f"every sweep in {project}"
    families = list(FAMILIES if families is None else families)
    score_metrics = [f"family/{family}" for family in families]
    score_metrics += [f"eval/{task}/{metric}" for task, metric in sorted((tasks or {}).items())]
    by_objective_n = runset(wr, entity, project, sweep, ["config.objective_name", "config.n"], "objective × n")
    by_size = runset(wr, entity, project, sweep, ["config.size_name", "config.objective_name"], "size × objective")
    by_objective = runset(wr, entity, project, sweep, ["config.objective_name"], "objective")
    blocks = [
        wr.P(f"The runs of {where}, one per sweep point (group = sweep, job type = objective). The statistics "
             "(95% confidence intervals over seeds, paired tests against NTP) are in `foresight report`'s "
             "report.md; this report is for browsing."),
        wr.H2("Scores by objective and n"),
        wr.PanelGrid(runsets=[by_objective_n], panels=[
            *[wr.BarPlot(title=metric, metrics=[metric], groupby_aggfunc="mean", groupby_rangefunc="stderr")
              for metric in score_metrics],
            *[wr.ScatterPlot(title=f"{metric} against n", x=wr.Config("n"), y=wr.SummaryMetric(metric))
              for metric in score_metrics[:len(families)]],
        ]),
        wr.H2("Overhead by size"),
        wr.PanelGrid(runsets=[by_size], panels=[
            *[wr.BarPlot(title=metric, metrics=[metric], groupby_aggfunc="mean", groupby_rangefunc="stderr")
              for metric in OVERHEAD],
            wr.ScatterPlot(title="step time against parameters", x=wr.SummaryMetric("params/total"),
                           y=wr.SummaryMetric("overhead/step_time_s"), log_x=True),
        ]),
        wr.H2("Learning curves"),
        wr.PanelGrid(runsets=[by_objective], panels=[
            wr.LinePlot(title="next-token loss by objective (every objective has it)", x="trainer/global_step",
                        y=["train/loss/head_1"], groupby_aggfunc="mean", groupby_rangefunc="stderr",
                        smoothing_factor=0.6),
            wr.LinePlot(title="each objective's own training loss", x="trainer/global_step", y=["train/loss"],
                        groupby_aggfunc="mean", groupby_rangefunc="stderr", smoothing_factor=0.6),
        ]),
    ]
    return wr.Report(entity=entity, project=project, title=f"foresight: {sweep or project}",
                     description="Multi-token objectives against next-token prediction: scores, cost, curves.",
                     blocks=blocks)


def outline(report) -> list[str]:
    """What the report holds, one line per block and panel (building the wandb model itself needs the network)."""
    import wandb_workspaces.reports.v2 as wr

    lines = [f"report {report.title!r} ({report.entity}/{report.project})"]
    for block in report.blocks:
        if isinstance(block, wr.PanelGrid):
            for rs in block.runsets:
                lines.append(f"  runs: filter {rs.filters or 'none'}, grouped by {', '.join(rs.groupby)}")
            for panel in block.panels:
                shown = getattr(panel, "metrics", None) or getattr(panel, "y", None)
                if isinstance(panel, wr.ScatterPlot):
                    shown = f"{panel.y} against {panel.x}"
                lines.append(f"  {type(panel).__name__} {panel.title!r}: {shown}")
        else:
            lines.append(f"{type(block).__name__}: {block.text}")
    return lines


def sweep_scores(results: str | None) -> tuple[dict[str, str], list[str] | None]:
    """({task: primary metric}, [family]) of a sweep's results folder (its runs.jsonl): the panels worth drawing;
    ({}, None) without one (then every family gets a panel)."""
    if not results:
        return {}, None
    from pathlib import Path

    from suite.comparison import primary_metric
    from suite.results import read_rows

    found, families = {}, set()
    for row in read_rows(Path(results) / "runs.jsonl"):
        families |= set(row.get("families") or {})
        for task, metrics in (row.get("scores") or {}).items():
            metric = primary_metric(task, metrics)
            if metric:
                found[task] = metric
    return found, [family for family in FAMILIES if family in families]


def main(argv: list[str]) -> None:
    from jsonargparse import ActionYesNo
    from suite.parsing import Parser

    parser = Parser(prog="foresight dashboard",
                    description="A wandb report comparing a sweep's runs (needs the network and a login).")
    parser.add_argument("--entity", type=str, required=True, help="the wandb entity (user or team)")
    parser.add_argument("--project", type=str, required=True, help="the wandb project the sweep logged to")
    parser.add_argument("--sweep", type=str, help="only this sweep's runs (its name); default: every run")
    parser.add_argument("--results", type=str, help="the sweep's results folder, to plot each of its tasks too "
                        "(default: results/<sweep> when it exists)")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action=ActionYesNo, default=False,
                        help="print the report's JSON, send nothing")
    args = parser.parse_args(argv)
    from pathlib import Path

    results = args.results or (f"results/{args.sweep}" if args.sweep and Path(f"results/{args.sweep}").is_dir()
                               else None)
    if args.results and not (Path(args.results) / "runs.jsonl").is_file():
        raise UsageError(f"--results {args.results!r} has no runs.jsonl; allowed: a folder `foresight sweep` wrote")
    report = build(args.entity, args.project, args.sweep, *sweep_scores(results))
    if args.dry_run:
        return print("\n".join(outline(report)))
    try:
        report.save()
    except Exception as err:  # no network, no login, no such entity: wandb's errors vary
        reason = (str(err).splitlines() or [""])[0]
        raise UsageError(f"wandb did not take the report ({type(err).__name__}: {reason}); "
                         "allowed: a machine online and logged in (`wandb login`), an entity and project you can "
                         "write; `--dry-run` builds it offline") from None
    print(f"report: {report.url}")
