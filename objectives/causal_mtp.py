"""Causal multi-token prediction (Gloeckle et al. 2024, appendix on alternative architectures): like parallel MTP,
but the heads form a chain: head k reads head k-1's output. Each head is a residual block, so its input carries
the trunk output plus every earlier head's update.

Its one layout is "stacked": a chain that starts at the next-token head is already Gloeckle et al.'s layout with
the trunk's last block as that head ("siblings" would be the same model, so it is not offered)."""

from __future__ import annotations

from objectives.heads import run_blocks
from objectives.parallel_mtp import ParallelMTP


class CausalMTP(ParallelMTP):
    name = "causal_mtp"
    chained = True
    layouts = ("stacked",)

    def _step(self, trunk, k: int):
        blocks = self.heads[k - 2]
        return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, previous, cache)
