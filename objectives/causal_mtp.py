"""Causal multi-token prediction (Gloeckle et al. 2024, appendix on alternative architectures): like parallel MTP,
but the heads form a chain: head k reads head k-1's output. Each head is a residual block (or, with head_layers =
0, a linear map), so its input carries the state it branched from plus every earlier head's update.

Its default layout is "stacked", the paper's: the chain starts at the next-token head (head 2 reads the trunk
output). With an earlier `branch_layer` (or "siblings"), head 2 reads the trunk's state after that many blocks
instead, and the chain runs beside the next-token head's last blocks."""

from __future__ import annotations

from objectives.heads import run_blocks
from objectives.parallel_mtp import ParallelMTP


class CausalMTP(ParallelMTP):
    name = "causal_mtp"
    chained = True
    default_layout = "stacked"

    def _step(self, trunk, k: int):
        """Head 2 reads the shared state (the branch, which is head 1's state when stacked); head k > 2 reads head
        k-1's."""
        blocks = self.heads[k - 2]
        if k == 2:
            return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, hidden, cache)
        return lambda hidden, previous, cache=None: run_blocks(trunk, blocks, previous, cache)
