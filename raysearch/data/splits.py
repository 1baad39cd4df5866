"""Seeded per-class index selection: validation carving and label-fraction subsets.

Both functions choose inside each class separately so that every class keeps the same share,
and both return sorted indices so that the order of samples on disk is kept. Counts use
Python's `round` on `fraction * n_c` exactly as written in MODEL_SPEC ("the same fraction inside
every class"), so a reader can recompute them by hand (note: round half to even, 2.5 -> 2).
"""

from __future__ import annotations

import numpy as np

from raysearch.errors import UserInputError


def _check_fraction(fraction: float, name: str, allow_zero: bool) -> None:
    low_ok = fraction >= 0 if allow_zero else fraction > 0
    if not (low_ok and fraction <= 1):
        allowed = "[0, 1]" if allow_zero else "(0, 1]"
        raise UserInputError(f"{name} must be in {allowed}, got {fraction}")


def _class_members(labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Indices of each class in a seeded random order (classes in ascending label order)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep_idx, held_idx), holding out `fraction` of every class.

    Class c with n_c samples gives up max(1, round(fraction * n_c)) samples, but never its
    last one (a class with a single sample stays whole in keep_idx). fraction 0 holds out
    nothing.
    """
    _check_fraction(fraction, "validation fraction", allow_zero=True)
    keep, held = [], []
    for members in _class_members(labels, seed):
        n = members.size
        k = 0 if fraction == 0 else min(max(1, round(fraction * n)), n - 1)
        held.append(members[:k])
        keep.append(members[k:])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(keep or [empty])).astype(np.int64),
            np.sort(np.concatenate(held or [empty])).astype(np.int64))


def label_fraction_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of exactly max(1, round(fraction * n_c)) samples of each class c (semi-supervised
    fine-tuning on 5% or 10% of the labels)."""
    _check_fraction(fraction, "label fraction", allow_zero=False)
    chosen = [m[: min(max(1, round(fraction * m.size)), m.size)]
              for m in _class_members(labels, seed)]
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen)).astype(np.int64)
