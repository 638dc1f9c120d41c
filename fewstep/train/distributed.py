"""Data-parallel training through ``torchrun`` (PyTorch DDP): gloo on CPU, NCCL on CUDA.

Launch with ``torchrun --nproc_per_node N -m fewstep train RECIPE ...``; each process reads
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment that torchrun sets.

The process-group backend follows the device the run trains on (:func:`choose_backend`): a
``--device cpu`` run uses gloo even on a machine with GPUs (NCCL cannot reduce CPU tensors).
``FEWSTEP_DIST_BACKEND=gloo|nccl`` overrides the choice, e.g. gloo for a CUDA run on a machine
whose NCCL is broken; NCCL for a CPU run is refused.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ConfigError

BACKENDS = ("gloo", "nccl")
OVERRIDE_ENV = "FEWSTEP_DIST_BACKEND"


def device_kind(device: str | None, cuda_available: bool) -> str:
    """``"cpu"`` or ``"cuda"``: the kind of device a run with ``--device device`` trains on.

    ``None`` / ``"auto"`` take CUDA when there is one; ``cuda`` (or ``cuda:N``) without CUDA is an
    error, as for a single-process run."""
    if device in (None, "auto"):
        return "cuda" if cuda_available else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not cuda_available:
            raise ConfigError("--device", "CUDA was requested but torch sees no GPU (install a CUDA build of torch)")
        return "cuda"
    raise ConfigError("--device", f"must be cpu, cuda or cuda:N, got {device!r}")


def choose_backend(device: str | None, cuda_available: bool, override: str | None = None) -> str:
    """The ``torch.distributed`` backend for a run on ``device``: gloo on the CPU, NCCL on CUDA.

    ``override`` (the value of ``FEWSTEP_DIST_BACKEND``; empty means none) forces ``"gloo"`` or
    ``"nccl"``; gloo also reduces CUDA tensors, but NCCL cannot reduce CPU ones, so NCCL for a
    CPU run is refused with a :class:`~fewstep.errors.ConfigError`."""
    kind = device_kind(device, cuda_available)
    if override is None or not override.strip():
        return "nccl" if kind == "cuda" else "gloo"
    forced = override.strip().lower()
    if forced not in BACKENDS:
        raise ConfigError(OVERRIDE_ENV, f"must be {' or '.join(BACKENDS)}, got {override!r}")
    if forced == "nccl" and kind == "cpu":
        raise ConfigError(OVERRIDE_ENV, "nccl cannot reduce CPU tensors and this run trains on the CPU; use gloo")
    return forced


def setup(device: str | None = "auto") -> tuple[int, int]:
    """Join the process group if launched by torchrun; returns ``(rank, world_size)``.

    ``device`` is the run's ``--device``; it picks the backend (:func:`choose_backend`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = choose_backend(device, torch.cuda.is_available(), os.environ.get(OVERRIDE_ENV))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank_device(device: str | None) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` for CUDA runs, else CPU (the same choice as
    :func:`choose_backend`'s)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind(device, torch.cuda.is_available()) == "cpu":
        return torch.device("cpu")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
