"""Every supported Hugging Face architecture as the trunk, through the real commands: a tiny random model that
`transformers` builds here (its own config class and `*ForCausalLM`, `save_pretrained`, a tokenizer trained here)
gives Hugging Face's logits; `foresight fit` trains parallel MTP heads on it with the trunk frozen, leaving every
trunk tensor as loaded; `foresight export` writes a directory of the same architecture that
`AutoModelForCausalLM` loads with the same logits; the heads round-trip; speculative decoding equals greedy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from suite.architectures import ARCHITECTURES
from suite.export import hf_tokenizer
from suite.model import Trunk
from suite.pretrained import read_pretrained
from tasks.tokenizer import byte_level_bpe
from tests.conftest import naive_greedy, prepare_with_tokenizer

TEXT = Path(json.__file__).parent
SHAPE = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
LLAMA_LIKE = dict(**SHAPE, num_key_value_heads=2, rms_norm_eps=1e-6, tie_word_embeddings=False,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
CONFIGS = {  # each architecture with the features that set it apart switched on
    "llama": dict(LLAMA_LIKE, rope_parameters={"rope_type": "default", "rope_theta": 50000.0}),
    "mistral": dict(LLAMA_LIKE, head_dim=32, sliding_window=128),
    "qwen2": dict(LLAMA_LIKE, tie_word_embeddings=True),
    "gemma": dict(LLAMA_LIKE, head_dim=32, hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
    "phi3": dict(LLAMA_LIKE, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                              "partial_rotary_factor": 0.5}),
    "gpt_neox": dict(SHAPE, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "partial_rotary_factor": 0.25}, bos_token_id=None, eos_token_id=None),
    "gpt2": dict(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_inner=96, n_positions=128, bos_token_id=None,
                 eos_token_id=None),
}
assert set(CONFIGS) == set(ARCHITECTURES)


def save_model(folder: Path, arch: str, tokenizer) -> Path:
    """A random model of `arch`, every norm gain and bias moved off its initial value (so a weight loaded into the
    wrong place changes the logits), saved with the tokenizer as a Hub model would be."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **CONFIGS[arch]))
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.uniform_(-0.5, 0.5) if arch == "gemma" else parameter.add_(torch.randn_like(parameter) * 0.2)
    model.save_pretrained(folder)
    hf_tokenizer(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    tokenizer = byte_level_bpe((path.read_text() for path in sorted(TEXT.glob("*.py"))), 300)
    root = tmp_path_factory.mktemp("architectures")
    return {arch: save_model(root / arch, arch, tokenizer) for arch in CONFIGS}


@pytest.fixture(scope="module")
def corpus(models, tmp_path_factory) -> Path:
    """The json package and some notes prepared with the models' tokenizer (GPT-2's folder's; they all share one)."""
    return prepare_with_tokenizer(tmp_path_factory.mktemp("corpus"), models["gpt2"])


def hf_logits(folder: Path, tokens: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(input_ids=tokens).logits


@pytest.mark.parametrize("arch", CONFIGS)
def test_an_imported_model_gives_hugging_faces_logits(models, arch):
    pretrained = read_pretrained(models[arch])
    assert pretrained.config.arch == arch
    trunk = Trunk(pretrained.config)
    trunk.load_state_dict(pretrained.state)
    tokens = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        ours = trunk.logits(trunk(tokens))
    assert (ours - hf_logits(models[arch], tokens)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", CONFIGS)
def test_fit_heads_on_a_frozen_trunk_export_and_reload_with_the_real_commands(models, corpus, tmp_path, arch):
    import objectives
    from suite import ObjectiveLM
    from suite.checkpoints import load_model
    from suite.cli import main
    from suite.decoding import generate
    from transformers import AutoConfig

    main(["fit", f"--model.init_from={models[arch]}", "--model.objective=parallel_mtp", "--model.objective.n=2",
          "--model.freeze_trunk=true", "--data.task=corpus", f"--data.options.path={corpus}",
          "--data.options.seq_len=32", "--data.batch_size=4", "--trainer.max_steps=2",
          "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.limit_val_batches=1",
          f"--trainer.default_root_dir={tmp_path / 'run'}", "--model.lr=0.01", "--model.warmup_steps=0"])
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    state = torch.load(checkpoint, weights_only=False)["state_dict"]
    for name, tensor in read_pretrained(models[arch]).state.items():
        assert torch.equal(state[f"trunk.{name}"], tensor), name

    main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported")])
    assert AutoConfig.from_pretrained(tmp_path / "exported").model_type == arch
    again = ObjectiveLM(init_from=str(tmp_path / "exported"), objective=objectives.build("parallel_mtp", n=2))
    for name, tensor in again.state_dict().items():  # the trunk and the heads
        assert torch.equal(tensor, state[name]), name
    tokens = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        ours = again.trunk.logits(again.trunk(tokens))
    assert (ours - hf_logits(tmp_path / "exported", tokens)).abs().max().item() <= 1e-4

    model, _ = load_model(checkpoint)
    prompts = torch.randint(0, 300, (1, 8))
    assert torch.equal(generate(model, prompts, 12, speculative=True)[0], naive_greedy(model.trunk, prompts, 12))


def test_a_checkpoint_fitted_from_a_pretrained_model_loads_anywhere_once_its_source_is_gone(models, corpus, tmp_path):
    """Lightning's own `load_from_checkpoint`, a resumed fit, `foresight eval`, `export` and `bench decode` after
    the source directory is deleted: the checkpoint holds the architecture, the weights and the tokenizer."""
    import shutil

    from suite import ObjectiveLM
    from suite.bench.decode import decode
    from suite.cli import main

    source = Path(shutil.copytree(models["gpt2"], tmp_path / "source"))
    args = [f"--model.init_from={source}", "--model.objective=parallel_mtp", "--model.objective.n=2",
            "--model.freeze_trunk=true", "--data.task=corpus", f"--data.options.path={corpus}",
            "--data.options.seq_len=32", "--data.batch_size=4", "--trainer.enable_progress_bar=false",
            "--trainer.logger=false", "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--model.warmup_steps=0"]
    main(["fit", *args, "--trainer.max_steps=2"])
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    stored = torch.load(checkpoint, weights_only=False)
    shutil.rmtree(source)

    model = ObjectiveLM.load_from_checkpoint(checkpoint)
    assert model.config.arch == "gpt2" and model.config.positions == 128
    assert all(torch.equal(tensor, stored["state_dict"][name]) for name, tensor in model.state_dict().items())
    main(["fit", *args, "--trainer.max_steps=3", "--ckpt_path=last"])
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 3
    main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported")])
    main(["eval", "--checkpoint", str(checkpoint), "--tasks", "corpus", "--limit", "2",
          "--out", str(tmp_path / "eval")])
    report, _ = decode(checkpoint=[str(checkpoint)], prompts=1, max_new_tokens=6)
    assert [row["identical"] for row in report["rows"]] == [True]


TOKENIZERS = {  # each family's tokenizer class (as `save_pretrained` names it) and end-of-text token
    "llama": ("LlamaTokenizer", "</s>"), "mistral": ("TokenizersBackend", "</s>"),
    "qwen2": ("Qwen2Tokenizer", "<|endoftext|>"), "gemma": ("GemmaTokenizer", "<eos>"),
    "phi3": ("TokenizersBackend", "<|endoftext|>"), "gpt_neox": ("GPTNeoXTokenizer", "<|endoftext|>"),
    "gpt2": ("GPT2Tokenizer", "<|endoftext|>"),
}
assert set(TOKENIZERS) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", TOKENIZERS)
def test_prepare_takes_each_architectures_tokenizer_as_save_pretrained_writes_it(arch, tmp_path):
    """`foresight prepare --tokenizer DIR` on a tokenizer of the family's class with the family's end-of-text
    token (trained here): every document ends with that token's id, which the manifest names."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from suite.cli import main
    from tasks.corpus import Rows

    kind, eos = TOKENIZERS[arch]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator((path.read_text() for path in sorted(TEXT.glob("*.py"))),
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", eos]))
    getattr(transformers, kind)(tokenizer_object=bpe, eos_token=eos, bos_token="<s>").save_pretrained(
        tmp_path / "tokenizer")
    assert json.loads((tmp_path / "tokenizer/tokenizer_config.json").read_text())["tokenizer_class"] == kind
    with open(tmp_path / "notes.jsonl", "w") as file:
        for i in range(30):
            file.write(json.dumps({"text": f"note {i}: " + "the quick brown fox " * (i % 5 + 1)}) + "\n")
    main(["prepare", str(tmp_path / "notes.jsonl"), "--out", str(tmp_path / "ds"), "--tokenizer",
          str(tmp_path / "tokenizer"), "--val_fraction", "0.2", "--test_fraction", "0.1", "--workers", "1"])
    manifest = json.loads((tmp_path / "ds/foresight.json").read_text())
    assert manifest["tokenizer"]["eos_id"] == bpe.token_to_id(eos) == 2
    rows = Rows(str(tmp_path / "ds/train"), 8)
    ids = torch.cat([rows[i] for i in range(len(rows))])
    ends = (ids == 2).sum().item()
    assert ends >= manifest["splits"]["train"]["documents"] - 1  # each document's end (the last row may cut one)
