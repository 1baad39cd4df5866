"""Latent spaces between encoder and decoder: Gaussian (VAE, paper eq. 3) and vector-quantized
(VQ-VAE, paper eqs. 4-6). Each returns a small named result rather than a bare tuple."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GaussianLatentOutput:
    decoded: torch.Tensor   # (B, C, T'k, Uk) latent mapped back onto the kept grid (C = input channels)
    mu: torch.Tensor        # (B, L)
    logvar: torch.Tensor    # (B, L)
    kl: torch.Tensor        # scalar


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Paper eq. 3, first term without beta: 0.5 * mean_i sum_j (exp(s) - (1 + s) + mu^2), s = log var."""
    return 0.5 * (logvar.exp() - (1.0 + logvar) + mu.pow(2)).sum(dim=1).mean()


class GaussianLatent(nn.Module):
    """SkeletonMVAE latent (paper Table 9): flatten the kept grid -> Linear -> (mu, log var),
    reparameterise, Linear back to `out_channels * T'k * Uk` and reshape onto the kept grid.

    The flatten-Linear is why MVAE has ~25M parameters, and why it needs a fixed kept grid."""

    def __init__(self, in_channels: int, kept_grid: tuple[int, int], latent_dim: int, out_channels: int):
        super().__init__()
        self.kept_grid, self.out_channels = kept_grid, out_channels
        cells = kept_grid[0] * kept_grid[1]
        self.to_moments = nn.Linear(in_channels * cells, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, out_channels * cells)

    def forward(self, h: torch.Tensor) -> GaussianLatentOutput:
        b = h.shape[0]
        mu, logvar = self.to_moments(h.reshape(b, -1)).chunk(2, dim=1)  # (B, L) each
        # Reparameterisation z = mu + sigma * eps (paper 3.3.3); the mean at evaluation.
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        decoded = self.from_latent(z).view(b, self.out_channels, *self.kept_grid)
        return GaussianLatentOutput(decoded, mu, logvar, gaussian_kl(mu, logvar))


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor        # (B, D, T'k, Uk) straight-through: forward = codes, gradient -> z
    indices: torch.Tensor          # (B, T'k, Uk) code index of every token
    codebook_loss: torch.Tensor    # ||sg[z] - e||^2 (eq. 6, second term)
    commitment_loss: torch.Tensor  # ||z - sg[e]||^2 (eq. 6, third term, before its weight)
    perplexity: torch.Tensor       # exp(entropy of code usage) in this batch
    usage: torch.Tensor            # fraction of codes used at least once in this batch


Reducer = Callable[[torch.Tensor], torch.Tensor]


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation of every token (paper eqs. 4-5) with a straight-through gradient.

    `reduce_counts` sums code counts across data-parallel workers in training steps (inject an
    all-reduce); without it, and always in eval mode, the statistics are this process's. `restart_dead_codes` (off by default, not in the paper)
    re-seeds codes unused for `dead_after` steps with random encoder outputs of the batch;
    `broadcast` (inject rank 0's broadcast) keeps the restarted codebook identical across workers.
    """

    def __init__(self, dim: int, codebook_size: int, restart_dead_codes: bool = False, dead_after: int = 100):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size))
        self.restart_dead_codes, self.dead_after = restart_dead_codes, dead_after
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))
        self.reduce_counts: Reducer | None = None
        self.broadcast: Reducer | None = None

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, d, t, u = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*T'k*Uk, D)
        # k = argmin_j ||z_i - e_j|| (eq. 4), via ||z||^2 - 2 z.e + ||e||^2.
        distances = (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None, :])
        indices = distances.argmin(dim=1)
        codes = self.codebook[indices]  # (B*T'k*Uk, D), eq. 5
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment_loss = F.mse_loss(flat, codes.detach())
        quantized = flat + (codes - flat).detach()  # straight-through estimator
        quantized = quantized.view(b, t, u, d).permute(0, 3, 1, 2)

        counts = torch.bincount(indices, minlength=self.codebook.shape[0]).float()
        # Only training steps are in lock-step across workers; evaluation shards may differ in
        # batch count, where a collective here would deadlock. Eval statistics stay local.
        if self.reduce_counts is not None and self.training:
            counts = self.reduce_counts(counts)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        usage = (counts > 0).float().mean()
        if self.training and self.restart_dead_codes:
            self._restart(flat.detach(), counts)
        return QuantizerOutput(quantized, indices.view(b, t, u), codebook_loss, commitment_loss, perplexity, usage)

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.steps_unused >= self.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        self.codebook[dead] = flat[picks]
        self.steps_unused[dead] = 0
        if self.broadcast is not None:
            self.codebook.copy_(self.broadcast(self.codebook.detach()))
