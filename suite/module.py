"""`ObjectiveLM`: the one LightningModule for every objective. The trunk makes hidden states, the objective turns
them into a loss; this module owns the optimizer, the schedule, logging and the counters that overhead reports
read (tokens seen, FLOPs per batch)."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode
from lightning.pytorch.callbacks import ThroughputMonitor

from objectives import NTP, Objective, from_spec
from objectives.execution import Execution, executing
from objectives.fused import FLOP_FORMULAS
from objectives.heads import all_heads_at_once, gradient_alignment, head_gradients, head_scales
from suite.checkpoints import attach, attach_stand_ins, vocabulary_fits
from suite.decoding import generate
from suite.errors import UsageError, check_choice, check_range
from suite.model import Block, Trunk, compile_blocks
from suite.plan import plan_scores, supports
from suite.sizes import ModelConfig, count_parameters, resolve
from suite.schedule import WarmupCosine


def training_flops(config: ModelConfig, objective: Objective, batch_shape: tuple[int, int],
                   frozen_configs: dict | None = None) -> int:
    """FLOPs of one training step (forward and backward) on a batch of token ids of `batch_shape`, counted by
    torch's FLOP counter on a meta-device replica (no memory, no compute; frozen models are stand-ins of the
    shapes in `frozen_configs`, else of the trunk's)."""
    with torch.device("meta"):
        trunk = Trunk(config)
        replica = from_spec(objective.spec())
        attach_stand_ins(replica, trunk, frozen_configs)
        tokens = torch.zeros(batch_shape, dtype=torch.long)
        mask = torch.ones(batch_shape, dtype=torch.bool)  # its values do not change the work, only its presence
    counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
    with all_heads_at_once(), counter:
        replica.loss(trunk, replica.hidden(trunk, tokens, mask), tokens, mask)[0].backward()
    return counter.get_total_flops()


def copy_last_block(trunk: Trunk, objective: Objective) -> None:
    """Every transformer block of the objective's heads starts as a copy of the trunk's last block (the blocks of
    a frozen model the objective reads, FSP-RevLM's reverse model, stay as they were loaded)."""
    last = trunk.blocks[-1].state_dict()
    frozen = {id(block) for model in objective.modules() if isinstance(model, Trunk) for block in model.blocks}
    for module in objective.modules():
        if isinstance(module, Block) and id(module) not in frozen:
            module.load_state_dict(last)


def load_heads(pretrained, objective: Objective, head_init: str) -> bool:
    """The heads `foresight export` wrote beside a pretrained model, into the objective they were trained with
    (True); another objective starts heads of its own, with a warning that names both (False)."""
    import sys

    if pretrained.heads is None:
        return False
    if pretrained.heads_objective != objective.spec():
        print(f"foresight: warning: {pretrained.path} holds the heads of {pretrained.heads_objective}; "
              f"{objective.spec()} starts heads of its own", file=sys.stderr)
        return False
    if head_init != "random":
        raise UsageError(f"--model.head_init={head_init} would replace the heads {pretrained.path} holds for this "
                         "objective; allowed: head_init=random (the saved heads are loaded)")
    objective.load_state_dict(pretrained.heads)
    return True


class ObjectiveLM(L.LightningModule):
    """The model: a trunk of a named size and the objective it trains with."""

    def __init__(self, size: str | ModelConfig | None = None, objective: Objective | None = None,
                 vocab_size: int | None = None, init_from: str | None = None, freeze_trunk: bool = False,
                 head_init: Literal["random", "last_block"] = "random", lr: float = 1e-3, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95), warmup_steps: int = 100, min_lr_ratio: float = 0.1,
                 compile: bool = False, checkpoint_heads: bool = False,
                 loss_kernel: Literal["auto", "foresight", "liger"] = "auto"):
        """
        Args:
            size: A name from `suite.sizes.SIZES` (nano, micro, tiny, small, base, large, 1b) or a full model config;
                None: nano, or the shape of the model `init_from` names.
            objective: The training objective, by class or registry name: NTP (ntp, the default when None),
                ParallelMTP (parallel_mtp), CausalMTP (causal_mtp), SequentialMTP (sequential_mtp), FSPBoW (fsp_bow),
                FSPRevLM (fsp_revlm), Teacherless (teacherless), SelfDistillMTP (self_distill_mtp, heads on a frozen
                trained trunk); options as --model.objective.n=4 (`foresight
                objectives` lists each one's).
            vocab_size: Vocabulary size; the CLI sets it from the data's tokenizer.
            init_from: A local Hugging Face directory (config.json, safetensors, tokenizer.json) of a supported
                architecture (`suite.architectures`: Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-NeoX, GPT-2) whose
                model becomes the trunk (`suite.pretrained`); the data must be tokenized with its tokenizer
                (`foresight prepare --tokenizer DIR`). Nothing is downloaded. With `size` a full config (as a
                checkpoint stores it: `load_from_checkpoint`, a resumed fit), the directory is not read again: the
                checkpoint holds the architecture and the weights.
            freeze_trunk: Train the objective's own parameters only: the trunk (embedding and unembedding too)
                stays as it was, and the optimizer keeps no state for it.
            head_init: The objective's head blocks start random, or as copies of the trunk's last block (as
                Gloeckle et al. and Medusa start heads on a pretrained model).
            lr: Peak AdamW learning rate.
            weight_decay: AdamW weight decay on matrices (norm gains are not decayed).
            betas: AdamW betas.
            warmup_steps: Linear warmup steps before the cosine decay.
            min_lr_ratio: The cosine decays to lr * min_lr_ratio at the last step.
            compile: torch.compile every transformer block (the trunk's and the heads') and the chunked loss for
                training; decoding with the KV cache stays eager. Same loss and gradients to float tolerance.
            checkpoint_heads: Recompute the head blocks' activations in the backward pass instead of keeping them
                (less memory for heads, one more forward pass of each head block).
            loss_kernel: The unembedding's cross-entropy: foresight's chunked loss (every device), liger
                (Liger-Kernel's fused kernel: CUDA, the gpu extra), or auto (liger on CUDA where installed).

        How the model runs (compile, checkpoint_heads, loss_kernel) is the run's config, not the checkpoint's: a
        checkpoint trained with any of them loads and evaluates anywhere.
        """
        super().__init__()
        check_range("lr", lr, 0.0)
        check_range("weight_decay", weight_decay, 0.0)
        check_range("warmup_steps", warmup_steps, 0)
        check_range("min_lr_ratio", min_lr_ratio, 0.0, 1.0)
        check_choice("head_init", head_init, ("random", "last_block"))
        self.execution = Execution(compile=compile, checkpoint_heads=checkpoint_heads, loss_kernel=loss_kernel)
        pretrained = None
        restoring = init_from is not None and isinstance(size, (dict, ModelConfig))
        if restoring:  # a checkpoint's hyperparameters: its config (the architecture too), its own weights
            self.config = resolve(size)
        elif init_from is not None:
            if size is not None:
                raise UsageError(f"--model.size={size if isinstance(size, str) else 'a config'} and "
                                 f"--model.init_from={init_from} both set the model's shape; allowed: one of them "
                                 "(init_from takes its shape from config.json)")
            from suite.pretrained import read_pretrained

            pretrained = read_pretrained(init_from)
            self.config = pretrained.config
            init_from = str(Path(init_from).resolve())  # recorded as where it was read, from any directory
        else:
            self.config = resolve(size or "nano", **({"vocab_size": vocab_size} if vocab_size else {}))
        self.trunk = Trunk(self.config)
        if pretrained is not None:
            self.trunk.load_state_dict(pretrained.state)
        self.pretrained_tokenizer = pretrained.tokenizer if pretrained is not None else None
        self.objective = NTP() if objective is None else from_spec(objective)
        frozen = attach(self.objective, self.trunk)  # with the frozen models it reads, loaded from their files
        self.frozen_configs = {option: model.config for option, model in frozen.items()}
        loaded = pretrained is not None and load_heads(pretrained, self.objective, head_init)
        if head_init == "last_block" and not loaded:
            copy_last_block(self.trunk, self.objective)
        if freeze_trunk:
            self.trunk.requires_grad_(False)
        elif self.objective.distills_trunk:
            raise UsageError(f"{self.objective.name} trains heads on the trunk's own predictions, so the trunk must "
                             "be a trained model held fixed; allowed: --model.freeze_trunk=true (with "
                             "--model.init_from=DIR, or a foresight export of a trained checkpoint)")
        # What a checkpoint needs to rebuild this module without the SIZES table or the CLI: the resolved config
        # and the objective's spec, never the objective module itself.
        self.save_hyperparameters({
            "size": dataclasses.asdict(self.config), "objective": self.objective.spec(),
            "vocab_size": self.config.vocab_size, "lr": lr, "weight_decay": weight_decay, "betas": tuple(betas),
            "warmup_steps": warmup_steps, "min_lr_ratio": min_lr_ratio, "init_from": init_from,
            "freeze_trunk": freeze_trunk, "head_init": head_init,
        })
        self.tokens_seen = 0
        self.last_loss: float | None = None  # the latest training step's loss; kept in checkpoints
        self.flops_per_batch: int | None = None  # read by Lightning's ThroughputMonitor
        self.seq_len_seen: int | None = None  # of the training batches, for analytic FLOPs per token
        self.document_mask = False  # attention within each document of a packed row (the data's option)

    def configure_callbacks(self):
        return [ThroughputMonitor(batch_size_fn=lambda batch: batch["tokens"].shape[0],
                                  length_fn=lambda batch: batch["tokens"].numel(), window_size=10)]

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": hp.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=hp.betas,
                                      fused=self.device.type in ("cpu", "cuda") or None)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = WarmupCosine(optimizer, min(hp.warmup_steps, total - 1), total, hp.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, T, V]: every checkpoint is a plain causal LM."""
        return self.trunk.logits(self.trunk(input_ids))

    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy continuations [B, max_new_tokens] (`suite.decoding.generate` for speculative decoding and stats)."""
        return generate(self, prompt_ids, max_new_tokens)[0]

    @contextmanager
    def _running(self, tokens: torch.Tensor):
        """How the objective runs on a batch: attention within documents where the data says so, the execution
        options (compiled blocks, checkpointed heads, the loss kernel)."""
        with self.trunk.within_documents(tokens, self.objective.separator if self.document_mask else None), \
                executing(self.execution):
            yield

    def _loss(self, batch: dict[str, torch.Tensor]):
        tokens, mask = batch["tokens"], batch.get("loss_mask")
        with self._running(tokens):
            return self.objective.loss(self.trunk, self.objective.hidden(self.trunk, tokens, mask), tokens, mask)

    def setup(self, stage: str) -> None:
        datamodule = self._trainer.datamodule if self._trainer else None
        if datamodule is not None:
            self.check_data(datamodule)

    def check_data(self, datamodule) -> None:
        """A UsageError if the data cannot train this model: another vocabulary, sequences too short for the
        objective's horizon."""
        if self.pretrained_tokenizer is not None:
            if datamodule.task.tokenizer.get_vocab() != self.pretrained_tokenizer.get_vocab():
                raise UsageError(f"the data ({datamodule.task.name}) is tokenized with another tokenizer than "
                                 f"--model.init_from={self.hparams.init_from}'s; allowed: a corpus prepared with "
                                 f"its tokenizer (foresight prepare ... --tokenizer {self.hparams.init_from})")
        elif not vocabulary_fits(datamodule.vocab_size, self.config.vocab_size, bool(self.hparams.init_from)):
            raise UsageError(f"the data's vocabulary has {datamodule.vocab_size} tokens; allowed: the model's "
                             f"{self.config.vocab_size}")
        self.objective.check_sequence_length(datamodule.seq_len)
        self.objective.separator = datamodule.task.document_separator  # no target crosses a document's end
        self.document_mask = datamodule.task.document_mask  # nor, if the data says so, any attention
        if self.objective.needs_prompts and not datamodule.has_prompts:
            raise UsageError(f"{self.objective.name} needs examples with a prompt that is not a prediction target, "
                             f"and every token of {datamodule.task.name}'s training examples is one; allowed: a task "
                             "of prompts and answers (star_graph, countdown, ...) with loss_on=answer")
        # one sequence of the data's length: Lightning's model summary counts the forward pass's FLOPs on it
        self.example_input_array = torch.zeros(1, datamodule.seq_len, dtype=torch.long)

    def parameter_counts(self) -> dict[str, int]:
        return count_parameters(self.trunk, self.objective)

    def on_fit_start(self) -> None:
        if self.execution.compile:  # after the model summary's eager pass; for this run's training and validation
            compile_blocks(self)
        for logger in self.loggers:
            logger.log_metrics({f"params/{k}": v for k, v in self.parameter_counts().items()}, step=0)

    def on_train_batch_start(self, batch, batch_idx):
        self.objective.progress = self.global_step / max(self.trainer.estimated_stepping_batches, 1)
        if self.flops_per_batch is None:
            self.flops_per_batch = training_flops(self.config, self.objective, tuple(batch["tokens"].shape),
                                                  self.frozen_configs)
            self.seq_len_seen = batch["tokens"].shape[1]
        if self.global_step == 0 and batch_idx == 0:
            self.log_head_scales(batch)

    def log_head_scales(self, batch) -> None:
        """Each head's loss and gradient norm on the trunk before the first step (`init/loss/<head>`,
        `init/grad_norm/<head>`): whether an auxiliary loss outweighs the next-token loss is read off every run."""
        scales = head_scales(self.objective, self.trunk, batch["tokens"], batch.get("loss_mask"))
        metrics = {f"init/{kind}/{label}": values[kind] for label, values in scales.items() for kind in values}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=0)

    def training_step(self, batch, batch_idx):
        loss, metrics = self._loss(batch)
        if not torch.isfinite(loss):  # stop at once: every later step would only spread the NaN
            raise UsageError(f"the training loss is {loss.item()} at step {self.global_step} (lr={self.hparams.lr}); "
                             "allowed: a finite loss: lower --model.lr or raise --model.warmup_steps")
        self.tokens_seen += batch["tokens"].numel() * self.trainer.world_size
        self.last_loss = loss.detach()
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in metrics.items()})
        self.log("train/tokens_seen", float(self.tokens_seen))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])  # the rate this step trained at
        return loss

    def _evaluate(self, batch, stage: str, batch_idx: int = 0) -> None:
        loss, metrics = self._loss(batch)
        size = batch["tokens"].shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, batch_size=size, sync_dist=True)
        if batch_idx == 0:
            self.log_dict({f"{stage}/grad/{k}": v for k, v in self.gradient_alignment(batch).items()},
                          batch_size=size, sync_dist=True)
        datamodule = self._trainer.datamodule if self._trainer else None
        if datamodule is not None:
            task = datamodule.task
            scores = datamodule.evaluate(self.generate, batch)
            if scores and supports(task):  # a path task read left to right: where each head holds the plan
                scores |= plan_scores(self.objective, self.trunk, task, batch)
            for name, values in scores.items():
                self.log(f"{stage}/{task.name}/{name}", values.float().mean(), prog_bar=name == task.primary,
                         batch_size=size, sync_dist=True)

    def gradient_alignment(self, batch) -> dict[str, torch.Tensor]:
        """Each head's gradient on the state the heads share, on this batch: its norm (`norm/<head>`) and its cosine
        with the next-token head's (`cos/<head>`), logged at every validation as `val/grad/...`
        (`objectives.heads.gradient_alignment`)."""
        with self._running(batch["tokens"]):
            return gradient_alignment(head_gradients(self.objective, self.trunk, batch["tokens"],
                                                     batch.get("loss_mask")))

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", batch_idx)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["last_loss"] = None if self.last_loss is None else float(self.last_loss)

    def on_load_checkpoint(self, checkpoint):
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        self.last_loss = checkpoint.get("last_loss")
