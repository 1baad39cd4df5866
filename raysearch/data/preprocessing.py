"""How raw input becomes a classifier's input: written into an artifact's preprocessing.json by
export, read back (and checked) by `load_artifact` and `predict`.

The record names the layout, the model's input sizes, the evaluation transform, the training
data's normalisation (from its manifest) and the NTU .skeleton settings (denoise thresholds).
`predict` applies exactly these steps, with the importers' own functions, to raw input:
    .skeleton  ntu.parse_skeleton -> ntu.preprocess_skeleton(denoise, normalisation)
    .npz       npz.read_npz(labelled=False) -> normalisation.apply
    then       augment.eval_transform(num_frames, test_crop_fraction)

`normalisation` is null when it is not known: an artifact exported before it was recorded, or
trained on data whose manifest was not reachable at export. Then .skeleton input gets the NTU
centring the NTU importer has always applied and .npz input is used as given, as before.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from raysearch.data.format import LIMITS, MANIFEST_FILE, Manifest
from raysearch.data.jsonfile import read_json_file
from raysearch.data.normalise import Normalisation
from raysearch.data.ntu import MAX_FRAMES, MAX_PERSONS, DenoiseConfig
from raysearch.errors import UserInputError

_FIX = "re-export it with `raysearch export RUN_DIR --out DIR --overwrite`"


@dataclass(frozen=True)
class RawInputSpec:
    """The checked content of preprocessing.json that `predict` acts on."""

    layout_name: str
    num_channels: int
    num_frames: int
    num_joints: int
    max_persons: int
    test_crop_fraction: float
    normalisation: Normalisation | None
    denoise: DenoiseConfig
    skeleton_max_frames: int
    skeleton_max_persons: int


def _training_data(data_dir: Any) -> tuple[dict[str, Any], Normalisation | None]:
    """What the training data was and its normalisation, from its manifest when reachable."""
    from raysearch.data.cache import SYNTHETIC_PREFIX
    from raysearch.data.synthetic import SYNTHETIC_NORMALISATION

    found: dict[str, Any] = {"data_dir": data_dir}
    if isinstance(data_dir, str) and data_dir.startswith(SYNTHETIC_PREFIX):
        # Generated from its spec on every node; the generator's normalisation is fixed.
        return {**found, "importer": "synthetic"}, SYNTHETIC_NORMALISATION
    file = Path(str(data_dir), MANIFEST_FILE)
    try:
        manifest = Manifest.from_json(read_json_file(file, ""), f"file {file}")
    except (UserInputError, OSError):
        return found, None  # exported on a machine without the data
    source = manifest.source
    found.update({k: source[k] for k in ("importer", "benchmark", "preprocessing") if k in source})
    normalisation = manifest.normalisation
    if normalisation is None and source.get("importer") in ("ntu", "synthetic"):
        # Written before the manifest recorded it: these importers always centred this way.
        normalisation = Normalisation(manifest.layout.center_joint)
    elif normalisation is None and str(source.get("importer", "")).startswith("npz"):
        normalisation = Normalisation(None)  # older .npz imports kept coordinates as given
    return found, normalisation


def _denoise_settings(training_data: dict[str, Any]) -> dict[str, Any]:
    """The NTU importer's denoise thresholds as the training data was imported, else defaults."""
    preprocessing = training_data.get("preprocessing")
    recorded = preprocessing.get("denoise") if isinstance(preprocessing, dict) else None
    try:
        return asdict(_denoise(recorded, "")) if isinstance(recorded, dict) else asdict(DenoiseConfig())
    except UserInputError:  # fields of another version: the defaults are this version's importer
        return asdict(DenoiseConfig())


def artifact_preprocessing(*, num_channels: int, num_frames: int, num_joints: int,
                           num_persons: int, test_crop_fraction: float, layout: dict[str, Any],
                           data_dir: Any) -> dict[str, Any]:
    """The preprocessing.json of an artifact whose model takes (N, C, T, V, M) with these sizes,
    trained on `data_dir` (a dataset directory or a synthetic: spec) with `layout`."""
    training_data, normalisation = _training_data(data_dir)
    center = layout.get("center_joint")
    names = layout.get("joint_names") or []
    center_name = names[center] if isinstance(center, int) and 0 <= center < len(names) else None
    if normalisation is None:
        training_data["normalisation_note"] = (
            f"the training data's {MANIFEST_FILE} was not reachable at export, so its "
            f"normalisation is unknown: .npz input is used as given")
    how = normalisation.describe() if normalisation is not None else "unknown (see training_data)"
    return {
        "input": "one sequence is (C, T, V, M) float32: channels (x, y, z in metres), frames, joints, "
                 "persons; an absent person is all zeros; a batch stacks sequences into (N, C, T, V, M)",
        "num_channels": num_channels,
        "num_frames": num_frames,
        "num_joints": num_joints,
        "max_persons": num_persons,
        "test_crop_fraction": test_crop_fraction,
        "test_transform": "raysearch.data.augment.eval_transform: keep the central test_crop_fraction of the "
                          "valid frames and resample them linearly to num_frames (torch interpolate, "
                          "align_corners=False); no rotation",
        "layout": {**layout, "center_joint_name": center_name},
        "normalisation": normalisation.to_json() if normalisation is not None else None,
        "persons": f"input with fewer than {num_persons} persons is zero-padded on the person axis (the NTU "
                   f"convention: an absent person is all zeros); more persons are refused unless the extra "
                   f"ones are all zeros",
        "raw_input": {
            ".skeleton": {
                "reader": "raysearch.data.ntu.parse_skeleton, then raysearch.data.ntu.preprocess_skeleton",
                "denoise": _denoise_settings(training_data),
                "max_frames": MAX_FRAMES,
                "max_persons": MAX_PERSONS,
                "steps": [
                    "read x, y, z of every tracked body in every frame (Kinect v2 camera space, metres)",
                    "with several bodies: drop bodies seen in fewer than denoise.min_body_frames frames and "
                    "bodies wider than tall (x extent > spread_ratio * y extent) in at least "
                    "max_wide_fraction of their frames",
                    "rank the remaining bodies by motion energy and fill max_persons slots; a body joins the "
                    "first slot whose frames it does not overlap",
                    "drop frames without a body; keep at most max_frames frames",
                    f"normalisation: {how if normalisation is not None else 'NTU centring on spine_mid'}",
                    "test_transform",
                ],
            },
            ".npz": {
                "reader": "raysearch.data.npz.read_npz(labelled=False)",
                "generic": "x (N, C, T, V, M) with optional length (N,) valid frames; without length, the "
                           "valid frames run up to the last nonzero frame; then normalisation and test_transform",
                "ctrgcn": "x_test (or x_train) (N, T, M*25*3) reshaped to (N, C, T, V, M); valid frames up to "
                          "the last nonzero frame; then normalisation and test_transform",
                "normalisation": how,
            },
        },
        "training_data": training_data,
    }


def _denoise(obj: Any, where: str) -> DenoiseConfig:
    names = {f.name for f in fields(DenoiseConfig)}
    if not isinstance(obj, dict) or set(obj) - names:
        raise UserInputError(f"{where}: raw_input['.skeleton'].denoise must be an object with "
                             f"{', '.join(sorted(names))}; {_FIX}")
    for key, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise UserInputError(f"{where}: raw_input['.skeleton'].denoise.{key} must be a "
                                 f"finite number >= 0, got {value!r}; {_FIX}")
    return DenoiseConfig(**obj)


def read_preprocessing(obj: Any, file: str | os.PathLike, *, num_channels: int, num_frames: int,
                       num_joints: int, num_persons: int) -> RawInputSpec:
    """Check an artifact's preprocessing.json against its model's input sizes; one line per
    problem, naming the file and field."""
    where = f"file {file}"
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: expected a JSON object; {_FIX}")
    expected = {"num_channels": num_channels, "num_frames": num_frames, "num_joints": num_joints,
                "max_persons": num_persons}
    for key, value in expected.items():
        got = obj.get(key)
        if isinstance(got, bool) or got != value:
            raise UserInputError(f"{where}: {key} is {got!r} but the model in config.json takes "
                                 f"{value}; {_FIX}")
    crop = obj.get("test_crop_fraction")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not math.isfinite(crop) \
            or not 0 < crop <= 1:
        raise UserInputError(f"{where}: test_crop_fraction must be in (0, 1], got {crop!r}")
    layout = obj.get("layout")
    if not isinstance(layout, dict) or not isinstance(layout.get("name"), str):
        raise UserInputError(f"{where}: layout must be an object with a name; {_FIX}")
    normalisation = None
    if obj.get("normalisation") is not None:
        normalisation = Normalisation.from_json(obj["normalisation"], num_joints, where)
    raw = obj.get("raw_input", {})
    skeleton = raw.get(".skeleton", {}) if isinstance(raw, dict) else None
    if not isinstance(skeleton, dict):
        raise UserInputError(f"{where}: raw_input['.skeleton'] must be an object; {_FIX}")
    denoise = _denoise(skeleton.get("denoise", {}), where)
    limits = {"max_frames": (MAX_FRAMES, LIMITS.frames), "max_persons": (MAX_PERSONS, LIMITS.persons)}
    sizes = {}
    for key, (default, cap) in limits.items():
        value = skeleton.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
            raise UserInputError(f"{where}: raw_input['.skeleton'].{key} must be an integer in "
                                 f"1..{cap}, got {value!r}; {_FIX}")
        sizes[key] = value
    return RawInputSpec(layout["name"], num_channels, num_frames, num_joints, num_persons,
                        float(crop), normalisation, denoise, sizes["max_frames"],
                        sizes["max_persons"])


def fit_persons(x: Any, num_persons: int, where: str) -> tuple[Any, str | None]:
    """x (C, T, V, M) with the person axis made num_persons long, and a note when it changed.

    Fewer persons are zero-padded (the NTU convention: an absent person is all zeros, as every
    importer stores one). More are accepted only when the extra ones are all zeros."""
    import numpy as np

    m = x.shape[3]
    if m == num_persons:
        return x, None
    if m < num_persons:
        padded = np.zeros(x.shape[:3] + (num_persons,), dtype=x.dtype)
        padded[..., :m] = x
        return padded, (f"padded the person axis from {m} to {num_persons} with zeros (the NTU "
                        f"convention for absent persons)")
    if np.any(x[..., num_persons:]):
        raise UserInputError(f"{where}: has {m} persons with joints in the same clip but the "
                             f"artifact takes {num_persons}; keep the {num_persons} main persons "
                             f"(the NTU importer ranks them by motion)")
    return np.ascontiguousarray(x[..., :num_persons]), (
        f"dropped persons {num_persons + 1}..{m}, all zeros, to fit the artifact's {num_persons}")
