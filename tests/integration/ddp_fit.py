"""Run by test_ddp.py: fit every objective for a few steps under Lightning DDP on CPU (gloo), then save each rank's
weights, so the test can check the ranks agree. Lightning launches the second rank by running this script again."""

import json
import sys
from pathlib import Path

import lightning as L
import torch

import objectives
from suite import ObjectiveLM, TaskData

STAR = {"num_nodes": 17, "num_train": 320, "num_val": 32, "num_test": 32}


def main(out: Path, specs: list[tuple[str, dict]]) -> None:
    for name, options in specs:
        L.seed_everything(0)
        data = TaskData(options=STAR, batch_size=8)
        model = ObjectiveLM("nano", objectives.build(name, **options), vocab_size=data.vocab_size, lr=1e-2,
                            warmup_steps=1)
        trainer = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, max_steps=3, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0)
        trainer.fit(model, data)
        torch.save(model.state_dict(), out / f"{name}.rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
