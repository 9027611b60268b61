"""`foresight bench throughput`: training tokens/s of foresight's trunk with next-token prediction against Hugging Face
`LlamaForCausalLM` of the identical config (same shapes, same weights, same batch, same optimizer), timed
interleaved A/B in one process: foresight must not be the slow part of any comparison it makes."""

from __future__ import annotations

import sys

from suite.bench import describe_execution, execution, execution_options, interleave, median, resolve_device
from suite.errors import check_choice, check_range


def training_steps(size: str, vocab_size: int, seq_len: int, batch_size: int, device: str, dtype: str,
                   settings: dict) -> dict:
    """One training step (forward, loss, backward, fused AdamW step) of each model, as callables: foresight and HF
    Llama eager, and with `settings["compile"]` each compiled beside (its own copy of the same weights)."""
    import copy

    import torch

    from objectives import NTP
    from suite.export import hf_config as foresight_hf_config, hf_state_dict
    from suite.model import Trunk
    from suite.sizes import ModelConfig, count_parameters

    torch.manual_seed(0)
    config = ModelConfig.from_name(size, vocab_size=vocab_size)
    trunk = Trunk(config).to(device)
    objective = NTP()
    objective.attach(trunk)
    from transformers import LlamaForCausalLM

    hf_config = foresight_hf_config(trunk)
    hf_config._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(hf_config).to(device)
    hf.load_state_dict(hf_state_dict(trunk), strict=True)
    hf.train()
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step(params, loss_fn):
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)

        def run():
            with autocast:
                loss = loss_fn()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return run

    def ours(model, compiled: bool):  # compiled as `--model.compile` compiles it
        chosen = {**settings, "compile": compiled}

        def loss():
            with execution(chosen, model):
                return objective.loss(model, model(tokens), tokens)[0]
        return step(model.parameters(), loss)

    def theirs(model):
        return step(model.parameters(), lambda: model(input_ids=tokens, labels=tokens).loss)

    steps = {"foresight": ours(trunk, False), "hf_llama": theirs(hf)}
    if settings["compile"]:
        hf_compiled = copy.deepcopy(hf)
        hf_compiled.model = torch.compile(hf_compiled.model)
        steps |= {"foresight_compiled": ours(copy.deepcopy(trunk), True), "hf_llama_compiled": theirs(hf_compiled)}
    return {"params": count_parameters(trunk, objective)["total"], "d_model": config.d_model,
            "n_layer": config.n_layer, "steps": steps}


def throughput(sizes: list[str] = ["micro", "tiny", "small"], vocab_size: int = 4096, seq_len: int = 256,
               batch_size: int = 8, rounds: int = 10, device: str = "auto", dtype: str = "auto",
               compile: bool = False, loss_kernel: str = "auto", quick: bool = False) -> tuple[dict, str]:
    """Training tokens/s of foresight (trunk + NTP loss) and of Hugging Face LlamaForCausalLM (SDPA attention, its
    own loss) at each size, and their ratio; both with fused AdamW, the same weights and the same batch.

    Args:
        sizes: Model sizes to compare.
        vocab_size: Vocabulary of both models.
        seq_len: Tokens per sequence.
        batch_size: Sequences per step.
        rounds: Timed steps of each model, alternating (after one warm-up step each); the median counts.
        device: cpu, cuda, or auto (cuda when available).
        dtype: fp32, bf16 (autocast), or auto (bf16 on cuda, fp32 on cpu).
        compile: Also time both models compiled, beside the eager ones: foresight's blocks and chunked loss as
            --model.compile compiles them, Hugging Face's decoder as a whole.
        loss_kernel: foresight's cross-entropy: auto, foresight or liger (--model.loss_kernel).
        quick: A seconds-long run (micro, 64 tokens, batch 2, 2 rounds), to check the bench itself.
    """
    import torch

    from suite.sizes import SIZES

    if quick:
        sizes, seq_len, batch_size, rounds = ["micro"], 64, 2, 2
    device = resolve_device(device)
    dtype = ("bf16" if device == "cuda" else "fp32") if dtype == "auto" else dtype
    check_choice("dtype", dtype, ("fp32", "bf16"))
    for size in sizes:
        check_choice("size", size, SIZES)
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size),
                        ("rounds", rounds)):
        check_range(name, value, 1)
    settings = execution_options(compile, False, loss_kernel)
    rows = []
    for size in sizes:
        built = training_steps(size, vocab_size, seq_len, batch_size, device, dtype, settings)
        seconds = interleave(built["steps"], rounds, device, warmup=2 if compile else 1)
        tokens = batch_size * seq_len
        row = {"size": size, "params": built["params"], "d_model": built["d_model"], "n_layer": built["n_layer"]}
        for label, times in seconds.items():
            row[f"{label}_seconds"] = times
            row[f"{label}_tokens_per_s"] = tokens / median(times)
        row["ratio"] = row["foresight_tokens_per_s"] / row["hf_llama_tokens_per_s"]
        line = f"foresight {row['foresight_tokens_per_s']:,.0f} tok/s, HF Llama {row['hf_llama_tokens_per_s']:,.0f}"
        if compile:  # compiled against compiled, and the best foresight against the best HF Llama
            row["compiled_ratio"] = row["foresight_compiled_tokens_per_s"] / row["hf_llama_compiled_tokens_per_s"]
            row["best_ratio"] = (max(row["foresight_tokens_per_s"], row["foresight_compiled_tokens_per_s"])
                                 / max(row["hf_llama_tokens_per_s"], row["hf_llama_compiled_tokens_per_s"]))
            line += f"; compiled {row['compiled_ratio']:.2f}x"
        rows.append(row)
        print(f"  {size}: {line} ({row['ratio']:.2f}x)", file=sys.stderr)
        del built
        if device == "cuda":
            torch.cuda.empty_cache()
    report = {"config": {"sizes": sizes, "vocab_size": vocab_size, "seq_len": seq_len, "batch_size": batch_size,
                         "rounds": rounds, "device": device, "dtype": dtype, **settings,
                         "threads": torch.get_num_threads()},
              "rows": rows}
    return report, throughput_table(report)


def throughput_table(report: dict) -> str:
    c = report["config"]
    lines = [f"Training throughput (forward, loss, backward, fused AdamW), V={c['vocab_size']}, T={c['seq_len']}, "
             f"batch {c['batch_size']}, {c['device']} {c['dtype']}{describe_execution({**c, 'compile': False})}; median of "
             f"{c['rounds']} steps each, interleaved.",
             "",
             "| size | params | foresight tok/s | HF Llama tok/s | foresight / HF |"
             + (" compiled: foresight tok/s | HF Llama tok/s | foresight / HF | best / best |" if c["compile"] else ""),
             "| --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if c["compile"] else "")]
    for row in report["rows"]:
        compiled = (f" {row['foresight_compiled_tokens_per_s']:,.0f} | {row['hf_llama_compiled_tokens_per_s']:,.0f} | "
                    f"{row['compiled_ratio']:.2f} | {row['best_ratio']:.2f} |" if c["compile"] else "")
        lines.append(f"| {row['size']} | {row['params']:,} | {row['foresight_tokens_per_s']:,.0f} | "
                     f"{row['hf_llama_tokens_per_s']:,.0f} | {row['ratio']:.2f} |" + compiled)
    return "\n".join(lines)
