"""`foresight bench kv`: a sweep's checkpoints scored with a compressed KV cache, drops compared across seeds."""

import json

import lightning as L
import pytest
from scipy import stats

from objectives import ParallelMTP
from suite import ObjectiveLM, TaskData
from suite.bench.kv import kv, summarise
from suite.errors import UsageError
from suite.evaluate import evaluate

STAR = {"degree": 2, "path_length": 4, "num_nodes": 12, "num_train": 600, "num_val": 8, "num_test": 24}


def test_drops_and_their_difference_from_ntp_are_computed_over_seeds():
    rows = []
    for label, full, two in (("ntp", [0.5, 0.6, 0.7], [0.3, 0.5, 0.4]), ("mtp", [0.5, 0.5, 0.5], [0.5, 0.4, 0.45])):
        for seed in range(3):
            rows += [{"label": label, "seed": seed, "bits": 16, "rotate": False, "score": full[seed]},
                     {"label": label, "seed": seed, "bits": 2, "rotate": False, "score": two[seed]}]
    summary = {e["label"]: e for e in summarise(rows)}
    assert summary["ntp"]["drop"] == pytest.approx(0.2) and summary["mtp"]["drop"] == pytest.approx(0.05)
    half = stats.t.ppf(0.975, 2) * stats.sem([0.2, 0.1, 0.3])
    assert summary["ntp"]["drop_half_width"] == pytest.approx(half)
    versus = summary["mtp"]["vs_reference"]
    assert versus["difference"] == pytest.approx(-0.15) and versus["seeds"] == 3
    assert versus["p"] == pytest.approx(stats.ttest_rel([0.0, 0.1, 0.05], [0.2, 0.1, 0.3]).pvalue)
    assert "vs_reference" not in summary["ntp"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep's results folder and runs, as `foresight sweep` lays them out: NTP and parallel MTP at n = 2, one
    seed each (the statistics over seeds are the test above's), a few steps on a small star graph (paths of 4
    nodes, so the probe reads them)."""
    root = tmp_path_factory.mktemp("kv")
    rows = []
    for label, objective, n in (("ntp", None, None), ("parallel_mtp", ParallelMTP(n=2), 2)):
        for seed in (0,):
            L.seed_everything(seed)
            data = TaskData(options={**STAR, "seed": 0}, batch_size=32)
            model = ObjectiveLM("nano", vocab_size=data.vocab_size, lr=3e-3, warmup_steps=5,
                                **({"objective": objective} if objective else {}))
            trainer = L.Trainer(max_steps=20, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, limit_val_batches=0)
            trainer.fit(model, data)
            point = f"{label}-s{seed}"
            run = root / "runs" / "sweep" / point
            (run / "checkpoints").mkdir(parents=True)
            trainer.save_checkpoint(run / "checkpoints" / "last.ckpt")
            rows.append({"point": point, "role": "point", "status": "ok", "run_dir": f"runs/sweep/{point}",
                         "axes": {"objective": label, "label": label, "n": n, "size": "nano", "seed": seed,
                                  "data": "star_graph", "control": False}})
    (root / "results").mkdir()
    (root / "results" / "runs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def test_the_bench_scores_every_checkpoint_uncompressed_and_compressed(sweep):
    report, table = kv(str(sweep / "results"), runs=str(sweep / "runs"), quick=True)
    rows = report["rows"]
    assert len(rows) == 4 and {(r["bits"], r["rotate"]) for r in rows} == {(16, False), (2, False)}
    assert report["config"]["probe"] and all("probe_goal" in r and "probe_edge" in r for r in rows)
    ntp = next(r for r in rows if r["label"] == "ntp" and r["seed"] == 0 and r["bits"] == 16)
    alone = evaluate(ntp["checkpoint"], ["star_graph"], sweep / "alone", limit=24)  # 16 bits: no quantisation
    assert ntp["score"] == alone["results"]["star_graph"]["path_acc,none"]
    assert {e["label"] for e in report["summary"]} == {"ntp", "parallel_mtp n=2"}
    assert "| parallel_mtp n=2 | 2 | no | 1 |" in table


def test_bad_bench_input_is_one_line(sweep):
    with pytest.raises(UsageError, match="unknown label 'medusa' for --labels; known in .*: ntp, parallel_mtp"):
        kv(str(sweep / "results"), runs=str(sweep / "runs"), labels=["medusa"], quick=True)
    with pytest.raises(UsageError, match="kv_bits=3 is not a supported width"):
        kv(str(sweep / "results"), runs=str(sweep / "runs"), bits=[3])
    with pytest.raises(UsageError, match="has no checkpoint at"):
        kv(str(sweep / "results"), runs=str(sweep / "elsewhere"), quick=True)
    with pytest.raises(UsageError, match="has no ntp point among those chosen"):
        kv(str(sweep / "results"), runs=str(sweep / "runs"), labels=["parallel_mtp"], quick=True)
