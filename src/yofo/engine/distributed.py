"""Process group set-up for DistributedDataParallel runs launched by ``torchrun`` (DESIGN §5).

``torchrun --nproc_per_node N -m yofo train ...`` starts N processes with ``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE`` and ``MASTER_ADDR/PORT`` in their environment; :func:`init_distributed` turns those into a
process group (gloo on CPU, nccl on CUDA). Without them, or with ``WORLD_SIZE=1``, everything runs in one
process and the helpers below are no-ops.

    dist = init_distributed("auto")
    try:
        ...  # dist.rank, dist.world_size, dist.device, dist.is_main
    finally:
        dist.close()
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from yofo.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in the run: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over the ranks (every rank gets the same result)."""
        if self.enabled:
            value = value.clone()
            torch_dist.all_reduce(value)
            value /= self.world_size
        return value

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def close(self) -> None:
        if self.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> this process's GPU under torchrun."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: '{name}' requested but CUDA is not available (use device=cpu)")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: '{name}' is not one of auto, cpu, cuda, cuda:N") from None


def init_distributed(device: str = "auto") -> Distributed:
    """Join the process group described by torchrun's environment, or run alone without one.

    Args:
        device: the config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); under torchrun ``cuda``
            and ``auto`` pick GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Distributed(rank=rank, world_size=world_size, device=dev)
