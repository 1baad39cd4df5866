"""Who this worker is and the few collectives the loop needs (no-ops in a single process).

Ray Train sets up the process group (Gloo on CPU, NCCL on GPU); the loop only reads it through
`torch.distributed`, so the same code runs as one plain process in tests and benchmarks. A
`WorkerContext` is also the `collectives` a model takes (`sum` and `broadcast`, see
`models.collectives`): the vector quantizer sums code counts over workers with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class WorkerContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over workers (a copy; the input is untouched)."""
        out = values.detach().clone()
        if self.distributed:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def broadcast(self, values: torch.Tensor) -> torch.Tensor:
        """Rank 0's values on every worker (a copy; the input is untouched)."""
        out = values.detach().clone()
        if self.distributed:
            dist.broadcast(out, src=0)
        return out

    def any(self, flag: bool) -> bool:
        """True on every worker if `flag` is True on any worker (keeps workers in lock-step)."""
        return bool(self.sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Concatenate every worker's rows (rank order); workers may hold different counts."""
        if not self.distributed:
            return rows
        count = torch.tensor([rows.shape[0]], device=rows.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        longest = int(max(c.item() for c in counts))
        padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[: rows.shape[0]] = rows
        gathered = [torch.zeros_like(padded) for _ in range(self.world_size)]
        dist.all_gather(gathered, padded)
        return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)])

    def shard(self, indices: list[int] | range) -> list[int]:
        """This worker's share of an evaluation set: strided, no padding, no duplicates."""
        return list(indices)[self.rank:: self.world_size]
