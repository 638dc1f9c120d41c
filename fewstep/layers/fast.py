"""Drop-in subclasses of ``nn.BatchNorm2d``, ``nn.MaxPool2d`` and ``nn.Dropout`` that use fewstep's
fused CPU kernels.

They are the batch norm, pooling and dropout of every fewstep model. ``BatchNorm2d`` equals
PyTorch's up to float rounding (its statistics are summed in double), running statistics included. ``MaxPool2d`` gives PyTorch's results
bit for bit (it only changes how 2x2 / stride-2 pooling of a CPU tensor is computed); ``Dropout``
has PyTorch's distribution and scaling but its own random stream (a counter-based mask seeded from
PyTorch's generator, so seeding and resuming reproduce it). Anything the kernels do not handle
(other pooling geometry, GPU tensors, half precision, ``FEWSTEP_KERNELS=reference``) runs PyTorch's
implementation. See :mod:`fewstep.kernels.cpu_ops`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..kernels.cpu_ops import try_batch_norm_train, try_dropout, try_max_pool2x2

__all__ = ["BatchNorm2d", "Dropout", "MaxPool2d"]


def _is_two(v: int | tuple[int, ...]) -> bool:
    return v == 2 if isinstance(v, int) else tuple(v) == (2, 2)


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``; 2x2 windows with stride 2 (no padding, floor mode) run the fused kernel."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._fused = (_is_two(self.kernel_size) and _is_two(self.stride or self.kernel_size)
                       and self.padding in (0, (0, 0)) and self.dilation in (1, (1, 1))
                       and not self.ceil_mode and not self.return_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused:
            out = try_max_pool2x2(x)
            if out is not None:
                return out
        return super().forward(x)


class Dropout(nn.Dropout):
    """``nn.Dropout``; in training on the CPU the mask comes from the fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.inplace and 0.0 < self.p < 1.0:
            out = try_dropout(x, self.p)
            if out is not None:
                return out
        return super().forward(x)


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d``; with batch statistics on the CPU (training) it runs the fused kernel and
    updates the running statistics exactly as PyTorch does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not self.track_running_stats
        if use_batch and x.dim() == 4:
            out = try_batch_norm_train(x, self.weight, self.bias, self.eps)
            if out is not None:
                y, mean, var = out
                if self.training and self.track_running_stats:
                    self._update_running_stats(mean, var)
                return y
        return super().forward(x)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        # the caller checked track_running_stats: the statistics' buffers exist
        assert self.num_batches_tracked is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            m = 1.0 / float(self.num_batches_tracked)
        else:
            m = self.momentum
        if self.running_mean is not None:
            self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
            self.running_var.mul_(1 - m).add_(var.to(self.running_var.dtype), alpha=m)
