"""The report's "Across sizes" section and its plot: for every objective a sweep measured at three or more sizes
beside NTP, each score fitted against non-embedding parameters (the trunk's blocks) and against training FLOPs
(`suite.scaling`), the difference from NTP as a curve with its band, and where it crosses NTP."""

from __future__ import annotations

from pathlib import Path

from suite.comparison import REFERENCE, label, seed_values, table_columns
from suite.report_tables import direction
from suite.scaling import EXTRAPOLATION, MIN_SIZES, POWER, analyse, describe


def score_path(kind: str, name: str, metric: str | None) -> tuple:
    return ("families", name) if kind == "family" else ("scores", name, metric)


def size_axes(entry: dict) -> tuple[float | None, float | None]:
    """(non-embedding parameters, training FLOPs) of an entry: the median over its seeds' rows."""
    import statistics

    params = [row["params"]["trunk"] for row in entry["by_seed"].values() if (row.get("params") or {}).get("trunk")]
    flops = [row["overhead"]["flops_per_token"] * row["train"]["tokens"] for row in entry["by_seed"].values()
             if (row.get("overhead") or {}).get("flops_per_token") and (row.get("train") or {}).get("tokens")]
    return (statistics.median(params) if params else None, statistics.median(flops) if flops else None)


def scaling_results(entries: list[dict]) -> list[dict]:
    """One result per (objective, score) measured at MIN_SIZES or more sizes with NTP: its fits against N and
    against training FLOPs."""
    by_label: dict[tuple, dict[str, dict]] = {}
    for entry in entries:
        by_label.setdefault((entry["objective"], entry["n"]), {})[entry["size"]] = entry
    reference = by_label.get((REFERENCE, None), {})
    if len(reference) < MIN_SIZES:
        return []
    axes = {(objective, n, size): size_axes(entry) for (objective, n), sizes in by_label.items()
            for size, entry in sizes.items()}
    results = []
    for column in table_columns(entries):
        metric = column[2]
        higher = direction(metric) == "higher is better"
        path = score_path(*column)
        ref_scores = {size: seed_values(entry["by_seed"], path) for size, entry in reference.items()}
        for (objective, n), sizes in by_label.items():
            if objective == REFERENCE or len(set(sizes) & set(reference)) < MIN_SIZES:
                continue
            scores = {size: seed_values(entry["by_seed"], path) for size, entry in sizes.items()}
            result = {"objective": label(objective, n), "column": column, "higher_is_better": higher}
            for axis, index in (("parameters", 0), ("flops", 1)):
                x_ref = {size: axes[(REFERENCE, None, size)][index] for size in reference}
                x_obj = {size: axes[(objective, n, size)][index] for size in sizes}
                if None in x_ref.values() or None in x_obj.values():
                    continue
                result[axis] = analyse(x_ref, ref_scores, scores, higher, x_other=x_obj)
            if result.get("parameters", {}).get("fitted"):
                results.append(result)
    return results


def exponent_text(result: dict, who: str) -> str:
    fit = result[f"{who}_fit"]
    name = "alpha" if fit.form == POWER else "slope per decade"
    bounds = (result.get("exponents") or {}).get(who)
    interval = f" [{bounds[0]:.3g}, {bounds[1]:.3g}]" if bounds else ""
    return f"{name} {fit.exponent:.3g}{interval}"


def scaling_lines(results: list[dict]) -> list[str]:
    if not results:
        return []
    lines = [f"Each score against non-embedding parameters N (the trunk's blocks) and training FLOPs, per seed-mean; "
             f"the form by a stated rule (4 or more sizes: score = E + A (N/N0)^-alpha; 3 sizes: score = a + b "
             f"log10(N/N0)), 95% intervals from a bootstrap over the training seeds every size shares (coarse with "
             f"3 seeds: 10 distinct resamples). A crossover past {EXTRAPOLATION:g}x the largest size is flagged.", ""]
    for result in results:
        kind, name, metric = result["column"]
        score = name if kind == "family" else f"{name} {metric}"
        fits = result["parameters"]
        forms = {fits["reference_fit"].form, fits["objective_fit"].form}
        form = forms.pop() if len(forms) == 1 else (f"{REFERENCE} {fits['reference_fit'].form}, the objective "
                                                    f"{fits['objective_fit'].form}")
        lines.append(f"- **`{result['objective']}`**, {score} ({direction(metric)}; sizes "
                     f"{', '.join(fits['sizes'])}; seeds {', '.join(map(str, fits['seeds']))}; {form}): "
                     f"{REFERENCE} {exponent_text(fits, 'reference')}, {result['objective']} "
                     f"{exponent_text(fits, 'objective')}. Against N: {describe(fits, 'N')}."
                     + (f" Against training FLOPs: {describe(result['flops'], 'FLOPs')}."
                        if result.get("flops", {}).get("fitted") else "")
                     + (f" (Against N, {fits['note']}.)" if fits.get("note") else ""))
    return lines + [""]


def plot_across_sizes(results: list[dict], path: Path) -> bool:
    """Per score: the seed means and fitted curves against N, the difference from NTP with its band, and the
    scores against training FLOPs."""
    import numpy as np
    from matplotlib.figure import Figure

    from suite.plot_style import save

    columns = list(dict.fromkeys(result["column"] for result in results))
    if not columns:
        return False
    fig = Figure(figsize=(15, 3.8 * len(columns)), layout="constrained")
    axes = fig.subplots(len(columns), 3, squeeze=False)
    for row, column in zip(axes, columns):
        kind, name, metric = column
        score = name if kind == "family" else f"{name} {metric}"
        shown = [result for result in results if result["column"] == column]
        for index, result in enumerate(shown):
            color = f"C{index % 10}"
            for axis, key in ((row[0], "parameters"), (row[2], "flops")):
                fits = result.get(key)
                if not fits or not fits.get("fitted"):
                    continue
                smooth = np.geomspace(min(fits["x"] + fits["x_other"]), max(fits["x"] + fits["x_other"]), 100)
                if index == 0:  # NTP on top of the objectives, in black, so it is never hidden
                    axis.plot(fits["x"], fits["reference_means"], "o", color="black", label=REFERENCE, zorder=5)
                    axis.plot(smooth, fits["reference_fit"](smooth), color="black", lw=1.5, zorder=5)
                axis.plot(fits["x_other"], fits["objective_means"], "s", color=color, label=result["objective"])
                axis.plot(smooth, fits["objective_fit"](smooth), color=color, lw=1)
            fits = result["parameters"]
            row[1].plot(fits["grid"], fits["difference"], color=color, label=result["objective"])
            if fits.get("band"):
                band = np.array(fits["band"])
                row[1].fill_between(fits["grid"], band[:, 0], band[:, 1], color=color, alpha=0.2)
            if fits["crossover"] and fits["crossover"] <= max(fits["grid"]):
                row[1].axvline(fits["crossover"], color=color, ls=":", lw=1)
        largest = max(max(result["parameters"]["x"]) for result in shown)
        row[1].axhline(0, color="black", lw=0.8)
        row[1].axvspan(largest, row[1].get_xlim()[1] if row[1].has_data() else largest, color="0.92", zorder=0)
        for axis, xlabel, ylabel in ((row[0], "non-embedding parameters N", f"{score} ({direction(metric)})"),
                                     (row[1], "non-embedding parameters N (grey: extrapolated)",
                                      f"objective - {REFERENCE} ({direction(metric)})"),
                                     (row[2], "training FLOPs", f"{score} ({direction(metric)})")):
            axis.set_xscale("log")
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            if axis.has_data():
                axis.legend(fontsize=8)
    save(fig, path)
    return True
