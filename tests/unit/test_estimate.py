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


def row(size, flops_per_token, tokens, train_s, wall_s=None, machine=HERE, status="ok", resumed=None,
        task="star_graph"):
    return {"schema": 1, "sweep": "s", "point": f"p{size}{tokens}{train_s}{task}", "role": "point", "status": status,
            "axes": {"size": size, "data": task}, "machine": machine, "wall_seconds": wall_s,
            "train": {"tokens": tokens, "seconds": train_s, "resumed_from_step": resumed},
            "overhead": {"flops_per_token_analytic": flops_per_token}}


def write(folder, name, rows):
    (folder / name).mkdir(parents=True)
    (folder / name / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_calibration_reads_finished_rows_of_this_machine_by_task_and_size(tmp_path):
    write(tmp_path, "a", [row("nano", 1000, 2000, 10, wall_s=25), row("nano", 1000, 4000, 30, wall_s=42)])
    write(tmp_path, "b", [row("micro", 5000, 1000, 2),
                          row("micro", 5000, 1000, 1, machine={"cpus": 16, "gpu": "H200"}),  # another machine
                          row("nano", 1, 1, 1, status="failed"), row("nano", 1, 1, 1, resumed=100),
                          row("nano", 3000, 1000, 1, wall_s=31, task="corpus")])
    found = calibration(tmp_path, HERE)
    assert found["points"] == 4
    assert found["speed"] == {"star_graph nano": (2e6 + 4e6) / 40, "star_graph micro": 5e6 / 2, "corpus nano": 3e6}
    # median of wall - training over a task's rows that have a wall time
    assert found["startup_s"] == {"star_graph": (15 + 12) / 2, "corpus": 30}
    assert calibration(tmp_path, {"cpus": 8}) is None and calibration(tmp_path / "none", HERE) is None


def test_a_dry_run_goes_by_rows_of_the_points_own_task_and_says_when_it_has_none(tmp_path, prepared_corpus,
                                                                                  capsys, monkeypatch):
    """A corpus sweep's estimate is not a star graph's speed: with finished star-graph rows only, every corpus
    point is said to be assumed; with a corpus row of its size, that row's speed is used."""
    from suite.cli import main
    from suite.provenance import machine

    here = machine()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(f"name: mine\nbudget: {{steps: 100}}\nobjectives: [ntp]\nseeds: [0, 1]\n"
                                         f"data: {{task: corpus, options: {{path: {prepared_corpus}}}}}\n")
    write(tmp_path / "results", "star", [row("nano", 1e6, 1e6, 100, machine=here)])
    main(["sweep", "--config", "sweep.yaml", "--dry-run"])
    said = capsys.readouterr().out.splitlines()[-1]
    assert "an assumed 50 GFLOP/s for 2 of 2 points, which have no finished point of their task and size" in said
    assert "star_graph nano" not in said
    write(tmp_path / "results", "corpus", [row("nano", 2e6, 1e6, 100, machine=here, task="corpus")])
    main(["sweep", "--config", "sweep.yaml", "--dry-run"])
    said = capsys.readouterr().out.splitlines()[-1]
    assert "the speed finished points of the same task and size under results reached on this machine (corpus " \
           "nano 20 GFLOP/s)" in said and "assumed 50" not in said
