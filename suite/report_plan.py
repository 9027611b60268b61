"""report.md's look inside the heads, from the rows alone: where each head holds the plan on a path task (the first
step as every head predicts it, teacher-forced, on the test split; plan decoding, which is not next-token
decoding, against NTP), and how each head's gradient on the shared state lines up with the next-token head's."""

from __future__ import annotations

from suite.comparison import REFERENCE, seed_values
from suite.report_tables import interval_text, leading, leading_header, render


def _interval(values: list[float]) -> str:
    from suite.statistics import mean_interval

    return interval_text(mean_interval(values).as_dict()) if values else "—"


def _plans(entry: dict, task: str) -> list[dict]:
    return [plans.get(task) for plans in entry.get("plans", []) if plans.get(task)]


def plan_tasks(entries: list[dict]) -> list[str]:
    return sorted({task for entry in entries for plans in entry.get("plans", []) for task in plans})


def first_step_lines(entries: list[dict]) -> list[str]:
    """Per path task: each setting's first step as every head predicts it (mean over seeds ± 95%), the head that
    holds it best, and the path accuracy of next-token decoding beside it."""
    several_sizes = len({entry["size"] for entry in entries}) > 1
    parts = []
    for task in plan_tasks(entries):
        shown = [(entry, _plans(entry, task)) for entry in entries if _plans(entry, task)]
        heads = max(len(plans[0]["first_step"]) for _, plans in shown)
        step = shown[0][1][0]["tokens"][shown[0][1][0]["first_step_token"]]
        rows = []
        for entry, plans in shown:
            means = []
            cells = []
            for k in range(1, heads + 1):
                values = [plan["first_step"][f"head_{k}"] for plan in plans if f"head_{k}" in plan["first_step"]]
                cells.append(_interval(values))
                means.append(sum(values) / len(values) if values else -1.0)
            best = max(range(heads), key=lambda k: means[k])
            greedy = (entry["scores"].get(task) or {}).get("path_acc")
            rows.append(leading(entry, several_sizes) + cells + [f"head {best + 1}",
                                                                 "—" if greedy is None else interval_text(greedy)])
        header = leading_header(several_sizes) + [f"head {k}" for k in range(1, heads + 1)]
        header += ["holds it best", "path accuracy (next-token decoding)"]
        parts += [f"### {task}: the first step ({step}) as each head predicts it", "", render(header, rows), "",
                  f"Head k predicts the first step (the source's successor, which needs planning) from the position k "
                  f"before it, teacher-forced, on the {plans[0]['examples']} test graphs: head 1 from the source, "
                  "head 2 from `=`, head 3 from the goal token, and so on. A head well above a guess between the arms "
                  "holds the plan, whether or not the next-token head, which decoding reads, uses it. Every head's "
                  "accuracy on every answer token is in each row's `plan`; the curves are in plots/plans.png.", ""]
    return parts


def decode_lines(entries: list[dict], alpha: float) -> list[str]:
    """Per path task and multi-head setting: plan decoding's path accuracy by rule, against the same model's
    next-token decoding and against NTP's (seed-level tests)."""
    from suite.statistics import seed_test

    several_sizes = len({entry["size"] for entry in entries}) > 1
    references = {entry["size"]: entry for entry in entries if entry["objective"] == REFERENCE}
    parts = []
    for task in plan_tasks(entries):
        rows = []
        for entry in entries:
            plans = {seed: plan.get(task) for seed, plan in zip(entry["seeds"], entry.get("plans", []))
                     if plan.get(task)}
            rules = list(next(iter(plans.values()))["decode"]) if plans else []
            own = seed_values(entry["by_seed"], ("scores", task, "path_acc"))
            reference = references.get(entry["size"])
            ntp = seed_values(reference["by_seed"], ("scores", task, "path_acc")) if reference else {}
            for rule in rules:
                decoded = {seed: plan["decode"][rule]["path_acc"] for seed, plan in plans.items()
                           if rule in plan["decode"]}
                versus_own, versus_ntp = seed_test(own, decoded, alpha), seed_test(ntp, decoded, alpha) if ntp else None
                rows.append(leading(entry, several_sizes) + [
                    rule, _interval(list(decoded.values())),
                    ", ".join(f"{decoded[seed]:.3f}" for seed in sorted(decoded)),
                    _difference(versus_own), "—" if versus_ntp is None else _difference(versus_ntp)])
        if rows:
            header = leading_header(several_sizes) + [
                "rule", "path accuracy (plan decoding)", "per seed", "Δ vs its own next-token decoding (p)",
                f"Δ vs {REFERENCE} (next-token decoding; p)"]
            parts += [f"### {task}: plan decoding (NOT next-token decoding)", "", render(header, rows), "",
                      "Plan decoding writes the answer from the heads' drafts instead of the next-token head's: "
                      "`head_k` takes each token from head k, k positions before it; `vote` adds every head's "
                      "log-probabilities for the token. It is not how the model would answer, and not a score of "
                      "the objective: it says whether the model knows the path somewhere. Δ and p are seed-level "
                      "(paired t-tests over seeds, as above).", ""]
    return parts


def _difference(test) -> str:
    text = f"{test.difference:+.3f}" + ("" if test.half_width is None else f" ± {test.half_width:.3f}")
    return text + (" (too few seeds)" if test.p is None else f" (p = {test.p:.2g})")


def gradient_lines(entries: list[dict]) -> list[str]:
    """Per multi-head setting and extra head: the cosine of its gradient on the shared state with the next-token
    head's at the first validation and the last, and over all validations (means over seeds), and its norm
    relative to the next-token head's at the first."""
    several_sizes = len({entry["size"] for entry in entries}) > 1
    rows = []
    for entry in entries:
        heads = sorted({key.rsplit("/", 1)[-1] for curves in entry["curves"] for key in curves
                        if key.startswith("val/grad/cos/")})
        for head in heads:
            key = f"val/grad/cos/{head}"
            series = [curves[key] for curves in entry["curves"] if curves.get(key)]
            norms = []
            for curves in entry["curves"]:
                mine, first = curves.get(f"val/grad/norm/{head}"), curves.get("val/grad/norm/head_1")
                if mine and first and first[0][1]:
                    norms.append(mine[0][1] / first[0][1])
            rows.append(leading(entry, several_sizes) + [
                head, _interval([points[0][1] for points in series]), _interval([points[-1][1] for points in series]),
                _interval([sum(value for _, value in points) / len(points) for points in series]), _interval(norms)])
    if not rows:
        return []
    header = leading_header(several_sizes) + ["head", "cosine with head_1: first validation", "last validation",
                                              "mean over validations", "norm / head_1's, first validation"]
    return [render(header, rows), "", "Each head's gradient on the state the heads share (the trunk output, or the "
            "trunk's state where the heads branch off), from its own weighted loss on the first validation batch, "
            "against the next-token head's: the cosine of the two (means over seeds ± 95%), and the norm over "
            "head_1's. Below 0 a head pulls the shared state away from what next-token prediction needs; every "
            "validation's is in plots/gradient_cosines.png.", ""]


def legacy_layout_note(rows: list[dict]) -> list[str]:
    """Rows of parallel MTP written before foresight recorded each point's whole objective spec ran in the stacked
    layout, the default until then; said once, so that a reader does not take them for the paper's layout."""
    old = sorted({(row["axes"].get("label") or row["axes"]["objective"]) for row in rows
                  if row.get("status") == "ok" and row["axes"]["objective"] == "parallel_mtp"
                  and not {"layout", "branch_layer"} & set((row.get("objective") or {}).get("init_args") or {})})
    if not old:
        return []
    return [f"{', '.join(f'`{name}`' for name in old)}: rows of parallel MTP without a layout in their spec were "
            "trained in the stacked layout (heads 2..n on the trunk output), foresight's default until the default "
            "became Gloeckle et al.'s siblings layout; rerun such a point with `layout: stacked` to reproduce it."]
