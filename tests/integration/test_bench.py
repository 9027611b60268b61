"""`foresight bench`: the quick mode produces its table and JSON (never a timing assertion); bad options fail early."""

import json
import subprocess
import sys

import pytest

import objectives


def foresight(*args, cwd):
    return subprocess.run([sys.executable, "-m", "suite.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_memory_bench_quick_writes_its_table_and_json(tmp_path):
    result = foresight("bench", "memory", "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "memory-cpu-quick.json").read_text())
    assert report["bench"] == "memory" and report["command"] == f"foresight bench memory --quick --out {tmp_path}"
    assert report["commit"] and report["versions"]["torch"]
    assert [row["objective"] for row in report["rows"]] == list(objectives.OBJECTIVES)
    for row in report["rows"]:
        modes = ("headwise",) if row["objective"] == "ntp" else ("headwise", "all_at_once")
        for mode in modes:
            assert row[mode]["peak_bytes"] > row[mode]["resting_bytes"] > 0
    table = result.stdout.strip().splitlines()
    assert table[-8].startswith("| objective | peak MiB") and table[-7].startswith("| --- |")
    assert [line.split("|")[1].strip() for line in table[-6:]] == list(objectives.OBJECTIVES)


@pytest.mark.parametrize("args, message", [
    (["bench", "speed"], "unknown bench 'speed'; known: memory"),
    (["bench", "memory", "--n", "1"], "n=1 is out of range; allowed: in [2, 1023]"),
    (["bench", "memory", "--size", "huge"], "unknown size 'huge'"),
    (["bench", "memory", "--device", "tpu"], "unknown device 'tpu'; known: cpu, cuda"),
    (["bench", "memory", "--out", "/proc/foresight"], "--out '/proc/foresight' is not a writable folder"),
])
def test_bench_bad_options_fail_before_measuring(args, message, tmp_path):
    result = foresight(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"foresight: error: {result.stderr.split('error: ', 1)[1].strip()}"]
    assert message in result.stderr
