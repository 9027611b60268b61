"""`foresight probe attention`: the attention weights written out, the star-graph positions and the masses on
hand-written sequences and weights, and the command on a real checkpoint."""

import json

import pytest
import torch

from suite.model import Trunk
from suite.probe import Graph, locate, masses
from suite.sizes import ModelConfig
from tests.conftest import STAR_17

# The task's docstring example: degree 2, path length 3; the prompt is 15 tokens, up to and including "="
TOKENS = "14 2 | 1 5 | 0 14 | 0 1 / 0 5 = 0 1 5 <eos>".split()


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
    graph = locate(TOKENS, prompt_len=15)
    # goal "5" at 13; position 15 holds p0 = "0" and predicts "1", 16 holds "1" and predicts "5"
    # edge 0 -> 1 is at positions 9, 10; edge 1 -> 5 at 3, 4
    assert graph == Graph(goal=13, queries=[15, 16], edges=[(9, 10), (3, 4)], length=18)


def test_locate_refuses_what_is_not_a_star_graph():
    with pytest.raises(ValueError, match="not a star-graph sequence"):
        locate(TOKENS, prompt_len=14)


def test_masses_on_hand_written_weights():
    graph = Graph(goal=13, queries=[15, 16], edges=[(9, 10), (3, 4)], length=18)
    weights = torch.zeros(1, 2, 18, 18)
    weights[0, 0, 15, [13, 9, 10]] = torch.tensor([0.5, 0.25, 0.25])  # head 0: goal, then the edge
    weights[0, 0, 16, 4] = 1.0
    weights[0, 1, 15, 0] = 1.0  # head 1: elsewhere at the first step, on the goal at the second
    weights[0, 1, 16, 13] = 1.0
    found = masses(weights, graph)
    assert found["goal"].tolist() == [[0.25, 0.5]]
    assert found["edge"].tolist() == [[0.75, 0.0]]
    assert found["first"].tolist() == [[0.5, 0.0]]
    assert found["goal_chance"].item() == pytest.approx((1 / 16 + 1 / 17) / 2)
    assert found["edge_chance"].item() == pytest.approx((2 / 16 + 2 / 17) / 2)
    assert found["first_chance"].item() == pytest.approx(2 / 16)


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
    assert table[2] == "| layer | head | goal | edge | edge, first step |" and len(table) == 4 + 8
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


@pytest.mark.parametrize("argv, message", [
    (["probe", "saliency"], "unknown probe 'saliency'; known: attention, compare"),
    (["probe", "attention", "--checkpoint", "{reverse}"], "was trained on 'star_graph' (reversed); allowed: a "
     "checkpoint trained on star_graph, left to right"),
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


def write_probe(folder, objective, options, rows, chance):
    folder.mkdir(parents=True)
    layers = [{"layer": layer, "head": head, "goal": goal, "edge": edge, "first": first}
              for (layer, head), (goal, edge, first) in rows.items()]
    (folder / "probe.json").write_text(json.dumps({"objective": objective, "options": options, "graphs": 200,
                                                   "chance": chance, "layers": layers}))
    return str(folder)


def test_compare_names_each_probes_strongest_head_and_its_ratio_to_even_spreading(tmp_path, capsys):
    from suite.cli import main

    chance = {"goal": 0.05, "edge": 0.1, "first": 0.08}
    ntp = write_probe(tmp_path / "ntp-s0", "NTP", {}, {(0, 0): (0.01, 0.3, 0.02), (1, 1): (0.2, 0.05, 0.04)}, chance)
    mtp = write_probe(tmp_path / "mtp-s0", "ParallelMTP", {"n": 4, "headwise": None},
                      {(0, 0): (0.4, 0.1, 0.6), (0, 1): (0.1, 0.2, 0.1)}, chance)
    main(["probe", "compare", ntp, mtp, "--out", str(tmp_path / "compare.md")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[4:] == [
        "| ntp-s0 | NTP | - | 200 | 1.1: 0.200 (4.0x) | 0.0: 0.300 (3.0x) | 1.1: 0.040 (0.5x) |",
        "| mtp-s0 | ParallelMTP | n=4 | 200 | 0.0: 0.400 (8.0x) | 0.1: 0.200 (2.0x) | 0.0: 0.600 (7.5x) |"]
    assert (tmp_path / "compare.md").read_text().splitlines() == lines


def test_compare_refuses_a_folder_without_a_probe_in_one_line(tmp_path, capsys):
    from suite.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit:
        main(["probe", "compare", str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1
    assert f"{str(tmp_path / 'empty')!r} holds no probe.json of `foresight probe attention`" in err
