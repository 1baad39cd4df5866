"""Latent spaces between encoder and decoder, one interface for all of them.

Every latent takes the encoder's features of the kept tokens and returns a `LatentOutput`:
the tokens the decoder starts from (at decoder width), the latent's own weighted share of the
pre-training loss, and named scalar terms for logging. The autoencoder adds `loss` to the
reconstruction MSE and never asks which latent it has:

- MAE (`IdentityLatent`): no latent space, a 1x1 projection to decoder width; loss 0.
- MVAE (`GaussianLatent`, paper eq. 3): loss = beta * KL.
- MVQVAE (`VectorQuantizer`, paper eqs. 4-6): loss = ||sg[z] - e||^2 + 0.25 * ||z - sg[e]||^2.

`LATENTS` maps each pre-training variant to its class; `build_latent` picks one from the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .collectives import LOCAL, Collectives
from .config import ModelConfig


@dataclass
class LatentOutput:
    decoded: torch.Tensor           # (B, W, T'k, Uk) kept tokens for the decoder (W = decoder width)
    loss: torch.Tensor              # scalar: this latent's weighted term of the pre-training loss
    terms: dict[str, torch.Tensor]  # named scalars, under their metric names (kl_loss, perplexity, ...)


class Latent(nn.Module):
    """What the autoencoder relies on: `forward(h) -> LatentOutput` and `from_config`."""

    @classmethod
    def from_config(cls, config: ModelConfig, collectives: Collectives) -> "Latent":
        raise NotImplementedError

    def forward(self, h: torch.Tensor) -> LatentOutput:  # h: (B, D, T'k, Uk) encoder features
        raise NotImplementedError


def _to_decoder(channels: int, decoder_width: int | None) -> nn.Module:
    """1x1 conv from the latent's output channels to decoder width (identity when None, for
    using a latent on its own)."""
    return nn.Identity() if decoder_width is None else nn.Conv2d(channels, decoder_width, 1)


class IdentityLatent(Latent):
    """SkeletonMAE: the encoder features go straight to the decoder, projected to its width."""

    def __init__(self, dim: int, decoder_width: int | None = None):
        super().__init__()
        self.to_decoder = _to_decoder(dim, decoder_width)

    @classmethod
    def from_config(cls, config: ModelConfig, collectives: Collectives) -> "IdentityLatent":
        return cls(config.encoder_dim, config.decoder_width)

    def forward(self, h: torch.Tensor) -> LatentOutput:
        return LatentOutput(self.to_decoder(h), h.new_zeros(()), {})


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Paper eq. 3, first term without beta: 0.5 * mean_i sum_j (exp(s) - (1 + s) + mu^2), s = log var."""
    return 0.5 * (logvar.exp() - (1.0 + logvar) + mu.pow(2)).sum(dim=1).mean()


class GaussianLatent(Latent):
    """SkeletonMVAE latent (paper Table 9): flatten the kept grid -> Linear -> (mu, log var),
    reparameterise, Linear back to `grid_channels * T'k * Uk` and reshape onto the kept grid, then
    lift to decoder width (1x1 conv + BN + LeakyReLU). Loss: beta * KL (paper eq. 3).

    The flatten-Linear is why MVAE has ~25M parameters, and why it needs a fixed kept grid."""

    def __init__(self, in_channels: int, kept_grid: tuple[int, int], latent_dim: int, grid_channels: int,
                 decoder_width: int | None = None, beta: float = 0.005):
        super().__init__()
        self.kept_grid, self.grid_channels, self.beta = kept_grid, grid_channels, beta
        cells = kept_grid[0] * kept_grid[1]
        self.to_moments = nn.Linear(in_channels * cells, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, grid_channels * cells)
        self.to_decoder = nn.Identity() if decoder_width is None else nn.Sequential(
            nn.Conv2d(grid_channels, decoder_width, 1), nn.BatchNorm2d(decoder_width), nn.LeakyReLU(0.1))

    @classmethod
    def from_config(cls, config: ModelConfig, collectives: Collectives) -> "GaussianLatent":
        # Table 9's dim(output) "C" is the input's channel count (3): the latent decodes to a
        # coordinate-sized grid that the decoder's input map lifts.
        return cls(config.encoder_dim, config.kept_grid, config.latent_dim, config.num_channels,
                   decoder_width=config.decoder_width, beta=config.beta)

    def forward(self, h: torch.Tensor) -> LatentOutput:
        b = h.shape[0]
        mu, logvar = self.to_moments(h.reshape(b, -1)).chunk(2, dim=1)  # (B, L) each
        # Reparameterisation z = mu + sigma * eps (paper 3.3.3); the mean at evaluation.
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        grid = self.from_latent(z).view(b, self.grid_channels, *self.kept_grid)  # (B, C, T'k, Uk)
        kl = gaussian_kl(mu, logvar)
        return LatentOutput(self.to_decoder(grid), self.beta * kl, {"kl_loss": kl})  # eq. 3


@dataclass
class Quantized:
    quantized: torch.Tensor        # (B, D, T'k, Uk) straight-through: forward = codes, gradient -> z
    indices: torch.Tensor          # (B, T'k, Uk) code index of every token
    codebook_loss: torch.Tensor    # ||sg[z] - e||^2 (eq. 6, second term)
    commitment_loss: torch.Tensor  # ||z - sg[e]||^2 (eq. 6, third term, before its weight)


class VectorQuantizer(Latent):
    """SkeletonMVQVAE latent: nearest-code quantisation of every token (paper eqs. 4-5) with a
    straight-through gradient, then a 1x1 projection to decoder width. Loss (paper eq. 6 without
    the reconstruction term): codebook_loss + commitment_weight * commitment_loss.

    Terms: codebook and commitment losses, the perplexity of code usage (exp of its entropy) and
    the fraction of codes used at least once. In training steps the code counts are summed over
    data-parallel workers with `collectives.sum`, so the statistics (and dead-code restarts) are the
    global batch's; in eval mode they stay this process's, since evaluation shards may differ in
    batch count and a collective there would deadlock. `restart_dead_codes` (off by default, not in
    the paper) re-seeds codes unused for `dead_after` steps with random encoder outputs of the
    batch, and `collectives.broadcast` keeps the restarted codebook identical across workers.
    """

    def __init__(self, dim: int, codebook_size: int, restart_dead_codes: bool = False, dead_after: int = 100, *,
                 commitment_weight: float = 0.25, decoder_width: int | None = None,
                 collectives: Collectives = LOCAL):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size))
        self.to_decoder = _to_decoder(dim, decoder_width)
        self.restart_dead_codes, self.dead_after = restart_dead_codes, dead_after
        self.commitment_weight = commitment_weight
        self.collectives = collectives
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    @classmethod
    def from_config(cls, config: ModelConfig, collectives: Collectives) -> "VectorQuantizer":
        return cls(config.encoder_dim, config.codebook_size, config.restart_dead_codes,
                   commitment_weight=config.commitment_weight, decoder_width=config.decoder_width,
                   collectives=collectives)

    def quantize(self, z: torch.Tensor) -> Quantized:
        """Paper eqs. 4-5 and the two codebook terms of eq. 6; no statistics, no side effects."""
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
        return Quantized(quantized, indices.view(b, t, u), codebook_loss, commitment_loss)

    def forward(self, z: torch.Tensor) -> LatentOutput:
        q = self.quantize(z)
        counts = torch.bincount(q.indices.flatten(), minlength=self.codebook.shape[0]).float()
        if self.training:
            counts = self.collectives.sum(counts)
        probs = counts / counts.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs.clamp_min(1e-10))).sum())
        usage = (counts > 0).float().mean()
        if self.training and self.restart_dead_codes:
            self._restart(z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]), counts)
        loss = q.codebook_loss + self.commitment_weight * q.commitment_loss  # eq. 6, second and third terms
        terms = {"codebook_loss": q.codebook_loss, "commitment_loss": q.commitment_loss,
                 "perplexity": perplexity, "codebook_usage": usage}
        return LatentOutput(self.to_decoder(q.quantized), loss, terms)

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        # Counts are global in training steps, so every worker finds the same dead codes and
        # reaches the broadcast below together.
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.steps_unused >= self.dead_after).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        picks = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        self.codebook[dead] = flat[picks]
        self.steps_unused[dead] = 0
        self.codebook.copy_(self.collectives.broadcast(self.codebook.detach()))


# One latent per pre-training variant (config.VARIANTS); "sttformer" is the classifier alone.
LATENTS: dict[str, type[Latent]] = {"mae": IdentityLatent, "mvae": GaussianLatent, "mvqvae": VectorQuantizer}


def build_latent(config: ModelConfig, collectives: Collectives = LOCAL) -> Latent:
    return LATENTS[config.variant].from_config(config, collectives)
