"""`foresight bench`: the quick mode produces its table and JSON (never a timing assertion). Bad options:
tests/reliability/test_bad_input.py."""

import json
import subprocess
import sys

import pytest



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
    assert [row["objective"] for row in report["rows"]] == ["ntp", "parallel_mtp"]  # quick: two, every mode
    for row in report["rows"]:  # ntp and teacherless have no head block; every other objective has a headwise option
        heads = row["objective"] not in ("ntp", "teacherless")
        modes = ("headwise", "checkpointed", "all_at_once") if heads else ("headwise",)
        assert [key for key in row if key != "objective"] == list(modes)
        for mode in modes:
            assert row[mode]["peak_bytes"] > row[mode]["resting_bytes"] > 0
    table = result.stdout.strip().splitlines()
    assert table[-4].startswith("| objective | peak MiB") and table[-3].startswith("| --- |")
    assert [line.split("|")[1].strip() for line in table[-2:]] == ["ntp", "parallel_mtp"]


def bench_quick(name: str, tmp_path, *options: str) -> tuple[dict, list[str]]:
    result = foresight("bench", name, "--quick", "--out", str(tmp_path), *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / f"{name}-cpu-quick.json").read_text())
    assert report["bench"] == name
    assert report["command"] == " ".join(["foresight bench", name, "--quick --out", str(tmp_path), *options])
    assert report["commit"] and report["versions"]["torch"]
    return report, result.stdout.strip().splitlines()


@pytest.mark.slow
def test_decode_bench_quick_trains_decodes_both_ways_and_finds_them_identical(tmp_path):
    report, lines = bench_quick("decode", tmp_path, "--graphs=true")
    rows = report["rows"]
    assert [(row["objective"], row["n"]) for row in rows] == [
        (name, n) for name in ("parallel_mtp", "causal_mtp", "sequential_mtp") for n in (2, 4)]
    for row in rows:
        assert row["identical"] is True  # the one property that must hold whatever the timing
        assert len(row["decode_acceptance"]) == row["n"] - 1
        assert all(row[f"{way}_tokens_per_s"] > 0
                   for way in ("greedy", "speculative", "graphs_greedy", "graphs_speculative"))
        assert 1.0 <= row["decode_tokens_per_pass"] <= row["n"]
    assert lines[-8].startswith("| objective | n | greedy tok/s") and lines[-7].startswith("| --- |")
    assert [line.split("|")[1].strip() for line in lines[-6:]] == [row["objective"] for row in rows]


@pytest.mark.slow
def test_throughput_bench_quick_times_foresight_and_hf_llama(tmp_path):
    report, lines = bench_quick("throughput", tmp_path)
    (row,) = report["rows"]
    assert row["size"] == "micro" and len(row["foresight_seconds"]) == len(row["hf_llama_seconds"]) == 2
    assert row["ratio"] == pytest.approx(row["foresight_tokens_per_s"] / row["hf_llama_tokens_per_s"])
    assert lines[-3].startswith("| size | params | foresight tok/s") and lines[-1].startswith("| micro |")


@pytest.mark.slow
def test_overhead_bench_quick_sets_time_beside_flops(tmp_path):
    report, lines = bench_quick("overhead", tmp_path)
    rows = report["rows"]
    assert [(row["objective"], row["n"]) for row in rows] == [
        ("ntp", 1), ("parallel_mtp", 2), ("causal_mtp", 2), ("sequential_mtp", 2), ("fsp_bow", 2), ("fsp_revlm", 1),
        ("teacherless", 1), ("self_distill_mtp", 2)]
    ntp = rows[0]
    assert ntp["time_ratio"] == ntp["flop_ratio"] == ntp["efficiency"] == ntp["memory_ratio"] == 1.0
    for row in rows:
        assert row["efficiency"] == pytest.approx(row["flop_ratio"] / row["time_ratio"])
        assert row["peak_bytes"] > 0
    assert rows[1]["flop_ratio"] > 1.5  # a second head at nano, vocabulary 4096: its unembedding dominates
    assert lines[-len(rows) - 2].startswith("| size | objective | n | time x NTP")
    assert [line.split("|")[2].strip() for line in lines[-len(rows):]] == [row["objective"] for row in rows]


def test_architectures_bench_quick_times_every_architecture_against_llama():
    from suite.architectures import ARCHITECTURES
    from suite.bench.architectures import architectures

    report, table = architectures(quick=True)
    rows = {row["arch"]: row for row in report["rows"]}
    assert list(rows) == list(ARCHITECTURES) and rows["llama"]["ratio"] == 1.0
    # GPT-2's block at nano (d = 64, MLP 192), by hand: 2 LayerNorms 4d, qkv 3d^2 + 3d, proj d^2 + d,
    # up d*f + f, down f*d + d
    d, f = 64, 192
    assert rows["gpt2"]["parameters"]["trunk"] == 2 * (4 * d + 3 * d * d + 3 * d + d * d + d + 2 * d * f + f + d)
    assert rows["gpt2"]["config"]["positions"] == 64 and rows["gpt_neox"]["config"]["parallel_residual"]
    assert table.splitlines()[-1].startswith("| gpt2 | 83,456 |")
