"""`foresight probe attention`: the attention weights written out, the star-graph positions and the masses on
hand-written sequences and weights, and the command on a real checkpoint."""

import json

import pytest
import torch

from suite.model import Trunk
from suite.probe import Graph, locate, masses
from suite.sizes import ModelConfig
from tests.conftest import STAR_17

# Degree 2, path length 4: source 0, arms 0 -> 1 -> 2 -> 3 (the goal) and 0 -> 4 -> 5 -> 6; the prompt is 21 tokens,
# up to and including "="; the edges start at 0, 3, ..., 15, each followed by "|" (by "/" after the last)
PROMPT = "4 5 | 0 1 | 2 3 | 0 4 | 1 2 | 5 6 / 0 3 ="
TOKENS = f"{PROMPT} 0 1 2 3 <eos>".split()
REVERSE = f"{PROMPT} 3 2 1 0 <eos>".split()


@pytest.mark.parametrize("kv_heads", [None, 1])
def test_attention_weights_are_the_ones_sdpa_applies(kv_heads):
    config = ModelConfig(n_layer=2, d_model=16, n_head=2, n_kv_head=kv_heads, vocab_size=23)
    trunk = Trunk(config).eval()
    ids = torch.randint(0, 23, (3, 9))
    weights = trunk.attention_weights(ids)
    assert weights.shape == (2, 3, 2, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 2, 9))
    assert torch.all(weights.triu(1) == 0)  # causal
    rope, x = trunk.rope(0, 9), trunk.embed(ids)
    with torch.no_grad():
        for layer, block in enumerate(trunk.blocks):
            attn, h = block.attn, block.attn_norm(x)
            _, _, v = attn._qkv(h, rope)
            v = v.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
            by_hand = attn.proj((weights[layer] @ v).transpose(1, 2).reshape(3, 9, -1))
            torch.testing.assert_close(by_hand, attn(h, rope), rtol=1e-5, atol=1e-6)
            x = block(x, rope)


def test_locate_finds_the_goal_the_answer_positions_and_each_steps_edge():
    # goal "3" at 19; 21 holds p0 = "0" and predicts "1" (edge 0 -> 1 at 3, 4 and its "|" at 5), 22 predicts "2"
    # (1 -> 2 at 12, 13, 14), 23 predicts the goal (2 -> 3 at 6, 7, 8)
    assert locate(TOKENS, prompt_len=21) == Graph(goal=19, queries=[21, 22, 23],
                                                  edges=[(3, 4, 5), (12, 13, 14), (6, 7, 8)], length=25)


def test_locate_follows_a_reverse_order_answer_backward_along_the_edges():
    # 21 holds the goal "3" and predicts "2": the edge into 3 is 2 -> 3; then 1 -> 2, then 0 -> 1
    assert locate(REVERSE, prompt_len=21) == Graph(goal=19, queries=[21, 22, 23],
                                                   edges=[(6, 7, 8), (12, 13, 14), (3, 4, 5)], length=25)


def test_locate_reads_a_tree_path_sequence_the_same_way():
    from tasks import TreePath

    task = TreePath(depth=3, num_nodes=20, num_train=5, num_val=5, num_test=5)
    for row in task.examples("test").tokens:
        tokens = [task.tokenizer.id_to_token(t) for t in row.tolist()]
        graph = locate(tokens, task.prompt_len)
        path = tokens[task.prompt_len: task.prompt_len + 4]
        assert graph.goal == task.prompt_len - 2 and tokens[graph.goal] == path[-1]
        assert [(tokens[a], tokens[b]) for a, b, _ in graph.edges] == list(zip(path, path[1:]))
        assert all(tokens[c] in ("|", "/") for _, _, c in graph.edges) and graph.length == task.prompt_len + 4


def test_locate_refuses_what_is_not_a_star_graph():
    with pytest.raises(ValueError, match="not a star-graph sequence"):
        locate(TOKENS, prompt_len=20)


GRAPH = locate(TOKENS, prompt_len=21)


def test_masses_on_hand_written_weights():
    weights = torch.zeros(1, 2, 25, 25)
    weights[0, 0, 21, [19, 3, 4]] = torch.tensor([0.5, 0.25, 0.25])  # head 0: goal, then the first step's edge
    weights[0, 0, 22, 13] = 1.0  # the middle step's edge
    weights[0, 0, 23, 19] = 1.0  # the last step: the goal, copied from the prompt
    weights[0, 1, 21, 0] = 1.0  # head 1: elsewhere at the first step, on the goal at the second
    weights[0, 1, 22, 19] = 1.0
    weights[0, 1, 23, 7] = 1.0  # and on the last step's edge, which the edge mass leaves out
    found = masses(weights, GRAPH)
    assert found["goal"][0].tolist() == pytest.approx([1.5 / 3, 1 / 3])
    assert found["edge"].tolist() == [[1.0, 0.0]]  # the steps between the first and the last: here the second
    assert found["first"].tolist() == [[0.5, 0.0]]
    assert found["goal_chance"].item() == pytest.approx((1 / 22 + 1 / 23 + 1 / 24) / 3)
    assert found["edge_chance"].item() == pytest.approx(3 / 23)
    assert found["first_chance"].item() == pytest.approx(3 / 22)


def test_a_head_that_reads_the_edge_at_its_separator_is_seen():
    """The mechanism a next-token model uses after the first step: layer 0 gathers each edge into the separator
    after it, layer 1 reads it there. A measure of the two labels alone gives this head 0."""
    weights = torch.zeros(2, 1, 25, 25)
    for query, separator in ((21, 5), (22, 14), (23, 8)):
        weights[1, 0, query, separator] = 1.0  # layer 1: the separator after each step's edge
    for query, wrong in ((21, 17), (22, 2), (23, 11)):
        weights[0, 0, query, wrong] = 1.0  # layer 0: the separators of wrong edges
    found = masses(weights, GRAPH)
    assert found["edge"].tolist() == [[0.0], [1.0]] and found["first"].tolist() == [[0.0], [1.0]]


def test_a_reverse_order_head_is_measured_on_the_edges_it_follows_backward():
    weights = torch.zeros(1, 1, 25, 25)
    for query, node in ((21, 7), (22, 13), (23, 4)):  # the label each step reads off: 2, then 1, then 0
        weights[0, 0, query, node] = 1.0
    found = masses(weights, locate(REVERSE, prompt_len=21))
    assert found["edge"].tolist() == [[1.0]] and found["first"].tolist() == [[1.0]]
    # read as a forward answer, its first step reads the wrong edge (the middle edge, 1 -> 2, is on both paths)
    assert masses(weights, GRAPH)["first"].tolist() == [[0.0]]


@pytest.fixture(scope="module")
def star_checkpoint(tmp_path_factory):
    import lightning as L

    from objectives import ParallelMTP
    from suite import ObjectiveLM, TaskData

    data = TaskData(options=STAR_17, batch_size=16)
    model = ObjectiveLM("nano", ParallelMTP(n=2), vocab_size=data.vocab_size)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    path = tmp_path_factory.mktemp("star") / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    trainer.save_checkpoint(path)
    return path


def test_a_checkpoint_loaded_once_reads_as_a_fresh_load_at_every_width(star_checkpoint):
    """`foresight bench kv` loads each checkpoint once and reads it at every KV-cache width: each reading is the one
    a fresh load gives, so a compressed width leaves nothing behind for the next."""
    from suite.probe import attention_report, load_probed
    from suite.quantize import KVQuant

    probed = load_probed(str(star_checkpoint))
    for quant in (KVQuant.of(1), None, KVQuant.of(2, rotate=True), None):
        again, _ = attention_report(probed, limit=6, kv_quant=quant)
        fresh, _ = attention_report(str(star_checkpoint), limit=6, kv_quant=quant)
        assert again == fresh
    assert probed.trunk.kv_quant is None


def test_the_command_writes_the_table_json_and_heatmap_and_averages_over_graphs(star_checkpoint, tmp_path, capsys):
    import tasks
    from suite.checkpoints import load_trunk
    from suite.cli import main

    main(["probe", "attention", "--checkpoint", str(star_checkpoint), "--limit", "3", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "probe.json").read_text())
    assert report["objective"] == "ParallelMTP" and report["graphs"] == 3
    assert report["command"] == f"foresight probe attention --checkpoint {star_checkpoint} --limit 3 --out {tmp_path}"
    assert "commit" in report and report["machine"]["cpus"] >= 1
    assert [(row["layer"], row["head"]) for row in report["layers"]] == [(0, h) for h in range(4)] + [
        (1, h) for h in range(4)]  # nano: 2 layers of 4 heads
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "probe.md").read_text().splitlines()
    assert table[2] == "| layer | head | goal | edge, after the first step | edge, first step |"
    assert len(table) == 4 + 8 + 7  # the attention table, then the heads: caption, header, two heads
    assert table == capsys.readouterr().out.splitlines()

    # the same numbers by hand: the mean over the three test graphs of each graph's masses
    trunk, _ = load_trunk(star_checkpoint)
    task = tasks.build("star_graph", **STAR_17)
    examples, found = task.examples("test"), []
    for i in range(3):
        ids = examples.tokens[i].tolist()
        graph = locate([task.tokenizer.id_to_token(t) for t in ids], int(examples.prompt_len[i]))
        found.append(masses(trunk.attention_weights(torch.tensor([ids[: graph.length]]))[:, 0], graph))
    for key in ("goal", "edge", "first"):
        expected = sum(f[key] for f in found) / 3
        assert [row[key] for row in report["layers"]] == pytest.approx(expected.flatten().tolist(), abs=1e-6)
    assert report["chance"]["first"] == pytest.approx(sum(f["first_chance"] for f in found).item() / 3)
    # two heads (ParallelMTP n=2), each over the 4 path nodes and <eos>, shares of the 3 graphs
    assert [row["head"] for row in report["heads"]] == [1, 2]
    for row in report["heads"]:
        assert len(row["answer"]) == 5 and all(abs(3 * value - round(3 * value)) < 1e-6 for value in row["answer"])
    assert report["accuracy"]["first"] == report["heads"][0]["answer"][1]


@pytest.mark.parametrize("argv, message", [
    (["probe", "saliency"], "unknown probe 'saliency'; known: attention, compare"),
    (["probe", "attention", "--checkpoint", "{reverse}"], "was trained on 'star_graph' (reversed); allowed: a "
     "checkpoint trained on star_graph or tree_path, left to right"),
    (["probe", "attention", "--checkpoint", "{star}", "--limit", "0"], "limit=0 is out of range; allowed: >= 1"),
    (["probe", "attention", "--checkpoint", "{star}", "--limit", "2", "--example", "2"],
     "example=2 is out of range; allowed: in [0, 1]"),
    (["probe", "attention", "--checkpoint", "{star}", "--example", "40"],  # the test split holds 32 graphs
     "example=40 is out of range; allowed: in [0, 31]"),
])
def test_bad_probe_input_is_one_line(argv, message, reverse_lm, star_checkpoint, tmp_path, capsys):
    from suite.cli import main

    argv = [a.format(reverse=reverse_lm, star=star_checkpoint) for a in argv] + ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def write_probe(folder, objective, options, rows, chance, accuracy=None, control=None):
    folder.mkdir(parents=True)
    layers = [{"layer": layer, "head": head, "goal": goal, "edge": edge, "first": first}
              for (layer, head), (goal, edge, first) in rows.items()]
    report = {"objective": objective, "options": options, "graphs": 200, "chance": chance, "layers": layers}
    if accuracy is not None:
        report |= {"accuracy": {"first": 0.5, "middle": accuracy}, "control": control,
                   "heads": [{"head": 1, "answer": [1.0, 0.5, accuracy, 1.0, 1.0]}]}
    (folder / "probe.json").write_text(json.dumps(report))
    return str(folder)


def test_compare_names_each_probes_strongest_head_and_its_ratio_to_even_spreading(tmp_path, capsys):
    from suite.cli import main

    chance = {"goal": 0.05, "edge": 0.1, "first": 0.08}
    ntp = write_probe(tmp_path / "ntp-s0", "NTP", {}, {(0, 0): (0.01, 0.3, 0.02), (1, 1): (0.2, 0.05, 0.04)}, chance,
                      accuracy=1.0, control="passes")
    mtp = write_probe(tmp_path / "mtp-s0", "ParallelMTP", {"n": 4, "headwise": None},
                      {(0, 0): (0.4, 0.1, 0.6), (0, 1): (0.1, 0.2, 0.1)}, chance, accuracy=0.99, control="fails")
    report = json.loads((tmp_path / "mtp-s0" / "probe.json").read_text())
    report["heads"].append({"head": 2, "answer": [1.0, 0.875, 1.0, 1.0, 1.0]})  # head 2 plans the first step
    (tmp_path / "mtp-s0" / "probe.json").write_text(json.dumps(report))
    main(["probe", "compare", ntp, mtp, "--out", str(tmp_path / "compare.md")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[4:6] == [
        "| ntp-s0 | NTP | - | 200 | 1.1: 0.200 (4.0x) | 0.0: 0.300 (3.0x) | 1.1: 0.040 (0.5x) | 1.000 | 0.500 "
        "| h1 0.500 | passes |",
        "| mtp-s0 | ParallelMTP | n=4 | 200 | 0.0: 0.400 (8.0x) | 0.1: 0.200 (2.0x) | 0.0: 0.600 (7.5x) | 0.990 "
        "| 0.500 | h1 0.500, h2 0.875 | fails |"]
    assert lines[7].startswith("The probe's control fails for mtp-s0: those models find the edges")
    assert (tmp_path / "compare.md").read_text().splitlines() == lines


def test_the_probes_control_by_hand():
    from suite.probe import control

    chance = torch.tensor(0.1)
    for middle, edge, verdict in ((1.0, [0.31, 0.05], "passes"), (0.96, [0.29, 0.2], "fails"),
                                  (0.9, [0.05, 0.05], "not applicable")):
        assert control({"middle_acc": torch.tensor(middle), "edge": torch.tensor([edge]), "edge_chance": chance}) \
            == verdict


def test_compare_refuses_a_folder_without_a_probe_in_one_line(tmp_path, capsys):
    from suite.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        main(["probe", "compare", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert f"{str(tmp_path / 'empty')!r} holds no probe.json of `foresight probe attention`" in err
