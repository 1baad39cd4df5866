"""The two collective operations a model needs across data-parallel workers, injected through the
model's constructor (as vector-quantize-pytorch does) so that models/ never imports a distributed
runtime. Only the vector quantizer uses them today: code counts summed over workers in training
steps, and rank 0's codebook after a dead-code restart.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Collectives(Protocol):
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all workers (an all-reduce); the input is left as it was."""
        ...

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values of `tensor` on every worker."""
        ...


class LocalCollectives:
    """One process: the sum over workers is this worker's tensor, and this worker is rank 0."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def __repr__(self) -> str:
        return "LocalCollectives()"


LOCAL = LocalCollectives()
