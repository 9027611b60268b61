"""What the report's plots show, checked on the figure before it is saved: one colour per objective in every
plot, no panel that repeats another, labelled reference lines (NTP's level, a task's chance), bars for one size."""

import pytest

import suite.plots as plots
from suite.plot_style import chance, styles


def entry(label, registry=None, n=None, size="nano", score=0.5, data=None, ratio=1.5):
    interval = {"mean": score, "half_width": None}
    return {"objective": label, "registry_name": registry or label, "n": n, "size": size, "seeds": [0],
            "families": {"reasoning": interval}, "scores": {"star_graph": {"path_acc": interval}},
            "data": data if data is not None else {"task": "star_graph", "options": {"degree": 3}},
            "overhead": {"step_time_s": {"ratio": None if label == "ntp" else ratio},
                         "train_memory_bytes": {"ratio": None if label == "ntp" else 1.0}}, "curves": []}


ENTRIES = [entry("ntp"), entry("parallel_mtp", n=2, score=0.4), entry("siblings", "parallel_mtp", 2, score=0.4),
           entry("parallel_mtp", n=4, score=0.3), entry("fsp_bow", score=0.5)]


def test_an_objective_has_its_registry_colour_and_each_of_its_settings_its_own_line_style():
    by_label = styles(ENTRIES, lambda e: e["objective"])
    # registry order: ntp C0, parallel_mtp C1, ..., fsp_bow C4, whatever the sweep's order
    assert {name: s["color"] for name, s in by_label.items()} == {
        "ntp": "C0", "parallel_mtp": "C1", "siblings": "C1", "fsp_bow": "C4"}
    assert by_label["parallel_mtp"]["linestyle"] != by_label["siblings"]["linestyle"]
    assert by_label["parallel_mtp"]["marker"] != by_label["siblings"]["marker"]
    alone = styles([ENTRIES[4]], lambda e: e["objective"])  # in a plot of its own: the same colour
    assert alone["fsp_bow"]["color"] == "C4"


@pytest.mark.parametrize("data, level", [
    ({"task": "star_graph", "options": {"degree": 3}}, (1 / 3, "1/degree = 1/3")),
    ({"task": "star_graph"}, (0.5, "1/degree = 1/2")),  # the task's default degree
    ({"task": "mix", "options": {"components": {"star_graph": 1}, "options": {"star_graph": {"degree": 4}}}},
     (0.25, "1/degree = 1/4"))])
def test_chance_is_one_over_the_degree_the_model_was_scored_on(data, level):
    assert chance([entry("ntp", data=data)], "star_graph", "path_acc") == level
    assert chance([entry("ntp", data=data)], "star_graph", "bits_per_byte") is None


def test_no_chance_line_where_entries_disagree_on_it():
    assert chance([entry("ntp"), entry("fsp_bow", data={"task": "star_graph"})], "star_graph", "path_acc") is None


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    return figures


def test_score_vs_n_has_one_panel_per_distinct_score_labelled_references_and_no_hidden_marker(drawn, tmp_path):
    assert plots.plot_score_vs_n(ENTRIES, tmp_path / "x.png")
    (fig,) = drawn
    axes = [axis for axis in fig.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["star_graph (nano)"]  # the family of one task: not twice
    labels = fig.legends[0].get_texts()
    assert {"ntp level (n = 1)", "chance: 1/degree = 1/3"} <= {text.get_text() for text in labels}
    at_2 = {bars.get_label(): [tuple(xy) for xy in bars.lines[0].get_xydata() if round(xy[0]) == 2]
            for bars in axes[0].containers}
    assert at_2["parallel_mtp"][0][1] == at_2["siblings"][0][1] == 0.4  # equal scores at n = 2 ...
    assert at_2["parallel_mtp"][0][0] != at_2["siblings"][0][0]  # ... side by side, neither hides the other


def test_overhead_with_one_size_is_bars_with_a_labelled_reference(drawn, tmp_path):
    series = [("step time / ntp", plots.ratio_value("step_time_s"))]
    assert plots.plot_by_size(ENTRIES, series, tmp_path / "x.png", skip_reference=True)
    axis = drawn[0].axes[0]
    assert len(axis.patches) == 4  # one bar per objective and n, NTP left out
    assert [text.get_text() for text in axis.get_xticklabels()] == [
        "parallel_mtp n=2", "siblings n=2", "parallel_mtp n=4", "fsp_bow"]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["ntp = 1"]


def test_with_several_sizes_overhead_is_lines_over_size(drawn, tmp_path):
    entries = ENTRIES + [{**e, "size": "micro"} for e in ENTRIES]
    assert plots.plot_by_size(entries, [("step", plots.ratio_value("step_time_s"))], tmp_path / "x.png", True)
    assert not drawn[0].axes[0].patches and len(drawn[0].axes[0].get_xticklabels()) == 2
