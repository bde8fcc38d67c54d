"""Data parallelism through PyTorch's own engine: `torchrun --nproc_per_node=N -m sigprop train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; we join the process group
(gloo on CPU, NCCL on CUDA) and wrap the model in DistributedDataParallel. Every rank reads its own
slice of the same global batch, so N processes see exactly the rows one process would.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from sigprop.errors import SigpropError


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank among world_size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise SigpropError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SigpropError(f"device {name!r} asked for but CUDA is not available; accepted here: cpu, auto")
    return dev


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group if one is set up in the environment, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if world <= 1:
        return Dist(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, dev)


def teardown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        gc.collect()  # free DDP's reducer (and its pending gloo work) while the process group still exists
        dist.barrier()  # rank 0 writes the run after the last collective: let every rank get here first
        dist.destroy_process_group()


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Sum a few floats over ranks (used for the logged loss and the stop flag, so every rank agrees)."""
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_float(value: float, d: Dist) -> float:
    """Rank 0's value on every rank."""
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.broadcast(t, 0)
    return float(t.item())
