"""Data references that work on every node of a cluster.

A trial's `data_dir` is either a dataset directory (which must be reachable at the same path on
every node: a shared filesystem) or a `synthetic:` spec such as
`synthetic:classes=10,per_class=100,seed=0`. Synthetic data is deterministic for its spec, so
each node generates it once into a local cache instead of shipping it around. Fields a spec
leaves out take `synthetic.SYNTHETIC_DEFAULTS`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

from ..errors import UserInputError
from .format import open_dataset
from .synthetic import SYNTHETIC_DEFAULTS, prepare_synthetic

SYNTHETIC_PREFIX = "synthetic:"
# Part of the cache key: bumped whenever the generator's output for a spec changes (2: the
# normalisation is applied after the sensor noise), so no node reuses data of another version.
GENERATOR_VERSION = 2
SYNTHETIC_KEYS = {"classes": int, "per_class": int, "seed": int, "max_frames": int, "joints": int}


def synthetic_spec(classes: int = SYNTHETIC_DEFAULTS.classes, per_class: int = SYNTHETIC_DEFAULTS.per_class,
                   seed: int = SYNTHETIC_DEFAULTS.seed, **extra: int) -> str:
    fields = {"classes": classes, "per_class": per_class, "seed": seed, **extra}
    return SYNTHETIC_PREFIX + ",".join(f"{k}={v}" for k, v in sorted(fields.items()))


def parse_synthetic_spec(spec: str) -> dict[str, int]:
    fields = {}
    for part in filter(None, spec.removeprefix(SYNTHETIC_PREFIX).split(",")):
        key, _, value = part.partition("=")
        if key not in SYNTHETIC_KEYS or not value.lstrip("-").isdigit():
            raise UserInputError(f"data {spec!r}: bad field {part!r}; use e.g. synthetic:classes=10,per_class=100,seed=0 "
                                 f"(fields: {', '.join(SYNTHETIC_KEYS)})")
        fields[key] = int(value)
    return fields


def cache_root() -> Path:
    return Path(os.environ.get("RAYSEARCH_CACHE", Path.home() / ".cache" / "raysearch"))


def resolve_data(data_dir: str) -> str:
    """A local dataset directory for `data_dir`, generating synthetic data on first use."""
    if not data_dir.startswith(SYNTHETIC_PREFIX):
        return data_dir
    fields = parse_synthetic_spec(data_dir)
    digest = hashlib.sha1(f"v{GENERATOR_VERSION}:{data_dir}".encode()).hexdigest()[:12]
    target = cache_root() / f"synthetic-{digest}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several workers of one node may ask at once: one generates, the others wait and reuse it.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "manifest.json").exists():
            d = SYNTHETIC_DEFAULTS
            prepare_synthetic(target, num_classes=fields.get("classes", d.classes),
                              per_class=fields.get("per_class", d.per_class), seed=fields.get("seed", d.seed),
                              num_joints=fields.get("joints", d.joints),
                              max_frames=fields.get("max_frames", d.max_frames), overwrite=True)
    open_dataset(target)
    return str(target)
