import pytest
import torch

from suite.sizes import ModelConfig


@pytest.fixture
def tiny_config() -> ModelConfig:
    """A real model small enough to run in milliseconds (litgpt-style: build tiny, run it for real)."""
    return ModelConfig(n_layer=2, d_model=16, n_head=2, vocab_size=23)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
