"""Typed model configuration: one dataclass holds every architectural knob.

Field names are the public override names (`--set frame_mask_ratio=0.5`, search-space YAML keys),
so they say what they are. `ModelConfig.validate()` checks a whole configuration at once and
raises `ModelConfigError` with a one-line message naming the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

VARIANTS = ("sttformer", "mae", "mvae", "mvqvae")

# STTFormer kernel sizes: (temporal over tuples, spatial over tokens) = (3, 5) in the public model.
TEMPORAL_KERNEL = 3
SPATIAL_KERNEL = 5

BlockSpec = tuple[int, int, int]  # (in channels Ci, out channels Co, query/key dim d)

# The public STTFormer encoder (MODEL_SPEC.md, paper Tables 9 and 10).
PAPER_ENCODER: tuple[BlockSpec, ...] = (
    (64, 64, 16), (64, 64, 16), (64, 128, 32), (128, 128, 32),
    (128, 256, 64), (256, 256, 64), (256, 256, 64), (256, 256, 64),
)


class ModelConfigError(ValueError):
    """A model configuration a user asked for cannot be built; the message is one line."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the STTFormer classifier and the SkeletonMAE family.

    Input dimensions (`num_joints`, `num_persons`, `num_classes`) normally come from the dataset
    manifest; `num_frames` is the training window T every sequence is resampled to.
    """

    variant: str = "mvae"
    # Input (N, C, T, V, M).
    num_channels: int = 3
    num_frames: int = 120
    num_joints: int = 25
    num_persons: int = 2
    num_classes: int = 60
    # STTFormer encoder.
    tuple_len: int = 6                      # P: frames per spatio-temporal tuple
    num_heads: int = 3
    encoder_blocks: tuple[BlockSpec, ...] = PAPER_ENCODER
    dropout: float = 0.0                    # classifier dropout before the Linear head
    # Masking (pre-training only).
    frame_mask_ratio: float = 0.4           # Mt
    joint_mask_ratio: float = 0.4           # Mj
    # Decoder: depth counts STTFormer blocks plus the output layer (paper section 4.5.4).
    decoder_depth: int = 9
    decoder_width: int = 256
    # MVAE latent (paper eq. 3).
    latent_dim: int = 25
    beta: float = 0.005
    # MVQVAE latent (paper eq. 6).
    codebook_size: int = 128
    commitment_weight: float = 0.25
    restart_dead_codes: bool = False        # off by default to stay faithful to the paper

    @property
    def is_pretrain_model(self) -> bool:
        return self.variant != "sttformer"

    @property
    def encoder_dim(self) -> int:
        return self.encoder_blocks[-1][1]

    @property
    def tuple_grid(self) -> tuple[int, int]:
        """Full token grid (T', U) = (T / P, P * V)."""
        return self.num_frames // self.tuple_len, self.tuple_len * self.num_joints

    @property
    def kept_frames(self) -> int:
        """Frames the encoder sees after frame masking: exact count, rounded down to whole tuples."""
        kept = self.num_frames - round(self.frame_mask_ratio * self.num_frames)
        return kept // self.tuple_len * self.tuple_len

    @property
    def kept_joints(self) -> int:
        return self.num_joints - round(self.joint_mask_ratio * self.num_joints)

    @property
    def kept_grid(self) -> tuple[int, int]:
        """Kept token grid (T'k, Uk) the encoder sees during pre-training."""
        return self.kept_frames // self.tuple_len, self.tuple_len * self.kept_joints

    def replace(self, **overrides) -> "ModelConfig":
        """A copy with `overrides` applied; unknown names raise ModelConfigError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ModelConfigError(
                f"unknown model field {unknown[0]!r}; known fields: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **overrides).validate()

    def validate(self) -> "ModelConfig":
        def fail(name: str, why: str):
            raise ModelConfigError(f"model field {name}={getattr(self, name)!r}: {why}")

        if self.variant not in VARIANTS:
            fail("variant", f"must be one of {', '.join(VARIANTS)}")
        for name in ("num_channels", "num_frames", "num_joints", "num_persons", "num_classes",
                     "tuple_len", "num_heads", "decoder_width", "latent_dim", "codebook_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "must be a positive integer")
        if self.num_frames % self.tuple_len:
            fail("num_frames", f"must be a multiple of tuple_len={self.tuple_len}")
        if not self.encoder_blocks:
            fail("encoder_blocks", "needs at least one (in, out, qk_dim) block")
        previous = None
        for i, block in enumerate(self.encoder_blocks):
            if len(block) != 3 or any(not isinstance(v, int) or v < 1 for v in block):
                fail("encoder_blocks", f"block {i} must be three positive integers (in, out, qk_dim)")
            if previous is not None and block[0] != previous:
                fail("encoder_blocks", f"block {i} takes {block[0]} channels but block {i - 1} gives {previous}")
            previous = block[1]
        for name in ("frame_mask_ratio", "joint_mask_ratio", "dropout"):
            value = getattr(self, name)
            if not (0.0 <= value < 1.0):
                fail(name, "must be in [0, 1)")
        if self.beta < 0 or self.commitment_weight < 0:
            fail("beta" if self.beta < 0 else "commitment_weight", "must be >= 0")
        if self.decoder_depth < 2:
            fail("decoder_depth", "must be >= 2 (at least one STTFormer block plus the output layer)")
        if self.decoder_width % 4:
            fail("decoder_width", "must be a multiple of 4 (the decoder narrows to width/4)")
        if self.is_pretrain_model:
            if self.kept_frames < self.tuple_len:
                fail("frame_mask_ratio",
                     f"keeps {self.num_frames - round(self.frame_mask_ratio * self.num_frames)} of "
                     f"{self.num_frames} frames, fewer than one tuple of {self.tuple_len}; lower it")
            if self.kept_joints < 1:
                fail("joint_mask_ratio", f"masks all {self.num_joints} joints; lower it")
        return self


def decoder_blocks(depth: int, width: int) -> tuple[BlockSpec, ...]:
    """Decoder block plan for `depth` (blocks + output layer) at `width`.

    Paper Table 9 (depth 9, width 256) narrows in three stages, width -> width/2 -> width/4, with
    3, 2 and 3 blocks and query/key dim Ci/4. We keep that shape for any depth: the middle stage
    gets floor(n/3) of the n = depth - 1 blocks, the first stage ceil of half the rest, the last
    stage what remains. Depth 9 reproduces Table 9 exactly; depth 7 (MVQVAE) gives 2-2-2.
    """
    n = depth - 1
    middle = n // 3
    first = math.ceil((n - middle) / 2)
    stage_widths = [width] * first + [width // 2] * middle + [width // 4] * (n - first - middle)
    plan, channels_in = [], width
    for channels_out in stage_widths:
        plan.append((channels_in, channels_out, max(1, channels_in // 4)))
        channels_in = channels_out
    return tuple(plan)


# Presets. Paper scale follows MODEL_SPEC.md; tiny presets keep the same code at a size that trains
# an epoch of a few thousand sequences on one CPU core in seconds.
_TINY = dict(
    num_frames=16, tuple_len=2,  # 8 tuples of 50 tokens: ~450 pre-training samples/s on one core
    encoder_blocks=((8, 8, 2), (8, 16, 4), (16, 16, 4)),
    decoder_depth=3, decoder_width=16, latent_dim=16, codebook_size=32,
)

PRESETS: dict[str, ModelConfig] = {
    "sttformer-ntu60": ModelConfig(variant="sttformer"),
    "mae-ntu60": ModelConfig(variant="mae", decoder_depth=9),
    "mvae-ntu60": ModelConfig(variant="mvae", decoder_depth=9),
    "mvqvae-ntu60": ModelConfig(variant="mvqvae", decoder_depth=7),
    "sttformer-tiny": ModelConfig(variant="sttformer", **_TINY),
    "mae-tiny": ModelConfig(variant="mae", **_TINY),
    "mvae-tiny": ModelConfig(variant="mvae", **_TINY),
    "mvqvae-tiny": ModelConfig(variant="mvqvae", **_TINY),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset_config(name: str, **overrides) -> ModelConfig:
    """The preset's configuration with `overrides` applied and validated."""
    if name not in PRESETS:
        raise ModelConfigError(f"unknown preset {name!r}; available: {', '.join(list_presets())}")
    return PRESETS[name].replace(**overrides)
