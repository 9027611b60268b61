"""`--model.init_from=DIR`: a Llama saved locally with `transformers` becomes the trunk with Hugging Face's own
logits; fitting heads on it with a frozen trunk leaves the trunk bit for bit as loaded; what the trunk cannot be
is refused in one line. No network: the pretrained models are built here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from suite.errors import UsageError
from suite.export import hf_tokenizer
from suite.model import Trunk
from suite.pretrained import read_pretrained
from tasks.tokenizer import byte_level_bpe
from tests.conftest import naive_greedy, prepare_with_tokenizer

TEXT = Path(json.__file__).parent


def save_llama(folder: Path, **config) -> Path:
    """A random LlamaForCausalLM with a 300-token BPE trained on the json package, saved as a Hub model would be."""
    tokenizer = byte_level_bpe((path.read_text() for path in sorted(TEXT.glob("*.py"))), 300)
    settings = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=50000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**settings, **config}))
    with torch.no_grad():  # norms away from 1, so a norm loaded into the wrong place changes the logits
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    hf_tokenizer(tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return save_llama(tmp_path_factory.mktemp("llama") / "llama")


@pytest.mark.parametrize("config", [{}, {"tie_word_embeddings": True, "num_key_value_heads": 4}],
                         ids=["untied_gqa", "tied"])
def test_an_imported_llama_gives_hugging_faces_logits(tmp_path, config):
    folder = save_llama(tmp_path / "llama", **config)
    pretrained = read_pretrained(folder)
    trunk = Trunk(pretrained.config)
    trunk.load_state_dict(pretrained.state)
    hf = LlamaForCausalLM.from_pretrained(folder).eval()
    tokens = torch.randint(0, 320, (2, 24))
    with torch.no_grad():
        ours, theirs = trunk.logits(trunk(tokens)), hf(input_ids=tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert pretrained.config.kv_heads == config.get("num_key_value_heads", 2)
    assert pretrained.tokenizer.get_vocab() == hf_tokenizer(pretrained.tokenizer).backend_tokenizer.get_vocab()


def edit_config(folder: Path, **changes) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


@pytest.mark.parametrize("make, message", [
    (lambda f: "meta-llama/Llama-3.2-1B", "--model.init_from 'meta-llama/Llama-3.2-1B' is not a local directory"),
    (lambda f: (f / "config.json").unlink() or f, "has no config.json"),
    (lambda f: edit_config(f, model_type="mamba"), "has model_type='mamba', which foresight's trunk does not "
                                                   "implement; allowed: llama, mistral, qwen2, gemma, phi3, gpt_neox, "
                                                   "gpt2"),
    (lambda f: edit_config(f, attention_bias=True), "has attention_bias=True, which"),
    (lambda f: edit_config(f, hidden_act="gelu"), "has hidden_act='gelu', which"),
    (lambda f: edit_config(f, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}),
     "has rope_parameters.rope_type='linear', which"),
    (lambda f: edit_config(f, mlp_bias=True), "has mlp_bias=True, which"),
    (lambda f: (f / "tokenizer.json").unlink() or f, "has no tokenizer.json"),
    (lambda f: (f / "model.safetensors").unlink() or f, "has no model.safetensors"),
])
def test_what_the_trunk_cannot_be_is_refused_in_one_line(llama, tmp_path, make, message):
    folder = tmp_path / "copy"
    shutil.copytree(llama, folder)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        read_pretrained(make(folder))
    assert "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def corpus(llama, tmp_path_factory) -> Path:
    """The json package prepared with the Llama's own tokenizer (`foresight prepare --tokenizer DIR`)."""
    return prepare_with_tokenizer(tmp_path_factory.mktemp("corpus"), llama)


def fit(llama: Path, corpus: Path, root: Path, *extra: str) -> dict:
    from suite.cli import main

    main(["fit", f"--model.init_from={llama}", "--model.objective=parallel_mtp", "--model.objective.n=3",
          "--data.task=corpus", f"--data.options.path={corpus}", "--data.options.seq_len=32", "--data.batch_size=4",
          "--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
          "--trainer.limit_val_batches=1",
          f"--trainer.default_root_dir={root}", "--model.lr=0.01", "--model.warmup_steps=0", *extra])
    return torch.load(root / "checkpoints/last.ckpt", weights_only=False)


def test_heads_fit_on_a_frozen_pretrained_trunk_which_stays_bit_for_bit_as_loaded(llama, corpus, tmp_path):
    from suite.checkpoints import load_model
    from suite.decoding import generate

    loaded = read_pretrained(llama).state
    checkpoint = fit(llama, corpus, tmp_path / "run", "--model.freeze_trunk=true", "--model.head_init=last_block")
    state = checkpoint["state_dict"]
    for name, tensor in loaded.items():
        assert torch.equal(state[f"trunk.{name}"], tensor), name
    heads = {name: tensor for name, tensor in state.items() if name.startswith("objective.")}
    trained = sum(tensor.numel() for tensor in heads.values())
    # the optimizer holds state for the heads alone
    moments = checkpoint["optimizer_states"][0]["state"].values()
    assert sum(moment["exp_avg"].numel() for moment in moments) == trained
    # the heads started as the trunk's last block (test_head_init...) and moved
    last = {name.split(".", 2)[2]: tensor for name, tensor in loaded.items() if name.startswith("blocks.1.")}
    head = {name[len("objective.heads.0.0."):]: tensor for name, tensor in heads.items()
            if name.startswith("objective.heads.0.0.")}
    assert head.keys() == last.keys()
    assert all(not torch.equal(head[name], last[name]) for name in last if "norm" not in name)
    model, _ = load_model(tmp_path / "run/checkpoints/last.ckpt")
    prompts = torch.randint(0, 300, (1, 8))
    assert torch.equal(generate(model, prompts, 12, speculative=True)[0], naive_greedy(model.trunk, prompts, 12))


def test_a_pretrained_trunk_refuses_data_of_another_tokenizer_and_a_size(llama, tmp_path, prepared_corpus, capsys):
    cases = [((), "is tokenized with another tokenizer than --model.init_from="),
             (("--model.size=micro",), "--model.size=micro and --model.init_from=.* both set the model's shape")]
    for extra, message in cases:
        with pytest.raises(SystemExit) as raised:
            fit(llama, prepared_corpus, tmp_path / "other", *extra)
        assert raised.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("foresight: error: ") and __import__("re").search(message, error), error


@pytest.mark.parametrize("head_init", ["random", "last_block"])
def test_head_init_copies_the_trunks_last_block_into_every_head_block(llama, head_init):
    import objectives
    from suite import ObjectiveLM

    model = ObjectiveLM(init_from=str(llama), objective=objectives.build("sequential_mtp", depth=2),
                        head_init=head_init)
    last = model.trunk.blocks[-1].state_dict()
    blocks = [module["block"] for module in model.objective.mtp_modules]
    assert len(blocks) == 2
    for block in blocks:
        same = [torch.equal(block.state_dict()[name], last[name]) for name in last]
        assert all(same) if head_init == "last_block" else not any(same[1:3])


def test_import_fit_export_import_round_trips_the_trunk_and_the_heads(llama, corpus, tmp_path):
    import objectives
    from suite import ObjectiveLM
    from suite.export import export_hf

    checkpoint = fit(llama, corpus, tmp_path / "run")  # jointly: the trunk moves too
    exported = export_hf(tmp_path / "run/checkpoints/last.ckpt", tmp_path / "exported")
    assert (exported / "foresight_heads.safetensors").is_file()
    again = ObjectiveLM(init_from=str(exported), objective=objectives.build("parallel_mtp", n=3))
    for name, tensor in again.state_dict().items():
        assert torch.equal(tensor, checkpoint["state_dict"][name]), name
    assert not torch.equal(checkpoint["state_dict"]["trunk.blocks.0.attn.qkv.weight"],
                           read_pretrained(llama).state["blocks.0.attn.qkv.weight"])
    hf = LlamaForCausalLM.from_pretrained(exported).eval()
    tokens = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        assert (again.trunk.logits(again.trunk(tokens)) - hf(input_ids=tokens).logits).abs().max() <= 1e-4


def test_bench_decode_compares_heads_trained_on_data_with_self_distilled_heads_on_one_pretrained_trunk(
        llama, corpus, tmp_path):
    from suite.bench.decode import decode

    fit(llama, corpus, tmp_path / "data", "--model.freeze_trunk=true")
    fit(llama, corpus, tmp_path / "distilled", "--model.freeze_trunk=true", "--model.objective=self_distill_mtp",
        "--model.objective.n=3")
    report, table = decode(checkpoint=[str(tmp_path / name / "checkpoints/last.ckpt") for name in ("data", "distilled")],
                           prompts=2, max_new_tokens=8)
    assert [(row["objective"], row["n"], row["identical"]) for row in report["rows"]] == [
        ("parallel_mtp", 3, True), ("self_distill_mtp", 3, True)]
    assert report["config"]["task"] == "corpus" and "| self_distill_mtp | 3 |" in table


def test_self_distillation_needs_a_frozen_trunk():
    import objectives
    from suite import ObjectiveLM

    with pytest.raises(UsageError, match="self_distill_mtp trains heads on the trunk's own predictions, so the "
                                         "trunk must be a trained model held fixed; allowed: "
                                         "--model.freeze_trunk=true"):
        ObjectiveLM("nano", objective=objectives.build("self_distill_mtp"), vocab_size=23)
