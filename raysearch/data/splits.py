"""Seeded per-class index selection: validation carving and label-fraction subsets.

Both functions choose inside each class separately so that every class keeps the same share,
and both return sorted indices so that the order of samples on disk is kept. Counts use
Python's `round` on `fraction * n_c` exactly as docs/model.md writes it ("the same fraction inside
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


# The validation carve of every importer: MIN_VAL_PER_CLASS clips of each class at least, the
# old 5% on big sets, and never more than half of a class.
MIN_VAL_PER_CLASS = 2
VAL_FRACTION = 0.05
# Below this many validation clips one clip is worth more than one point of accuracy.
VAL_WARN_CLIPS = 100


def val_counts(labels: np.ndarray, per_class: int | None = None,
               fraction: float = VAL_FRACTION) -> dict[int, int]:
    """Validation clips of each class c with n_c clips: min(K_c, n_c // 2), where K_c is
    `per_class` when given, else max(MIN_VAL_PER_CLASS, round(fraction * n_c))."""
    if per_class is not None and (isinstance(per_class, bool) or per_class < 1):
        raise UserInputError(f"--val-per-class must be an integer >= 1, got {per_class!r}")
    _check_fraction(fraction, "validation fraction", allow_zero=False)
    classes, sizes = np.unique(np.asarray(labels), return_counts=True)
    counts = {}
    for c, n in zip(classes.tolist(), sizes.tolist()):
        want = per_class if per_class is not None else max(MIN_VAL_PER_CLASS, round(fraction * n))
        counts[int(c)] = min(want, n // 2)
    return counts


def carve_validation(labels: np.ndarray, seed: int, per_class: int | None = None,
                     fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) of a training split: `val_counts` clips of every class, seeded."""
    counts = val_counts(labels, per_class, fraction)
    keep, held = [], []
    labels = np.asarray(labels)
    for c, members in zip(np.unique(labels).tolist(), _class_members(labels, seed)):
        held.append(members[: counts[int(c)]])
        keep.append(members[counts[int(c)]:])
    empty = np.zeros(0, dtype=np.int64)
    return (np.sort(np.concatenate(keep or [empty])).astype(np.int64),
            np.sort(np.concatenate(held or [empty])).astype(np.int64))


def carve_validation_by_subject(labels: np.ndarray, subjects: np.ndarray, count: int,
                                seed: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(train_idx, val_idx, held-out subjects) of a training split: every clip of `count` subjects
    chosen by `seed` goes to val. In a cross-subject benchmark validation then measures what test
    does, accuracy on people the model never saw; a per-class carve measures it on the training
    subjects and ranks models by how well they fit them."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise UserInputError(f"--val-subjects must be an integer >= 1, got {count!r}")
    subjects = np.asarray(subjects)
    if subjects.shape != np.shape(labels):
        raise ValueError(f"subjects {subjects.shape} and labels {np.shape(labels)} differ in shape")
    unknown = int((subjects < 0).sum())
    if unknown:
        raise UserInputError(f"--val-subjects: {unknown} training clips have no subject id (-1); give every "
                             "clip one, or carve per class with --val-per-class")
    distinct = np.unique(subjects)
    if count >= distinct.size:
        raise UserInputError(f"--val-subjects {count}: the training split has {distinct.size} subject(s); hold "
                             f"out at most {distinct.size - 1}, or carve per class with --val-per-class")
    chosen = np.sort(np.random.default_rng(seed).choice(distinct, size=count, replace=False))
    held = np.isin(subjects, chosen)
    return (np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64),
            [int(s) for s in chosen])


def subject_carve_rule(count: int, chosen: list[int]) -> str:
    """The subject carve in words, for the manifest."""
    return f"every training clip of {count} subject(s) chosen by seed to val: subjects {chosen}"


def carve_rule(per_class: int | None, fraction: float = VAL_FRACTION) -> str:
    """The carve rule in words, for the manifest."""
    want = str(per_class) if per_class is not None else \
        f"max({MIN_VAL_PER_CLASS}, round({fraction} * n_c))"
    return f"per class c of n_c training clips: min({want}, n_c // 2) to val, seeded"
