"""`foresight export`: real checkpoints written as Hugging Face Llama directories, loaded back by `transformers`
alone, and compared with foresight's own logits, tokenizer and greedy decoding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from objectives import ParallelMTP
from suite import ObjectiveLM, TaskData
from suite.export import export_hf
from suite.sizes import ModelConfig
from tests.conftest import naive_greedy

DATA = {"num_train": 640, "num_val": 32, "num_test": 32}
TOLERANCE = 1e-5

# Shapes that each exercise one part of the mapping; 60 steps at a high learning rate take a second or two and
# leave weights far enough from init that a swapped matrix or a wrong norm changes the logits and the paths.
CASES = {
    "nano_tied": dict(size="nano"),
    "untied_own_ffn": dict(size=ModelConfig(n_layer=2, d_model=64, n_head=4, d_ff=96, tie_embeddings=False)),
    "grouped_query": dict(size=ModelConfig(n_layer=2, d_model=64, n_head=4, n_kv_head=2, rope_theta=500000.0,
                                           norm_eps=1e-6)),
    "parallel_mtp_match_params": dict(size=ModelConfig(n_layer=4, d_model=64, n_head=4),
                                      objective=ParallelMTP(n=3, match_params=True)),
}


def fit(path: Path, size, objective=None, steps: int = 60) -> Path:
    """A real checkpoint, as `foresight fit` writes one (the data module's state carries the tokenizer)."""
    torch.manual_seed(0)
    data = TaskData(options=DATA, batch_size=32)
    model = ObjectiveLM(size, objective=objective, vocab_size=data.vocab_size, lr=1e-2, warmup_steps=5)
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def task():
    return TaskData(options=DATA).task


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, exported folder) of one case."""
    folder = tmp_path_factory.mktemp(request.param)
    checkpoint = fit(folder / "model.ckpt", **CASES[request.param])
    out = export_hf(checkpoint, folder / "hf")
    assert out == folder / "hf"
    return checkpoint, out


def load_both(exported):
    checkpoint, out = exported
    ours = ObjectiveLM.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    theirs = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    return ours, theirs


def test_transformers_alone_computes_foresights_next_token_logits(exported, task):
    ours, theirs = load_both(exported)
    config = ours.config
    assert theirs.dtype == torch.float32 and type(theirs).__name__ == "LlamaForCausalLM"
    assert theirs.config.num_hidden_layers == len(ours.trunk.blocks)  # ParallelMTP(match_params) kept 2 of 4
    assert theirs.config.num_key_value_heads == config.kv_heads and theirs.config.intermediate_size == config.ffn_dim
    tied = theirs.lm_head.weight is theirs.model.embed_tokens.weight
    assert tied == config.tie_embeddings
    tokens = task.examples("test").tokens
    with torch.no_grad():
        difference = (theirs(tokens).logits - ours(tokens)).abs().max().item()
    print(f"max abs logit difference: {difference:.3g}")
    assert difference <= TOLERANCE


def test_greedy_generation_matches_foresights_decoding(exported, task):
    ours, theirs = load_both(exported)
    prompts = task.examples("test").tokens[:, : task.prompt_len]
    new = task.path_length + 3  # past the answer's <eos>, so decoding goes on after it
    expected = naive_greedy(ours.trunk, prompts, new)
    ones = torch.ones_like(prompts)
    kept_going = theirs.generate(prompts, attention_mask=ones, max_new_tokens=new, do_sample=False, eos_token_id=None)
    assert torch.equal(kept_going[:, task.prompt_len:], expected)
    # by default HF stops each row at <eos> and pads after it: the exported generation config knows both ids
    stopped = theirs.generate(prompts, attention_mask=ones, max_new_tokens=new, do_sample=False)[:, task.prompt_len:]
    eos, pad = task.token_id("<eos>"), task.token_id("<pad>")
    assert (expected == eos).any()
    for row, ours_row in zip(stopped, expected):
        end = int((ours_row == eos).nonzero()[0]) + 1 if (ours_row == eos).any() else new
        assert row[:end].tolist() == ours_row[:end].tolist() and (row[end:] == pad).all()


def test_autotokenizer_encodes_and_decodes_as_foresight(exported, task):
    tokenizer = AutoTokenizer.from_pretrained(exported[1], local_files_only=True)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == ("<eos>", "<pad>", "<unk>")
    for ids in task.examples("test").tokens[:8].tolist():
        text = task.decode(ids)
        assert tokenizer(text)["input_ids"] == ids == task.tokenizer.encode(text).ids
        assert tokenizer.decode(ids) == text


def foresight(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite.cli", "export", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return fit(tmp_path_factory.mktemp("cli") / "model.ckpt", "nano", steps=2)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by its path relative to it, with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("foresight: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_is_one_line(tmp_path):
    result = foresight("--checkpoint", "missing.ckpt", "--out", "hf", cwd=tmp_path)
    one_line_error(result, "checkpoint 'missing.ckpt' does not exist; allowed: a .ckpt file written by foresight fit")
    assert not (tmp_path / "hf").exists()


def test_truncated_checkpoint_is_one_line(checkpoint, tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    result = foresight("--checkpoint", str(truncated), "--out", "hf", cwd=tmp_path)
    one_line_error(result, f"checkpoint '{truncated}' cannot be read")
    assert not (tmp_path / "hf").exists()


def test_non_empty_out_is_refused_and_left_as_it_was(checkpoint, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text('{"a model": "already here"}')
    (out / "notes.txt").write_text("results already written")
    before = files(out)
    result = foresight("--checkpoint", str(checkpoint), "--out", str(out), cwd=tmp_path)
    one_line_error(result, f"--out '{out}' is not empty; allowed: a new or empty folder, or --overwrite")
    assert files(out) == before


def test_out_that_cannot_be_written_is_one_line(checkpoint, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = foresight("--checkpoint", str(checkpoint), "--out", str(tmp_path / "a_file" / "hf"), cwd=tmp_path)
    one_line_error(result, f"--out '{tmp_path / 'a_file' / 'hf'}' cannot be written")


def test_overwrite_writes_the_export_and_keeps_other_files(checkpoint, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text('{"a model": "already here"}')
    (out / "notes.txt").write_text("results already written")
    result = foresight("--checkpoint", str(checkpoint), "--out", str(out), "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (out / "notes.txt").read_text() == "results already written"
    assert {"config.json", "model.safetensors", "tokenizer.json", "lm_eval_tasks/star_graph.yaml",
            "lm_eval_tasks/star_graph.jsonl"} <= set(files(out))
    assert AutoModelForCausalLM.from_pretrained(out, local_files_only=True).config.model_type == "llama"
