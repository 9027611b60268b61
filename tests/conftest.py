import os
from pathlib import Path

import pytest
import torch

# One thread per test process, and per process it starts: the models here are tiny, where more threads only add
# synchronisation, and pytest-xdist runs a worker per core.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

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


@torch.no_grad()
def naive_greedy(trunk, prompts: torch.Tensor, new: int, eos_id: int | None = None) -> torch.Tensor:
    """Greedy decoding the slow, obvious way: the whole sequence through the trunk for every new token, no cache.
    A row that has emitted `eos_id` gets `eos_id` from then on (the convention of `suite.decoding.generate`)."""
    sequence = prompts
    for _ in range(new):
        token = trunk.logits(trunk(sequence))[:, -1].argmax(-1)
        if eos_id is not None:
            token = token.masked_fill((sequence[:, prompts.shape[1]:] == eos_id).any(1), eos_id)
        sequence = torch.cat([sequence, token[:, None]], dim=1)
    return sequence[:, prompts.shape[1]:]


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


def wandb_records(run_folder: Path) -> dict:
    """What an offline wandb run logged, read from its run-<id>.wandb file (a LevelDB-style log of protobuf
    records: 32 KiB blocks, each record split into chunks with a 7-byte header). wandb itself has no Python reader
    of this file, and the tests must check offline what `wandb sync` would upload. Returns the run record
    (run_group, job_type, tags, ...), config, summary (the last value of each key) and history (one dict per step)."""
    import json
    import struct

    from google.protobuf.json_format import MessageToDict
    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_folder).glob("run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    chunks, pending, position = [], b"", 7
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            position += left
            continue
        chunk = data[position + 7:position + 7 + length]
        position += 7 + length
        if kind == 1:  # full
            chunks.append(chunk)
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        else:  # last
            chunks.append(pending + chunk)
    found = {"run": {}, "config": {}, "summary": {}, "history": []}
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")

        def key(item):
            return item.key or "/".join(item.nested_key)

        if kind == "run":
            found["run"] = MessageToDict(record.run, preserving_proto_field_name=True)
            found["run"]["tags"] = list(record.run.tags)
            found["config"].update({key(item): json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            found["config"].update({key(item): json.loads(item.value_json) for item in record.config.update})
        elif kind == "summary":
            found["summary"].update({key(item): json.loads(item.value_json) for item in record.summary.update})
        elif kind == "history":
            found["history"].append({key(item): json.loads(item.value_json) for item in record.history.item})
    return found


def write_notes(path: Path, count: int) -> Path:
    """`count` JSONL notes of varying length: documents for the corpus tests beside the stdlib's json package."""
    import json

    with open(path, "w") as file:
        for i in range(count):
            file.write(json.dumps({"text": f"note {i}: " + "the quick brown fox jumps " * (i % 9 + 2)}) + "\n")
    return path


def prepare_with_tokenizer(folder: Path, tokenizer: Path) -> Path:
    """The json package and 40 notes prepared with a pretrained model's tokenizer (`foresight prepare --tokenizer
    DIR`), 20% val, 10% test: folder/ds."""
    import json

    from suite.prepare import prepare

    prepare([str(Path(json.__file__).parent), str(write_notes(folder / "notes.jsonl", 40))], folder / "ds",
            tokenizer=str(tokenizer), val_fraction=0.2, test_fraction=0.1, workers=1)
    return folder / "ds"


@pytest.fixture(scope="session")
def prepared_corpus(tmp_path_factory) -> Path:
    """`foresight prepare` of the stdlib's json package (copied, 5 files) and 60 JSONL notes with a 300-token BPE
    (20% val, 10% test): one folder for every test of the corpus task, per test process."""
    import json
    import shutil

    from suite.prepare import prepare

    folder = tmp_path_factory.mktemp("corpus")
    shutil.copytree(Path(json.__file__).parent, folder / "json", ignore=shutil.ignore_patterns("__pycache__"))
    prepare([str(folder / "json"), str(write_notes(folder / "notes.jsonl", 60))], folder / "ds", vocab_size=300,
            val_fraction=0.2, test_fraction=0.1, workers=1)
    return folder / "ds"
