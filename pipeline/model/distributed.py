"""Data-parallel training under torchrun: NCCL on GPUs, gloo on CPUs, nothing when alone.

`torchrun --nproc_per_node=N graft train` needs no other change: each process trains on its
shard of every epoch with batch_size // N examples, so the global batch matches a single
process; rank 0 alone writes checkpoints, logs and the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            td.barrier()

    def mean(self, total: float, count: int) -> float:
        """The mean of a per-process (sum, count) over all processes."""
        if self.world == 1:
            return total / max(count, 1)
        t = torch.tensor([total, float(count)], dtype=torch.float64)
        td.all_reduce(t)
        return float(t[0] / t[1].clamp(min=1))


def init_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not td.is_initialized():
        gpu = torch.cuda.is_available() and device != "cpu"
        td.init_process_group("nccl" if gpu else "gloo")
    return Dist(world, td.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))
