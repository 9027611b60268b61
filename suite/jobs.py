"""`foresight sweep --jobs N`: up to N points at once, each in its own process as always, so rows, locks and resumption
are what one point at a time gives. A point waits for the reverse model it reads (fsp_revlm) to finish. Each slot
gets its own GPU on a machine with several, or its share of the CPU cores; the progress shows one line per running
point and an estimate of the time left from the points already finished."""

from __future__ import annotations

import os
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait


def default_jobs() -> int:
    """What the machine has: one point per GPU, else one per CPU core."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else max(1, os.cpu_count() or 1)


def slot_env(slot: int, jobs: int) -> dict[str, str]:
    """The environment a point in `slot` of `jobs` adds to the sweep's: its own GPU where there are several (unless
    CUDA_VISIBLE_DEVICES already chooses), and its share of the CPU cores as torch's threads (unless
    OMP_NUM_THREADS is set)."""
    import torch

    env = {}
    if torch.cuda.is_available() and torch.cuda.device_count() > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % torch.cuda.device_count())
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def time_left(seconds: list[float], remaining: int, jobs: int, started: float | None = None) -> str:
    """'about 3 min left' from the median seconds of the finished points, `remaining` points run `jobs` at a time;
    '' with nothing finished to go by."""
    if not seconds or remaining <= 0:
        return ""
    left = statistics.median(seconds) * -(-remaining // max(1, min(jobs, remaining)))
    if started is not None:  # the points running now have been at it a while
        left = max(0.0, left - min(time.perf_counter() - started, statistics.median(seconds)))
    minutes = left / 60
    return f"about {round(left)} s left" if left < 90 else f"about {round(minutes)} min left" if minutes < 90 \
        else f"about {minutes / 60:.1f} h left"


def run_side_by_side(points: list, jobs: int, total: int, name: str, execute, finished_seconds: list) -> None:
    """Run `points` (each `execute(point, progress, lane, env, stop)` -> (row, what to say)) up to `jobs` at a time,
    a point only after the point it needs (`point.needs`) is done; `total` points in the sweep, the others finished
    before, whose wall seconds (`finished_seconds`) seed the estimate of the time left."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    jobs = max(1, min(jobs, len(points))) if points else 1
    seconds = [s for s in finished_seconds if s]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[left]}"))
    stop = threading.Event()
    with Progress(*columns) as progress:
        overall = progress.add_task(f"sweep {name}", total=total, completed=total - len(points),
                                    left=time_left(seconds, len(points), jobs))
        lanes = [progress.add_task("", total=1, visible=False, left="") for _ in range(jobs)]
        pending, running, free = list(points), {}, list(range(jobs))
        with ThreadPoolExecutor(jobs) as pool:
            try:
                while pending or running:
                    waiting = {p.id for p in pending} | {p.id for p, _, _ in running.values()}
                    for point in [p for p in pending if not (p.needs and p.needs in waiting)]:
                        if not free:
                            break
                        lane = free.pop(0)
                        pending.remove(point)
                        progress.update(lanes[lane], visible=True, completed=0, total=1,
                                        description=f"{point.id}: starting")
                        future = pool.submit(execute, point, progress, lanes[lane], slot_env(lane, jobs), stop)
                        running[future] = (point, lane, time.perf_counter())
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in done:
                        point, lane, started = running.pop(future)
                        row, said = future.result()
                        free.append(lane)
                        progress.update(lanes[lane], visible=False)
                        if row is not None and row.get("status") == "ok" and row.get("wall_seconds"):
                            seconds.append(row["wall_seconds"])
                        progress.advance(overall)
                        progress.console.print(f"{point.id}: {said}")
                    oldest = min((started for _, _, started in running.values()), default=None)
                    progress.update(overall, left=time_left(seconds, len(pending) + len(running), jobs, oldest))
            except BaseException:  # Ctrl-C: every running point's process is stopped before the sweep exits
                stop.set()
                raise
