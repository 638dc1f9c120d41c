"""Feeds an :class:`~fewstep.data.ArrayDataset` to the model in batches, on the device.

The whole dataset lives on the training device (airbench style: no worker processes, no host
round trips); augmentation runs there too. The order and the augmentation of epoch ``e`` depend
only on ``(seed, e)``, so a run resumed at an epoch boundary sees exactly the batches an
uninterrupted run would. In data-parallel runs each rank takes every ``world``-th sample of the
shared permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data import ArrayDataset


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63))
    return g


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``padding`` px (zero fill) and horizontal flip, per sample.

    ``x`` is ``[B, C, H, W]`` (sequences are passed with time folded into channels so every step
    of a sample moves the same way).
    """
    b, c, h, w = x.shape
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=g).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=g).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # [B, H]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # [B, W]
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(b, generator=g) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


class DeviceFeed:
    """Batches of ``(inputs, labels)``: static images ``[B, C, H, W]`` normalised to float, or
    sequences as time-major ``[T, B, C, H, W]``."""

    def __init__(self, ds: ArrayDataset, batch_size: int, device: torch.device, *, train: bool, seed: int = 0,
                 crop_padding: int = 0, flip: bool = False, rank: int = 0, world: int = 1) -> None:
        self.ds = ds
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding
        self.flip = flip
        self.rank, self.world = rank, world
        self.inputs = ds.inputs.to(device)
        self.labels = ds.labels.to(device)
        if ds.mean is not None and not ds.is_sequence:
            shape = (1, -1, 1, 1)
            self.mean: torch.Tensor | None = torch.tensor(ds.mean, device=device).view(shape)
            self.std: torch.Tensor | None = torch.tensor(ds.std, device=device).view(shape)
        else:
            self.mean = self.std = None

    def indices(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=epoch_generator(self.seed, epoch, self.device))
            usable = (n // self.world) * self.world  # equal shards so DDP ranks stay in step
            order = order[:usable]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world]

    def num_batches(self, epoch: int = 0) -> int:
        n = len(self.indices(epoch))
        return (n + self.batch_size - 1) // self.batch_size

    def _prepare(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if self.ds.is_sequence:
            x = x.float()
            if g is not None and (self.crop_padding or self.flip):
                b, t = x.shape[:2]
                x = random_crop_flip(x.flatten(1, 2), self.crop_padding, self.flip, g).unflatten(1, (t, -1))
            return x.transpose(0, 1).contiguous()  # [T, B, C, H, W]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if g is not None and (self.crop_padding or self.flip):
            x = random_crop_flip(x, self.crop_padding, self.flip, g)
        if self.mean is not None:
            assert self.std is not None  # set together with mean
            x = (x - self.mean) / self.std
        return x

    def prepare_eval(self, x: torch.Tensor) -> torch.Tensor:
        """Stored samples as the network sees them at evaluation: float, normalised, no augmentation."""
        return self._prepare(x.to(self.device), None)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.indices(epoch).to(self.device)
        g = epoch_generator(self.seed + 1 + self.rank, epoch, self.device) if self.train else None
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self._prepare(self.inputs[idx], g), self.labels[idx]
