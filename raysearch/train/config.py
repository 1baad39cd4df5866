"""Typed trial configuration: the model (preset + overrides) and the training recipe.

Field names are the public names used by `raysearch train --set`, search-space YAML and reports.
Defaults are the paper's recipe (section 4.2), except the batch size and the learning-rate steps:
they come from `recipe` (`choose_recipe`), the paper's on NTU-scale data and a small-data recipe
with enough optimizer steps per epoch otherwise. `TrialConfig.from_flat` is the one parser of flat
settings (`--set` pairs, or the parameters a search samples): it routes every key to the model or
the recipe, refuses unknown names with a message that lists the known ones, and validates. The
resulting frozen `TrialConfig` is what travels to the workers; `to_flat` only writes records.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

import models
from models import ModelConfig, ModelConfigError

from ..contract import FINETUNE, PRETRAIN
from ..errors import UserInputError, parse_user_yaml, show

FINETUNE_MODES = ("full", "linear")
PRETRAIN_METRICS = ("knn", "linear_probe")
# Which pre-training epoch's encoder fine-tuning starts from: the last (the paper pre-trains for
# its epochs and fine-tunes the result), or the one of the lowest val_pretrain_loss. On MSR
# Action3D the MVAE's val KL term jumps by up to 500x between epochs, so the lowest
# val_pretrain_loss picked encoders of epochs 2-7 of 20 (bench/README.md).
PRETRAIN_SELECTS = ("last", "val_pretrain_loss")

# -- recipes: batch size and learning-rate steps as a function of the data ----------------------------
RECIPES = ("auto", "paper", "small")
PAPER_BATCH_SIZE = 64
PAPER_LR_MILESTONES = (60, 90, 110)       # epochs of each phase (paper section 4.2)
SMALL_BATCH_SIZE = 16                     # the public STTFormer's batch on small data
# Steps at 60% and 90% of each phase's epochs: the same shape as the paper's schedule (a long
# plateau at the full rate, then two decays) for any phase length; the paper's fixed epochs would
# never decay in a 60-epoch phase.
SMALL_LR_MILESTONE_FRACTIONS = (0.6, 0.9)
# `auto` takes the paper's recipe when an epoch of the training split gives at least this many
# optimizer steps at batch 64 (3,200 clips), and always for the paper-scale `*-ntu60` presets.
AUTO_MIN_PAPER_STEPS = 50
PAPER_PRESET_SUFFIX = "-ntu60"
# Batch norm needs at least two clips per worker batch ("Expected more than 1 value per channel").
MIN_WORKER_BATCH = 2
SEED_LIMIT = 2 ** 32                      # numpy's and DistributedSampler's seeds: [0, 2**32)
MAX_LOADER_WORKERS = 64                   # DataLoader processes per Ray worker; each is a process


# Field metadata naming the stage a setting belongs to. A field of `TrainConfig` or `ModelConfig`
# shapes pre-training unless it says `stage: finetune`: a new field is then part of the encoder
# cache's key until someone decides otherwise, so a cached encoder is never shared by mistake.
STAGE = "stage"


@dataclass(frozen=True)
class TrainConfig:
    """The pre-train -> fine-tune recipe of one trial."""

    pretrain_epochs: int = 200
    finetune_epochs: int = field(default=200, metadata={STAGE: FINETUNE})
    recipe: str = "auto"                    # "paper", "small" or "auto" (by preset and data size)
    batch_size: int | None = None           # global (each of W workers takes batch_size / W); None: the recipe's
    lr: float | None = None                 # None: `lr_for` (paper 4.2: 1e-3, 1e-2 for MVQVAE)
    finetune_lr: float | None = field(default=None, metadata={STAGE: FINETUNE})  # None: the same as lr
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] | None = None  # step decay epochs, in each phase; None: the recipe's
    lr_gamma: float = 0.1
    # per-class fraction of train labels for fine-tuning
    label_fraction: float = field(default=1.0, metadata={STAGE: FINETUNE})
    # "full" fine-tuning or "linear" probe (frozen encoder)
    finetune_mode: str = field(default="full", metadata={STAGE: FINETUNE})
    pretrain_metric: str = "knn"            # pre-training proxy: val_knn_acc or val_probe_acc
    pretrain_select: str = "last"           # the encoder fine-tuning starts from (PRETRAIN_SELECTS)
    knn_k: int = 20
    seed: int = 0
    augment: bool = True
    loader_workers: int = 0                 # DataLoader processes per Ray worker
    init_from: str | None = None            # encoder checkpoint (ours or public STTFormer layout)
    bf16: bool = True                       # autocast to bfloat16 on GPU (ignored on CPU)

    def lr_for(self, variant: str) -> float:
        """Both phases' rate unless `finetune_lr` is set: the paper's (1e-2 for MVQVAE, 1e-3 for the
        others) except in the small recipe, where MVQVAE takes 1e-3 too: on MSR Action3D it was
        4.3 points better at 100% of the labels (3 of 3 seeds, std 0.6; bench/README.md)."""
        if self.lr is not None:
            return self.lr
        return 1e-2 if variant == "mvqvae" and self.recipe != "small" else 1e-3

    def finetune_lr_for(self, variant: str) -> float:
        return self.finetune_lr if self.finetune_lr is not None else self.lr_for(variant)

    def finetune_epoch_clips(self, train_clips: int, labelled: int) -> int:
        """Clips one fine-tuning epoch draws. The small recipe repeats a label-fraction subset up
        to the size of the training split, so 10% of the labels get the optimizer steps and the
        schedule of 100% (one pass over 20 clips at batch 16 is one step); the paper's recipe
        makes one pass over the subset."""
        return train_clips if self.recipe == "small" else labelled

    def validate(self) -> "TrainConfig":
        """Type and range of every field; one UserInputError line naming the first bad one."""
        def fail(name: str, why: str):
            raise UserInputError(f"training field {name}={show(getattr(self, name))}: {why}")

        def integer(name: str, low: int, high: float = math.inf, why: str = "") -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
                limit = f"in [{low}, {high})" if high != math.inf else f">= {low}"
                fail(name, why or f"must be an integer {limit}")

        for name in ("pretrain_epochs", "finetune_epochs"):
            integer(name, 0)
        if self.pretrain_epochs + self.finetune_epochs == 0:
            fail("finetune_epochs", "pretrain_epochs and finetune_epochs are both 0; nothing to train")
        for name, choices in (("recipe", RECIPES), ("finetune_mode", FINETUNE_MODES),
                              ("pretrain_metric", PRETRAIN_METRICS), ("pretrain_select", PRETRAIN_SELECTS)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in choices:
                fail(name, f"must be one of {', '.join(choices)}")
        if self.batch_size is not None:
            integer("batch_size", MIN_WORKER_BATCH, why=f"must be an integer >= {MIN_WORKER_BATCH} (batch norm "
                    "needs at least 2 clips per batch), or null (the recipe's)")
        integer("knn_k", 1)
        integer("seed", 0, SEED_LIMIT)
        integer("loader_workers", 0, MAX_LOADER_WORKERS + 1,
                why=f"must be an integer in [0, {MAX_LOADER_WORKERS}] (0 loads in the training process)")
        milestones = self.lr_milestones
        if milestones is not None and (not isinstance(milestones, (list, tuple)) or not all(
                isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones)):
            fail("lr_milestones", "must be a list of epochs >= 1, e.g. [60, 90, 110], or null (the recipe's)")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not (_finite(value) and value > 0):
                fail(name, "must be a number > 0, e.g. 1e-3, or null (the default)")
        if not (_finite(self.weight_decay) and self.weight_decay >= 0):
            fail("weight_decay", "must be a number >= 0")
        if not (_finite(self.label_fraction) and 0 < self.label_fraction <= 1):
            fail("label_fraction", "must be in (0, 1], e.g. 0.05 for the paper's 5% setting")
        if not (_finite(self.lr_gamma) and 0 < self.lr_gamma <= 1):
            fail("lr_gamma", "must be in (0, 1]")
        for name in ("augment", "bf16"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            fail("init_from", "must be the path of an encoder checkpoint, or null")
        return self

    def resolved(self, preset: str, train_clips: int) -> "TrainConfig":
        """The recipe made concrete for `preset` on a training split of `train_clips` clips:
        `recipe` becomes "paper" or "small" and `batch_size` a number. An explicit batch_size or
        lr_milestones is kept. Resolving a resolved config changes nothing."""
        recipe = self.recipe if self.recipe != "auto" else choose_recipe(preset, train_clips)
        batch = self.batch_size if self.batch_size is not None else (
            PAPER_BATCH_SIZE if recipe == "paper" else SMALL_BATCH_SIZE)
        milestones = self.lr_milestones
        if milestones is None and recipe == "paper":
            milestones = PAPER_LR_MILESTONES
        return dataclasses.replace(self, recipe=recipe, batch_size=batch, lr_milestones=milestones)

    def milestones_for(self, phase_epochs: int) -> tuple[int, ...]:
        """The learning-rate steps of a phase of `phase_epochs` epochs: the explicit (or paper)
        epochs, else the small recipe's fractions of the phase (a step every epoch is at least 1)."""
        if self.lr_milestones is not None:
            return tuple(self.lr_milestones)
        if self.recipe == "paper":
            return PAPER_LR_MILESTONES
        return tuple(sorted({max(1, round(f * phase_epochs)) for f in SMALL_LR_MILESTONE_FRACTIONS}))

    def recipe_record(self, train_clips: int, labelled: int | None = None) -> dict[str, Any]:
        """What ran, for meta.json and result.json: the resolved recipe, batch size, the
        learning-rate steps of each phase, the optimizer steps an epoch of the full training
        split gives and the clips a fine-tuning epoch draws from `labelled` labelled clips."""
        assert self.recipe != "auto" and self.batch_size is not None, "resolve the recipe first"
        labelled = int(train_clips) if labelled is None else int(labelled)
        return {"recipe": self.recipe, "batch_size": self.batch_size, "train_clips": int(train_clips),
                "steps_per_epoch": int(train_clips) // self.batch_size,
                "finetune_clips_per_epoch": self.finetune_epoch_clips(int(train_clips), labelled),
                "lr_milestones": {"pretrain": list(self.milestones_for(self.pretrain_epochs)),
                                  "finetune": list(self.milestones_for(self.finetune_epochs))},
                "lr_gamma": self.lr_gamma}


def _finite(value: Any) -> bool:
    """A real number (not a bool) that is finite; an int too large for a float is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def choose_recipe(preset: str, train_clips: int) -> str:
    """`recipe: auto`: the paper's for the paper-scale presets and for training splits that give
    at least AUTO_MIN_PAPER_STEPS steps per epoch at the paper's batch, else the small one."""
    if preset.endswith(PAPER_PRESET_SUFFIX) or train_clips // PAPER_BATCH_SIZE >= AUTO_MIN_PAPER_STEPS:
        return "paper"
    return "small"


TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
# Filled from the dataset manifest, never by users.
DATA_FIELDS = {"num_joints", "num_persons", "num_classes", "num_channels"}
TUNABLE_FIELDS = (TRAIN_FIELDS | MODEL_FIELDS) - DATA_FIELDS


def _stage(f: dataclasses.Field) -> str:
    return FINETUNE if f.metadata.get(STAGE) == FINETUNE else PRETRAIN


def stage_of(name: str) -> str:
    """contract.PRETRAIN or contract.FINETUNE: whether setting `name` can change the pre-trained
    encoder (pre-training) or only what fine-tuning does with it."""
    for cls in (TrainConfig, ModelConfig):
        for f in dataclasses.fields(cls):
            if f.name == name:
                return _stage(f)
    raise KeyError(name)


def pretrain_key_fields() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(ModelConfig fields, TrainConfig fields) that determine the pre-trained encoder."""
    return (tuple(f.name for f in dataclasses.fields(ModelConfig) if _stage(f) == PRETRAIN),
            tuple(f.name for f in dataclasses.fields(TrainConfig) if _stage(f) == PRETRAIN))


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs: preset name, model overrides, recipe, and data directory."""

    preset: str
    data_dir: str
    model_overrides: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_config(self, num_joints: int, num_persons: int, num_classes: int, num_channels: int = 3) -> ModelConfig:
        """The preset's architecture with the overrides, sized for the dataset."""
        try:
            return models.preset_config(self.preset, num_joints=num_joints, num_persons=num_persons,
                                        num_classes=num_classes, num_channels=num_channels, **self.model_overrides)
        except ModelConfigError as exc:
            raise UserInputError(str(exc)) from None

    def resolved(self, train_clips: int) -> "TrialConfig":
        """This trial with its recipe made concrete for a training split of `train_clips` clips."""
        return dataclasses.replace(self, train=self.train.resolved(self.preset, train_clips))

    def to_flat(self) -> dict[str, Any]:
        flat = {"preset": self.preset, "data_dir": self.data_dir, **self.model_overrides}
        flat.update({k: v for k, v in dataclasses.asdict(self.train).items()})
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "TrialConfig":
        flat = dict(flat)
        try:
            preset, data_dir = flat.pop("preset"), flat.pop("data_dir")
        except KeyError as exc:
            raise UserInputError(f"trial config needs {exc.args[0]!r}") from None
        model_overrides, train_fields = {}, {}
        for key, value in flat.items():
            if key in DATA_FIELDS:
                raise UserInputError(f"{key} comes from the dataset manifest; remove it from the overrides")
            if key in TRAIN_FIELDS:
                # Anything but a list is left as it is for TrainConfig.validate to refuse by name.
                train_fields[key] = tuple(value) if key == "lr_milestones" and isinstance(value, list) else value
            elif key in MODEL_FIELDS:
                model_overrides[key] = value  # ModelConfig makes lists tuples and refuses other types
            else:
                raise UserInputError(f"unknown setting {key!r}; known: {', '.join(sorted(TUNABLE_FIELDS))}")
        if preset not in models.PRESETS:
            raise UserInputError(f"unknown preset {preset!r}; available: {', '.join(models.list_presets())}")
        return cls(preset, str(data_dir), model_overrides, TrainConfig(**train_fields).validate())


# A number in exponent notation without a dot, e.g. `1e-3`, which YAML 1.1 reads as a string.
_EXPONENT_NUMBER = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` from the command line. The value is read as YAML (numbers, bools, lists) by the
    reader of all user YAML (`errors.parse_user_yaml`: aliases and depth limited); `1e-3` is a
    number. An empty value is null. The value's type is checked by the config it goes to."""
    if "=" not in text:
        raise UserInputError(f"--set {show(text)}: expected key=value, e.g. --set frame_mask_ratio=0.5")
    key, raw = text.split("=", 1)
    key = key.strip()
    value = parse_user_yaml(raw, f"--set {show(key)}", fix="quote or fix the value") if raw.strip() else None
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        value = float(value)
    return key, value
