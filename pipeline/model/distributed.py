"""Data-parallel training under torchrun: NCCL on GPUs, gloo on CPUs, nothing when not launched by it.

`torchrun --nproc_per_node=N graft train` needs no other change: each process trains on its
shard of every epoch with batch_size // N examples, so the global batch matches a single
process; rank 0 alone writes checkpoints, logs and the model. Under torchrun the process group
is set up even for one process, so `--nproc_per_node=1` runs the same collective path (NCCL on a
GPU) as a larger job.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = ""  # "" when not launched by torchrun: no process group

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """A process group is set up (torchrun, any number of processes)."""
        return bool(self.backend)

    def barrier(self) -> None:
        if self.active:
            td.barrier()

    def mean(self, total: float, count: int) -> float:
        """The mean of a per-process (sum, count) over all processes."""
        if not self.active:
            return total / max(count, 1)
        # NCCL reduces CUDA tensors only
        on = torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=on)
        td.all_reduce(t)
        return float(t[0] / t[1].clamp(min=1))


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ)


def init_distributed(device: str) -> Dist:
    """The process group for this torchrun process (set up once), or Dist() when run alone."""
    if not launched_by_torchrun():
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        gpu = torch.cuda.is_available() and device != "cpu"
        if gpu:  # before NCCL starts: each process on its own GPU, not all on cuda:0
            torch.cuda.set_device(local_rank)
        td.init_process_group("nccl" if gpu else "gloo")
        atexit.register(lambda: td.is_initialized() and td.destroy_process_group())
    return Dist(td.get_world_size(), td.get_rank(), local_rank, td.get_backend())
