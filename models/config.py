"""Typed model configuration: one dataclass holds every architectural knob.

Field names are the public override names (`--set frame_mask_ratio=0.5`, search-space YAML keys),
so they say what they are. `ModelConfig.validate()` checks a whole configuration at once and
raises `ModelConfigError` with a one-line message naming the field, the value and what is allowed:
types (ints are ints, floats finite, bools real bools), ranges, the caps of `INT_LIMITS`, and the
size of the whole model (`parameter_count`, `activation_estimate`) before any tensor is created.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

VARIANTS = ("sttformer", "mae", "mvae", "mvqvae")

# STTFormer kernel sizes: (temporal over tuples, spatial over tokens) = (3, 5) in the public model.
TEMPORAL_KERNEL = 3
SPATIAL_KERNEL = 5

BlockSpec = tuple[int, int, int]  # (in channels Ci, out channels Co, query/key dim d)

# The public STTFormer encoder (docs/model.md, paper Tables 9 and 10).
PAPER_ENCODER: tuple[BlockSpec, ...] = (
    (64, 64, 16), (64, 64, 16), (64, 128, 32), (128, 128, 32),
    (128, 256, 64), (256, 256, 64), (256, 256, 64), (256, 256, 64),
)


# Upper bounds on every size a configuration can ask for. Configurations come from people and
# files (`--set`, search-space YAML, an artifact's config.json, a dataset manifest's joint, person
# and class counts), so each bound is far above any published skeleton model (NTU: 300 raw
# frames, 25 joints, 2 persons, 120 classes; whole-body layouts ~133 joints; paper: widths <= 512,
# latent 25, codebook 128) and still finite: a typo or a hostile file is refused here, in one line,
# instead of allocating tens of gigabytes and then failing. Integers: inclusive (low, high).
INT_LIMITS: dict[str, tuple[int, int]] = {
    "num_channels": (1, 64),          # xyz, confidences, stacked bone/velocity streams
    "num_frames": (1, 4096),          # the resampled window T; NTU clips are <= 300 frames
    "num_joints": (1, 1024),
    "num_persons": (1, 64),
    "num_classes": (1, 100_000),
    "tuple_len": (1, 64),
    "num_heads": (1, 64),
    "decoder_depth": (2, 65),         # 1..64 STTFormer blocks plus the output layer
    "decoder_width": (4, 4096),
    "latent_dim": (1, 16_384),
    "codebook_size": (1, 65_536),
}
MAX_ENCODER_BLOCKS = 64
MAX_BLOCK_CHANNELS = 4096             # Ci, Co and qk_dim of any encoder block
# The whole model, counted before any tensor exists (`ModelConfig.parameter_count`): 1e9 float32
# parameters are 4 GB, 16 GB with Adam's two moments and the gradient; 40x the paper's largest
# model (MVAE, 25M).
MAX_PARAMETERS = 1_000_000_000
# Activations of one sequence, order of magnitude (`ModelConfig.activation_estimate`): 1e9 float32
# elements are 4 GB per sample in the forward pass alone; the paper's NTU models need ~5e6.
MAX_ACTIVATIONS_PER_SAMPLE = 1_000_000_000

FLOAT_FIELDS_UNIT = ("frame_mask_ratio", "joint_mask_ratio", "dropout")  # in [0, 1)
FLOAT_FIELDS_WEIGHT = ("beta", "commitment_weight")                       # finite, >= 0
ENCODER_BLOCKS_FORM = "a sequence of (in, out, qk_dim) triples of positive integers, e.g. ((32, 64, 16), (64, 128, 32))"


class ModelConfigError(ValueError):
    """A model configuration a user asked for cannot be built; the message is one line."""


def _show(value) -> str:
    """repr(value) cut to one short line: the value may come from a hostile file."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit conversion limit
        return f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    # Integers are finite however large (math.isfinite would overflow converting 10**400).
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or math.isfinite(value)


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
    # Sizes the classifier head only: no pre-training weight depends on it ("stage" metadata:
    # raysearch keys its cache of pre-trained encoders on every field not marked "finetune").
    num_classes: int = dataclasses.field(default=60, metadata={"stage": "finetune"})
    # STTFormer encoder.
    tuple_len: int = 6                      # P: frames per spatio-temporal tuple
    num_heads: int = 3
    encoder_blocks: tuple[BlockSpec, ...] = PAPER_ENCODER
    dropout: float = dataclasses.field(default=0.0, metadata={"stage": "finetune"})  # before the Linear head
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

    def __post_init__(self):
        # YAML and JSON give lists of lists; hold tuples so the config stays hashable. Anything
        # else is left as it is for validate() to refuse.
        blocks = self.encoder_blocks
        if isinstance(blocks, (list, tuple)) and all(isinstance(b, (list, tuple)) for b in blocks):
            object.__setattr__(self, "encoder_blocks", tuple(tuple(b) for b in blocks))

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
        """Types and ranges of every field, then the cross-field rules, then the size of the whole
        model, all before any tensor exists. Raises ModelConfigError naming the first bad field."""
        def fail(name: str, why: str):
            raise ModelConfigError(f"model field {name}={_show(getattr(self, name))}: {why}")

        if not isinstance(self.variant, str) or self.variant not in VARIANTS:
            fail("variant", f"must be one of {', '.join(VARIANTS)}")
        for name, (low, high) in INT_LIMITS.items():
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                fail(name, f"must be an integer in [{low}, {high}]")
        for name in FLOAT_FIELDS_UNIT:
            value = getattr(self, name)
            if not _is_real(value) or not 0.0 <= value < 1.0:
                fail(name, "must be a number in [0, 1)")
        for name in FLOAT_FIELDS_WEIGHT:
            value = getattr(self, name)
            if not _is_real(value) or value < 0:
                fail(name, "must be a finite number >= 0")
        if not isinstance(self.restart_dead_codes, bool):
            fail("restart_dead_codes", "must be true or false")
        self._validate_encoder_blocks(fail)
        if self.num_frames % self.tuple_len:
            fail("num_frames", f"must be a multiple of tuple_len={self.tuple_len}")
        if self.decoder_width % 4:
            fail("decoder_width", "must be a multiple of 4 (the decoder narrows to width/4)")
        if self.is_pretrain_model:
            if self.kept_frames < self.tuple_len:
                fail("frame_mask_ratio",
                     f"keeps {self.num_frames - round(self.frame_mask_ratio * self.num_frames)} of "
                     f"{self.num_frames} frames, fewer than one tuple of {self.tuple_len}; lower it")
            if self.kept_joints < 1:
                fail("joint_mask_ratio", f"masks all {self.num_joints} joints; lower it")
        params = self.parameter_count()
        if params > MAX_PARAMETERS:
            raise ModelConfigError(
                f"model configuration has {params:,} parameters, over the limit of {MAX_PARAMETERS:,}; "
                "lower the widths, tuple_len x num_joints (attention is U x U), latent_dim or codebook_size")
        activations = self.activation_estimate()
        if activations > MAX_ACTIVATIONS_PER_SAMPLE:
            raise ModelConfigError(
                f"model configuration needs ~{activations:,} activation values per sample, over the limit "
                f"of {MAX_ACTIVATIONS_PER_SAMPLE:,}; lower num_frames, num_joints, num_persons or the widths")
        return self

    def _validate_encoder_blocks(self, fail) -> None:
        blocks = self.encoder_blocks
        if not isinstance(blocks, tuple) or not blocks:
            fail("encoder_blocks", f"must be {ENCODER_BLOCKS_FORM}")
        if len(blocks) > MAX_ENCODER_BLOCKS:
            fail("encoder_blocks", f"has {len(blocks)} blocks; at most {MAX_ENCODER_BLOCKS} are allowed")
        if not all(isinstance(b, tuple) for b in blocks):
            fail("encoder_blocks", f"must be {ENCODER_BLOCKS_FORM}")
        previous = None
        for i, block in enumerate(blocks):
            if len(block) != 3 or not all(_is_int(v) and 1 <= v <= MAX_BLOCK_CHANNELS for v in block):
                fail("encoder_blocks", f"block {i} must be three integers in [1, {MAX_BLOCK_CHANNELS}] "
                                       f"(in, out, qk_dim), e.g. (64, 128, 32)")
            if previous is not None and block[0] != previous:
                fail("encoder_blocks", f"block {i} takes {block[0]} channels but block {i - 1} gives {previous}")
            previous = block[1]

    # -- sizes, computed from the fields alone (no tensors) ----------------------------------------
    def parameter_count(self) -> int:
        """Exact parameter count of the model `models.build_from_config` makes from this config
        (a test holds it equal to counting the built model's parameters)."""
        _, num_tokens = self.tuple_grid
        first = self.encoder_blocks[0][0]
        encoder = _conv_bn(self.num_channels, first, 1) + sum(
            _block_parameters(spec, num_tokens, self.num_heads) for spec in self.encoder_blocks)
        if not self.is_pretrain_model:
            return encoder + self.encoder_dim * self.num_classes + self.num_classes  # + Linear head
        width, dim, channels = self.decoder_width, self.encoder_dim, self.num_channels
        plan = decoder_blocks(self.decoder_depth, width)
        decoder = (width + sum(_block_parameters(spec, num_tokens, self.num_heads) for spec in plan)
                   + plan[-1][1] * channels + channels)  # mask token, blocks, 1x1 output conv
        if self.variant == "mvae":
            cells = self.kept_grid[0] * self.kept_grid[1]
            latent = (dim * cells * 2 * self.latent_dim + 2 * self.latent_dim        # to (mu, log var)
                      + self.latent_dim * channels * cells + channels * cells        # back to the grid
                      + _conv_bn(channels, width, 1))                                # lift to decoder width
        elif self.variant == "mvqvae":
            latent = self.codebook_size * dim + dim * width + width
        else:
            latent = dim * width + width
        return encoder + latent + decoder

    def activation_estimate(self) -> int:
        """Order of magnitude of the values one sequence's forward pass holds at its widest block:
        the heads' value products (H * Ci channels over the T x V grid) plus the attention maps
        (H x U x U), for every person. Not exact; it bounds memory before anything is allocated."""
        widths = [b[0] for b in self.encoder_blocks] + [b[1] for b in self.encoder_blocks]
        if self.is_pretrain_model:
            widths.append(self.decoder_width)
        _, num_tokens = self.tuple_grid
        per_person = (self.num_heads * max(widths) * self.num_frames * self.num_joints
                      + self.num_heads * num_tokens * num_tokens)
        return self.num_persons * per_person


def _conv_bn(channels_in: int, channels_out: int, kernel_area: int) -> int:
    """Parameters of Conv2d (with bias) + BatchNorm2d."""
    return channels_in * channels_out * kernel_area + channels_out + 2 * channels_out


def _block_parameters(spec: BlockSpec, num_tokens: int, num_heads: int) -> int:
    """Parameters of one STTFormer block (models/sttformer.py `STTFormerBlock`)."""
    channels_in, channels_out, qk_dim = spec
    n = channels_in * 2 * num_heads * qk_dim + 2 * num_heads * qk_dim            # Q, K projection
    n += num_heads + num_heads * num_tokens * num_tokens                         # alpha, A0
    n += _conv_bn(num_heads * channels_in, channels_out, SPATIAL_KERNEL)         # 1 x 5 over u
    n += _conv_bn(channels_out, channels_out, 1)                                 # feed-forward
    n += _conv_bn(channels_out, channels_out, TEMPORAL_KERNEL)                   # 3 x 1 over t'
    if channels_in != channels_out:
        n += _conv_bn(channels_in, channels_out, 1) + _conv_bn(channels_out, channels_out, 1)
    return n


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


# Presets. Paper scale follows docs/model.md; tiny presets keep the same code at a size that trains
# an epoch of a few thousand sequences on one CPU core in seconds.
_TINY = dict(
    num_frames=16, tuple_len=2,  # 8 tuples of 50 tokens: ~450 pre-training samples/s on one core
    encoder_blocks=((8, 8, 2), (8, 16, 4), (16, 16, 4)),
    decoder_depth=3, decoder_width=16, latent_dim=16, codebook_size=32,
)

# The public STTFormer's small configuration, for real data of small and medium size (issue 14):
# T = 48 frames in tuples of P = 4, widths 32 -> 128 in four blocks that keep the public pattern
# (a block at each width, channels doubling, qk_dim = Ci / 4). sttformer-small has 470,320
# parameters on MSR Action3D (20 joints, 20 classes, 1 person; the reference run's 0.47M) and
# 518,680 on NTU-60 (25 joints, 60 classes, 2 persons). Of the public 8-block pattern at half
# width ((32,32,8),(32,32,8),(32,64,16),(64,64,16),(64,128,32),(128,128,32) x 3) the classifier
# has 1.58M parameters, three times the reference.
SMALL_ENCODER: tuple[BlockSpec, ...] = ((32, 32, 8), (32, 64, 16), (64, 64, 16), (64, 128, 32))
# Decoder: width = the encoder's output width, as the paper's 256 = 256 (Table 6 found that best);
# as many STTFormer blocks as the encoder has for MAE/MVAE (paper: 8 + output layer = depth 9) and
# three quarters of that for MVQVAE (paper: 6 + 1 = 7, "too strong a decoder is not conducive to
# the encoder", section 4.5.4). Latent dim 25 and codebook 128 as the paper. Parameters on MSR
# Action3D / NTU-60 (whole pre-training model; the MVAE flatten-Linear grows with the kept grid,
# 7 x 48 tokens on MSR, 7 x 60 on NTU):
#   mae-small 1,457,611 / 1,544,011; mvae-small 3,618,525 / 4,249,077 (2.15M / 2.69M of them in
#   the flatten-Linear); mvqvae-small 1,117,576 / 1,193,176.
_SMALL = dict(num_frames=48, tuple_len=4, encoder_blocks=SMALL_ENCODER, decoder_width=128,
              latent_dim=25, codebook_size=128)

PRESETS: dict[str, ModelConfig] = {
    "sttformer-ntu60": ModelConfig(variant="sttformer"),
    "mae-ntu60": ModelConfig(variant="mae", decoder_depth=9),
    "mvae-ntu60": ModelConfig(variant="mvae", decoder_depth=9),
    "mvqvae-ntu60": ModelConfig(variant="mvqvae", decoder_depth=7),
    "sttformer-small": ModelConfig(variant="sttformer", **_SMALL),
    "mae-small": ModelConfig(variant="mae", decoder_depth=5, **_SMALL),
    "mvae-small": ModelConfig(variant="mvae", decoder_depth=5, **_SMALL),
    "mvqvae-small": ModelConfig(variant="mvqvae", decoder_depth=4, **_SMALL),
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
