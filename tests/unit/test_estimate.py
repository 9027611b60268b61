"""The dry run's estimate: FLOPs in a unit that shows, durations in words, and a speed calibrated against the
finished points of this machine (hand-written rows, hand-computed speeds)."""

import json

import pytest

from suite.estimate import calibration, duration, si

HERE = {"platform": "Linux", "cpus": 2, "threads": 2}


@pytest.mark.parametrize("value, unit, text", [
    (2.06e11, "FLOP", "206 GFLOP"), (3.75e12, "FLOP", "3.75 TFLOP"), (5e10, "FLOP/s", "50 GFLOP/s"),
    (1.0e15, "FLOP", "1 PFLOP"), (512, "FLOP", "512 FLOP"), (0, "FLOP", "0 FLOP")])
def test_si_keeps_three_digits_with_a_prefix(value, unit, text):
    assert si(value, unit) == text


@pytest.mark.parametrize("seconds, text", [
    (0.2, "about 1 s"), (40, "about 40 s"), (89, "about 89 s"), (90, "about 2 minutes"), (61 * 60, "about 61 minutes"),
    (75, "about 75 s"), (100, "about 2 minutes"), (5400, "about 1.5 hours")])
def test_duration_in_words(seconds, text):
    assert duration(seconds) == text
    assert "about 1 minutes" not in duration(seconds)


def row(size, flops_per_token, tokens, train_s, wall_s=None, machine=HERE, status="ok", resumed=None):
    return {"schema": 1, "sweep": "s", "point": f"p{size}{tokens}{train_s}", "role": "point", "status": status,
            "axes": {"size": size}, "machine": machine, "wall_seconds": wall_s,
            "train": {"tokens": tokens, "seconds": train_s, "resumed_from_step": resumed},
            "overhead": {"flops_per_token_analytic": flops_per_token}}


def write(folder, name, rows):
    (folder / name).mkdir(parents=True)
    (folder / name / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_calibration_reads_finished_rows_of_this_machine_only(tmp_path):
    write(tmp_path, "a", [row("nano", 1000, 2000, 10, wall_s=25), row("nano", 1000, 4000, 30, wall_s=42)])
    write(tmp_path, "b", [row("micro", 5000, 1000, 2),
                          row("micro", 5000, 1000, 1, machine={"cpus": 16, "gpu": "H200"}),  # another machine
                          row("nano", 1, 1, 1, status="failed"), row("nano", 1, 1, 1, resumed=100)])
    found = calibration(tmp_path, HERE)
    assert found["points"] == 3
    assert found["speed"] == {"nano": (2e6 + 4e6) / 40, "micro": 5e6 / 2}
    assert found["overall"] == pytest.approx((2e6 + 4e6 + 5e6) / 42)
    assert found["startup_s"] == (15 + 12) / 2  # median of wall - training over the rows that have a wall time
    assert calibration(tmp_path, {"cpus": 8}) is None and calibration(tmp_path / "none", HERE) is None
