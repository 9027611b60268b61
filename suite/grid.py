"""A sweep file and its grid: `load_sweep` reads and checks the YAML, `grid` lists its points, `shard` splits them.

A sweep file (YAML; the shipped ones are in suite/sweeps/, e.g. `--config quickstart`):

    name: quickstart            # results/<name>/, runs/<name>/, the wandb group
    project: foresight          # the wandb project
    data: {task: star_graph, options: {degree: 2}, batch_size: 64}   # TaskData arguments
    model: {lr: 0.001}          # ObjectiveLM arguments every point shares
    trainer: {}                 # Trainer arguments every point shares (strategy, devices, precision, ...)
    sizes: [nano]
    seeds: [0, 1, 2]
    n: [2, 4]                   # the horizon, for objectives that have one (no NTP duplicates)
    objectives:                 # registry names, with options
      - ntp
      - {fsp_bow: {tau: 8}}
      # a variant under a name of its own, with its own data settings or horizons (controls, ablations):
      - {objective: ntp, label: ntp_reverse, data: {options: {answer_order: reverse}}, control: true}
      - {objective: parallel_mtp, label: parallel_mtp_siblings, options: {layout: siblings}, n: [2]}
    budget: {steps: 800}        # or {tokens: 2000000}: the same for every point
    eval: {tasks: [star_graph], limit: null}

A report compares every label with `ntp` at the same size and seed. `control: true` marks a positive control, a
setting known to beat next-token prediction on the task (here the reverse-order answer): the report says first
whether the suite saw that win at the sweep's budget, without which no "objective X does not help" holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from suite.errors import UsageError, check_range, one_line

SHIPPED = Path(__file__).resolve().parent / "sweeps"
KEYS = {"name", "project", "description", "data", "model", "trainer", "sizes", "seeds", "n", "objectives",
        "budget", "eval"}
ENTRY_KEYS = {"objective", "label", "options", "data", "n", "control"}
DEFAULT_OBJECTIVES = ["ntp", "parallel_mtp", "causal_mtp", "sequential_mtp", "fsp_bow", "fsp_revlm"]


@dataclass
class Sweep:
    name: str
    budget: dict
    project: str = "foresight"
    description: str = ""
    data: dict = field(default_factory=lambda: {"task": "star_graph"})
    model: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    sizes: list = field(default_factory=lambda: ["nano"])
    seeds: list = field(default_factory=lambda: [0])
    n: list = field(default_factory=lambda: [2, 4])
    objectives: list = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    eval: dict = field(default_factory=dict)
    source: str = ""  # what --config said: a shipped sweep's name or the file's path


@dataclass(frozen=True)
class Entry:
    """One line of a sweep's objectives: the objective, its options, the label a report compares it under (its
    name unless given), its data settings (the sweep's, with the entry's overrides), its horizons (None: the
    sweep's n) and whether it is a positive control."""

    objective: str
    options: dict
    label: str
    data: dict
    horizons: tuple | None = None
    control: bool = False


def find_sweep_file(config: str) -> Path:
    """A path, or the name of a sweep shipped in suite/sweeps/."""
    path = Path(config)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{config}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.yaml")))
    raise UsageError(f"sweep file {config!r} does not exist; allowed: a YAML path, or a shipped sweep: {known}")


def load_sweep(config: str) -> Sweep:
    """The sweep file, checked: one-line UsageErrors name the bad key or value."""
    from suite.sizes import SIZES

    path = find_sweep_file(config)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UsageError(f"sweep file {str(path)!r} is not valid YAML ({one_line(err)})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"sweep file {str(path)!r} holds {type(raw).__name__}; allowed: a mapping of {sorted(KEYS)}")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise UsageError(f"sweep file {str(path)!r} has unknown keys {unknown}; allowed: {', '.join(sorted(KEYS))}")
    for key in ("name", "budget"):
        if key not in raw:
            raise UsageError(f"sweep file {str(path)!r} has no {key!r}; allowed: a sweep with name and budget")
    # a shipped sweep is recorded by its name, so rows and commands do not depend on where foresight is installed
    sweep = Sweep(**raw, source=config if path.parent == SHIPPED and not Path(config).is_file() else str(path))
    if not plain_name(sweep.name):
        raise UsageError(f"sweep name {sweep.name!r} is not a plain name; allowed: letters, digits, - and _")
    for axis in ("sizes", "seeds", "n", "objectives"):
        values = getattr(sweep, axis)
        if not isinstance(values, list) or not values:
            raise UsageError(f"sweep {axis}={values!r} is empty; allowed: a non-empty list")
    for size in sweep.sizes:
        if size not in SIZES:
            raise UsageError(f"unknown size {size!r} in the sweep; known: {', '.join(SIZES)}")
    check_horizons("sweep n", sweep.n)
    for seed in sweep.seeds:
        if not isinstance(seed, int):
            raise UsageError(f"sweep seed {seed!r} is not an integer; allowed: seeds: a list of integers, e.g. "
                             "[0, 1, 2]")
    budget = sweep.budget if isinstance(sweep.budget, dict) else {}
    if len(budget) != 1 or next(iter(budget)) not in ("steps", "tokens") or not isinstance(
            next(iter(budget.values())), int) or next(iter(budget.values())) < 1:
        raise UsageError(f"sweep budget={sweep.budget!r}; allowed: {{steps: N}} or {{tokens: N}} with N >= 1")
    check_entries(sweep)
    from suite.evaluate import check_names

    check_names(list(sweep.eval.get("tasks") or []))
    return sweep


def plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and name.replace("-", "").replace("_", "").isalnum()


def check_horizons(what: str, values) -> None:
    for n in values:
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"{what}={n!r} is not a horizon; allowed: integers >= 1")


def check_entries(sweep: Sweep) -> None:
    """Every objective entry builds (a bad option fails now, not after hours of training), every task setting
    builds, and no two entries give the same label at the same n."""
    import objectives
    import tasks

    seen: set[tuple] = set()
    for entry in entries(sweep):
        if entry.data.get("task") not in tasks.TASKS:
            raise UsageError(f"unknown task {entry.data.get('task')!r} in the sweep's data; known: "
                             f"{', '.join(tasks.TASKS)}")
        if entry.data != sweep.data:  # an entry's own data settings are checked now (a task may be costly to build)
            tasks.build(entry.data["task"], **(entry.data.get("options") or {}))
        trial = {**entry.options, **({"reverse_lm": "-"} if entry.objective == "fsp_revlm" else {})}
        for n in horizons(sweep, entry) or [2]:  # at every horizon the entry runs at
            horizon = objectives.OBJECTIVES[entry.objective].horizon_options(n or 2) or {}
            objectives.build(entry.objective, **{**trial, **horizon})
        for n in horizons(sweep, entry):
            if (entry.label, n) in seen:
                raise UsageError(f"sweep objectives give label {entry.label!r}{f' at n={n}' if n else ''} twice; "
                                 "allowed: one entry per label and n (name a variant with label: ...)")
            seen.add((entry.label, n))


def entries(sweep: Sweep) -> list[Entry]:
    """The sweep's objective entries: `name`, `{name: {options}}`, or `{objective: name, label: ..., options:
    {...}, data: {...}, n: [...]}`."""
    import objectives

    found = []
    for raw in sweep.objectives:
        if isinstance(raw, dict) and "objective" in raw:
            unknown = sorted(set(raw) - ENTRY_KEYS)
            if unknown:
                raise UsageError(f"sweep objective {raw!r} has unknown keys {unknown}; allowed: "
                                 f"{', '.join(sorted(ENTRY_KEYS))}")
            name, options = objectives.resolve(raw["objective"]), raw.get("options") or {}
            label, data, n, control = raw.get("label", name), raw.get("data") or {}, raw.get("n"), raw.get("control")
            if not isinstance(control, (bool, type(None))):
                raise UsageError(f"sweep objective {label!r} control={control!r}; allowed: true or false")
        else:
            (name, options), data, n, control = objective_entry(raw), {}, None, None
            name = label = objectives.resolve(name)
        if not isinstance(options, dict) or not isinstance(data, dict):
            raise UsageError(f"sweep objective {raw!r}: options and data must be mappings")
        if not plain_name(label):
            raise UsageError(f"sweep label {label!r} is not a plain name; allowed: letters, digits, - and _")
        if n is not None:
            if not isinstance(n, list) or not n:
                raise UsageError(f"sweep objective {label!r} n={n!r}; allowed: a non-empty list of horizons")
            check_horizons(f"sweep objective {label!r} n", n)
            if not objectives.OBJECTIVES[name].horizon_options(2):
                raise UsageError(f"sweep objective {label!r} has n={n}, but {name} has no horizon; allowed: n only "
                                 "for objectives with one")
        merged = {**sweep.data, **data}
        if "options" in data:
            merged["options"] = {**(sweep.data.get("options") or {}), **(data["options"] or {})}
        found.append(Entry(name, dict(options), label, merged, None if n is None else tuple(n), bool(control)))
    return found


def objective_entry(entry) -> tuple[str, dict]:
    """`name` or `{name: {options}}`."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        name, options = next(iter(entry.items()))
        if options is None or isinstance(options, dict):
            return name, dict(options or {})
    raise UsageError(f"sweep objective {entry!r} is not an objective; allowed: a name, {{name: {{option: value}}}} "
                     "or {objective: name, label: ..., options: {...}, data: {...}, n: [...]}")


def horizons(sweep: Sweep, entry: Entry) -> list:
    """The n values an entry runs at: each n > 1 of its own list or the sweep's, or [None] without a horizon."""
    import objectives

    if not objectives.OBJECTIVES[entry.objective].horizon_options(2):
        return [None]
    return [n for n in (entry.horizons or sweep.n) if n > 1]


@dataclass(frozen=True)
class Point:
    id: str
    role: str  # "point", or "reverse_lm": the right-to-left model fsp_revlm points distill
    objective: str
    options: dict
    n: int | None
    size: str
    seed: int
    needs: str | None = None  # the reverse_lm point this one reads
    label: str = ""  # what a report compares it under; the objective's name unless the entry gave one
    data: dict = field(default_factory=dict)  # its TaskData settings
    control: bool = False  # a positive control (a report matter: not part of the id)


def _point(sweep: Sweep, role: str, entry: Entry, options: dict, n, size: str, seed: int, needs=None) -> Point:
    settings = {"role": role, "objective": entry.objective, "options": options, "n": n, "size": size, "seed": seed,
                "data": entry.data, "model": sweep.model, "trainer": sweep.trainer, "budget": sweep.budget,
                "eval": sweep.eval if role == "point" else {}}
    if entry.label != entry.objective:  # a plain entry's id is what it was before labels existed
        settings["label"] = entry.label
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = "reverse" if role == "reverse_lm" else entry.label + (f"-n{n}" if n is not None else "")
    return Point(f"{name}-{size}-s{seed}-{digest}", role, entry.objective, options, n, size, seed, needs,
                 entry.label, entry.data, entry.control)


def grid(sweep: Sweep) -> list[Point]:
    """Every point of the sweep, reverse models first. An objective without a horizon appears once per size and
    seed; one with a horizon once per n > 1 (n = 1 would be NTP again). fsp_revlm points of one data setting share
    one reverse model per size and seed."""
    import objectives

    points, reverse = [], []
    for size in sweep.sizes:
        for seed in sweep.seeds:
            needs: dict[str, str] = {}  # data setting -> its reverse model's point id
            for entry in entries(sweep):
                key = json.dumps(entry.data, sort_keys=True, default=str)
                if entry.objective == "fsp_revlm" and key not in needs:
                    reverse_entry = Entry("ntp", {}, "ntp", entry.data)
                    reverse.append(_point(sweep, "reverse_lm", reverse_entry, {}, None, size, seed))
                    needs[key] = reverse[-1].id
                for n in horizons(sweep, entry):
                    horizon = objectives.OBJECTIVES[entry.objective].horizon_options(n) if n else {}
                    points.append(_point(sweep, "point", entry, {**entry.options, **(horizon or {})}, n, size, seed,
                                         needs[key] if entry.objective == "fsp_revlm" else None))
    return reverse + points


def shard(points: list[Point], index: int, count: int) -> list[Point]:
    """Shard `index` of `count`: a deterministic partition of the grid in which a reverse model travels with the
    points that read it, so no two shards ever train the same point."""
    units: dict[str, list[Point]] = {}
    for point in points:
        units.setdefault(point.needs or point.id, []).append(point)
    return [p for i, unit in enumerate(units.values()) if i % count == index for p in unit]


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} is not i/N; allowed: e.g. 0/4 (shard 0 of 4)") from None
    check_range("--shard count", count, 1)
    if not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: index {index} is not in [0, {count - 1}]")
    return index, count


def export_wandb_sweep(sweep, points, path: Path, runs: str, results: str) -> str:
    """Write the wandb sweep config of `points` to `path`; returns what to run next."""
    config = {
        "name": sweep.name, "project": sweep.project, "method": "grid",
        "description": sweep.description or f"foresight sweep {sweep.name}",
        "parameters": {"point": {"values": [point.id for point in points]}},
        "command": ["foresight", "agent", "--config", source(sweep), "--runs", runs,
                    "--results", results, "${args}"],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    except OSError as err:
        raise UsageError(f"--export-wandb-sweep {str(path)!r} cannot be written ({err.strerror}); allowed: a file "
                         "in a folder you can write") from None
    return (f"written: {path} ({len(points)} points)\nnext: wandb sweep {path}   then on each machine: "
            f"wandb agent ENTITY/{sweep.project}/SWEEP_ID")


def source(sweep) -> str:
    """The sweep file as an agent on another machine or folder finds it: a shipped name, or an absolute path."""
    path = Path(sweep.source)
    return str(path.resolve()) if path.is_file() else sweep.source
