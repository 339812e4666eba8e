"""Running as one rank of a ``torchrun`` job: start-up, shards, and the few collectives training needs.

``torchrun`` (single node ``--standalone`` or multi-node ``--rdzv-backend c10d``) sets
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; without them a script is a world of one and nothing
here communicates. Every helper is a no-op in a world of one, so tasks call them
unconditionally. The backend is gloo on CPU and NCCL on CUDA, chosen from the device.
"""

from __future__ import annotations

import atexit
import datetime
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler

from .errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank, world_size: global rank and number of processes; local_rank: rank on this node.
        backend: ``gloo`` | ``nccl`` | ``None`` (a world of one).
        device: the device this rank trains on (``cuda:LOCAL_RANK`` on GPUs).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise UserError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the ``torchrun`` job described by the environment, or return a world of one.

    Args:
        device: ``auto`` | ``cpu`` | ``cuda``; under torchrun on CUDA each rank takes
            ``cuda:LOCAL_RANK`` (an explicit ``cuda:N`` is a user error there).
        timeout_minutes: how long a collective waits for a silent rank before failing
            (a rank that dies under torchrun ends the job at once; this bounds the rest).

    Ranks other than 0 get their stdout sent to ``os.devnull`` so that only rank 0 prints;
    errors (stderr) still show from every rank.
    """
    from .devices import resolve_device

    world = _env_int("WORLD_SIZE", 1)
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(device=dev)
    import torch.distributed as dist

    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda":
        if dev.index is not None and world > 1:
            raise UserError(f"--device {device} under torchrun: use --device cuda (each rank takes cuda:LOCAL_RANK)")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes),
                                **({"device_id": dev} if backend == "nccl" else {}))
        atexit.register(shutdown)
    if rank != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (lives as long as the process)
    return DistContext(rank, world, local_rank, backend, dev)


def current() -> DistContext:
    """The context of the process group already joined (a world of one when none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), dist.get_backend())


def shutdown() -> None:
    """Leave the process group (idempotent)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish() -> None:
    """The normal end of a run, on every rank: wait until every rank gets here (rank 0 may still
    be scoring the test split or writing the checkpoint), then leave the group. A rank that
    tears gloo down while a peer still works can abort (SIGABRT) and fail the whole job; on
    an error path use :func:`shutdown` instead (a barrier there would wait for ranks stuck
    elsewhere). A no-op in a world of one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a world of one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def reduce_weighted_means(sums: dict[str, float], count: int) -> dict[str, float]:
    """Means over all ranks of per-sample values: ``sums`` holds each rank's Σ value·n, ``count`` its n."""
    total: dict[str, float] = {}
    n = 0
    for part, c in gather_objects((sums, count)):
        n += c
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    return {k: v / max(n, 1) for k, v in total.items()}


def barrier() -> None:
    """Wait for every rank (no-op in a world of one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Indices of one rank's shard: deterministic in (seed, epoch), whatever the world size.

    Training (``shuffle=True``): a permutation drawn from ``seed`` and the epoch (``set_epoch``),
    cut to a multiple of ``world_size`` so every rank runs the same number of steps, and
    dealt round-robin — rank r gets positions r, r+W, r+2W… Batch s of every rank together is
    then exactly batch s of a one-process run whose batch is W times larger, which is what
    makes the two comparable step by step (and a resume on another world size continue the
    same sample order).
    Validation (``shuffle=False``): the dataset in order, dealt round-robin, nothing
    dropped or repeated (shards may differ in length by one).

    Args:
        length: dataset size; rank, world_size: this shard; seed: of the permutations.
    """

    def __init__(self, length: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.length, self.rank, self.world_size = length, rank, world_size
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.length)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        perm = torch.randperm(self.length, generator=g)
        return perm[: (self.length // self.world_size) * self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank::self.world_size].tolist())

    def __len__(self) -> int:
        if self.shuffle:
            return self.length // self.world_size
        return math.ceil(max(self.length - self.rank, 0) / self.world_size)
