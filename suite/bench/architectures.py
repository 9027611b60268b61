"""`foresight bench architectures`: what a frozen-trunk training step of an objective's heads costs on each
supported architecture's trunk (`suite.architectures`) against the Llama trunk's, at the same shape. Each trunk
is what `--model.init_from` makes of that architecture's config at this shape (read by the same code), with
random weights; the steps are timed interleaved in one process."""

from __future__ import annotations

import sys

from suite.bench import describe_execution, execution, execution_options, interleave, median, resolve_device
from suite.errors import check_choice, check_range


def shaped_config(model_type: str, size: str, vocab_size: int, seq_len: int):
    """The trunk `--model.init_from` would build from a config.json of `model_type` at the shape of `size`
    (the same widths, depth, heads and MLP width; each architecture's own defaults for the rest)."""
    from transformers import AutoConfig

    from suite.architectures import model_config
    from suite.sizes import ModelConfig

    c = ModelConfig.from_name(size, vocab_size=vocab_size)
    if model_type == "gpt2":
        shape = dict(n_embd=c.d_model, n_inner=c.ffn_dim, n_layer=c.n_layer, n_head=c.n_head, n_positions=seq_len)
    else:
        shape = dict(hidden_size=c.d_model, intermediate_size=c.ffn_dim, num_hidden_layers=c.n_layer,
                     num_attention_heads=c.n_head)
        if model_type != "gpt_neox":
            shape.update(num_key_value_heads=c.kv_heads, head_dim=c.head_dim)
    raw = AutoConfig.for_model(model_type, vocab_size=vocab_size, tie_word_embeddings=c.tie_embeddings,
                               bos_token_id=None, eos_token_id=None, pad_token_id=None, **shape).to_dict()
    return model_config(f"({model_type} at {size})", raw)


def architectures(size: str = "tiny", objective: str = "parallel_mtp", n: int = 2, vocab_size: int = 4096,
                  seq_len: int = 256, batch_size: int = 8, rounds: int = 10, device: str = "auto",
                  compile: bool = False, quick: bool = False) -> tuple[dict, str]:
    """Seconds of one frozen-trunk training step (the trunk's forward without gradients, the heads' forward and
    backward) on each architecture's trunk, against the Llama trunk's.

    Args:
        size: The shape every trunk takes (`foresight sizes`).
        objective: The objective whose heads train (parallel_mtp, causal_mtp, sequential_mtp, ...).
        n: Its horizon (n heads; n - 1 modules for sequential_mtp).
        vocab_size: Vocabulary.
        seq_len: Tokens per sequence.
        batch_size: Sequences per step.
        rounds: Timed steps of each architecture, interleaved (after one warm-up step each); the median counts.
        device: cpu, cuda, or auto (cuda when available).
        compile: Every block through torch.compile (--model.compile).
        quick: A seconds-long run (nano, 64 tokens, batch 2, 2 rounds), to check the bench itself.
    """
    from suite.architectures import ARCHITECTURES
    from suite.sizes import SIZES

    if quick:
        size, seq_len, batch_size, rounds = "nano", 64, 2, 2
    device = resolve_device(device)
    check_choice("size", size, SIZES)
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("batch_size", batch_size),
                        ("rounds", rounds), ("n", n)):
        check_range(name, value, 1)
    settings = execution_options(compile, False, "auto")
    import torch

    import objectives
    from suite.model import Trunk
    from suite.sizes import count_parameters

    spec = {"class_path": objective, "init_args": {"depth" if objective == "sequential_mtp" else "n": n}}
    tokens = torch.randint(0, vocab_size, (batch_size, seq_len), device=device)
    steps, counts, configs = {}, {}, {}
    for model_type in ARCHITECTURES:
        torch.manual_seed(0)
        config = shaped_config(model_type, size, vocab_size, seq_len)
        trunk = Trunk(config).to(device).requires_grad_(False)
        heads = objectives.from_spec(spec)
        heads.attach(trunk)
        heads.to(device)
        counts[model_type] = count_parameters(trunk, heads)
        configs[model_type] = {key: value for key, value in vars(config).items() if key != "name"}

        def step(trunk=trunk, heads=heads):
            with execution(settings, trunk, heads):
                loss, _ = heads.loss(trunk, heads.hidden(trunk, tokens, None), tokens, None)
            loss.backward()
            for p in heads.parameters():
                p.grad = None

        steps[model_type] = step
    seconds = interleave(steps, rounds, device, warmup=2 if compile else 1)
    base = median(seconds["llama"])
    rows = [{"arch": model_type, "seconds": seconds[model_type], "median_s": median(seconds[model_type]),
             "ratio": median(seconds[model_type]) / base, "parameters": counts[model_type],
             "config": configs[model_type]} for model_type in ARCHITECTURES]
    for row in rows:
        print(f"  {row['arch']}: {row['median_s'] * 1e3:.1f} ms, x{row['ratio']:.2f} Llama's", file=sys.stderr)
    report = {"config": {"size": size, "objective": objective, "n": n, "vocab_size": vocab_size, "seq_len": seq_len,
                         "batch_size": batch_size, "rounds": rounds, "device": device, **settings,
                         "threads": torch.get_num_threads()}, "rows": rows}
    return report, architectures_table(report)


def architectures_table(report: dict) -> str:
    c = report["config"]
    lines = [f"A frozen-trunk step of {c['objective']} (n = {c['n']}) heads on each architecture's trunk at the "
             f"shape of `{c['size']}`, V={c['vocab_size']}, T={c['seq_len']}, batch {c['batch_size']}, "
             f"{c['device']}{describe_execution(c)}; median of {c['rounds']} interleaved steps.",
             "",
             "| architecture | trunk parameters (blocks) | heads' parameters | ms a step | x Llama's |",
             "| --- | --- | --- | --- | --- |"]
    for row in report["rows"]:
        counts = row["parameters"]
        lines.append(f"| {row['arch']} | {counts['trunk']:,} | {counts['objective']:,} | "
                     f"{row['median_s'] * 1e3:.1f} | {row['ratio']:.2f} |")
    return "\n".join(lines)
