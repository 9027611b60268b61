"""`foresight report` on hand-made runs.jsonl files: every number checked against a value worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from suite.errors import UsageError
from suite.report import comparison, main, write_report
from suite.results import read_curves

T_975_DF2 = 4.302652729911275  # Student t's 97.5% quantile with 2 degrees of freedom, from a table
COMMAND = "foresight sweep --config sweeps/toy.yaml"

# Star-graph items (1: the path was right) of NTP on seeds 0, 1, 2: path_acc 0.5, 0.6, 0.7.
NTP_ITEMS = [[1, 1, 1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]]
# parallel_mtp n=2: seed 0 loses document 4 (b=1) and wins 5, 6, 7 (c=3); seed 1 wins 6, 7; seed 2 wins 7, 8, 9.
MTP2_ITEMS = [[1, 1, 1, 1, 0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [1] * 10]  # path_acc 0.7, 0.8, 1.0
# parallel_mtp n=4 (seed 2 failed): seed 0 loses 0, 1 and wins 5, 6; seed 1 loses 0 and wins 6, 7: b=3, c=4.
MTP4_ITEMS = [[0, 0, 1, 1, 1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]]  # path_acc 0.5, 0.7
# python_stdlib bits per byte per document (not 0/1: Wilcoxon); parallel_mtp n=2 - NTP = 0.25, 0.5 | -0.75, 1 | 1.25.
NTP_BPB = [[2.0, 2.0], [2.0, 2.0], [2.0]]
MTP2_BPB = [[2.25, 2.5], [1.25, 3.0], [3.25]]


def row(objective, n, seed, star_items, *, size="nano", bpb_items=None, step_time=0.1, memory=1000, status="ok",
        error=None, role="point", run_dir=None, curves=None) -> dict:
    """A runs.jsonl row (suite/results.py's schema) whose scores are the means of its items."""
    path_acc = sum(star_items) / len(star_items)
    scores, items = {"star_graph": {"path_acc": path_acc, "path_acc_stderr": 0.1}}, {"star_graph": star_items}
    if bpb_items is not None:
        scores["python_stdlib"] = {"bits_per_byte": sum(bpb_items) / len(bpb_items)}
        items["python_stdlib"] = bpb_items
    name = objective if n is None else f"{objective}-n{n}"
    return {
        "schema": 1, "sweep": "toy", "point": f"{name}-{size}-s{seed}-{role[:3]}", "role": role, "status": status,
        "error": error, "axes": {"objective": objective, "n": n, "size": size, "seed": seed, "data": "star_graph"},
        "objective": {"class_path": objective, "init_args": {} if n is None else {"n": n}}, "config": {},
        "scores": scores, "families": {"reasoning": path_acc}, "items": items,
        "overhead": {"step_time_s": step_time, "tokens_per_s": 1000 / step_time, "train_memory_bytes": memory,
                     "peak_memory_bytes": memory + 500, "memory_kind": "max_rss", "flops_per_token": 100.0,
                     "flops_per_token_analytic": 100.0},
        "params": {"total": 1000}, "train": {"steps": 3}, "curves": curves or {}, "eval_seconds": 1.0, "seconds": 2.0,
        "run_dir": run_dir or f"runs/gone/{name}-{seed}", "commit": "abc123", "dirty": False, "command": COMMAND,
        "date": "2026-01-01T00:00:00+00:00", "machine": {}, "versions": {}}


def sweep_rows(tmp_path=None) -> list[dict]:
    """A toy sweep's rows; seed 0 of NTP and of parallel MTP n=2 carry training curves."""
    curves = {name: {key: [[10 * i, loss] for i, loss in enumerate(losses)] for key in ("train/loss",
                                                                                     "train/loss/head_1")}
              for name, losses in (("ntp", [3.0, 2.5, 2.2]), ("mtp", [3.2, 2.6, 2.1]))}
    rows = []
    for seed, step_time in zip(range(3), (0.10, 0.12, 0.11)):
        rows.append(row("ntp", None, seed, NTP_ITEMS[seed], bpb_items=NTP_BPB[seed], step_time=step_time,
                        curves=curves["ntp"] if seed == 0 else None))
    for seed, step_time, memory in zip(range(3), (0.15, 0.15, 0.22), (1500, 1500, 1800)):
        rows.append(row("parallel_mtp", 2, seed, MTP2_ITEMS[seed], bpb_items=MTP2_BPB[seed], step_time=step_time,
                        memory=memory, curves=curves["mtp"] if seed == 0 else None))
    rows += [row("parallel_mtp", 4, seed, MTP4_ITEMS[seed], step_time=0.2) for seed in range(2)]
    rows.append(row("parallel_mtp", 4, 2, [0] * 10, status="failed", error="RuntimeError: out of memory\nat step 7"))
    rows.append(row("sequential_mtp", 2, 0, [1, 1, 1, 1, 1, 0, 0, 0, 0, 1]))  # one seed; c=1, b=0
    rows.append(row("ntp", None, 0, [0] * 10, role="reverse_lm", step_time=9.0))  # never compared
    return rows


def write_rows(folder, rows, tail: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return folder


def entry(entries, objective, n, size="nano"):
    return next(e for e in entries if (e["objective"], e["n"], e["size"]) == (objective, n, size))


def first_table(text: str) -> list[str]:
    """The lines of a report's first table (the comparison)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def exact_binomial_p(b: int, c: int) -> float:
    """Two-sided exact binomial (McNemar) p-value, by hand: double the smaller tail of Binomial(b + c, 1/2)."""
    total = b + c
    tail = sum(math.comb(total, k) for k in range(min(b, c) + 1)) / 2 ** total
    return min(1.0, 2 * tail)


def test_the_t_quantile_literal_is_scipys():
    # With 2 degrees of freedom the quantile has a closed form, t = (2p - 1) / sqrt(2p(1 - p)); the tabled literal
    # agrees with it (and scipy) to 10 digits.
    assert stats.t.ppf(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-14)
    assert T_975_DF2 == pytest.approx(stats.t.ppf(0.975, 2), rel=1e-10)


def test_means_and_confidence_intervals_over_seeds(tmp_path):
    entries = comparison(sweep_rows(tmp_path))
    ntp = entry(entries, "ntp", None)
    assert ntp["seeds"] == [0, 1, 2]  # the reverse LM on seed 0 is not a fourth NTP value
    interval = ntp["scores"]["star_graph"]["path_acc"]
    # 0.5, 0.6, 0.7: mean 0.6, sample sd 0.1
    assert interval["mean"] == pytest.approx(0.6)
    assert interval["half_width"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))
    assert ntp["families"]["reasoning"]["half_width"] == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3))
    assert "path_acc_stderr" not in ntp["scores"]["star_graph"]
    mtp = entry(entries, "parallel_mtp", 2)["scores"]["star_graph"]["path_acc"]
    sd = math.sqrt(((0.7 - 2.5 / 3) ** 2 + (0.8 - 2.5 / 3) ** 2 + (1.0 - 2.5 / 3) ** 2) / 2)
    assert (mtp["mean"], mtp["half_width"]) == pytest.approx((2.5 / 3, T_975_DF2 * sd / math.sqrt(3)))


def test_failed_points_are_left_out_of_the_means(tmp_path):
    mtp4 = entry(comparison(sweep_rows(tmp_path)), "parallel_mtp", 4)
    assert mtp4["seeds"] == [0, 1]
    assert mtp4["scores"]["star_graph"]["path_acc"]["mean"] == pytest.approx(0.6)  # (0.5 + 0.7) / 2, not with 0


def test_one_seed_has_no_interval(tmp_path):
    single = entry(comparison(sweep_rows(tmp_path)), "sequential_mtp", 2)
    assert single["scores"]["star_graph"]["path_acc"] == {"mean": pytest.approx(0.6), "half_width": None, "k": 1}


def t_test_p_df2(differences: list[float]) -> float:
    """Two-sided p of a one-sample t-test of 3 values, by hand: with 2 degrees of freedom Student's t has the
    closed-form cdf 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - |t| / sqrt(2 + t^2)."""
    mean = sum(differences) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    t = mean / (sd / math.sqrt(3))
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_the_p_value_is_a_paired_t_test_over_seeds_by_hand(tmp_path):
    entries = comparison(sweep_rows(tmp_path))
    test = entry(entries, "parallel_mtp", 2)["tests"]["star_graph"]
    # per seed: 0.7 - 0.5, 0.8 - 0.6, 1.0 - 0.7 = 0.2, 0.2, 0.3; mean 7/30, sd sqrt(1/300), t = 7, p = 1 - 7/sqrt(51)
    assert (test["test"], test["seeds"], test["metric"]) == ("paired t", 3, "path_acc")
    assert test["difference"] == pytest.approx(7 / 30)
    assert test["p"] == pytest.approx(1 - 7 / math.sqrt(51)) == pytest.approx(t_test_p_df2([0.2, 0.2, 0.3]))
    assert test["half_width"] == pytest.approx(T_975_DF2 * math.sqrt(1 / 300) / math.sqrt(3))
    assert test["significant"]
    # the documents of each seed, compared within that seed (a detail): seed 0 b=1, c=3; seed 1 b=0, c=2; seed 2
    # b=0, c=3
    within = {seed: detail["p"] for seed, detail in test["within_seed"].items()}
    assert within == pytest.approx({0: exact_binomial_p(1, 3), 1: exact_binomial_p(0, 2), 2: exact_binomial_p(0, 3)})
    assert entry(entries, "parallel_mtp", 2)["family_tests"]["reasoning"]["p"] == pytest.approx(test["p"])
    assert entry(entries, "ntp", None)["tests"] == {}


def test_fewer_than_three_seeds_give_no_p_value(tmp_path):
    entries = comparison(sweep_rows(tmp_path))
    n4 = entry(entries, "parallel_mtp", 4)["tests"]["star_graph"]  # seed 2 failed: seeds 0 and 1 only
    assert n4["p"] is None and n4["detectable"] is None and not n4["significant"]
    single = entry(entries, "sequential_mtp", 2)["tests"]["star_graph"]
    assert single["p"] is None and single["half_width"] is None


def test_a_score_without_0_1_documents_is_tested_over_seeds_too(tmp_path):
    test = entry(comparison(sweep_rows(tmp_path)), "parallel_mtp", 2)["tests"]["python_stdlib"]
    # per-seed means: NTP 2, 2, 2; parallel_mtp 2.375, 2.125, 3.25
    assert test["difference"] == pytest.approx((0.375 + 0.125 + 1.25) / 3)  # > 0: more bits per byte, worse
    assert test["p"] == pytest.approx(t_test_p_df2([0.375, 0.125, 1.25]))
    assert not test["significant"]
    # within seed 0 the differences are 0.25 and 0.5: of the 4 sign patterns only all-positive and all-negative
    # are as extreme, p = 2/4 (Wilcoxon signed-rank, exact)
    assert test["within_seed"][0]["test"] == "wilcoxon" and test["within_seed"][0]["p"] == pytest.approx(0.5)
    assert test["within_seed"][0]["p"] == pytest.approx(stats.wilcoxon([0.25, 0.5]).pvalue)


def test_the_detectable_difference_has_the_stated_power(tmp_path):
    test = entry(comparison(sweep_rows(tmp_path)), "parallel_mtp", 2)["tests"]["star_graph"]
    se = math.sqrt(1 / 300) / math.sqrt(3)  # of the mean per-seed difference
    critical = stats.t.ppf(0.975, 2)
    noncentrality = test["detectable"] / se
    power = stats.nct.sf(critical, 2, noncentrality) + stats.nct.cdf(-critical, 2, noncentrality)
    assert power == pytest.approx(0.8, abs=1e-6)


def test_the_hierarchical_bootstrap_resamples_seeds_then_documents():
    from suite.statistics import hierarchical_bootstrap

    # no spread within a seed: only the draw of seeds matters. Means of 3 draws from {0, 0, 1}: 0 with
    # probability 8/27, 1 with 1/27, so the 2.5% point is 0 and the 97.5% point is 1.
    assert hierarchical_bootstrap([np.zeros(5), np.zeros(5), np.ones(5)]) == (0.0, 1.0)
    # one seed: the plain bootstrap of a mean, whose 95% interval is about the mean ± 1.96 standard errors
    values = np.random.default_rng(3).normal(size=400)
    low, high = hierarchical_bootstrap([values])
    error = values.std() / math.sqrt(len(values))
    assert low == pytest.approx(values.mean() - 1.96 * error, abs=0.2 * error)
    assert high == pytest.approx(values.mean() + 1.96 * error, abs=0.2 * error)
    # the report's interval for the toy sweep holds the mean difference
    low, high = entry(comparison(sweep_rows()), "parallel_mtp", 2)["tests"]["star_graph"]["bootstrap"]
    assert low < 7 / 30 < high


def test_overhead_ratios_pair_each_seed_with_its_own_ntp(tmp_path):
    entries = comparison(sweep_rows(tmp_path))
    overhead = entry(entries, "parallel_mtp", 2)["overhead"]
    # 0.15 / 0.10, 0.15 / 0.12, 0.22 / 0.11 = 1.5, 1.25, 2.0 (the ratio of the means would be 1.5758)
    assert overhead["step_time_s"] == {"ratio": pytest.approx((1.5 + 1.25 + 2.0) / 3), "seeds": 3}
    assert overhead["train_memory_bytes"]["ratio"] == pytest.approx((1.5 + 1.5 + 1.8) / 3)
    assert overhead["peak_memory_bytes"]["ratio"] == pytest.approx((2000 / 1500 + 2000 / 1500 + 2300 / 1500) / 3)
    assert overhead["tokens_per_s"]["ratio"] == pytest.approx((1 / 1.5 + 1 / 1.25 + 1 / 2.0) / 3)
    assert overhead["flops_per_token"]["ratio"] == pytest.approx(1.0)
    # sequential_mtp ran seed 0 only: its ratio is against NTP seed 0 (0.1), not the reverse LM (9.0)
    assert entry(entries, "sequential_mtp", 2)["overhead"]["step_time_s"]["ratio"] == 1.0


def test_alpha_decides_the_marking(tmp_path):
    strict = entry(comparison(sweep_rows(tmp_path), alpha=0.01), "parallel_mtp", 2)["tests"]["star_graph"]
    assert not strict["significant"]  # p = 0.0198


def test_report_table_cells_legend_and_failures(tmp_path):
    folder = write_rows(tmp_path / "toy", sweep_rows(tmp_path))
    text = write_report(folder).read_text()
    assert text.startswith("# Sweep `toy`")
    assert f"Produced by `{COMMAND}` at commit `abc123`." in text
    assert "9 points compared" in text and "1 failed" in text and "1 reverse language model (for fsp_revlm)" in text
    table = first_table(text)
    # reasoning is the family of one task here: star_graph's column says it, not a column of its own
    assert table[0] == ("| objective | n | seeds | python_stdlib bits_per_byte (lower is better) | star_graph path_acc "
                        "(higher is better) | step time / NTP | memory / NTP |")
    assert [line.split(" | ")[0] for line in table[2:]] == ["| ntp", "| parallel_mtp", "| parallel_mtp",
                                                            "| sequential_mtp"]
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert table[2].startswith(f"| ntp | 1 | 3 | 2.000 ± 0.000 | 0.600 ± {half:.3f} | 1.00× |")
    mtp2 = table[3].split(" | ")
    assert mtp2[4].endswith("(p=0.02)") and mtp2[3].endswith("(p=0.23, n.s.)")
    assert mtp2[5:] == ["1.58×", "1.60× |"]
    # two seeds (0.5, 0.7): sd 0.1414, t.ppf(0.975, 1) = 12.706: an interval of ± 1.271, and no p-value
    assert table[4].split(" | ")[4] == "0.600 ± 1.271 (too few seeds)"
    assert table[5].split(" | ")[4] == "0.600"  # one seed: a bare mean, the caption says why
    assert "a setting with one seed (the seeds column) has a bare mean" in text and "no CI" not in text
    assert "paired t-test of the per-seed scores" in text and "`n.s.`: p ≥ 0.05" in text
    differences = text.split("## Differences from ntp")[1].split("##")[0]
    assert "McNemar" in differences and "Wilcoxon" in differences
    assert "| parallel_mtp | 2 | 3 | star_graph path_acc | +0.233 ± 0.143 |" in differences
    failures = text.split("## Failed points")[1]
    assert "`parallel_mtp-n4-nano-s2-poi`: parallel_mtp n=4, size nano, seed 2: RuntimeError: out of memory" in failures
    assert "at step 7" not in failures


def test_report_is_byte_identical_and_touches_nothing_else(tmp_path):
    folder = write_rows(tmp_path / "toy", sweep_rows(tmp_path))
    (folder / "notes.txt").write_text("mine")
    runs = (folder / "runs.jsonl").read_bytes()
    first = write_report(folder).read_bytes()
    plots = {path.name: path.read_bytes() for path in (folder / "plots").iterdir()}
    assert write_report(folder).read_bytes() == first
    assert {path.name: path.read_bytes() for path in (folder / "plots").iterdir()} == plots
    assert (folder / "runs.jsonl").read_bytes() == runs and (folder / "notes.txt").read_text() == "mine"
    assert sorted(path.name for path in folder.iterdir()) == ["notes.txt", "plots", "report.md", "runs.jsonl"]


def test_plots_are_pngs(tmp_path):
    folder = write_rows(tmp_path / "toy", sweep_rows(tmp_path))
    text = write_report(folder).read_text()
    names = sorted(path.name for path in (folder / "plots").iterdir())
    # one size: no score-vs-size or overhead-vs-size plot (the table has the ratios); learning curves from the two
    # rows that carry curves
    assert names == ["learning_curves.png", "score_vs_n.png"]
    for name in names:
        assert (folder / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(plots/{name})" in text


def test_several_sizes_get_a_size_column_and_a_size_plot(tmp_path):
    rows = [row("ntp", None, 0, NTP_ITEMS[0], size=size) for size in ("micro", "nano")]
    rows += [row("parallel_mtp", 2, 0, MTP2_ITEMS[0], size=size, step_time=0.3) for size in ("micro", "nano")]
    folder = write_rows(tmp_path / "sizes", rows)
    text = write_report(folder).read_text()
    table = first_table(text)
    assert "- learning_curves is not drawn: no row has training curves; rows written before" in text
    assert table[0].startswith("| size | objective | n |")
    assert [line.split(" | ")[:2] for line in table[2:]] == [["| nano", "ntp"], ["| nano", "parallel_mtp"],
                                                             ["| micro", "ntp"], ["| micro", "parallel_mtp"]]
    assert table[3].endswith("| 3.00× | 1.00× |")
    assert (folder / "plots" / "score_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    assert not (folder / "plots" / "learning_curves.png").exists()  # no row has curves


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    folder = write_rows(tmp_path / "toy", sweep_rows(tmp_path), tail='{"schema": 1, "point": "ntp-nano-s3')
    text = write_report(folder).read_text()
    assert "line 12 is not a complete row" in capsys.readouterr().err
    assert "- runs.jsonl: line 12 is not a complete row" in text
    assert "9 points compared" in text


def test_main_prints_the_table_and_the_path(tmp_path, capsys):
    folder = write_rows(tmp_path / "toy", sweep_rows(tmp_path))
    main([str(folder), "--alpha", "0.01"])
    out = capsys.readouterr().out
    assert f"written: {folder / 'report.md'}" in out
    assert out.rstrip().splitlines()[-1].startswith("| sequential_mtp |")
    assert "(p=0.02, n.s.)" in out  # significant at 0.05, not at 0.01


@pytest.mark.parametrize("argv, message", [
    ([], "FOLDER is missing"),
    (["{tmp}/absent"], "does not exist"),
    (["{tmp}"], "has no runs.jsonl"),
    (["{tmp}/torn"], "has no complete rows"),
    (["{tmp}/toy", "--alpha", "0"], "--alpha=0.0 is out of range; allowed: 0 < alpha < 1"),
    (["{tmp}/toy", "--alpha", "1"], "--alpha=1.0 is out of range"),
    (["{tmp}/toy", "--alpha", "-0.5"], "--alpha=-0.5 is out of range"),
    (["{tmp}/toy", "--alpha", "often"], "alpha"),
    (["{tmp}/old"], "has schema 0; allowed: 1"),
])
def test_bad_input_is_a_one_line_usage_error(tmp_path, argv, message):
    write_rows(tmp_path / "toy", sweep_rows(tmp_path))
    write_rows(tmp_path / "torn", [], tail='{"schema": 1, "poi')
    write_rows(tmp_path / "old", [{**row("ntp", None, 0, [1]), "schema": 0}])
    with pytest.raises(UsageError, match=message) as raised:
        main([arg.format(tmp=tmp_path) for arg in argv])
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "toy" / "report.md").exists()


def test_read_curves_keeps_evenly_spaced_steps_and_the_last_and_skips_torn_lines(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": step, "train/loss": 10.0 - step, "epoch": 0}) for step in range(10)]
    lines.insert(3, json.dumps({"step": 2, "val/loss": 1.5}))  # another key at a logged step
    metrics.write_text("\n".join(lines) + '\n{"step": 10, "train/lo')  # a torn last line
    assert read_curves(metrics, keys=("train/loss", "val/loss"), points=4) == {
        "train/loss": [[0, 10.0], [3, 7.0], [6, 4.0], [9, 1.0]], "val/loss": [[2, 1.5]]}
    assert read_curves(metrics, keys=("train/loss",), points=20)["train/loss"][-1] == [9, 1.0]
    assert read_curves(tmp_path / "gone.jsonl") == {}


def test_every_metric_section_tabulates_secondary_metrics_per_objective(tmp_path):
    rows = []
    for objective, n, recall in (("ntp", None, ((0.2, 0.1), (0.4, 0.1))), ("parallel_mtp", 2, ((0.5, 0.0),))):
        for seed, (acc, acc_1x) in enumerate(recall):
            rows.append(row(objective, n, seed, [1, 0]))
            rows[-1]["scores"]["biographies"] = {"acc": acc, "acc_1x": acc_1x, "sample_len": 10.0}
    text = write_report(write_rows(tmp_path / "bio", rows)).read_text()
    section = text.split("## Every metric\n")[1].split("## Failed points")[0]
    # NTP: acc 0.2, 0.4: mean 0.3, sd 0.1414, half-width t(0.975, 1) * 0.1414 / sqrt(2) = 12.706 * 0.1 = 1.271
    assert section.split("### biographies\n")[1].strip().splitlines() == [
        "| objective | n | seeds | acc | acc_1x |", "|---|---|---|---|---|",
        "| ntp | 1 | 2 | 0.300 ± 1.271 | 0.100 ± 0.000 |", "| parallel_mtp | 2 | 1 | 0.500 | 0.000 |"]
    assert "### star_graph" not in section  # one metric: the comparison table has it all


def test_time_to_ntps_level_is_the_first_validation_step_at_90_percent_of_its_final_score(tmp_path):
    rows = [row("ntp", None, seed, NTP_ITEMS[seed]) for seed in range(3)]  # final path_acc 0.5, 0.6, 0.7: mean 0.6
    climbs = {0: [[100, 0.1], [200, 0.53], [300, 0.6]], 1: [[100, 0.55], [200, 0.2]], 2: [[100, 0.3], [200, 0.5]]}
    for seed in range(3):
        rows.append(row("parallel_mtp", 2, seed, MTP2_ITEMS[seed],
                        curves={"val/star_graph/path_acc": climbs[seed]}))
    text = write_report(write_rows(tmp_path / "toy", rows)).read_text()
    section = text.split("## Time to ntp's level")[1].split("##")[0]
    # the level: 0.9 x 0.6 = 0.54; seed 0 first reaches it at 300 (0.53 < 0.54), seed 1 at 100, seed 2 never
    assert "| parallel_mtp | 2 | 3 | star_graph path_acc ≥ 0.540 | s0: 300, s1: 100, s2: — |" in section
    assert "| ntp |" not in section  # NTP's rows carry no validation curves here
