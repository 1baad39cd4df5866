"""Typed trial configuration: the model (preset + overrides) and the training recipe.

Field names are the public names used by `raysearch train --set`, search-space YAML and reports.
Defaults are the paper's recipe (section 4.2). `TrialConfig.from_flat` is the one parser of flat
settings (`--set` pairs, or the parameters a search samples): it routes every key to the model or
the recipe, refuses unknown names with a message that lists the known ones, and validates. The
resulting frozen `TrialConfig` is what travels to the workers; `to_flat` only writes records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import models
from models import ModelConfig, ModelConfigError

from ..contract import FINETUNE, PRETRAIN
from ..errors import UserInputError

FINETUNE_MODES = ("full", "linear")
PRETRAIN_METRICS = ("knn", "linear_probe")


# Field metadata naming the stage a setting belongs to. A field of `TrainConfig` or `ModelConfig`
# shapes pre-training unless it says `stage: finetune`: a new field is then part of the encoder
# cache's key until someone decides otherwise, so a cached encoder is never shared by mistake.
STAGE = "stage"


@dataclass(frozen=True)
class TrainConfig:
    """The pre-train -> fine-tune recipe of one trial."""

    pretrain_epochs: int = 200
    finetune_epochs: int = field(default=200, metadata={STAGE: FINETUNE})
    batch_size: int = 64                    # global: each of W workers takes batch_size / W
    lr: float | None = None                 # None: 1e-3 for MAE/MVAE, 1e-2 for MVQVAE (paper 4.2)
    finetune_lr: float | None = field(default=None, metadata={STAGE: FINETUNE})  # None: the same as lr
    weight_decay: float = 1e-4
    lr_milestones: tuple[int, ...] = (60, 90, 110)  # step decay epochs, in each phase
    lr_gamma: float = 0.1
    # per-class fraction of train labels for fine-tuning
    label_fraction: float = field(default=1.0, metadata={STAGE: FINETUNE})
    # "full" fine-tuning or "linear" probe (frozen encoder)
    finetune_mode: str = field(default="full", metadata={STAGE: FINETUNE})
    pretrain_metric: str = "knn"            # pre-training proxy: val_knn_acc or val_probe_acc
    knn_k: int = 20
    seed: int = 0
    augment: bool = True
    loader_workers: int = 0                 # DataLoader processes per Ray worker
    init_from: str | None = None            # encoder checkpoint (ours or public STTFormer layout)
    bf16: bool = True                       # autocast to bfloat16 on GPU (ignored on CPU)

    def lr_for(self, variant: str) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-2 if variant == "mvqvae" else 1e-3

    def validate(self) -> "TrainConfig":
        def fail(name: str, why: str):
            raise UserInputError(f"training field {name}={getattr(self, name)!r}: {why}")

        for name in ("pretrain_epochs", "finetune_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                fail(name, "must be an integer >= 0")
        if self.pretrain_epochs + self.finetune_epochs == 0:
            fail("finetune_epochs", "pretrain_epochs and finetune_epochs are both 0; nothing to train")
        for name in ("batch_size", "knn_k"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, "must be a positive integer")
        if isinstance(self.loader_workers, bool) or not isinstance(self.loader_workers, int) or self.loader_workers < 0:
            fail("loader_workers", "must be an integer >= 0 (0 loads in the training process)")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                fail(name, "must be > 0")
        if self.weight_decay < 0:
            fail("weight_decay", "must be >= 0")
        if not 0 < self.label_fraction <= 1:
            fail("label_fraction", "must be in (0, 1], e.g. 0.05 for the paper's 5% setting")
        if self.finetune_mode not in FINETUNE_MODES:
            fail("finetune_mode", f"must be one of {', '.join(FINETUNE_MODES)}")
        if self.pretrain_metric not in PRETRAIN_METRICS:
            fail("pretrain_metric", f"must be one of {', '.join(PRETRAIN_METRICS)}")
        if not 0 < self.lr_gamma <= 1:
            fail("lr_gamma", "must be in (0, 1]")
        return self


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
                train_fields[key] = tuple(value) if key == "lr_milestones" else value
            elif key in MODEL_FIELDS:
                model_overrides[key] = tuple(map(tuple, value)) if key == "encoder_blocks" else value
            else:
                raise UserInputError(f"unknown setting {key!r}; known: {', '.join(sorted(TUNABLE_FIELDS))}")
        if preset not in models.PRESETS:
            raise UserInputError(f"unknown preset {preset!r}; available: {', '.join(models.list_presets())}")
        return cls(preset, str(data_dir), model_overrides, TrainConfig(**train_fields).validate())


def parse_assignment(text: str) -> tuple[str, Any]:
    """`key=value` from the command line; the value is read as YAML (numbers, bools, lists)."""
    import yaml

    if "=" not in text:
        raise UserInputError(f"--set {text!r}: expected key=value, e.g. --set frame_mask_ratio=0.5")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        raise UserInputError(f"--set {text!r}: cannot read the value {raw!r}") from None
    return key.strip(), value
