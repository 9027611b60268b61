"""Teacherless training (Bachmann & Nagarajan, "The Pitfalls of Next-Token Prediction", 2024), a planning control:
the answer's input tokens are replaced by a dummy token, so every answer token is predicted from the prompt alone
(and the dummies), never from the answer tokens before it. The Clever-Hans shortcut of teacher forcing, reading the
next node off the previous one, is then not available: the model has to plan the whole path from the prompt.

The targets are next-token prediction's, on the same batches (the data pipeline does not change); only the trunk's
inputs differ. A teacherless model answers in one pass, as it was trained: the prompt followed by dummy tokens, the
greedy choice at every position (the authors' `generate` does the same)."""

from __future__ import annotations

import torch

from objectives.base import Objective
from objectives.heads import head_losses, token_head
from suite.errors import UsageError, check_range


class Teacherless(Objective):
    name = "teacherless"
    needs_prompts = True
    decoding = "one_pass"

    def __init__(self, dummy_token: int = 0):
        """
        Args:
            dummy_token: The id that replaces every answer token in the trunk's input; 0 is `<pad>` in every
                foresight tokenizer, a token that is otherwise never read before a target.
        """
        super().__init__()
        check_range(f"{self.name} dummy_token", dummy_token, 0)
        self.dummy_token = dummy_token

    def attach(self, trunk) -> None:
        if self.dummy_token >= trunk.config.vocab_size:
            raise UsageError(f"{self.name} dummy_token={self.dummy_token} is not in the vocabulary; allowed: 0 .. "
                             f"{trunk.config.vocab_size - 1}")

    def inputs(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The trunk's inputs: `tokens` with every prediction target (the answer) replaced by the dummy token."""
        return tokens if mask is None else tokens.masked_fill(mask, self.dummy_token)

    def loss(self, trunk, hidden, tokens, mask=None):
        if mask is None:
            raise UsageError(f"{self.name} needs a loss mask that marks the answer; allowed: batches of a task with "
                             "prompts and answers (TaskData gives one)")
        heads = [token_head(trunk, self.future(tokens, 1, mask), 1.0, "head_1")]
        return head_losses(hidden, heads, self.head_params(trunk))

    def one_pass_logits(self, trunk, input_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """The prompt and max_new_tokens - 1 dummies in one pass; position P - 1 + j gives answer token j."""
        dummies = input_ids.new_full((input_ids.shape[0], max_new_tokens - 1), self.dummy_token)
        hidden = trunk(torch.cat([input_ids, dummies], dim=1))[:, input_ids.shape[1] - 1:]
        return trunk.logits(hidden)
