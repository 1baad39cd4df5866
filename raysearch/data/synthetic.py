"""Procedural 25-joint skeleton actions, so everything runs on a fresh machine with no download.

Each class is a periodic motion of a few joint rotations (degrees of freedom, DOFs) drawn from a
shared pool, so classes overlap in the limbs they move and differ in which combination moves,
how fast, with what amplitude and resting posture. Every sample varies the subject (height and
bone lengths), speed, amplitude, the start phase, the camera yaw and sensor noise; some classes
are two-person interactions. The random start phase and camera yaw make a linear classifier on
raw coordinates fall well short of 100% while a small network separates the classes.

Only the NTU-25 (Kinect v2) layout is generated: the motion model is written against named
joints, and a made-up chain of another size would not look like any dataset a user has.
Coordinates are in metres, y up, normalised as every importer does (`normalise.Normalisation`,
by default centred on spine_mid of person 1 in frame 1, as NTU preprocessing does, after the
sensor noise is added); an absent second person is all zeros.

`SYNTHETIC_DEFAULTS` is the one place for the generator's defaults: `raysearch prepare
synthetic`, `synthetic:` data specs (data/cache.py) and search spaces (`data: synthetic`) all
read it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysearch.data.format import SplitData, write_dataset
from raysearch.data.layouts import NTU25_BONES, NTU25_LAYOUT, SkeletonLayout
from raysearch.data.normalise import Normalisation, layout_normalisation
from raysearch.data.splits import stratified_split
from raysearch.errors import UserInputError


@dataclass(frozen=True)
class SyntheticDefaults:
    """Defaults of the synthetic generator (10 classes x 100 sequences: ~1000 clips, a minute's
    work for a tiny preset on a laptop, enough validation clips to rank trials)."""

    classes: int = 10
    per_class: int = 100
    joints: int = 25
    seed: int = 0
    max_frames: int = 64
    val_fraction: float = 0.1


SYNTHETIC_DEFAULTS = SyntheticDefaults()

# What the generator makes at most: it holds every clip in memory, about 2 KB per clip-frame while
# generating (4,000 clips x 64 frames peaked near 0.5 GB), so the frame cap bounds it near 2.5 GB.
MAX_SYNTHETIC_CLIPS = 20_000
MAX_SYNTHETIC_CLIP_FRAMES = 20_000 * 64
MAX_SYNTHETIC_FRAMES = 1_024


def check_synthetic_size(num_classes: int, per_class: int, max_frames: int, where: str = "synthetic data") -> None:
    """Refuse, before anything is allocated, a request beyond the generator's caps (named in the
    message) in one line naming `where` and the fields."""
    clips = num_classes * per_class
    if max_frames > MAX_SYNTHETIC_FRAMES:
        raise UserInputError(f"{where}: max_frames={max_frames} is more than the generator makes (at most "
                             f"{MAX_SYNTHETIC_FRAMES}); lower it")
    if clips > MAX_SYNTHETIC_CLIPS or clips * max_frames > MAX_SYNTHETIC_CLIP_FRAMES:
        raise UserInputError(f"{where}: classes={num_classes} x per_class={per_class} = {clips} clips of {max_frames} "
                             f"frames is more than the generator makes (at most {MAX_SYNTHETIC_CLIPS} clips and "
                             f"{MAX_SYNTHETIC_CLIP_FRAMES} clip-frames); lower classes or per_class, or prepare a "
                             "real dataset")
SYNTHETIC_NORMALISATION: Normalisation = layout_normalisation(NTU25_LAYOUT)

# Rest pose (V, 3) in metres for the NTU-25 joint order; the person faces -z (the camera).
_REST = np.array(
    [
        [0.00, 0.00, 0.00],  # spine_base
        [0.00, 0.28, 0.00],  # spine_mid
        [0.00, 0.55, 0.00],  # neck
        [0.00, 0.68, -0.02],  # head
        [-0.18, 0.45, 0.00], [-0.22, 0.18, 0.00], [-0.23, -0.06, 0.00], [-0.23, -0.13, 0.00],
        [0.18, 0.45, 0.00], [0.22, 0.18, 0.00], [0.23, -0.06, 0.00], [0.23, -0.13, 0.00],
        [-0.09, -0.03, 0.00], [-0.10, -0.46, 0.00], [-0.10, -0.86, 0.02], [-0.10, -0.92, -0.10],
        [0.09, -0.03, 0.00], [0.10, -0.46, 0.00], [0.10, -0.86, 0.02], [0.10, -0.92, -0.10],
        [0.00, 0.47, 0.00],  # spine_shoulder
        [-0.23, -0.21, 0.00], [-0.20, -0.10, -0.04],  # hand_tip_left, thumb_left
        [0.23, -0.21, 0.00], [0.20, -0.10, -0.04],  # hand_tip_right, thumb_right
    ],
    dtype=np.float64,
)

# Rotational DOFs a class may animate: (joint whose outgoing bones rotate, axis 0=x 1=y 2=z).
_DOFS: tuple[tuple[int, int, str], ...] = (
    (1, 0, "torso-bend"), (1, 1, "torso-twist"), (2, 0, "nod"), (2, 1, "head-shake"),
    (4, 0, "l-arm-fwd"), (4, 2, "l-arm-side"), (5, 0, "l-elbow"),
    (8, 0, "r-arm-fwd"), (8, 2, "r-arm-side"), (9, 0, "r-elbow"),
    (12, 0, "l-hip"), (13, 0, "l-knee"), (16, 0, "r-hip"), (17, 0, "r-knee"),
)
_NUM_DOFS = len(_DOFS)


def _rotation(angle: np.ndarray, axis: int) -> np.ndarray:
    """Rotation matrices (..., 3, 3) about one coordinate axis, in the dtype of `angle`."""
    angle = np.asarray(angle)
    c, s = np.cos(angle), np.sin(angle)
    one, zero = np.ones_like(angle), np.zeros_like(angle)
    if axis == 0:
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 1:
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def _matmul3(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched 3x3 product a @ b as three broadcast multiply-adds: numpy's matmul loops per tiny
    matrix and a reduce over a short middle axis is slower still."""
    return sum(a[..., :, j, None] * b[..., None, j, :] for j in range(3))


def _apply3(r: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Batched r @ x for r (..., 3, 3) and x (..., 3), unrolled like _matmul3."""
    return sum(r[..., :, j] * x[..., None, j] for j in range(3))


def _forward_kinematics(
    bone_offsets: np.ndarray, dof_angles: np.ndarray, root_pos: np.ndarray, root_yaw: np.ndarray
) -> np.ndarray:
    """Joint positions (N, T, V, 3) from per-sample bone vectors and DOF angles.

    bone_offsets (N, V, 3): rest vector from each joint's parent (row 0 unused);
    dof_angles (N, T, D); root_pos (N, T, 3); root_yaw (N,) about y.
    A rotation at joint j turns every bone below j: G_child = G_parent @ L_j.
    """
    n, t, _ = dof_angles.shape
    local: dict[int, np.ndarray] = {}
    for d, (joint, axis, _) in enumerate(_DOFS):
        r = _rotation(dof_angles[:, :, d], axis)  # (N, T, 3, 3)
        local[joint] = _matmul3(local[joint], r) if joint in local else r
    pos = np.zeros((n, t, _REST.shape[0], 3), dtype=dof_angles.dtype)
    glob = {0: np.broadcast_to(_rotation(root_yaw, 1)[:, None], (n, t, 3, 3))}
    pos[:, :, 0] = root_pos
    for parent, child in NTU25_BONES:
        g = glob[parent]
        if parent in local:  # the rotation sits at the parent and turns the bone leaving it
            g = _matmul3(g, local[parent])
        pos[:, :, child] = pos[:, :, parent] + _apply3(g, bone_offsets[:, None, child])
        glob[child] = g
    return pos


def _class_table(num_classes: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-class motion parameters (K, D); inactive DOFs have zero amplitude and offset.

    Classes come in twins (2g, 2g+1) that move the same DOFs around the same posture and differ
    only in tempo (x1.7) and in the relative phase of their DOFs (the second DOF shifted by pi).
    Under a random start phase neither difference is linear in the coordinates, which is what
    keeps a linear classifier well below 100%; twins of different groups still share DOFs.
    """
    k, d = num_classes, _NUM_DOFS
    groups = (k + 1) // 2
    active = np.zeros((groups, d), dtype=bool)
    for g in range(groups):
        active[g, rng.choice(d, size=int(rng.integers(2, 4)), replace=False)] = True
    amp = np.where(active, rng.uniform(0.4, 0.9, (groups, d)), 0.0)
    offset = np.where(active, rng.uniform(-0.3, 0.5, (groups, d)), 0.0)
    freq = rng.uniform(0.8, 1.8, (groups, d))  # cycles per max_frames
    phase = rng.uniform(0, 2 * math.pi, (groups, d))
    group = np.arange(k) // 2
    twin = (np.arange(k) % 2).astype(bool)
    second_dof = np.zeros((k, d), dtype=bool)
    for c in np.flatnonzero(twin):
        second_dof[c, np.flatnonzero(active[group[c]])[1]] = True
    return {
        "active": active[group],
        "amp": amp[group],
        "freq": freq[group] * np.where(twin, 1.7, 1.0)[:, None],
        "phase": phase[group] + math.pi * second_dof,
        "offset": offset[group],
    }


def _interaction_classes(num_classes: int) -> np.ndarray:
    """Every fourth class is a two-person interaction (like NTU's mutual actions)."""
    return np.arange(num_classes) % 4 == 3


def generate_synthetic(
    num_classes: int = SYNTHETIC_DEFAULTS.classes,
    per_class: int = SYNTHETIC_DEFAULTS.per_class,
    num_joints: int = SYNTHETIC_DEFAULTS.joints,
    max_frames: int = SYNTHETIC_DEFAULTS.max_frames,
    seed: int = SYNTHETIC_DEFAULTS.seed,
    *,
    num_subjects: int = 20,
    train_subject_fraction: float = 0.7,
    val_fraction: float = SYNTHETIC_DEFAULTS.val_fraction,
    noise_std_m: float = 0.02,
    max_view_yaw_rad: float = math.pi / 4,
    normalisation: Normalisation = SYNTHETIC_NORMALISATION,
) -> tuple[SkeletonLayout, list[str], dict[str, SplitData]]:
    """Generate `num_classes * per_class` sequences split like NTU cross-subject.

    Subjects 1..ceil(train_subject_fraction * num_subjects) form train (a seeded per-class
    `val_fraction` of it becomes val), the other subjects form test. Each sample keeps a random
    60%..100% of `max_frames` valid frames. Deterministic for a seed.
    """
    if num_joints != 25:
        raise UserInputError(
            f"synthetic data: --joints {num_joints} is not supported; only the NTU-25 layout "
            f"(25) is generated"
        )
    if num_classes < 2:
        raise UserInputError(f"synthetic data: --classes must be >= 2, got {num_classes}")
    if per_class < 1:
        raise UserInputError(f"synthetic data: --per-class must be >= 1, got {per_class}")
    if max_frames < 4:
        raise UserInputError(f"synthetic data: max_frames must be >= 4, got {max_frames}")
    check_synthetic_size(num_classes, per_class, max_frames)
    if num_subjects < 2:
        raise UserInputError(f"synthetic data: num_subjects must be >= 2, got {num_subjects}")
    if noise_std_m < 0:
        raise UserInputError(f"synthetic data: noise_std_m must be >= 0, got {noise_std_m}")

    # Separate streams: the class definitions do not shift when per_class changes.
    cls_rng = np.random.default_rng([seed, 0])
    rng = np.random.default_rng([seed, 1])
    table = _class_table(num_classes, cls_rng)
    partner = _class_table(num_classes, cls_rng)  # the second person's motion per class
    pair = _interaction_classes(num_classes)
    approach_m = cls_rng.uniform(-0.5, 0.5, num_classes)  # second person walks in or away

    n, t = num_classes * per_class, max_frames
    labels = np.repeat(np.arange(num_classes), per_class)
    subject = rng.integers(1, num_subjects + 1, n)
    height = rng.uniform(0.85, 1.15, num_subjects + 1)
    bone_scale = rng.uniform(0.93, 1.07, (num_subjects + 1, _REST.shape[0]))

    parent = np.zeros(_REST.shape[0], dtype=int)
    for p, c in NTU25_BONES:
        parent[c] = p
    rest_offsets = _REST - _REST[parent]  # (V, 3); row 0 is zero

    def offsets_for(subj: np.ndarray) -> np.ndarray:  # (N, V, 3)
        scale = height[subj][:, None, None] * bone_scale[subj][:, :, None]
        return (rest_offsets[None] * scale).astype(np.float32)

    # float32 throughout: half the memory traffic, and the output is float32 anyway.
    time = (np.arange(t) / t).astype(np.float32)  # fraction of max_frames
    speed = rng.uniform(0.85, 1.15, (n, 1, 1)).astype(np.float32)
    start_phase = rng.uniform(0, 2 * math.pi, (n, 1, 1)).astype(np.float32)
    amp_scale = rng.uniform(0.75, 1.25, (n, 1, 1)).astype(np.float32)
    gap = rng.uniform(0.9, 1.4, n).astype(np.float32)
    yaw = rng.uniform(-max_view_yaw_rad, max_view_yaw_rad, n).astype(np.float32)
    lengths = rng.integers(math.ceil(0.6 * t), t + 1, n)

    def angles(tab: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:  # (N', T, D)
        lab = labels[idx]

        def f(key: str) -> np.ndarray:  # (N', 1, D)
            return tab[key][lab][:, None].astype(np.float32)

        arg = 2 * math.pi * f("freq") * speed[idx] * time[None, :, None]
        wave = np.sin(arg + f("phase") + start_phase[idx])
        return f("offset") + amp_scale[idx] * f("amp") * wave

    both = np.zeros((n, t, _REST.shape[0], 3, 2), dtype=np.float32)  # (N, T, V, 3, M)
    everyone = np.arange(n)
    both[..., 0] = _forward_kinematics(offsets_for(subject), angles(table, everyone),
                                       np.zeros((n, t, 3), np.float32), np.zeros(n, np.float32))
    # The second person exists only in interaction classes: stand them `gap` metres to the
    # side, facing back, walking in or away at the class's pace.
    two = np.flatnonzero(pair[labels])
    root2 = np.zeros((two.size, t, 3), np.float32)
    root2[:, :, 0] = gap[two, None] + approach_m[labels[two], None] * time[None]
    partner_subject = (subject[two] + 6) % num_subjects + 1
    both[two, ..., 1] = _forward_kinematics(offsets_for(partner_subject), angles(partner, two),
                                            root2, np.full(two.size, math.pi, np.float32))

    # Camera yaw about the vertical axis, the same for both persons of a sample.
    cos, sin = np.cos(yaw)[:, None, None, None], np.sin(yaw)[:, None, None, None]
    px, pz = both[:, :, :, 0].copy(), both[:, :, :, 2].copy()  # (N, T, V, M)
    both[:, :, :, 0] = cos * px + sin * pz
    both[:, :, :, 2] = cos * pz - sin * px
    both[..., 0] += rng.standard_normal(both.shape[:-1], dtype=np.float32) * noise_std_m
    both[two, ..., 1] += (rng.standard_normal((two.size,) + both.shape[1:-1], dtype=np.float32)
                          * noise_std_m)
    present = np.stack([np.ones(n, bool), pair[labels]], axis=-1)  # (N, M)
    # Every frame of a sample is valid from frame 0, so normalising the padded array equals
    # normalising each sample's valid frames, as the importers do.
    x = normalisation.check(_REST.shape[0], "synthetic data").apply(
        both.transpose(0, 3, 1, 2, 4))  # (N, C, T, V, M)

    dof_names = [name for _, _, name in _DOFS]
    class_names = []
    for c in range(num_classes):
        moved = "+".join(dof_names[d] for d in np.flatnonzero(table["active"][c]))
        tempo = "fast" if c % 2 else "slow"
        class_names.append(f"{c:02d}-{moved}-{tempo}" + ("-pair" if pair[c] else ""))

    data = SplitData.from_padded(
        x, lengths, labels, [f"syn{seed}-{i:06d}" for i in range(n)], subject=subject,
        num_persons=present.sum(axis=1),
    )
    n_train_subjects = math.ceil(train_subject_fraction * num_subjects)
    train_idx = np.flatnonzero(subject <= n_train_subjects)
    test_idx = np.flatnonzero(subject > n_train_subjects)
    keep, held = stratified_split(labels[train_idx], val_fraction, seed)
    splits = {
        "train": data.subset(train_idx[keep]),
        "val": data.subset(train_idx[held]),
        "test": data.subset(test_idx),
    }
    return NTU25_LAYOUT, class_names, splits


def prepare_synthetic(
    out_dir: str | os.PathLike,
    num_classes: int = SYNTHETIC_DEFAULTS.classes,
    per_class: int = SYNTHETIC_DEFAULTS.per_class,
    num_joints: int = SYNTHETIC_DEFAULTS.joints,
    max_frames: int = SYNTHETIC_DEFAULTS.max_frames,
    seed: int = SYNTHETIC_DEFAULTS.seed,
    *,
    overwrite: bool = False,
    normalisation: Normalisation = SYNTHETIC_NORMALISATION,
    **options: float,
) -> Path:
    """Generate a synthetic dataset and write it as a dataset directory."""
    layout, class_names, splits = generate_synthetic(
        num_classes, per_class, num_joints, max_frames, seed, normalisation=normalisation,
        **options
    )
    source = {
        "importer": "synthetic",
        "args": {"num_classes": num_classes, "per_class": per_class, "num_joints": num_joints,
                 "max_frames": max_frames, "seed": seed, **options},
        "preprocessing": f"{normalisation.describe(layout)}; valid frames only; split by "
                         f"synthetic subject (train subjects -> train/val, rest -> test)",
    }
    return write_dataset(out_dir, layout, class_names, splits, source, max_persons=2,
                         max_frames=max_frames, overwrite=overwrite, normalisation=normalisation,
                         required_splits=("train", "val"))
