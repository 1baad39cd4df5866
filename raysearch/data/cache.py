"""Data references that work on every node of a cluster.

A trial's `data_dir` is either a dataset directory (which must be reachable at the same path on
every node: a shared filesystem) or a `synthetic:` spec such as
`synthetic:classes=6,per_class=60,seed=0`. Synthetic data is deterministic for its spec, so each
node generates it once into a local cache instead of shipping it around.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from ..errors import UserInputError
from .format import open_dataset

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_KEYS = {"classes": int, "per_class": int, "seed": int, "max_frames": int, "joints": int}


def synthetic_spec(classes: int = 6, per_class: int = 60, seed: int = 0, **extra: int) -> str:
    fields = {"classes": classes, "per_class": per_class, "seed": seed, **extra}
    return SYNTHETIC_PREFIX + ",".join(f"{k}={v}" for k, v in sorted(fields.items()))


def parse_synthetic_spec(spec: str) -> dict[str, int]:
    fields = {}
    for part in filter(None, spec.removeprefix(SYNTHETIC_PREFIX).split(",")):
        key, _, value = part.partition("=")
        if key not in SYNTHETIC_KEYS or not value.lstrip("-").isdigit():
            raise UserInputError(f"data {spec!r}: bad field {part!r}; use e.g. synthetic:classes=6,per_class=60,seed=0 "
                                 f"(fields: {', '.join(SYNTHETIC_KEYS)})")
        fields[key] = int(value)
    return fields


def cache_root() -> Path:
    return Path(os.environ.get("RAYSEARCH_CACHE", Path.home() / ".cache" / "raysearch"))


def resolve_data(data_dir: str) -> str:
    """A local dataset directory for `data_dir`, generating synthetic data on first use."""
    if not data_dir.startswith(SYNTHETIC_PREFIX):
        return data_dir
    from .synthetic import prepare_synthetic

    fields = parse_synthetic_spec(data_dir)
    digest = hashlib.sha1(data_dir.encode()).hexdigest()[:12]
    target = cache_root() / f"synthetic-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several workers of one node may ask at once: one generates, the others wait and reuse it.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "manifest.json").exists():
            prepare_synthetic(target, num_classes=fields.get("classes", 6), per_class=fields.get("per_class", 60),
                              seed=fields.get("seed", 0), num_joints=fields.get("joints", 25),
                              max_frames=fields.get("max_frames", 64), overwrite=True)
    open_dataset(target)
    return str(target)
