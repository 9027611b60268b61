"""Every objective trains under Lightning DDP on CPU with two gloo processes, and the ranks end with the same
weights, which differ from the initial ones: gradients were all-reduced, including those that the headwise
path computes inside the forward pass."""

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import objectives
from suite import ObjectiveLM, TaskData

SCRIPT = Path(__file__).with_name("ddp_fit.py")


@pytest.mark.slow
def test_every_objective_trains_under_ddp_with_identical_ranks(tmp_path, reverse_lm):
    specs = [["ntp", {}], ["parallel_mtp", {"n": 3}], ["causal_mtp", {"n": 3}], ["sequential_mtp", {"depth": 2}],
             ["fsp_bow", {"tau": 4}], ["fsp_revlm", {"reverse_lm": str(reverse_lm)}], ["teacherless", {}]]
    # self_distill_mtp trains heads on a frozen trunk only (no trunk gradient to all-reduce); its heads are
    # parallel MTP's
    assert {name for name, _ in specs} == set(objectives.OBJECTIVES) - {"self_distill_mtp"}
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), json.dumps(specs)], capture_output=True,
                            text=True, timeout=600, cwd=SCRIPT.parents[2])
    assert result.returncode == 0, result.stderr[-3000:]
    for name, options in specs:
        rank0 = torch.load(tmp_path / f"{name}.rank0.pt")
        rank1 = torch.load(tmp_path / f"{name}.rank1.pt")
        assert rank0.keys() == rank1.keys()
        for key in rank0:
            assert torch.equal(rank0[key], rank1[key]), (name, key)
        L.seed_everything(0)
        initial = ObjectiveLM("nano", objectives.build(name, **options),
                              vocab_size=TaskData(options={"num_nodes": 17}).vocab_size).state_dict()
        assert not torch.equal(initial["trunk.embed.weight"], rank0["trunk.embed.weight"]), name
