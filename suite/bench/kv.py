"""`foresight bench kv --results results/<sweep>`: does a model's answer survive a compressed KV cache, and does a
multi-token objective's survive better than next-token prediction's?

Every finished point of a sweep (its last checkpoint) is scored through lm-eval on the sweep's task with keys and
values quantised to each bit width (`suite.quantize`; 16 is the uncompressed reference), with and without the
rotation; on path-finding tasks with paths of 4 nodes or more, the attention probe (`suite.probe`) reads the goal
and edge attention of each at the same width. The drop of a checkpoint is its uncompressed score less its score
at b bits; across seeds (the unit of replication) each label gets its mean drop with a 95% interval, and every
label but the reference gets the difference of its drop from the reference's (paired by seed: `seed_test`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from suite.errors import UsageError, check_range

REFERENCE = "ntp"


def settings(bits: list[int], rotate: list[bool], group: int | None) -> list:
    """The quantisers to score: the uncompressed reference (None) first, then each width, plain and rotated."""
    from suite.quantize import KVQuant

    for b in bits:
        KVQuant.of(b)  # a bad width fails before anything runs
    chosen = [None]
    for b in sorted({b for b in bits if b != 16}, reverse=True):
        chosen += [KVQuant.of(b, group, turn) for turn in dict.fromkeys(rotate)]
    return chosen


def points(results: Path, runs_root: Path, labels: list[str] | None) -> list[dict]:
    """The sweep's finished points (not controls, unless `labels` names them), with their checkpoints."""
    from suite.comparison import group_key, label as label_of
    from suite.results import latest_rows, read_rows

    rows = [row for row in latest_rows(read_rows(results / "runs.jsonl")).values()
            if row.get("role") == "point" and row.get("status") == "ok"]
    if not rows:
        raise UsageError(f"--results '{results}' holds no finished points; allowed: a sweep's results folder "
                         "(results/<sweep>) with rows of status ok")
    known = sorted({group_key(row)[0] for row in rows})
    for name in labels or []:
        if name not in known:
            raise UsageError(f"unknown label {name!r} for --labels; known in {results}: {', '.join(known)}")
    chosen = []
    for row in rows:
        label, n, size = group_key(row)
        if (labels and label not in labels) or (not labels and row["axes"].get("control")):
            continue
        checkpoint = runs_root / Path(row["run_dir"]).relative_to("runs") / "checkpoints" / "last.ckpt" \
            if Path(row["run_dir"]).parts[:1] == ("runs",) else Path(row["run_dir"]) / "checkpoints" / "last.ckpt"
        if not checkpoint.is_file():
            raise UsageError(f"point {row['point']} has no checkpoint at '{checkpoint}'; allowed: --runs naming the "
                             "folder the sweep's runs are in")
        chosen.append({"point": row["point"], "label": label_of(label, n), "seed": row["axes"]["seed"], "size": size,
                       "task": row["axes"]["data"], "checkpoint": str(checkpoint)})
    if len({p["task"] for p in chosen}) > 1:
        raise UsageError(f"--results '{results}' mixes tasks {sorted({p['task'] for p in chosen})}; allowed: one")
    if REFERENCE not in {p["label"] for p in chosen}:
        raise UsageError(f"--results '{results}' has no {REFERENCE} point among those chosen; allowed: labels "
                         f"that include {REFERENCE}, the reference the drops are compared with")
    return sorted(chosen, key=lambda p: (p["label"] != REFERENCE, p["label"], p["seed"]))


def kv(results: str, runs: str = "runs", bits: list[int] = [8, 4, 2, 1], rotate: list[bool] = [False, True],
       group: int | None = None, labels: list[str] | None = None, limit: int | None = 500, probe: bool = True,
       probe_limit: int = 100, device: str = "cpu", quick: bool = False) -> tuple[dict, str]:
    """Every checkpoint of a sweep scored with its KV cache at each bit width, against itself uncompressed.

    Args:
        results: A sweep's results folder (results/<sweep>), whose finished points are scored.
        runs: The folder its run folders are in (the sweep's --runs).
        bits: Widths to score (1, 2, 4, 8; 16, uncompressed, is always the reference).
        rotate: Score each width without the rotation (false), with it (true), or both.
        group: Channels per quantisation scale (default: a whole head vector).
        labels: Only these labels (default: every label that is not a positive control).
        limit: Test documents per score.
        probe: Also read the goal and edge attention (`foresight probe`) where the task allows it.
        probe_limit: Test graphs per probe reading.
        device: cpu or cuda.
        quick: Two widths, 24 documents, 8 graphs: checks the bench, measures nothing worth keeping.
    """
    from suite.bench import resolve_device
    from suite.evaluate import evaluate, task_kind
    from suite.probe import PATH_TASKS, attention_report, load_probed

    if quick:
        bits, rotate, limit, probe_limit = [2], [False], 24, 8
    if limit is not None:
        check_range("limit", limit, 1)
    check_range("probe_limit", probe_limit, 1)
    if not rotate:
        raise UsageError("--rotate is empty; allowed: [false], [true] or [false, true]")
    device = resolve_device(device)
    quantisers = settings(bits, rotate, group)
    chosen = points(Path(results), Path(runs), labels)
    task = chosen[0]["task"]
    primary = task_kind(task)[1]
    import tasks

    probing = probe and task in PATH_TASKS and tasks.build(task, **options_of(chosen[0]["checkpoint"])).path_length >= 4
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for point in chosen:
            probed = load_probed(point["checkpoint"], device) if probing else None  # once, read at every width
            for k, quant in enumerate(quantisers):
                scores = evaluate(point["checkpoint"], [task], Path(scratch) / f"{point['point']}-{k}", limit,
                                  device=device, kv_quant=quant)
                row = {**point, "bits": quant.bits if quant else 16, "rotate": bool(quant and quant.rotate),
                       "group": quant.group if quant else None,
                       "score": scores["results"][task][f"{primary},none"]}
                if probing:
                    report, _ = attention_report(probed, probe_limit, kv_quant=quant)
                    for key in ("goal", "edge", "first"):
                        row[f"probe_{key}"] = max(layer[key] for layer in report["layers"])
                rows.append(row)
            print(f"  scored {point['point']} at {len(quantisers)} settings", file=sys.stderr)
    summary = summarise(rows)
    report = {"config": {"results": results, "task": task, "metric": primary, "bits": bits, "rotate": rotate,
                         "group": group, "limit": limit, "probe": probing, "probe_limit": probe_limit,
                         "device": device, "checkpoints": len(chosen),
                         "storage": "quantised, then dequantised in float32: the values a b-bit cache gives "
                                    "back, not packed integers"},
              "rows": rows, "summary": summary}
    return report, kv_table(report)


def options_of(checkpoint: str) -> dict:
    from suite import checkpoints

    return (checkpoints.read(checkpoint, mmap=True).get("datamodule_hyper_parameters") or {}).get("options") or {}


def summarise(rows: list[dict]) -> list[dict]:
    """Per label and compressed setting: the mean drop over seeds with its interval, the probe's readings, and the
    difference of the drop from the reference label's, paired by seed."""
    from suite.statistics import mean_interval, seed_test

    base = {(r["label"], r["seed"]): r for r in rows if r["bits"] == 16}
    drops: dict[tuple, dict[int, float]] = {}
    found: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["bits"] == 16:
            continue
        key = (r["label"], r["bits"], r["rotate"])
        drops.setdefault(key, {})[r["seed"]] = base[(r["label"], r["seed"])]["score"] - r["score"]
        found.setdefault(key, []).append(r)
    summary = []
    for (label, bits, rotate), by_seed in drops.items():
        interval = mean_interval(list(by_seed.values()))
        entry = {"label": label, "bits": bits, "rotate": rotate, "seeds": len(by_seed),
                 "score_16": sum(base[(label, s)]["score"] for s in by_seed) / len(by_seed),
                 "score": sum(r["score"] for r in found[(label, bits, rotate)]) / len(by_seed),
                 "drop": interval.mean, "drop_half_width": interval.half_width}
        for key in ("goal", "edge", "first"):
            values = [r[f"probe_{key}"] for r in found[(label, bits, rotate)] if f"probe_{key}" in r]
            if values:
                entry[f"probe_{key}"] = sum(values) / len(values)
                entry[f"probe_{key}_16"] = sum(base[(label, s)][f"probe_{key}"] for s in by_seed) / len(by_seed)
        reference = drops.get((REFERENCE, bits, rotate))
        if label != REFERENCE and reference:
            test = seed_test(reference, by_seed)
            entry["vs_reference"] = {"difference": test.difference, "half_width": test.half_width, "p": test.p,
                                     "seeds": test.seeds, "test": test.test}
        summary.append(entry)
    return summary


def kv_table(report: dict) -> str:
    config = report["config"]
    probed = config["probe"]
    lines = [f"{config['task']} {config['metric']} of {config['checkpoints']} checkpoints with the KV cache "
             f"compressed ({config['storage']}). Drop = uncompressed score - compressed score, mean over seeds ± "
             f"95% interval; Δ drop vs {REFERENCE}: the difference of drops, paired by seed (negative: this label's "
             "score falls less)." + (" The probe's columns: the strongest head's attention on the goal and on the "
                                     "edge to follow, compressed (uncompressed)." if probed else ""), "",
             "| label | bits | rotated | seeds | uncompressed | compressed | drop | Δ drop vs ntp | p |"
             + (" goal (16 bits) | edge (16 bits) | first (16 bits) |" if probed else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if probed else "")]
    for e in sorted(report["summary"], key=lambda e: (e["label"] != REFERENCE, e["label"], -e["bits"], e["rotate"])):
        half = f" ± {e['drop_half_width']:.3f}" if e["drop_half_width"] is not None else ""
        versus = e.get("vs_reference")
        delta = "" if versus is None else f"{versus['difference']:+.3f}" + (
            f" ± {versus['half_width']:.3f}" if versus["half_width"] is not None else "")
        p = "" if versus is None or versus["p"] is None else f"{versus['p']:.2g}"
        cells = [e["label"], str(e["bits"]), "yes" if e["rotate"] else "no", str(e["seeds"]), f"{e['score_16']:.3f}",
                 f"{e['score']:.3f}", f"{e['drop']:+.3f}{half}", delta, p]
        if probed:
            cells += [f"{e.get(f'probe_{key}', float('nan')):.3f} ({e.get(f'probe_{key}_16', float('nan')):.3f})"
                      for key in ("goal", "edge", "first")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
