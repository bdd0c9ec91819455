"""Per-dimension standardisation fitted on data and stored in the state_dict."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Normalizer"]


class Normalizer(nn.Module):
    """Maps ``x`` to ``(x - mean) / std`` per dimension; ``mean`` and ``std`` are buffers.

    A fresh normaliser is the identity. Dimensions whose standard deviation is
    (nearly) zero keep a standard deviation of 1, so constant inputs stay finite.

    Args:
        size: number of dimensions (the last axis of the tensors it normalises).
    """

    min_std: float = 1e-6

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        """Set ``mean`` and ``std`` from ``data`` of shape ``[N, size]``."""
        mean = data.mean(dim=0)
        std = data.std(dim=0, correction=0)
        self.mean.copy_(mean)
        self.std.copy_(torch.where(std < self.min_std, torch.ones_like(std), std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` over the last axis."""
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean`` over the last axis."""
        return torch.addcmul(self.mean, x, self.std)
