"""Run an artifact on new sequences, without Ray.

    result = predict("artifact/", "S001C001P001R001A013.skeleton", top_k=5)
    result["predictions"][0]["class_name"]

Every input goes through the importers' own readers and the normalisation recorded in the
artifact's preprocessing.json (`raysearch.data.preprocessing`), then the classifier's
(C, T, V, M) through the validation transform (`eval_transform`, with the artifact's num_frames
and test_crop_fraction):
    .skeleton   one NTU sequence: `parse_skeleton`, then `preprocess_skeleton` with the recorded
                denoise thresholds and normalisation
    .npz        `read_npz(labelled=False)`: generic layout x (N, C, T, V, M) with optional length
                (N,) valid frames; CTR-GCN layout: every sample of x_test (N, T, M*25*3), or of
                x_train without x_test; then the recorded normalisation
A clip with fewer persons than the model takes is zero-padded on the person axis (NTU
convention); what was adapted is listed in the result's `notes` (and on stderr).

The model run is the eager classifier with weights.pt (read with weights_only=True): export
checked that the exported program gives the same outputs, and loading the program file could
unpickle code, which `predict` never does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ..data.augment import eval_transform
from ..data.npz import read_npz
from ..data.ntu import NTU_NORMALISATION, parse_skeleton, preprocess_skeleton
from ..data.preprocessing import RawInputSpec, fit_persons, read_preprocessing
from ..errors import UserInputError
from .export import PREPROCESSING_FILE, Artifact, load_artifact

BATCH_SIZE = 64  # sequences per forward pass: bounds memory on large .npz inputs
NTU_LAYOUT_NAME = "ntu-25"


def _check_axes(artifact: Artifact, spec: RawInputSpec, where: str, channels: int, joints: int) -> None:
    """One line naming both sides when the input's C or V differ from the artifact's."""
    if joints != spec.num_joints:
        raise UserInputError(f"{where}: has {joints} joints per person but artifact {artifact.path} expects "
                             f"{spec.num_joints} (layout {spec.layout_name}); convert the input to that layout")
    if channels != spec.num_channels:
        raise UserInputError(f"{where}: has {channels} channels per joint but artifact {artifact.path} expects "
                             f"{spec.num_channels}")


def _skeleton_sequences(artifact: Artifact, spec: RawInputSpec, path: Path,
                        notes: list[str]) -> tuple[str, Iterator[tuple[str, np.ndarray]]]:
    where = f"file {path}"
    if spec.layout_name != NTU_LAYOUT_NAME:
        raise UserInputError(f"{where}: .skeleton files hold NTU-25 (Kinect v2) joints but artifact {artifact.path} "
                             f"was trained on layout {spec.layout_name}; give an .npz in that layout")
    parsed = parse_skeleton(path)
    if not parsed.body_ids:
        raise UserInputError(f"{where}: no body in any of its {parsed.num_frames} frames; nothing to classify")
    _check_axes(artifact, spec, where, parsed.joints.shape[2], parsed.joints.shape[1])
    normalisation = spec.normalisation or NTU_NORMALISATION
    # The importer's body selection fills exactly the model's person slots.
    x, _ = preprocess_skeleton(parsed, spec.denoise, max_frames=spec.skeleton_max_frames,
                               max_persons=spec.max_persons, normalisation=normalisation)
    stem = path.name.removesuffix(".skeleton")
    return "skeleton", iter([(stem, x)])


def _npz_sequences(artifact: Artifact, spec: RawInputSpec, path: Path,
                   notes: list[str]) -> tuple[str, Iterator[tuple[str, np.ndarray]]]:
    data = read_npz(path, labelled=False)
    try:
        part = data.parts[0]
        c, _, v, _ = data.shape
        _check_axes(artifact, spec, f"file {path}: array '{part.key}'", c, v)
        if spec.normalisation is None:
            notes.append("the artifact records no normalisation of its training data: input used as given")
    except BaseException:
        data.close()
        raise

    def sequences() -> Iterator[tuple[str, np.ndarray]]:
        with data:
            for sample_id, clip in part.clips():  # (C, T_valid, V, M) float32, as the importers read it
                yield sample_id, clip if spec.normalisation is None else spec.normalisation.apply(clip)

    return data.kind, sequences()


def predict(artifact_dir: str | os.PathLike, input_path: str | os.PathLike, top_k: int = 5) -> dict[str, Any]:
    """Class predictions for every sequence in `input_path` (.skeleton or .npz).

    Returns {"artifact", "input", "format", "notes": [what was adapted to fit the model],
    "predictions": [{"index", "sample_id", "label", "class_name", "probability",
    "top_k": [[class_name, probability], ...]}, ...]}.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise UserInputError(f"--top-k {top_k!r}: must be a positive integer")
    artifact = load_artifact(artifact_dir)
    config = artifact.config
    spec = read_preprocessing(artifact.preprocessing, artifact.path / PREPROCESSING_FILE,
                              num_channels=config.num_channels, num_frames=config.num_frames,
                              num_joints=config.num_joints, num_persons=config.num_persons)
    path = Path(input_path)
    if not path.is_file():
        raise UserInputError(f"INPUT {path}: no such file; give a .skeleton or .npz file")
    notes: list[str] = []
    if path.suffix == ".skeleton":
        kind, sequences = _skeleton_sequences(artifact, spec, path, notes)
    elif path.suffix == ".npz":
        kind, sequences = _npz_sequences(artifact, spec, path, notes)
    else:
        raise UserInputError(f"INPUT {path}: unknown kind {path.suffix or '(no suffix)'!r}; give a .skeleton or "
                             ".npz file")
    names = artifact.class_names
    k = min(top_k, len(names))
    predictions: list[dict[str, Any]] = []
    batch_ids: list[str] = []
    batch: list[np.ndarray] = []
    adapted: dict[str, int] = {}

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
        fitted, note = fit_persons(valid, spec.max_persons, f"file {path}: sample {sample_id}")
        if note is not None:
            adapted[note] = adapted.get(note, 0) + 1
        batch_ids.append(sample_id)
        batch.append(eval_transform(fitted, spec.num_frames, spec.test_crop_fraction))  # (C, T, V, M)
        if len(batch) == BATCH_SIZE:
            flush()
    if batch:
        flush()
    notes += [f"{note} ({count} of {len(predictions)} sequences)" for note, count in adapted.items()]
    for note in notes:
        print(f"predict: {note}", file=sys.stderr)
    return {"artifact": str(artifact.path), "input": str(path), "format": kind, "notes": notes,
            "predictions": predictions}
