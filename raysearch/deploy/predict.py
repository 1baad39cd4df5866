"""Run an artifact on new sequences, without Ray.

    result = predict("artifact/", "S001C001P001R001A013.skeleton", top_k=5)
    result["predictions"][0]["class_name"]

Every input becomes its valid frames (C, T_valid, V, M) exactly as the importers make them, then
the classifier's (C, T, V, M) through the validation transform (`eval_transform`, with the
artifact's num_frames and test_crop_fraction):
    .skeleton   one NTU sequence: `parse_skeleton`, then `preprocess_skeleton` with the denoise
                thresholds recorded in the artifact's preprocessing.json
    .npz        generic layout: x (N, C, T, V, M) with optional length (N,) valid frames;
                CTR-GCN layout: every sample of x_test (N, T, M*25*3), or of x_train without x_test

The model run is the eager classifier with weights.pt (read with weights_only=True): export
checked that the exported program gives the same outputs, and loading the program file could
unpickle code, which `predict` never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..data.augment import eval_transform
from ..data.npz import _Archive, _nonfinite, _valid_lengths, read_lengths
from ..data.ntu import DenoiseConfig, parse_skeleton, preprocess_skeleton
from ..errors import UserInputError
from .export import Artifact, load_artifact

BATCH_SIZE = 64  # sequences per forward pass: bounds memory on large .npz inputs
NTU_LAYOUT_NAME = "ntu-25"


def _check_axes(artifact: Artifact, where: str, channels: int, joints: int, persons: int) -> None:
    """One line naming both sides when the input's C, V or M differ from the artifact's."""
    config, name = artifact.config, artifact.preprocessing["layout"].get("name")
    if joints != config.num_joints:
        raise UserInputError(f"{where}: has {joints} joints per person but artifact {artifact.path} expects "
                             f"{config.num_joints} (layout {name}); convert the input to that layout")
    if persons != config.num_persons:
        hint = f"pad the person axis with zeros to {config.num_persons}" if persons < config.num_persons else \
            f"keep the {config.num_persons} main persons"
        raise UserInputError(f"{where}: has {persons} persons per frame but artifact {artifact.path} expects "
                             f"{config.num_persons}; {hint}")
    if channels != config.num_channels:
        raise UserInputError(f"{where}: has {channels} channels per joint but artifact {artifact.path} expects "
                             f"{config.num_channels}")


def _skeleton_sequences(artifact: Artifact, path: Path) -> tuple[str, Iterator[tuple[str, np.ndarray]]]:
    where = f"file {path}"
    settings = artifact.preprocessing.get("raw_input", {}).get(".skeleton", {})
    parsed = parse_skeleton(path)
    if not parsed.body_ids:
        raise UserInputError(f"{where}: no body in any of its {parsed.num_frames} frames; nothing to classify")
    layout = artifact.preprocessing["layout"].get("name")
    _check_axes(artifact, where, parsed.joints.shape[2], parsed.joints.shape[1], artifact.config.num_persons)
    if layout != NTU_LAYOUT_NAME:
        raise UserInputError(f"{where}: .skeleton files hold NTU-25 (Kinect v2) joints but artifact {artifact.path} "
                             f"was trained on layout {layout}; give an .npz in that layout")
    try:
        denoise = DenoiseConfig(**settings.get("denoise", {}))
        max_frames, max_persons = int(settings["max_frames"]), int(settings["max_persons"])
    except (TypeError, KeyError, ValueError):
        raise UserInputError(f"file {artifact.path / 'preprocessing.json'}: raw_input['.skeleton'] needs denoise, "
                             "max_frames and max_persons; re-export the artifact") from None
    x, _ = preprocess_skeleton(parsed, denoise, max_frames=max_frames, max_persons=max_persons)
    _check_axes(artifact, where, x.shape[0], x.shape[2], x.shape[3])  # x: (C, T_valid, V, M)
    stem = path.name.removesuffix(".skeleton")
    return "skeleton", iter([(stem, x)])


def _npz_sequences(artifact: Artifact, path: Path) -> tuple[str, Iterator[tuple[str, np.ndarray]]]:
    archive = _Archive(path)
    try:
        return _npz_checked(artifact, path, archive)
    except BaseException:
        archive.close()
        raise


def _npz_checked(artifact: Artifact, path: Path, archive: _Archive) -> tuple[str, Iterator[tuple[str, np.ndarray]]]:
    where = f"file {path}"
    if archive.has("x"):
        kind, key = "npz-generic", "x"
        x = archive.get("x")
        if x.ndim != 5 or x.dtype.kind not in "fiu":
            raise UserInputError(f"{where}: array 'x' has shape {x.shape} dtype {x.dtype}, expected numbers "
                                 "(N, C, T, V, M)")
        n, c, t, v, m = x.shape
        ids = [f"{i:06d}" for i in range(n)]
    elif archive.has("x_test") or archive.has("x_train"):
        kind, key = "npz-ctrgcn", "x_test" if archive.has("x_test") else "x_train"
        flat = archive.get(key)
        if flat.ndim != 3 or flat.dtype.kind not in "fiu" or flat.shape[2] % 75 or flat.shape[2] == 0:
            raise UserInputError(f"{where}: array '{key}' has shape {flat.shape} dtype {flat.dtype}, expected numbers "
                                 "(N, T, 150) = (samples, frames, persons x 25 joints x 3 coords)")
        n, t, d = flat.shape
        # (N, T, M*V*C) -> (N, T, M, V, C) -> (N, C, T, V, M), as the CTR-GCN importer reads it.
        x = flat.reshape(n, t, d // 75, 25, 3).transpose(0, 4, 1, 3, 2)
        c, v, m = 3, 25, d // 75
        ids = [f"{key[2:]}-{i:06d}" for i in range(n)]
    else:
        raise UserInputError(f"{where}: found arrays {', '.join(archive.keys) or 'none'}; expected x (generic "
                             "layout) or x_test / x_train (CTR-GCN layout)")
    if n == 0:
        raise UserInputError(f"{where}: array '{key}' holds no samples")
    _check_axes(artifact, f"{where}: array '{key}'", c, v, m)
    bad = _nonfinite(x)
    if bad.size:
        raise UserInputError(f"{where}: array '{key}' has NaN/Inf in {bad.size} samples (first: index {bad[0]}); "
                             "clean them first")
    if kind == "npz-generic" and archive.has("length"):
        lengths = read_lengths(archive.get("length"), n, t, where)
    else:
        lengths = _valid_lengths(x, f"{where}: array '{key}'", set())

    def sequences() -> Iterator[tuple[str, np.ndarray]]:
        try:
            for i in range(n):
                # float32 first, as the importers store it, so the transform rounds the same way.
                yield ids[i], np.asarray(x[i, :, : int(lengths[i])], dtype=np.float32)  # (C, T_valid, V, M)
        finally:
            archive.close()

    return kind, sequences()


def predict(artifact_dir: str | os.PathLike, input_path: str | os.PathLike, top_k: int = 5) -> dict[str, Any]:
    """Class predictions for every sequence in `input_path` (.skeleton or .npz).

    Returns {"artifact", "input", "format", "predictions": [{"index", "sample_id", "label",
    "class_name", "probability", "top_k": [[class_name, probability], ...]}, ...]}.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"--top-k {top_k!r}: must be a positive integer")
    artifact = load_artifact(artifact_dir)
    path = Path(input_path)
    if not path.is_file():
        raise UserInputError(f"INPUT {path}: no such file; give a .skeleton or .npz file")
    if path.suffix == ".skeleton":
        kind, sequences = _skeleton_sequences(artifact, path)
    elif path.suffix == ".npz":
        kind, sequences = _npz_sequences(artifact, path)
    else:
        raise UserInputError(f"INPUT {path}: unknown kind {path.suffix or '(no suffix)'!r}; give a .skeleton or "
                             ".npz file")
    prep = artifact.preprocessing
    num_frames, crop = int(prep["num_frames"]), float(prep["test_crop_fraction"])
    names = artifact.class_names
    k = min(top_k, len(names))
    predictions: list[dict[str, Any]] = []
    batch_ids: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch))  # (B, C, T, V, M)
        probabilities = torch.softmax(artifact.logits(x).float(), dim=1)  # (B, classes)
        top_p, top_i = probabilities.topk(k, dim=1)  # (B, k), most probable first
        for sample_id, p_row, i_row in zip(batch_ids, top_p.tolist(), top_i.tolist()):
            predictions.append({
                "index": len(predictions), "sample_id": sample_id, "label": i_row[0], "class_name": names[i_row[0]],
                "probability": p_row[0], "top_k": [[names[i], p] for i, p in zip(i_row, p_row)],
            })
        batch.clear()
        batch_ids.clear()

    for sample_id, valid in sequences:
        batch_ids.append(sample_id)
        batch.append(eval_transform(valid, num_frames, crop))  # (C, T, V, M)
        if len(batch) == BATCH_SIZE:
            flush()
    if batch:
        flush()
    return {"artifact": str(artifact.path), "input": str(path), "format": kind, "predictions": predictions}
