"""The verdict a report opens with, on hand-made rows: a control that wins, one that does not, one seed; each
objective said better, worse or not shown against NTP with its Δ, interval and p, and a note on seeds that score
well below chance. The numbers are worked out here by hand."""

import math

from suite.report import comparison, write_report
from suite.verdict import verdict_lines
from tests.unit.test_report import T_975_DF2, row, write_rows

# Star-graph items (1: the path was right), 10 documents a seed: NTP 0.5, 0.6, 0.5; a control at 1.0, 0.9, 1.0
NTP = [[1] * 5 + [0] * 5, [1] * 6 + [0] * 4, [1] * 5 + [0] * 5]
WINS = [[1] * 10, [1] * 9 + [0], [1] * 10]
SAME = [[1] * 5 + [0] * 5, [1] * 5 + [0] * 5, [1] * 6 + [0] * 4]  # 0.5, 0.5, 0.6: differences 0, -0.1, +0.1
STUCK = [[1] + [0] * 9, [1] * 5 + [0] * 5, [0] * 10]  # 0.1, 0.5, 0.0: two seeds well below 1/2


def rows_of(control_items, others=()) -> list[dict]:
    rows = [row("ntp", None, seed, NTP[seed]) for seed in range(3)]
    for seed in range(len(control_items)):
        control = row("ntp", None, seed, control_items[seed])
        control["point"] = f"control-{seed}"
        control["axes"] = {**control["axes"], "label": "ntp_reverse_order", "control": True}
        rows.append(control)
    for name, items in others:
        rows += [row(name, 2, seed, items[seed]) for seed in range(len(items))]
    return rows


def test_a_control_that_wins_says_the_suite_can_see_a_win_and_the_objectives_against_ntp():
    lines = verdict_lines(comparison(rows_of(WINS, [("parallel_mtp", SAME), ("sequential_mtp", STUCK)])))
    # control - NTP per seed: +0.5, +0.3, +0.5: mean 0.4333, sd 0.1155, half-width t(2) * sd / sqrt(3)
    half = T_975_DF2 * math.sqrt(((0.5 - 13 / 30) ** 2 * 2 + (0.3 - 13 / 30) ** 2) / 2) / math.sqrt(3)
    assert lines[0].startswith("- **The suite can see a win here**: the control wins. `ntp_reverse_order` (size nano) "
                               "against ntp on star_graph path_acc (higher is better): Δ +0.433 ± " + f"{half:.3f} (p = ")
    assert lines[0].endswith(", 3 seeds).")
    assert lines[1].startswith("- `parallel_mtp n=2` (size nano): no difference shown (the seeds could detect |Δ| ≥ ")
    assert "on star_graph path_acc (higher is better): Δ +0.000 ± " in lines[1] and "(p = 1, 3 seeds)." in lines[1]
    assert lines[2].startswith("- `sequential_mtp n=2` (size nano): ")  # -0.4, -0.1, -0.5: not significant at 3 seeds
    assert lines[3] == ("- `sequential_mtp n=2` scores well below chance (1/degree = 1/2) on star_graph path_acc on 2 of "
                        "3 seeds (seed 0: 0.100, seed 2: 0.000): plots/head_losses.png shows each head's curve.")
    assert len(lines) == 4


def test_a_control_that_does_not_win_says_no_row_is_evidence():
    lines = verdict_lines(comparison(rows_of(SAME)))
    assert lines[0].startswith("- **The control did not win**: at this budget the suite cannot see a win it should, so "
                               "no row below is evidence that an objective does not help.")


def test_one_seed_cannot_be_judged_and_tests_nothing(tmp_path):
    rows = [r for r in rows_of(WINS[:1], [("parallel_mtp", SAME[:1])]) if r["axes"]["seed"] == 0]
    lines = verdict_lines(comparison(rows))
    assert lines[0].startswith("- **The control cannot be judged** with fewer than 3 seeds")
    assert lines[0].endswith("Δ +0.500 (too few seeds for a test, 1 seed).")
    assert lines[1] == ("- `parallel_mtp n=2` (size nano): not tested on star_graph path_acc (higher is better): "
                        "Δ +0.000 (too few seeds for a test, 1 seed).")
    text = write_report(write_rows(tmp_path / "one", rows)).read_text()
    assert text.index("## Verdict") < text.index("## Comparison with next-token prediction")
    differences = text.split("## Differences from ntp")[1].split("##")[0]
    assert "s0:" not in differences  # no within-seed test where there are no seeds to compare


def test_no_control_says_so():
    lines = verdict_lines(comparison([row("ntp", None, 0, NTP[0]), row("parallel_mtp", 2, 0, SAME[0])]))
    assert lines[0].startswith("- No positive control in this sweep")
