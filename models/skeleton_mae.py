"""SkeletonMAE, SkeletonMVAE and SkeletonMVQVAE: one model, the latent space chosen by `variant`.

Pre-training (paper section 3.4): mask frames and joints, encode the kept tokens only, pass the
latent space (identity for MAE, Gaussian eq. 3 for MVAE, codebook eq. 6 for MVQVAE), fill every
masked position with a learnable mask token, decode the full grid with STTFormer blocks and
reconstruct the masked joints. Fine-tuning drops the decoder: `to_classifier` puts a fresh Linear
head on the pre-trained encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import ModelConfig, decoder_blocks
from .collectives import LOCAL, Collectives
from .latent import LatentOutput, build_latent
from .masking import MaskPlan, gather_kept, random_masking
from .sttformer import STTFormerBlock, STTFormerClassifier, STTFormerEncoder, fold_tuples, init_weights, unfold_tuples


@dataclass
class PretrainOutput:
    loss: torch.Tensor                   # what the optimiser minimises: recon_loss + the latent's loss (eq. 3 / eq. 6)
    recon_loss: torch.Tensor             # MSE over masked joints of present persons
    full_recon_error: torch.Tensor       # MSE over every joint of present persons (reported only)
    reconstruction: torch.Tensor         # (N, C, T, V, M)
    masked: torch.Tensor                 # (N, T, V) bool: positions the encoder did not see
    latent_terms: dict[str, torch.Tensor] = field(default_factory=dict)  # the latent's named scalars

    def metrics(self) -> dict[str, float]:
        """Scalar losses and codebook statistics as floats, for logging. The whole objective is
        "pretrain_loss" (reported as train_pretrain_loss / val_pretrain_loss), never a bare "loss"."""
        scalars = {"pretrain_loss": self.loss, "recon_loss": self.recon_loss,
                   "full_recon_error": self.full_recon_error, **self.latent_terms}
        return {name: float(value.detach()) for name, value in scalars.items()}


class Decoder(nn.Module):
    """Mask tokens fill the grid, positional encoding again, STTFormer blocks, 1x1 conv to C."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        _, num_tokens = config.tuple_grid
        width = config.decoder_width
        self.mask_token = nn.Parameter(torch.zeros(1, width, 1, 1))
        self.blocks = nn.ModuleList(STTFormerBlock(spec, num_tokens, config.num_heads)
                                    for spec in decoder_blocks(config.decoder_depth, width))
        last_width = self.blocks[-1].channels_out
        self.output_layer = nn.Conv2d(last_width, config.num_channels, 1)

    def forward(self, kept: torch.Tensor, plan: MaskPlan, num_persons: int, tuple_len: int) -> torch.Tensor:
        """kept (N*M, W, T'k, Uk) at decoder width -> reconstruction (N, C, T, V, M)."""
        b, width = kept.shape[:2]
        t, v = plan.num_frames, plan.num_joints
        # Under autocast the kept tokens arrive in bf16 while the mask token is an fp32 parameter;
        # scatter needs one dtype (a no-op cast in fp32).
        grid = self.mask_token.to(kept.dtype).expand(b, width, t, v).reshape(b, width, t * v).clone()  # (N*M, W, T*V)
        # Kept tokens were laid out (T'k, P*Vk) = (Tk, Vk) row-major: scatter them to (t, v).
        index = plan.flat_index().repeat_interleave(num_persons, dim=0)  # (N*M, Tk*Vk)
        grid.scatter_(2, index[:, None, :].expand(b, width, -1), kept.reshape(b, width, -1))
        h = grid.view(b, width, t // tuple_len, tuple_len * v)  # (N*M, W, T', U)
        for block in self.blocks:
            h = block(h)  # full grid: positional encoding and A0 over all U positions
        return unfold_tuples(self.output_layer(h), num_persons, tuple_len)  # (N, C, T, V, M)


class SkeletonMAE(nn.Module):
    """The masked autoencoder family. `config.variant` picks the latent space once (MAE, MVAE or
    MVQVAE, `latent.LATENTS`); everything after that is the same for every variant.

    `collectives` (sum and broadcast across data-parallel workers, see `models.collectives`) is
    handed to the latent; the default is one process."""

    def __init__(self, config: ModelConfig, collectives: Collectives | None = None):
        super().__init__()
        if not config.is_pretrain_model:
            raise ValueError(f"variant {config.variant!r} is a classifier, not a pre-training model")
        collectives = LOCAL if collectives is None else collectives
        if not isinstance(collectives, Collectives):
            raise TypeError(f"collectives must have sum(tensor) and broadcast(tensor); got {type(collectives).__name__}")
        self.config = config
        self.encoder = STTFormerEncoder(config)
        self.latent = build_latent(config, collectives)
        self.decoder = Decoder(config)
        init_weights(self)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        self.register_load_state_dict_pre_hook(_rename_pre_latent_keys)

    # -- the four steps of the paper's pre-training -------------------------------------------------
    def random_masking(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MaskPlan:
        c = self.config
        return random_masking(x.shape[0], c.num_frames, c.num_joints, c.kept_frames, c.kept_joints,
                              c.tuple_len, generator=generator, device=x.device)

    def forward_encoder(self, x: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        """(N, C, T, V, M) -> (N*M, D, T'k, Uk) features of the kept tokens only."""
        kept = fold_tuples(gather_kept(x, plan), self.config.tuple_len)  # (N*M, C, T'k, Uk)
        token_index = plan.token_index.repeat_interleave(x.shape[4], dim=0)  # (N*M, Uk)
        return self.encoder(kept, token_index)

    def forward_latent(self, h: torch.Tensor) -> LatentOutput:
        """Encoder features (N*M, D, T'k, Uk) -> decoder-width kept tokens, loss and terms."""
        return self.latent(h)

    def forward_decoder(self, kept: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
        return self.decoder(kept, plan, self.config.num_persons, self.config.tuple_len)

    def forward_loss(self, x: torch.Tensor, reconstruction: torch.Tensor, plan: MaskPlan,
                     latent: LatentOutput) -> PretrainOutput:
        c = self.config
        masked = ~plan.kept()  # (N, T, V)
        present = x.flatten(1, 3).abs().amax(dim=1) > 0  # (N, M): absent persons are all zeros
        weight = (masked[:, None, :, :, None] & present[:, None, None, None, :]).float()  # (N, 1, T, V, M)
        weight_full = present[:, None, None, None, :].float().expand_as(weight)
        squared = (reconstruction - x).pow(2)  # (N, C, T, V, M)
        denominator = c.num_channels
        recon = (squared * weight).sum() / (weight.sum() * denominator).clamp_min(1.0)
        full = (squared.detach() * weight_full).sum() / (weight_full.sum() * denominator).clamp_min(1.0)
        # Eq. 3 (MVAE: + beta * KL), eq. 6 (MVQVAE: + codebook + 0.25 * commitment), MAE: + 0.
        return PretrainOutput(loss=recon + latent.loss, recon_loss=recon, full_recon_error=full,
                              reconstruction=reconstruction, masked=masked, latent_terms=latent.terms)

    def forward(self, x: torch.Tensor, plan: MaskPlan | None = None,
                generator: torch.Generator | None = None) -> PretrainOutput:
        """x (N, C, T, V, M) -> PretrainOutput. Pass `plan` to fix the mask (tests, evaluation)."""
        plan = plan if plan is not None else self.random_masking(x, generator)
        latent = self.forward_latent(self.forward_encoder(x, plan))
        return self.forward_loss(x, self.forward_decoder(latent.decoded, plan), plan, latent)

    def to_classifier(self, num_classes: int | None = None, dropout: float | None = None) -> STTFormerClassifier:
        """The pre-trained encoder with a fresh Linear head; the decoder and latent are dropped."""
        overrides = {k: v for k, v in (("num_classes", num_classes), ("dropout", dropout)) if v is not None}
        config = self.config.replace(variant="sttformer", **overrides)
        return STTFormerClassifier(config, encoder=self.encoder)


def _rename_pre_latent_keys(module, state_dict, prefix, *_) -> None:
    """Pre-training checkpoints written before every latent owned its projection to decoder width
    kept it at `to_decoder.*`; it is `latent.to_decoder.*` now (same parameters, same order)."""
    old = prefix + "to_decoder."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "latent." + key[len(prefix):]] = state_dict.pop(key)


def reconstruction_error_per_joint(output: PretrainOutput, x: torch.Tensor) -> torch.Tensor:
    """(V,) mean squared error of the masked positions of each joint (for TensorBoard histograms)."""
    squared = (output.reconstruction.detach() - x).pow(2).mean(dim=(1, 4))  # (N, T, V)
    masked = output.masked.float()
    return (squared * masked).sum(dim=(0, 1)) / masked.sum(dim=(0, 1)).clamp_min(1.0)

