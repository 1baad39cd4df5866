"""Temporal crop-and-resize and 3D rotation, as in STTFormer's data pipeline.

Pure numpy functions on one sample x (C, T_valid, V, M); the torch Dataset calls them per item
and `predict` uses `eval_transform` so that deployment sees exactly what evaluation saw.
Everything is linear in the coordinates, so an absent person (all zeros) stays all zeros.
"""

from __future__ import annotations

import numpy as np


def crop_resize(x: np.ndarray, start: int, length: int, num_frames: int) -> np.ndarray:
    """Frames [start, start+length) of x (C, T, V, M), linearly resampled to num_frames.

    Sample positions follow torch's `F.interpolate(mode="linear", align_corners=False)`, which
    STTFormer uses: output frame i reads source position (i + 0.5) * length / num_frames - 0.5,
    clamped to the crop.
    """
    pos = (np.arange(num_frames) + 0.5) * (length / num_frames) - 0.5
    pos = np.clip(pos, 0.0, length - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, length - 1)
    w = (pos - lo).astype(np.float32)[None, :, None, None]  # (1, T, 1, 1)
    seg = x[:, start: start + length]
    return seg[:, lo] * (1.0 - w) + seg[:, hi] * w  # (C, num_frames, V, M), a new array


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """R = Rz @ Ry @ Rx for angles (ax, ay, az) about x, y, z (STTFormer's order)."""
    ax, ay, az = (float(a) for a in angles_rad)
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    rz = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return (rz @ ry @ rx).astype(np.float32)


def rotate(x: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Apply a (3, 3) rotation to the xyz channels of x (3, T, V, M)."""
    c, t, v, m = x.shape
    # One (3x3) @ (3, T*V*M) BLAS call instead of a loop over joints.
    return (rotation @ x.reshape(c, -1)).reshape(c, t, v, m)


def eval_transform(x: np.ndarray, num_frames: int, crop_fraction: float = 0.95) -> np.ndarray:
    """Evaluation view: the central `crop_fraction` of the valid frames resized to num_frames."""
    t = x.shape[1]
    bias = int((1.0 - crop_fraction) * t / 2)
    return crop_resize(x, bias, t - 2 * bias, num_frames).astype(np.float32, copy=False)


def train_transform(
    x: np.ndarray,
    num_frames: int,
    rng: np.random.Generator,
    crop_range: tuple[float, float] = (0.5, 1.0),
    max_rotation_rad: float = 0.3,
    min_crop_frames: int = 0,
) -> np.ndarray:
    """Training view: a random crop of p ~ U[crop_range] of the valid frames at a random start,
    resized to num_frames, then a rotation by independent angles in [-max, max] about x, y, z.

    `min_crop_frames` > 0 keeps crops of short sequences from getting shorter than that (the
    CTR-GCN/STTFormer code uses 64 on NTU); it never exceeds the valid length. Channels other
    than xyz (C != 3) are cropped but not rotated.
    """
    t = x.shape[1]
    p = rng.uniform(*crop_range)
    length = min(max(int(np.floor(t * p)), min_crop_frames, 1), t)
    start = int(rng.integers(0, t - length + 1))
    out = crop_resize(x, start, length, num_frames)
    angles = rng.uniform(-max_rotation_rad, max_rotation_rad, 3)
    if x.shape[0] == 3 and max_rotation_rad > 0:
        out = rotate(out, rotation_matrix(angles))
    return out.astype(np.float32, copy=False)
