"""`foresight sweep --jobs N` (`suite.jobs`): never more than N points at once, a point after the reverse model it
reads, each slot its share of the cores; the time left from the points finished."""

import threading
import time
from dataclasses import dataclass

import pytest

from suite.jobs import run_side_by_side, slot_env, time_left


@dataclass
class Point:
    id: str
    needs: str | None = None


def test_at_most_n_points_run_at_once_and_a_point_waits_for_what_it_needs():
    points = [Point("reverse-s0"), Point("reverse-s1"), Point("ntp-s0"), Point("revlm-s0", needs="reverse-s0"),
              Point("revlm-s1", needs="reverse-s1"), Point("ntp-s1")]
    lock, running, most, events = threading.Lock(), set(), [0], []

    def execute(point, progress, lane, env, stop):
        with lock:
            running.add(point.id)
            most[0] = max(most[0], len(running))
            events.append(("start", point.id))
        time.sleep(0.3 if point.id.startswith("reverse") else 0.05)
        with lock:
            running.discard(point.id)
            events.append(("end", point.id))
        return {"status": "ok", "wall_seconds": 1.0}, "ok"

    run_side_by_side(points, 2, len(points), "toy", execute, [])
    assert most[0] == 2
    assert {point for kind, point in events if kind == "end"} == {p.id for p in points}
    for point in points:
        if point.needs:  # started only once what it reads had ended
            assert events.index(("end", point.needs)) < events.index(("start", point.id))


def test_one_job_runs_points_in_order():
    order = []
    run_side_by_side([Point(str(i)) for i in range(4)], 1, 4, "toy",
                     lambda point, *rest: (order.append(point.id), (None, "ok"))[1], [])
    assert order == ["0", "1", "2", "3"]


def test_a_slot_gets_its_share_of_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert slot_env(0, 2)["OMP_NUM_THREADS"] == "4" and slot_env(1, 8)["OMP_NUM_THREADS"] == "1"
    assert slot_env(0, 16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands
    assert "OMP_NUM_THREADS" not in slot_env(0, 2)


@pytest.mark.parametrize("seconds, remaining, jobs, text", [
    ([], 5, 2, ""), ([30.0, 40.0, 35.0], 4, 2, "about 70 s left"), ([60.0, 80.0, 70.0], 4, 2, "about 2 min left"), ([600.0], 5, 1, "about 50 min left"),
    ([3600.0], 6, 2, "about 3.0 h left"), ([60.0], 0, 2, "")])
def test_the_time_left_is_the_median_point_times_the_rounds_left(seconds, remaining, jobs, text):
    assert time_left(seconds, remaining, jobs) == text
