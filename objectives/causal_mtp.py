"""Causal multi-token prediction (Gloeckle et al. 2024, appendix on alternative architectures): like parallel MTP,
but the heads form a chain: head k reads head k-1's output. Each head is a residual block, so its input carries
the trunk output plus every earlier head's update."""

from __future__ import annotations

from objectives.base import run_blocks
from objectives.parallel_mtp import ParallelMTP


class CausalMTP(ParallelMTP):
    name = "causal_mtp"
    chained = True

    def _step(self, trunk, k: int):
        blocks = self.heads[k - 2]
        return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, previous, cache)
