"""The on-disk dataset directory: `manifest.json` plus one Arrow IPC file per split.

    DIR/manifest.json     format version, layout, classes, splits with counts, source
    DIR/train.arrow       one row per sample (uncompressed IPC file format, so it memory-maps)
    DIR/val.arrow
    DIR/test.arrow

Row columns: sample_id (string), label (int32), num_frames (int32, valid frames), num_persons
(int8), subject/camera/setup/replication (int16, -1 unknown) and joints: the sample's
(C, T_valid, V, M) float32 array flattened in C order into a large_list<float32>. Only valid
frames are stored; padding to a fixed T happens in the torch Dataset. large_list (int64 offsets)
because NTU-120 at 300 frames can pass 2**31 floats in one split.

Reading never copies joints: `SplitView.joints(i)` is a numpy view into the memory map.

Writing order makes a crash harmless: Arrow files are written under temporary names, the old
manifest (if any) is renamed aside, files are renamed into place, and the new manifest is written
last through a temporary file and a rename. A directory with no manifest is never read as a
dataset, and `--overwrite` replaces only a directory that holds a raysearch manifest (or the
renamed-aside one of an interrupted replace); it removes only the files that manifest lists.

Caps (`LIMITS`): what a manifest or an input file may ask for, so that a tiny file cannot make
the reader allocate gigabytes. Every importer checks the same caps.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raysearch.data.jsonfile import read_json_file
from raysearch.data.layouts import SkeletonLayout
from raysearch.data.normalise import Normalisation
from raysearch.data.splits import VAL_WARN_CLIPS
from raysearch.errors import UserInputError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
METADATA_COLUMNS: tuple[str, ...] = ("subject", "camera", "setup", "replication")
SUBJECT_MAX = int(np.iinfo(np.int16).max)   # the largest subject id the int16 column holds

_TMP_PREFIX = ".raysearch-tmp-"
# The old manifest while a replace is in progress: still marks the directory as ours.
_ASIDE_MANIFEST = _TMP_PREFIX + "replaced-" + MANIFEST_FILE


@dataclass(frozen=True)
class DataLimits:
    """The most a dataset (manifest or input file) may ask for; beyond is refused, naming it."""

    classes: int = 10_000
    channels: int = 16
    joints: int = 1_024
    persons: int = 16
    frames: int = 100_000

    def check(self, what: str, value: int, where: str) -> None:
        cap = getattr(self, what)
        if value > cap:
            raise UserInputError(f"{where}: {value} {what} is more than raysearch accepts "
                                 f"(at most {cap} {what}); check the file")


LIMITS = DataLimits()
# Samples per Arrow record batch: bounds the writer's memory (NTU-120 does not fit in RAM).
_BATCH_SAMPLES = 512
_SPLIT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("num_persons", pa.int8(), nullable=False),
        pa.field("subject", pa.int16(), nullable=False),
        pa.field("camera", pa.int16(), nullable=False),
        pa.field("setup", pa.int16(), nullable=False),
        pa.field("replication", pa.int16(), nullable=False),
        pa.field("joints", pa.large_list(pa.field("item", pa.float32(), nullable=False)),
                 nullable=False),
    ]
)


# ----------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class SplitInfo:
    count: int
    file: str


@dataclass(frozen=True)
class Manifest:
    format_version: int
    layout: SkeletonLayout
    num_channels: int
    max_persons: int
    max_frames: int
    class_names: tuple[str, ...]
    splits: dict[str, SplitInfo]
    source: dict[str, Any] = field(default_factory=dict)
    # None: written before normalisation was recorded (NTU and synthetic data were centred on
    # the layout's centre joint, .npz imports were not normalised).
    normalisation: Normalisation | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> dict:
        return {
            "format_version": self.format_version,
            "layout": self.layout.to_json(),
            "num_channels": self.num_channels,
            "max_persons": self.max_persons,
            "max_frames": self.max_frames,
            "class_names": list(self.class_names),
            "splits": {k: {"count": s.count, "file": s.file} for k, s in self.splits.items()},
            "source": self.source,
            **({"normalisation": self.normalisation.to_json(self.layout)}
               if self.normalisation is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Manifest":
        """Parse a manifest dict; every error names `where` and the JSON field."""
        fix = "fix: re-create the dataset with `raysearch prepare`"

        def bad(fieldname: str, want: str, got: Any) -> UserInputError:
            return UserInputError(
                f"{where}: field '{fieldname}' must be {want}, got {got!r}; {fix}"
            )

        def get(d: Any, key: str, prefix: str = "") -> Any:
            if not isinstance(d, dict) or key not in d:
                return _missing(prefix + key)
            return d[key]

        def _missing(name: str) -> Any:
            raise UserInputError(f"{where}: field '{name}' is missing; {fix}")

        def pos_int(value: Any, name: str, minimum: int = 1, cap: str | None = None) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise bad(name, f"an integer >= {minimum}", value)
            if cap is not None:
                LIMITS.check(cap, value, f"{where}: field '{name}'")
            return value

        if not isinstance(obj, dict):
            raise UserInputError(f"{where}: top level must be a JSON object; {fix}")
        version = get(obj, "format_version")
        if version != FORMAT_VERSION:
            raise UserInputError(
                f"{where}: format_version {version!r} is not supported (this raysearch reads "
                f"{FORMAT_VERSION}); fix: use the raysearch version that wrote it or re-run "
                f"`raysearch prepare`"
            )
        lay = get(obj, "layout")
        num_joints = pos_int(get(lay, "num_joints", "layout."), "layout.num_joints", cap="joints")
        names = get(lay, "joint_names", "layout.")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad("layout.joint_names", "a list of strings", names)
        if len(names) != num_joints:
            raise bad("layout.joint_names", f"{num_joints} names (layout.num_joints)",
                      f"{len(names)} names")
        bones = get(lay, "bones", "layout.")
        if not isinstance(bones, list) or not all(
            isinstance(b, list) and len(b) == 2
            and all(isinstance(j, int) and 0 <= j < num_joints for j in b)
            for b in bones
        ):
            raise bad("layout.bones", f"a list of [parent, child] joint indices < {num_joints}",
                      bones)
        center = get(lay, "center_joint", "layout.")
        if isinstance(center, bool) or not isinstance(center, int) or not 0 <= center < num_joints:
            raise bad("layout.center_joint", f"a joint index in 0..{num_joints - 1}", center)
        lay_name = get(lay, "name", "layout.")
        if not isinstance(lay_name, str):
            raise bad("layout.name", "a string", lay_name)
        layout = SkeletonLayout(lay_name, num_joints, tuple(names),
                                tuple((a, b) for a, b in bones), center)

        class_names = get(obj, "class_names")
        if (not isinstance(class_names, list) or not class_names
                or not all(isinstance(n, str) for n in class_names)):
            raise bad("class_names", "a non-empty list of strings", class_names)
        LIMITS.check("classes", len(class_names), f"{where}: field 'class_names'")
        splits_obj = get(obj, "splits")
        if not isinstance(splits_obj, dict) or not splits_obj:
            raise bad("splits", "a non-empty object of split name -> {count, file}", splits_obj)
        splits: dict[str, SplitInfo] = {}
        for name, info in splits_obj.items():
            count = pos_int(get(info, "count", f"splits.{name}."), f"splits.{name}.count", 0)
            file = get(info, "file", f"splits.{name}.")
            if not isinstance(file, str) or "/" in file or "\\" in file or file.startswith("."):
                raise bad(f"splits.{name}.file", "a file name inside the dataset directory", file)
            splits[name] = SplitInfo(count, file)
        source = obj.get("source", {})
        if not isinstance(source, dict):
            raise bad("source", "an object", source)
        normalisation = None
        if obj.get("normalisation") is not None:
            normalisation = Normalisation.from_json(obj["normalisation"], num_joints, where)
        return cls(
            format_version=version,
            layout=layout,
            num_channels=pos_int(get(obj, "num_channels"), "num_channels", cap="channels"),
            max_persons=pos_int(get(obj, "max_persons"), "max_persons", cap="persons"),
            max_frames=pos_int(get(obj, "max_frames"), "max_frames", cap="frames"),
            class_names=tuple(class_names),
            splits=splits,
            source=source,
            normalisation=normalisation,
        )


# ----------------------------------------------------------------------------------------------
# Writing


@dataclass
class SplitData:
    """One split in memory.

    `joints[i]` is sample i's (C, T_i, V, M) float32 array holding only its T_i valid frames
    (a list, not one padded array, so nothing is padded on disk). Use `SplitData.from_padded`
    for an (N, C, T, V, M) array plus lengths. Metadata arrays are (N,) ints, -1 = unknown;
    None means unknown for every sample. `num_persons` None: counted as persons with any
    nonzero coordinate.
    """

    joints: list[np.ndarray]
    labels: np.ndarray
    sample_ids: list[str]
    subject: np.ndarray | None = None
    camera: np.ndarray | None = None
    setup: np.ndarray | None = None
    replication: np.ndarray | None = None
    num_persons: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.joints)

    @classmethod
    def from_padded(
        cls,
        x: np.ndarray,
        lengths: np.ndarray,
        labels: np.ndarray,
        sample_ids: Sequence[str] | None = None,
        **metadata: np.ndarray | None,
    ) -> "SplitData":
        """From x (N, C, T, V, M) and valid lengths (N,): sample i keeps frames [0, lengths[i])."""
        n = x.shape[0]
        ids = list(sample_ids) if sample_ids is not None else [f"{i:07d}" for i in range(n)]
        joints = [x[i, :, : int(lengths[i])] for i in range(n)]  # views, no copy
        return cls(joints=joints, labels=np.asarray(labels), sample_ids=ids, **metadata)

    def subset(self, idx: np.ndarray) -> "SplitData":
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)[idx]

        return SplitData(
            joints=[self.joints[i] for i in idx],
            labels=np.asarray(self.labels)[idx],
            sample_ids=[self.sample_ids[i] for i in idx],
            subject=pick(self.subject),
            camera=pick(self.camera),
            setup=pick(self.setup),
            replication=pick(self.replication),
            num_persons=pick(self.num_persons),
        )


def count_persons(joints: np.ndarray) -> int:
    """Persons with any nonzero coordinate in a (C, T, V, M) array (absent persons are zeros)."""
    return int(np.count_nonzero(np.any(joints != 0, axis=(0, 1, 2))))


class _SplitSink:
    """Streams one split into a temporary Arrow IPC file, one record batch at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, SCHEMA)
        self._rows: dict[str, list] = {k: [] for k in SCHEMA.names}

    def add(self, row: dict) -> None:
        for k, v in row.items():
            self._rows[k].append(v)
        self.count += 1
        if len(self._rows["label"]) >= _BATCH_SAMPLES:
            self.flush()

    def flush(self) -> None:
        rows = self._rows
        if not rows["label"]:
            return
        flat = [j.reshape(-1) for j in rows["joints"]]
        offsets = np.zeros(len(flat) + 1, dtype=np.int64)
        np.cumsum([f.size for f in flat], out=offsets[1:])
        values = pa.array(np.concatenate(flat), type=pa.float32())
        joints = pa.LargeListArray.from_arrays(pa.array(offsets), values)
        arrays = [
            pa.array(rows["sample_id"], pa.string()),
            pa.array(np.asarray(rows["label"], np.int32)),
            pa.array(np.asarray(rows["num_frames"], np.int32)),
            pa.array(np.asarray(rows["num_persons"], np.int8)),
            *[pa.array(np.asarray(rows[k], np.int16)) for k in METADATA_COLUMNS],
            joints.cast(SCHEMA.field("joints").type),
        ]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=SCHEMA))
        self._rows = {k: [] for k in SCHEMA.names}

    def close(self) -> None:
        self.flush()
        self._writer.close()
        self._sink.flush()
        os.fsync(self._sink.fileno())
        self._sink.close()

    def abort(self) -> None:
        try:
            self._sink.close()
        finally:
            self.path.unlink(missing_ok=True)


def _our_manifest(path: Path) -> Manifest | None:
    """The raysearch manifest in directory `path` (or the one set aside by an interrupted
    replace), or None when there is none that parses."""
    for name in (MANIFEST_FILE, _ASIDE_MANIFEST):
        file = path / name
        if not file.is_file() or file.is_symlink():
            continue
        try:
            return Manifest.from_json(read_json_file(file, ""), f"file {file}")
        except UserInputError:
            continue
    return None


class DatasetWriter:
    """Writes a dataset directory sample by sample (importers stream through it).

    The target directory is checked when the writer is made, so a long import fails before it
    starts: a non-empty directory that is not a raysearch dataset is refused; an existing
    dataset is replaced only with `overwrite=True`. Use as a context manager: an exception
    removes the temporary files and leaves any previous dataset untouched.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        layout: SkeletonLayout,
        class_names: Sequence[str],
        *,
        max_persons: int,
        max_frames: int,
        num_channels: int = 3,
        split_names: Sequence[str] = SPLIT_NAMES,
        overwrite: bool = False,
        normalisation: Normalisation | None = None,
        required_splits: Sequence[str] = (),
    ):
        self.out_dir = Path(out_dir)
        self.layout = layout
        self.class_names = tuple(str(c) for c in class_names)
        self.max_persons = max_persons
        self.max_frames = max_frames
        self.num_channels = num_channels
        self.normalisation = normalisation
        self.required_splits = tuple(required_splits)
        if not self.class_names:
            raise UserInputError(f"dataset {self.out_dir}: class_names is empty; give >= 1 class")
        where = f"dataset {self.out_dir}"
        LIMITS.check("classes", len(self.class_names), where)
        LIMITS.check("channels", num_channels, where)
        LIMITS.check("joints", layout.num_joints, where)
        LIMITS.check("persons", max_persons, where)
        LIMITS.check("frames", max_frames, where)
        if normalisation is not None:
            normalisation.check(layout.num_joints, where)
        for name in split_names:
            if not _SPLIT_NAME_RE.match(name):
                raise UserInputError(
                    f"dataset {self.out_dir}: split name {name!r} must be lowercase letters, "
                    f"digits, '_' or '-'"
                )
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise UserInputError(f"output {out} is a file, not a directory; choose another --out")
        self._replaced: Manifest | None = None
        leftovers = list(out.iterdir()) if out.is_dir() else []
        # Only our own temporary files (an import killed mid-write) hold nothing of the user's.
        if any(not p.name.startswith(_TMP_PREFIX) for p in leftovers):
            self._replaced = _our_manifest(out)
            if self._replaced is None:
                raise UserInputError(
                    f"output directory {out} is not empty and is not a raysearch dataset (no "
                    f"manifest.json), so it is never replaced, not even with --overwrite; choose "
                    f"an empty or new directory"
                )
            if not overwrite:
                raise UserInputError(
                    f"output directory {out} already holds a raysearch dataset; pass "
                    f"--overwrite (overwrite=True) to replace it or choose another directory"
                )
        for stale in leftovers:
            if stale.name.startswith(_TMP_PREFIX) and stale.name != _ASIDE_MANIFEST \
                    and stale.is_file() and not stale.is_symlink():
                stale.unlink()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserInputError(f"output {out}: cannot be created ({e.strerror or e}); choose "
                                 f"another --out") from None
        self._sinks = {name: _SplitSink(out / f"{_TMP_PREFIX}{name}.arrow")
                       for name in split_names}
        self._done = False

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()

    def add(
        self,
        split: str,
        joints: np.ndarray,
        label: int,
        sample_id: str,
        *,
        subject: int = -1,
        camera: int = -1,
        setup: int = -1,
        replication: int = -1,
        num_persons: int | None = None,
    ) -> None:
        """Append one sample; `joints` is (C, T_valid, V, M)."""
        if split not in self._sinks:
            raise ValueError(f"split {split!r} was not declared (have {sorted(self._sinks)})")
        joints = np.ascontiguousarray(joints, dtype=np.float32)
        c, v, m = self.num_channels, self.layout.num_joints, self.max_persons
        where = f"sample {sample_id!r} ({split})"
        if joints.ndim != 4 or joints.shape[0] != c or joints.shape[2:] != (v, m):
            raise UserInputError(
                f"{where}: joints have shape {joints.shape}, expected (C={c}, T, V={v}, M={m})"
            )
        t = joints.shape[1]
        if not 1 <= t <= self.max_frames:
            raise UserInputError(f"{where}: {t} frames, expected 1..{self.max_frames}")
        if not np.isfinite(joints).all():
            raise UserInputError(f"{where}: joints hold NaN or Inf; clean the input first")
        if not 0 <= int(label) < len(self.class_names):
            raise UserInputError(
                f"{where}: label {label} is outside 0..{len(self.class_names) - 1}"
            )
        self._sinks[split].add(
            {
                "sample_id": str(sample_id),
                "label": int(label),
                "num_frames": t,
                "num_persons": count_persons(joints) if num_persons is None else int(num_persons),
                "subject": subject,
                "camera": camera,
                "setup": setup,
                "replication": replication,
                "joints": joints,
            }
        )

    def add_split(self, split: str, data: SplitData) -> None:
        n = len(data)
        if len(data.labels) != n or len(data.sample_ids) != n:
            raise ValueError(f"split {split!r}: joints, labels and sample_ids differ in length")

        def meta(a: np.ndarray | None, i: int) -> int:
            return -1 if a is None else int(a[i])

        for i in range(n):
            self.add(
                split, data.joints[i], int(data.labels[i]), data.sample_ids[i],
                subject=meta(data.subject, i), camera=meta(data.camera, i),
                setup=meta(data.setup, i), replication=meta(data.replication, i),
                num_persons=None if data.num_persons is None else int(data.num_persons[i]),
            )

    def counts(self) -> dict[str, int]:
        return {name: sink.count for name, sink in self._sinks.items()}

    def finish(self, source: dict[str, Any]) -> Path:
        """Close the split files, move them into place and write the manifest last.

        Refuses (UserInputError, nothing written) a dataset with no samples or with an empty
        split among `required_splits`. When "val" is required, a validation split under
        VAL_WARN_CLIPS clips is written with a warning on stderr and in source.warnings.
        """
        counts = self.counts()
        where = f"dataset {self.out_dir}"
        if not sum(counts.values()):
            raise UserInputError(f"{where}: the input holds no usable samples; nothing written")
        empty = [name for name in self.required_splits if counts.get(name, 0) == 0]
        if empty:
            shown = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise UserInputError(
                f"{where}: split {' and '.join(empty)} would be empty ({shown} samples); a "
                f"dataset needs train and val samples (give more clips per class, or a split "
                f"array with train entries); nothing written"
            )
        warnings = []
        if "val" in self.required_splits and counts["val"] < VAL_WARN_CLIPS:
            warnings.append(
                f"validation split has only {counts['val']} clips: one clip is "
                f"{100 / counts['val']:.1f} points of accuracy, too coarse to tell trials a few "
                f"points apart; raise --val-per-class (or --val-subjects) if the training set allows"
            )
        for w in warnings:
            print(f"raysearch: warning: {w}", file=sys.stderr)
        if warnings:
            source = {**source, "warnings": [*source.get("warnings", []), *warnings]}
        for sink in self._sinks.values():
            sink.close()
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            layout=self.layout,
            num_channels=self.num_channels,
            max_persons=self.max_persons,
            max_frames=self.max_frames,
            class_names=self.class_names,
            splits={name: SplitInfo(s.count, f"{name}.arrow") for name, s in self._sinks.items()},
            source=source,
            normalisation=self.normalisation,
        )
        text = json.dumps(manifest.to_json(), indent=2) + "\n"
        out = self.out_dir
        # From here until the rename below the directory has no manifest.json, so a crash leaves
        # something open_dataset refuses rather than a manifest over half-replaced files; the
        # old manifest set aside still marks the directory as ours for the next --overwrite.
        if (out / MANIFEST_FILE).is_file():
            os.replace(out / MANIFEST_FILE, out / _ASIDE_MANIFEST)
        for name, sink in self._sinks.items():
            os.replace(sink.path, out / f"{name}.arrow")
        tmp = out / f"{_TMP_PREFIX}{MANIFEST_FILE}"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / MANIFEST_FILE)
        keep = {f"{name}.arrow" for name in self._sinks}
        old_files = {s.file for s in self._replaced.splits.values()} if self._replaced else set()
        for name in sorted(old_files - keep):
            (out / name).unlink(missing_ok=True)
        (out / _ASIDE_MANIFEST).unlink(missing_ok=True)
        _fsync_dir(out)
        self._done = True
        return out

    def abort(self) -> None:
        for sink in self._sinks.values():
            sink.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the renames are still ordered
    finally:
        os.close(fd)


def write_dataset(
    out_dir: str | os.PathLike,
    layout: SkeletonLayout,
    class_names: Sequence[str],
    splits: dict[str, SplitData],
    source: dict[str, Any],
    *,
    max_persons: int | None = None,
    max_frames: int | None = None,
    num_channels: int | None = None,
    overwrite: bool = False,
    normalisation: Normalisation | None = None,
    required_splits: Sequence[str] = (),
) -> Path:
    """Write a whole in-memory dataset. Sizes not given are taken from the data."""
    samples = [j for s in splits.values() for j in s.joints]
    if not samples:
        raise UserInputError(f"dataset {out_dir}: every split is empty; nothing to write")
    num_channels = num_channels or int(samples[0].shape[0])
    max_persons = max_persons or int(samples[0].shape[3])
    max_frames = max_frames or max(int(j.shape[1]) for j in samples)
    with DatasetWriter(
        out_dir, layout, class_names, max_persons=max_persons, max_frames=max_frames,
        num_channels=num_channels, split_names=list(splits), overwrite=overwrite,
        normalisation=normalisation, required_splits=required_splits,
    ) as writer:
        for name, data in splits.items():
            writer.add_split(name, data)
        return writer.finish(source)


# ----------------------------------------------------------------------------------------------
# Reading


class SplitView:
    """Read-only view of one split, memory-mapped; joints are never copied.

    Scalar columns (labels, num_frames, metadata) are small and held as numpy arrays. Pickling
    keeps only the path and split name; the memory map is reopened on first use after
    unpickling, so a SplitView can cross into DataLoader worker processes.
    """

    def __init__(self, path: Path, name: str, manifest: Manifest):
        self.path = Path(path)
        self.name = name
        self.manifest = manifest
        self._open()

    def __getstate__(self) -> dict:
        return {"path": self.path, "name": self.name, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _open(self) -> None:
        info = self.manifest.splits[self.name]
        file = self.path / info.file
        where = f"file {file}"
        fix = "re-create the dataset with `raysearch prepare`"
        if not file.is_file():
            raise UserInputError(f"{where}: missing (listed in manifest.json); {fix}")
        try:
            mm = pa.memory_map(str(file), "r")
            reader = pa.ipc.open_file(mm)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserInputError(f"{where}: not a readable Arrow IPC file ({e}); {fix}") from None
        if not reader.schema.equals(SCHEMA):
            raise UserInputError(f"{where}: columns {reader.schema.names} differ from format "
                                 f"{FORMAT_VERSION} ({SCHEMA.names}); {fix}")
        batches = [reader.get_batch(b) for b in range(reader.num_record_batches)]
        n = sum(b.num_rows for b in batches)
        if n != info.count:
            raise UserInputError(f"{where}: {n} rows but manifest.json says {info.count}; {fix}")

        def column(name: str, dtype) -> np.ndarray:
            if not batches:
                return np.zeros(0, dtype)
            return np.concatenate([b.column(name).to_numpy() for b in batches]).astype(dtype)

        self.labels = column("label", np.int64)
        self.num_frames = column("num_frames", np.int64)
        self.num_persons = column("num_persons", np.int64)
        self.subject = column("subject", np.int64)
        self.camera = column("camera", np.int64)
        self.setup = column("setup", np.int64)
        self.replication = column("replication", np.int64)
        self.sample_ids: list[str] = [s for b in batches for s in b.column("sample_id").to_pylist()]

        # Flat values of each record batch: zero-copy float32 views into the memory map.
        self._values: list[np.ndarray] = []
        starts, ends, batch_of = [], [], []
        for k, b in enumerate(batches):
            col = b.column("joints")
            offsets = col.offsets.to_numpy()
            self._values.append(col.values.to_numpy(zero_copy_only=True))
            starts.append(offsets[:-1])
            ends.append(offsets[1:])
            batch_of.append(np.full(b.num_rows, k, dtype=np.int32))
        self._starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self._ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self._batch_of = np.concatenate(batch_of) if batch_of else np.zeros(0, np.int32)

        m = self.manifest
        per_frame = m.num_channels * m.layout.num_joints * m.max_persons
        bad = np.flatnonzero((self._ends - self._starts) != self.num_frames * per_frame)
        if bad.size:
            raise UserInputError(
                f"{where}: {bad.size} samples have a joints length that does not match "
                f"num_frames x C x V x M (first: row {bad[0]}); {fix}"
            )
        if n and (self.num_frames.min() < 1 or self.num_frames.max() > m.max_frames):
            raise UserInputError(f"{where}: num_frames outside 1..{m.max_frames}; {fix}")
        if n and (self.labels.min() < 0 or self.labels.max() >= m.num_classes):
            raise UserInputError(f"{where}: labels outside 0..{m.num_classes - 1}; {fix}")

    def __len__(self) -> int:
        return len(self.labels)

    def joints(self, i: int) -> np.ndarray:
        """Sample i as a read-only (C, T_i, V, M) float32 view into the memory map."""
        m = self.manifest
        k = self._batch_of[i]
        flat = self._values[k][self._starts[i]: self._ends[i]]
        return flat.reshape(m.num_channels, int(self.num_frames[i]), m.layout.num_joints,
                            m.max_persons)


class DatasetDir:
    """An opened dataset directory: the manifest plus lazily opened split views."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = Path(path)
        self.manifest = manifest
        self._splits: dict[str, SplitView] = {}

    def __getstate__(self) -> dict:
        return {"path": self.path, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._splits = {}

    @property
    def num_joints(self) -> int:
        return self.manifest.layout.num_joints

    @property
    def num_channels(self) -> int:
        return self.manifest.num_channels

    @property
    def max_persons(self) -> int:
        return self.manifest.max_persons

    @property
    def max_frames(self) -> int:
        return self.manifest.max_frames

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def layout(self) -> SkeletonLayout:
        return self.manifest.layout

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest.splits)

    def split(self, name: str) -> SplitView:
        if name not in self.manifest.splits:
            raise UserInputError(
                f"dataset {self.path}: no split {name!r}; available: "
                f"{', '.join(self.manifest.splits)}"
            )
        if name not in self._splits:
            self._splits[name] = SplitView(self.path, name, self.manifest)
        return self._splits[name]


def read_manifest(path: str | os.PathLike) -> Manifest:
    path = Path(path)
    if not path.exists():
        raise UserInputError(
            f"dataset directory {path} does not exist; create it with `raysearch prepare`"
        )
    if not path.is_dir():
        raise UserInputError(f"dataset path {path} is a file, expected a dataset directory")
    file = path / MANIFEST_FILE
    if not file.is_file():
        raise UserInputError(
            f"dataset directory {path} has no {MANIFEST_FILE} (not a raysearch dataset, or its "
            f"writing was interrupted); re-run `raysearch prepare`"
        )
    obj = read_json_file(file, "re-run `raysearch prepare`")
    return Manifest.from_json(obj, f"file {file}")


def open_dataset(path: str | os.PathLike | DatasetDir) -> DatasetDir:
    """Open a dataset directory; reads only the manifest until a split is asked for."""
    if isinstance(path, DatasetDir):
        return path
    return DatasetDir(Path(path), read_manifest(path))
