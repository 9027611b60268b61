from pathlib import Path

import pytest
import torch

from suite.sizes import ModelConfig

STAR_17 = {"num_nodes": 17, "num_train": 320, "num_val": 32, "num_test": 32}
"""A small star graph whose vocabulary (6 specials + 17 labels) is tiny_config's 23."""


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A real model small enough to run in milliseconds (litgpt-style: build tiny, run it for real)."""
    return ModelConfig(n_layer=2, d_model=16, n_head=2, vocab_size=23)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def reverse_lm(tmp_path_factory) -> Path:
    """A real right-to-left checkpoint (as `foresight fit --data.reverse=true` writes one), nano, vocabulary 23."""
    import lightning as L

    from suite import ObjectiveLM, TaskData

    data = TaskData(options=STAR_17, batch_size=16, reverse=True)
    model = ObjectiveLM("nano", vocab_size=data.vocab_size)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    path = tmp_path_factory.mktemp("reverse") / "reverse.ckpt"
    trainer.save_checkpoint(path)
    return path


def validation_batch(task, size: int) -> dict:
    """The first `size` validation examples of a task, as a batch."""
    examples = task.examples("val")
    return {"tokens": examples.tokens[:size], "prompt_len": examples.prompt_len[:size]}


def oracle(batch: dict):
    """A `generate` that answers each prompt of `batch` with its gold answer ids (and <eos>, then padding)."""
    gold = {tuple(row[:start].tolist()): row[start:] for row, start in zip(batch["tokens"], batch["prompt_len"])}

    def generate(prompts: torch.Tensor, n: int) -> torch.Tensor:
        return torch.stack([gold[tuple(prompt.tolist())][:n] for prompt in prompts])

    return generate
