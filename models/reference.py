"""Interop with checkpoints in the public STTFormer state-dict layout (docs/model.md, "Checkpoint interop").

Our module names say what things are; the public names are mapped here, in one table, both ways.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, ModelConfigError, preset_config
from .sttformer import STTFormerClassifier, sinusoid_table

# Public block sub-module name -> ours.
_BLOCK_NAMES = {
    "to_qkvs": "qk_proj", "alphas": "alpha", "att0s": "attention_bias", "out_nets": "spatial_out",
    "ff_net": "feed_forward", "out_nett": "temporal_out", "ress": "spatial_residual", "rest": "temporal_residual",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.([a-z0-9_]+)(.*)$")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint file without unpickling code (weights_only) and unwrap common containers."""
    path = Path(path)
    if not path.is_file():
        raise ModelConfigError(f"checkpoint {path}: no such file; pass the path of a .pt/.pth file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, or pickled code refused by weights_only
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelConfigError(f"checkpoint {path}: cannot be read as plain tensors ({first_line[:160]}); "
                               "re-save it with torch.save(model.state_dict(), ...)") from None
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelConfigError(f"checkpoint {path}: expected a state dict of tensors")
    # DataParallel / DDP checkpoints prefix every key with 'module.'.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def is_reference_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """Block parameters under the public names (`blocks.0.to_qkvs...`); `input_map.*` alone says
    nothing, since our bare encoder has it too."""
    return any((m := _BLOCK_KEY.match(k)) is not None and m.group(2) in _BLOCK_NAMES for k in state_dict)


def from_reference_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Public key names -> our classifier's names. The fixed `pes.pe` buffers are dropped."""
    ours = {}
    for key, value in state_dict.items():
        if key.startswith("input_map."):
            ours["encoder." + key] = value
        elif key.startswith("fc."):
            ours[key] = value
        elif (match := _BLOCK_KEY.match(key)) is not None:
            index, name, rest = match.groups()
            if name == "pes":
                continue
            if name not in _BLOCK_NAMES:
                raise ModelConfigError(f"reference checkpoint key {key!r} is not part of the STTFormer layout")
            ours[f"encoder.blocks.{index}.{_BLOCK_NAMES[name]}{rest}"] = value
        else:
            raise ModelConfigError(f"reference checkpoint key {key!r} is not part of the STTFormer layout")
    return ours


def to_reference_keys(state_dict: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our classifier's state dict -> the public layout, `pes.pe` buffers included."""
    inverse = {v: k for k, v in _BLOCK_NAMES.items()}
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("encoder.")
        if (match := _BLOCK_KEY.match(key)) is not None:
            index, name, rest = match.groups()
            key = f"blocks.{index}.{inverse[name]}{rest}"
        out[key] = value
    t_tuples, num_tokens = config.tuple_grid
    for i, (channels_in, _, _) in enumerate(config.encoder_blocks):
        table = sinusoid_table(num_tokens, channels_in).t()  # (Ci, U)
        out[f"blocks.{i}.pes.pe"] = table[None, :, None, :].expand(1, channels_in, t_tuples, num_tokens).clone()
    return out


def infer_reference_config(state_dict: dict[str, torch.Tensor], **preset_fields) -> ModelConfig:
    """Architecture of a public-layout checkpoint: widths and heads from tensor shapes, the rest
    (tuple_len, dropout, ...) from `preset_fields` over the `sttformer-ntu60` preset."""
    try:
        num_blocks = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k)))
        att0 = state_dict["blocks.0.att0s"]  # (1, H, U, U)
        num_heads, num_tokens = att0.shape[1], att0.shape[-1]
        blocks = []
        for i in range(num_blocks):
            qk = state_dict[f"blocks.{i}.to_qkvs.weight"]  # (2*H*d, Ci, 1, 1)
            out = state_dict[f"blocks.{i}.out_nets.0.weight"]  # (Co, H*Ci, 1, 5)
            blocks.append((qk.shape[1], out.shape[0], qk.shape[0] // (2 * num_heads)))
        num_classes = state_dict["fc.weight"].shape[0]
        pe = state_dict.get("blocks.0.pes.pe")  # (1, Ci, T', U)
    except (KeyError, ValueError) as exc:
        raise ModelConfigError(f"checkpoint is not in the STTFormer layout: missing {exc}") from None
    fields = dict(num_heads=num_heads, encoder_blocks=tuple(blocks), num_classes=num_classes)
    tuple_len = preset_fields.get("tuple_len", preset_config("sttformer-ntu60").tuple_len)
    fields["num_joints"] = num_tokens // tuple_len
    if pe is not None:
        fields["num_frames"] = pe.shape[2] * tuple_len
    fields.update(preset_fields)
    return preset_config("sttformer-ntu60", **fields)


def load_matching(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with one-line errors that name the first offending key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ModelConfigError(f"{source}: keys do not match the model ({what}; {len(missing)} missing, "
                               f"{len(unexpected)} unexpected); check the preset and --set overrides")
    for key, value in state_dict.items():
        if own[key].shape != value.shape:
            raise ModelConfigError(f"{source}: {key} has shape {tuple(value.shape)} but the model expects "
                                   f"{tuple(own[key].shape)}; check the preset and --set overrides")
    module.load_state_dict(state_dict)


def load_reference_sttformer(state_dict: dict[str, torch.Tensor], **preset_fields) -> STTFormerClassifier:
    """Our classifier, built from and loaded with a public-layout STTFormer state dict."""
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    config = infer_reference_config(state_dict, **preset_fields)
    model = STTFormerClassifier(config)
    t_tuples, num_tokens = config.tuple_grid
    for i, (channels_in, _, _) in enumerate(config.encoder_blocks):
        pe = state_dict.get(f"blocks.{i}.pes.pe")
        expected = sinusoid_table(num_tokens, channels_in).t()[None, :, None, :]
        if pe is not None and not torch.allclose(pe.float(), expected.expand_as(pe), atol=1e-5):
            raise ModelConfigError(f"reference checkpoint blocks.{i}.pes.pe is not STTFormer's sinusoid table")
    load_matching(model, from_reference_keys(state_dict), "reference checkpoint")
    return model


def load_encoder_weights(encoder: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Initialise an encoder from a checkpoint in either layout (public STTFormer, or ours: a
    classifier, a pre-training model, or a bare encoder). Heads and decoders are ignored."""
    if is_reference_layout(state_dict) and not any(k.startswith("encoder.") for k in state_dict):
        state_dict = from_reference_keys(state_dict)
    if any(k.startswith("encoder.") for k in state_dict):
        state_dict = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    load_matching(encoder, state_dict, source)
