"""Summary of a dataset directory for `raysearch data-info` (plain JSON types only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from raysearch.data.format import MANIFEST_FILE, open_dataset


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"min": None, "median": None, "max": None}
    return {"min": int(values.min()), "median": float(np.median(values)),
            "max": int(values.max())}


def dataset_info(path: str | os.PathLike) -> dict:
    """Layout, classes, per-split counts, class balance, frame and person statistics, size."""
    dataset = open_dataset(path)
    m = dataset.manifest
    root = Path(path)
    splits = {}
    for name in dataset.split_names:
        view = dataset.split(name)
        counts = np.bincount(view.labels, minlength=m.num_classes)
        persons = np.bincount(view.num_persons, minlength=m.max_persons + 1)
        splits[name] = {
            "count": len(view),
            "file_mb": round((root / m.splits[name].file).stat().st_size / 1e6, 3),
            "classes": {
                "min_per_class": int(counts.min()),
                "max_per_class": int(counts.max()),
                "empty_classes": [m.class_names[c] for c in np.flatnonzero(counts == 0)],
            },
            "frames": _stats(view.num_frames),
            "persons": {str(k): int(v) for k, v in enumerate(persons) if v},
            "subjects": int(np.unique(view.subject[view.subject >= 0]).size),
        }
    files = [root / MANIFEST_FILE] + [root / s.file for s in m.splits.values()]
    return {
        "path": str(root.resolve()),
        "format_version": m.format_version,
        "layout": {
            "name": m.layout.name,
            "num_joints": m.layout.num_joints,
            "num_bones": len(m.layout.bones),
            "center_joint": m.layout.joint_names[m.layout.center_joint],
        },
        "normalisation": m.normalisation.describe(m.layout) if m.normalisation else "not recorded",
        "num_channels": m.num_channels,
        "max_persons": m.max_persons,
        "max_frames": m.max_frames,
        "num_classes": m.num_classes,
        "class_names": list(m.class_names),
        "splits": splits,
        "total_samples": sum(s["count"] for s in splits.values()),
        "disk_mb": round(sum(f.stat().st_size for f in files) / 1e6, 3),
        "source": m.source,
    }
