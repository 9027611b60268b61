"""`foresight probe attention --checkpoint PATH`: where a star-graph model looks while it writes the path.

Huang et al. (2026) explain how multi-token objectives solve the star graph: an early layer attends to the goal
first, then a later layer traces the path backward by matching edges. This measures it. Each test graph is fed
whole (prompt and gold path, teacher-forced; a teacherless model gets its dummy inputs), every layer's attention
weights are written out, and at each answer position (the one that predicts path node k, for k >= 1) two masses
are taken per layer and head:

    goal   the weight on the goal token of the prompt
    edge   the weight on the edge that leads to the node being predicted (p[k-1] -> p[k]; in a reverse-order
           answer, the edge into the previous node), as the block of three positions the edge occupies: its two
           labels and the separator after them (`|`, or `/` after the last edge). A model that follows edges
           gathers each edge into that separator in its first layer and reads it there in the next: a next-token
           model on its plateau puts its strongest head's largest weight on the separator at nearly every step
           after the first, and on neither label (the positive control the probe must pass before its verdict on
           another objective counts)

`edge` averages the steps after the first and before the last (k = 2 .. L - 2), where teacher-forced next-token
prediction provably follows edges (the last node is in the prompt, so it may be copied instead); `first` is the
edge mass at k = 1, the step a next-token model cannot plan (Clever Hans: it guesses an arm). In a reverse-order
answer every step follows an edge backward, and none needs planning. The graphs need 4 path nodes at least.
Chance is the mass a head spreading its weight evenly over the visible positions would give. Written to OUT
(default: `probe/` beside the checkpoint's folder): probe.json (with the command and commit), probe.md (the table)
and attention.png (one graph's maps).

`foresight probe compare DIR... [--out FILE]` puts several probes side by side (e.g. NTP against MTP checkpoints):
per checkpoint, the strongest head on each mass and its ratio to even spreading.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from suite.errors import UsageError, check_range

KINDS = ("attention", "compare")
CONTROL_ACCURACY = 0.95
"""A model that predicts this share of the middle steps right (teacher-forced) finds the edges somehow."""
CONTROL_RATIO = 3.0
"""... and the probe must then see a head on the edge at this multiple of even spreading, or it misses the
mechanism, and its readings of other checkpoints are not evidence."""
PATH_TASKS = ("star_graph", "tree_path")
"""The tasks whose sequences the probe reads: an edge list, then "/ source goal =", then the path."""
MASSES = (("goal", "goal"), ("edge", "edge, after the first step"), ("first", "edge, first step"))
"""(key, title) of the masses; "after the first step" stops before the last node, which the prompt holds."""


@dataclass
class Graph:
    """Where things are in one star-graph sequence (token positions)."""

    goal: int
    queries: list[int]  # the position that predicts answer node k, for k = 1 .. L - 1
    edges: list[tuple[int, int, int]]  # for each of those steps: the edge it follows (its labels and separator)
    length: int  # positions up to the last answer node


def locate(tokens: list[str], prompt_len: int) -> Graph:
    """Positions in a star-graph sequence: `a b | c d | ... / source goal = p0 p1 ... goal <eos>`, or with the
    answer in reverse order (`= goal ... source <eos>`), where step k follows the edge p[k] -> p[k-1] backward."""
    slash = prompt_len - 4
    if slash < 1 or tokens[slash] != "/" or tokens[prompt_len - 1] != "=":
        raise ValueError(f"not a star-graph sequence: {' '.join(tokens[:prompt_len])}")
    edge_at = {(tokens[i], tokens[i + 1]): i for i in range(0, slash, 3)}
    source, goal = tokens[slash + 1], tokens[slash + 2]
    reverse = tokens[prompt_len] == goal and goal != source
    path, end = [], source if reverse else goal
    for token in tokens[prompt_len:]:
        path.append(token)
        if token == end:
            break
    queries = [prompt_len - 1 + k for k in range(1, len(path))]
    edges = []
    for k in range(1, len(path)):
        start = edge_at[(path[k], path[k - 1]) if reverse else (path[k - 1], path[k])]
        edges.append((start, start + 1, start + 2))  # the separator after the edge: "|", or "/" after the last
    return Graph(goal=slash + 2, queries=queries, edges=edges, length=prompt_len + len(path))


def masses(weights: torch.Tensor, graph: Graph) -> dict[str, torch.Tensor]:
    """Per layer and head [L, H]: the goal mass over every answer step, the edge mass over the steps after the
    first and before the last, the edge mass at the first step, and what spreading evenly would give for each.
    `weights` is [L, H, T, T] of one sequence."""
    q = torch.tensor(graph.queries)
    assert len(q) >= 3, "a path of 4 nodes at least: a step between the first and the last"
    blocks = torch.tensor(graph.edges)  # [steps, 3]
    goal = weights[:, :, q, graph.goal]  # [L, H, steps]
    edge = weights[:, :, q[:, None], blocks].sum(-1)
    visible = (q + 1).to(weights.dtype)
    middle = slice(1, -1)  # the last node is in the prompt (goal or source): it need not be found by an edge
    return {"goal": goal.mean(-1), "edge": edge[..., middle].mean(-1), "first": edge[..., 0],
            "goal_chance": (1 / visible).mean(), "edge_chance": (3 / visible[middle]).mean(),
            "first_chance": 3 / visible[0]}


def probe_attention(checkpoint: str, limit: int = 200, example: int = 0, out: str | None = None,
                    device: str = "cpu", origin: dict | None = None) -> dict:
    """
    Args:
        checkpoint: A checkpoint of a model trained on star_graph or tree_path (any objective; only the trunk is
            probed).
        limit: Test graphs to average over (the first ones).
        example: Which of them the heatmap shows.
        out: Folder for probe.json, probe.md and attention.png (default: probe/ beside the checkpoint's folder).
        device: cpu or cuda.
        origin: Provenance (command, commit, ...) to store in probe.json.
    """
    from suite.errors import check_writable

    out_dir = Path(out) if out else Path(checkpoint).resolve().parent.parent / "probe"
    check_writable("--out", out_dir)
    report, example_maps = attention_report(checkpoint, limit, example, device)
    report = {**(origin or {}), **report}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "probe.md").write_text(table(report) + "\n")
    heatmap(*example_maps, out_dir / "attention.png", title=f"{report['objective']}: test graph {example}")
    print(table(report))
    print(f"\nwritten: {out_dir}/probe.json, probe.md, attention.png", file=sys.stderr)
    return report


@dataclass
class Probed:
    """A path-finding checkpoint loaded for the probe: its trunk and objective (with its heads where they predict
    tokens), its task, the test examples and what the trunk read of them in training. Load once, read many times
    (`attention_report` at several KV-cache widths)."""

    checkpoint: str
    trunk: torch.nn.Module
    objective: object
    task: object
    examples: object
    inputs: torch.Tensor
    data: dict


def load_probed(checkpoint: str, device: str = "cpu") -> Probed:
    """A checkpoint trained left to right on a path task with paths of 4 nodes or more, ready for the probe."""
    import tasks
    from suite.checkpoints import load_readable
    from suite.errors import check_choice

    check_choice("device", device, ("cpu", "cuda"))
    model, stored = load_readable(checkpoint)
    data = stored.get("datamodule_hyper_parameters") or {}
    if data.get("task") not in PATH_TASKS or data.get("reverse"):
        raise UsageError(f"checkpoint {checkpoint!r} was trained on {data.get('task')!r}"
                         f"{' (reversed)' if data.get('reverse') else ''}; allowed: a checkpoint trained on "
                         f"{' or '.join(PATH_TASKS)}, left to right")
    task = tasks.build(data["task"], **(data.get("options") or {}))
    if task.path_length < 4:
        raise UsageError(f"checkpoint {checkpoint!r} was trained on paths of {task.path_length} nodes; allowed: 4 "
                         "nodes or more (the probe compares the first step with the ones between it and the last)")
    examples = task.examples("test")
    # what the trunk read in training: a teacherless model saw dummies where the answer is
    inputs = model.objective.inputs(examples.tokens, examples.loss_mask)
    return Probed(str(checkpoint), model.trunk.to(device).eval(), model.objective.to(device).eval(), task, examples,
                  inputs, data)


def attention_report(checkpoint: str | Probed, limit: int = 200, example: int = 0, device: str = "cpu",
                     kv_quant=None) -> tuple[dict, tuple]:
    """The probe's report of a checkpoint (a path, or one `load_probed` loaded on `device`) and the maps of test
    graph `example`, with the keys read through `kv_quant` (a `suite.quantize.KVQuant`: what a compressed KV cache
    would hold) where given."""
    check_range("limit", limit, 1)
    probed = checkpoint if isinstance(checkpoint, Probed) else load_probed(checkpoint, device)
    trunk, objective, task, examples, inputs = (probed.trunk, probed.objective, probed.task, probed.examples,
                                                probed.inputs)
    device = trunk.embed.weight.device
    count = min(limit, len(examples.tokens))
    check_range("example", example, 0, count - 1)  # one of the graphs probed (the test split may hold fewer)
    if kv_quant is not None:
        kv_quant.check(trunk.config.head_dim)
    trunk.kv_quant = kv_quant  # a loaded model read again at another width: this one, or none
    totals, example_maps = None, None
    for i in range(count):
        ids = examples.tokens[i].tolist()
        tokens = [task.tokenizer.id_to_token(t) for t in ids]
        graph = locate(tokens, int(examples.prompt_len[i]))
        read = inputs[i, : graph.length][None].to(device)
        weights = trunk.attention_weights(read)[:, 0].float().cpu()
        found = masses(weights, graph)
        with torch.no_grad():  # every head, teacher-forced on what the trunk read (`suite.plan`)
            predicted = objective.head_logits(trunk, read).argmax(-1)
        heads = task.head_accuracy(predicted.cpu(), torch.tensor([ids]))[0]
        found |= {"first_acc": heads[0, 1], "middle_acc": heads[0, 2:-2].mean(), "heads": heads}
        totals = found if totals is None else {key: totals[key] + found[key] for key in totals}
        if i == example:
            example_maps = (weights, graph, tokens[: graph.length])
    means = {key: value / count for key, value in totals.items()}
    report = {
        "checkpoint": probed.checkpoint, "objective": type(objective).__name__,
        "options": objective.spec()["init_args"], "graphs": count, "task": probed.data.get("options") or {},
        "chance": {key: float(means[f"{key}_chance"]) for key in ("goal", "edge", "first")},
        "accuracy": {"first": float(means["first_acc"]), "middle": float(means["middle_acc"])},
        "heads": [{"head": k + 1, "answer": [float(value) for value in row]} for k, row in enumerate(means["heads"])],
        "control": control(means),
        "layers": [{"layer": layer, "head": head, **{key: float(means[key][layer, head])
                                                       for key in ("goal", "edge", "first")}}
                   for layer in range(means["goal"].shape[0]) for head in range(means["goal"].shape[1])],
    }
    if kv_quant is not None:
        report["kv_cache"] = kv_quant.as_dict()
    return report, example_maps


def control(means: dict) -> str:
    """The probe's own positive control: a model that gets the middle steps right must be reading the edges, so
    the probe must see a head on them. "passes", "fails" (the probe misses a mechanism that is there: do not trust
    its other readings) or "not applicable" (the model does not solve the middle steps)."""
    if means["middle_acc"] < CONTROL_ACCURACY:
        return "not applicable"
    strongest = float((means["edge"] / means["edge_chance"]).max())
    return "passes" if strongest >= CONTROL_RATIO else "fails"


def table(report: dict) -> str:
    chance = report["chance"]
    lines = [f"Attention of {report['objective']} ({report['checkpoint']}) at the answer positions of "
             f"{report['graphs']} test star graphs: mean weight on the goal token, on the edge to the next node "
             "(its two labels and the separator after them) at the steps between the first and the last, and on "
             f"that edge at the first step. Even spreading gives {chance['goal']:.3f}, {chance['edge']:.3f} and "
             f"{chance['first']:.3f}. {control_sentence(report)}", "",
             "| layer | head | goal | edge, after the first step | edge, first step |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {row['layer']} | {row['head']} | {row['goal']:.3f} | {row['edge']:.3f} | {row['first']:.3f} |"
              for row in report["layers"]]
    heads = report.get("heads") or []
    if heads:
        tokens = len(heads[0]["answer"])
        lines += ["", "What each prediction head gets right, teacher-forced: head k predicts answer token i from the "
                  "position k before it (node 1 is the first step; head 2 predicts it from `=`, before any answer "
                  "token is read).", "",
                  "| head | " + " | ".join([f"node {i}" for i in range(tokens - 1)] + ["<eos>"]) + " |",
                  "| --- |" + " --- |" * tokens]
        lines += [f"| {row['head']} | " + " | ".join(f"{value:.3f}" for value in row["answer"]) + " |"
                  for row in heads]
    return "\n".join(lines)


def control_sentence(report: dict) -> str:
    accuracy, verdict = report["accuracy"], report["control"]
    said = (f"The model predicts {accuracy['middle']:.1%} of the middle steps and {accuracy['first']:.1%} of the "
            "first steps right (teacher-forced)")
    if verdict == "not applicable":
        return f"{said}; below {CONTROL_ACCURACY:.0%}, so the probe's control does not apply."
    return (f"{said}, so it finds the edges; the probe's control {verdict}: its strongest edge head is "
            f"{'at least' if verdict == 'passes' else 'below'} {CONTROL_RATIO:g}x even spreading.")


def heatmap(weights: torch.Tensor, graph: Graph, tokens: list[str], path: Path, title: str) -> None:
    """One panel per layer and head: the answer positions (rows) over every position they can see (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layer, n_head = weights.shape[:2]
    rows = list(range(graph.queries[0] - 1, graph.length - 1))  # from "=" (predicts the source) to the end
    fig, axes = plt.subplots(n_layer, n_head, figsize=(0.28 * graph.length * n_head + 1, 0.5 * len(rows) * n_layer
                                                       + 1), squeeze=False)
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            ax.imshow(weights[layer, head, rows][:, : graph.length].numpy(), vmin=0, vmax=1, cmap="viridis",
                      aspect="auto")
            ax.set_xticks(range(graph.length), tokens, fontsize=6)
            ax.set_yticks(range(len(rows)), [f"-> {tokens[r + 1]}" for r in rows], fontsize=6)
            ax.set_title(f"layer {layer}, head {head}", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(folders: list[str], out: str | None = None) -> str:
    """
    Args:
        folders: Probe folders (each holding the probe.json of `foresight probe attention`).
        out: A file for the table (markdown); it is printed either way.
    """
    from suite.errors import check_writable

    if not folders:
        raise UsageError("no probe folders; allowed: one or more folders written by `foresight probe attention`")
    reports = []
    for folder in folders:
        path = Path(folder) / "probe.json"
        try:
            report = json.loads(path.read_text())
            if not isinstance(report, dict) or not report.get("layers"):
                raise ValueError
        except (OSError, ValueError):
            raise UsageError(f"{str(folder)!r} holds no probe.json of `foresight probe attention`; allowed: folders "
                             "it wrote") from None
        reports.append((folder, report))
    if out:
        check_writable("--out", Path(out).parent)
    lines = ["Per probe, the head (layer.head) with the most attention on each target, its mean weight, and that "
             "weight over even spreading's; the share of middle steps the model predicts right (teacher-forced), and "
             f"the probe's control: a model with {CONTROL_ACCURACY:.0%} of them right must show a head at "
             f"{CONTROL_RATIO:g}x even spreading on the edge, or the probe misses what it does.", "",
             "| probe | objective | options | graphs | " + " | ".join(title for _, title in MASSES)
             + " | middle steps right | first step right | first step, by head (teacher-forced) | control |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in MASSES) + " | --- | --- | --- | --- |"]
    for folder, report in reports:
        cells = [Path(folder).name, report["objective"],
                 ", ".join(f"{key}={value}" for key, value in sorted(report.get("options", {}).items())
                           if value is not None) or "-",
                 str(report["graphs"])]
        for key, _ in MASSES:
            best = max(report["layers"], key=lambda row: row[key])
            cells.append(f"{best['layer']}.{best['head']}: {best[key]:.3f} ({best[key] / report['chance'][key]:.1f}x)")
        accuracy, heads = report.get("accuracy"), report.get("heads") or []
        # node 1 (the first step) as each head predicts it: head k from the position k before it
        by_head = ", ".join(f"h{row['head']} {row['answer'][1]:.3f}" for row in heads) or "—"
        cells += [f"{accuracy['middle']:.3f}" if accuracy else "—", f"{accuracy['first']:.3f}" if accuracy else "—",
                  by_head, report.get("control", "—")]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [Path(folder).name for folder, report in reports if report.get("control") == "fails"]
    if failed:
        lines += ["", f"The probe's control fails for {', '.join(failed)}: those models find the edges, and no head "
                      "shows it. The probe misses their mechanism; read no verdict from it."]
    text = "\n".join(lines)
    if out:
        Path(out).write_text(text + "\n")
    print(text)
    return text


def main(argv: list[str]) -> None:
    """`foresight probe attention --checkpoint PATH [--limit N] [--example I] [--out DIR] [--device D]`, or
    `foresight probe compare DIR... [--out FILE]`."""
    from suite.parsing import Parser

    from suite.provenance import provenance

    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: foresight probe KIND [options]; KIND: {', '.join(KINDS)}; `foresight probe KIND --help` lists "
              "its options")
        return
    if not argv or argv[0] not in KINDS:
        raise UsageError(f"unknown probe {argv[0] if argv else ''!r}; known: {', '.join(KINDS)}")
    if argv[0] == "compare":
        parser = Parser(prog="foresight probe compare", description="Several attention probes side by side.")
        parser.add_argument("folders", nargs="*", type=str, help="folders written by `foresight probe attention`")
        parser.add_argument("--out", type=str, help="also write the table to this file")
        args = parser.parse_args(argv[1:])  # a bad option: jsonargparse's ArgumentError, one line from suite.cli
        compare(args.folders, args.out)
        return
    parser = Parser(prog="foresight probe attention",
                    description="Attention of a star-graph model to the goal and to the path's edges.")
    parser.add_function_arguments(probe_attention, skip={"origin"})
    probe_attention(**parser.parse_args(argv[1:]).as_dict(), origin=provenance(["probe", *argv]))
