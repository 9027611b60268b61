"""One results folder, one setting: what a sweep's rows share (its data, model, trainer, budget and evaluation, before
any entry's own data), how two settings differ, and which failed rows are stale.

A report averages seeds of one setting; rows of two datasets under one sweep name would be averaged as if they were
seeds of one. So `foresight sweep` refuses to add rows of another setting to a folder, and `foresight report`
refuses a folder that holds two. Rows record their sweep's `setting`; rows written before foresight recorded it
are read by their own config: a point that is not a control has its sweep's data, and a control (whose data an entry
may change: the reverse-order answer, the test documents trained on) and a reverse model are held to the others'
model, trainer and budget."""

from __future__ import annotations

import json

from suite.errors import UsageError

KEYS = ("data", "model", "trainer", "budget", "eval")
SHARED = ("model", "trainer", "budget")
"""What every row of a folder shares, the controls and reverse models of rows that predate `setting` included."""


def sweep_setting(sweep) -> dict:
    """The setting a sweep's rows record: its sweep-level data, model, trainer, budget and eval."""
    return {key: getattr(sweep, key) for key in KEYS}


def row_setting(row: dict) -> dict | None:
    """The setting a row was made under: as recorded, or (older rows) its config where it is the sweep's own:
    None for a control or a reverse model, whose data may be an entry's."""
    if row.get("setting") is not None:
        return row["setting"]
    axes, config = row.get("axes") or {}, row.get("config") or {}
    if axes.get("control") or row.get("role", "point") != "point" or not config:
        return None
    return {key: config.get(key) for key in KEYS}


def difference(a, b, where: str = "") -> tuple[str, str, str] | None:
    """The first place two settings differ, as (key, a's value, b's value) in JSON, or None where they agree."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            found = difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    a_text, b_text = (json.dumps(value, sort_keys=True, default=str) for value in (a, b))
    return None if a_text == b_text else (where, a_text, b_text)


def _shared(row: dict) -> dict:
    return {key: (row.get("config") or {}).get(key) for key in SHARED}


def folder_setting(rows: list[dict]) -> tuple[dict | None, tuple | None]:
    """(the setting the folder's finished rows share, or None when none records one; the first difference between
    them, or None when they agree). `rows` are the newest rows of each point."""
    finished = [row for row in rows if row.get("status") == "ok"]
    known = [setting for setting in map(row_setting, finished) if setting is not None]
    if not known:
        return None, None
    base = known[0]
    for setting in known[1:]:
        found = difference(base, setting)
        if found:
            return base, found
    unknown = [row for row in finished if row_setting(row) is None]
    return base, next(filter(None, (difference({key: base[key] for key in SHARED}, _shared(row))
                                    for row in unknown)), None)


def check_folder(rows: list[dict], folder) -> dict | None:
    """The folder's setting; a UsageError when its finished rows come from two (a report would average them)."""
    base, found = folder_setting(rows)
    if found:
        where, a, b = found
        raise UsageError(f"{folder} holds rows of more than one setting ({where}: {a} in some, {b} in others); "
                         "allowed: one setting a results folder: move one setting's rows to a folder of their own "
                         "(a sweep writes results/<its name>)")
    return base


def check_sweep(sweep, rows: list[dict], folder) -> None:
    """A UsageError when the folder holds finished rows of another setting than the sweep's, before it runs."""
    base = check_folder(rows, folder)
    ours = sweep_setting(sweep)
    found = difference(ours, base) if base is not None else None
    if found is None:
        unknown = [row for row in rows if row.get("status") == "ok" and row_setting(row) is None]
        found = next(filter(None, (difference({key: ours[key] for key in SHARED}, _shared(row))
                                   for row in unknown)), None)
    if found:
        where, here, there = found
        raise UsageError(f"sweep {sweep.name!r} differs from the rows already in {folder} ({where}: {here} here, "
                         f"{there} there); allowed: a new sweep name, or --results elsewhere")


def stale(rows: list[dict]) -> dict[str, str]:
    """{point: why} for failed rows a report need not count: superseded (a finished point of the same label, n,
    size and seed, e.g. after a bad option was fixed) or of another setting than the folder's finished rows."""
    finished = [row for row in rows if row.get("status") == "ok"]
    done = {_place(row) for row in finished}
    base, _ = folder_setting(rows)
    found = {}
    for row in rows:
        if row.get("status") != "failed":
            continue
        if _place(row) in done:
            found[row["point"]] = "superseded by a finished point of the same setting and seed"
        elif base is not None and row_setting(row) is not None and difference(row_setting(row), base):
            where, its, theirs = difference(row_setting(row), base)
            found[row["point"]] = f"of another setting ({where}: {its}, the finished rows' {theirs})"
    return found


def _place(row: dict) -> tuple:
    axes = row.get("axes") or {}
    return (axes.get("label") or axes.get("objective"), axes.get("n"), axes.get("size"), axes.get("seed"),
            row.get("role"))
