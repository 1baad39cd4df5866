"""NTU RGB+D 60/120 importer: raw `.skeleton` text files -> a dataset directory.

File format (Kinect v2 SDK dump), one item per line:
    frame count
    per frame: body count
      per body: 10 fields  bodyID clipedEdges handLeftConfidence handLeftState
                           handRightConfidence handRightState isResticted leanX leanY trackingState
                joint count (25)
                per joint: 12 fields  x y z depthX depthY colorX colorY
                                      orientationW orientationX orientationY orientationZ
                                      trackingState
File names `SsssCcccPpppRrrrAaaa.skeleton` give setup, camera, performer (subject), replication
and action (1-based; label = action - 1).

Two parsers return the same `ParsedSkeleton` (x, y, z of every body in every frame):
- `parse_skeleton`: reads the whole file at once; pyarrow's C++ CSV reader converts the x, y, z
  columns of the joint lines, and Python only visits the few count and body lines. Anything
  unusual (blank lines, runs of spaces, a bad count, a non-finite value) sends the file to
- `parse_skeleton_reference`: a plain line-by-line parser that converts every field, as the
  original NTU tooling does, and names the line of any fault. It is the arbiter: whenever the
  fast path declines, its answer (data or error) is the answer. The one difference: the fast
  path does not convert fields nobody uses, so a file whose unused fields are not numbers is
  only refused when the reference reads it.

Preprocessing (written for this project after the ST-GCN/CTR-GCN NTU pipeline; thresholds in
`DenoiseConfig`): drop files with no body in any frame; when a file has several tracked bodies,
drop bodies seen in fewer than `min_body_frames` frames and bodies whose frames are mostly
"wider than tall" (a person is taller than wide; wide blobs are furniture or noise); rank the
rest by motion energy and fill two person slots, a body joining a slot whose frames it does not
overlap; drop frames with no body; keep at most 300 frames; normalise (`normalise.Normalisation`,
by default: centre on the spine joint, NTU joint 2, index 1, of person 1 in its first frame).
Non-finite coordinates are refused (the file is named); `skip_bad=True` counts and skips such
files (and broken links) instead.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from raysearch.data.format import LIMITS, DatasetWriter
from raysearch.data.layouts import NTU25_LAYOUT
from raysearch.data.normalise import Normalisation, NormalisationRequest, layout_normalisation
from raysearch.data.splits import (VAL_FRACTION, carve_rule, carve_validation, carve_validation_by_subject,
                                   subject_carve_rule)
from raysearch.errors import UserInputError

MAX_FRAMES = 300
MAX_PERSONS = 2
NTU_NORMALISATION: Normalisation = layout_normalisation(NTU25_LAYOUT)
_FIX = "re-download or remove it"

NTU_ACTION_NAMES: tuple[str, ...] = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup",
    "throw", "sitting down", "standing up (from sitting position)", "clapping", "reading",
    "writing", "tear up paper", "wear jacket", "take off jacket", "wear a shoe",
    "take off a shoe", "wear on glasses", "take off glasses", "put on a hat/cap",
    "take off a hat/cap", "cheer up", "hand waving", "kicking something", "reach into pocket",
    "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
    "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
    "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow",
    "shake head", "wipe face", "salute", "put the palms together",
    "cross hands in front (say stop)", "sneeze/cough", "staggering", "falling",
    "touch head (headache)", "touch chest (stomachache/heart pain)", "touch back (backache)",
    "touch neck (neckache)", "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm", "punching/slapping other person",
    "kicking other person", "pushing other person", "pat on back of other person",
    "point finger at the other person", "hugging other person",
    "giving something to other person", "touch other person's pocket", "handshaking",
    "walking towards each other", "walking apart from each other",
    "put on headphone", "take off headphone", "shoot at the basket", "bounce ball",
    "tennis bat swing", "juggling table tennis balls", "hush (quite)", "flick hair",
    "thumb up", "thumb down", "make ok sign", "make victory sign", "staple book",
    "counting money", "cutting nails", "cutting paper (using scissors)", "snapping fingers",
    "open bottle", "sniff (smell)", "squat down", "toss a coin", "fold paper", "ball up paper",
    "play magic cube", "apply cream on face", "apply cream on hand back", "put on bag",
    "take off bag", "put something into a bag", "take something out of a bag", "open a box",
    "move heavy objects", "shake fist", "throw up cap/hat", "hands up (both hands)",
    "cross arms", "arm circles", "arm swings", "running on the spot", "butt kicks (kick backward)",
    "cross toe touch", "side kick", "yawn", "stretch oneself", "blow nose",
    "hit other person with something", "wield knife towards other person",
    "knock over other person (hit with body)", "grab other person's stuff",
    "shoot at other person with a gun", "step on foot", "high-five", "cheers and drink",
    "carry something with other person", "take a photo of other person",
    "follow other person", "whisper in other person's ear", "exchange things with other person",
    "support somebody with hand", "finger-guessing game (playing rock-paper-scissors)",
)

_NTU60_TRAIN_SUBJECTS = frozenset(
    [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38]
)
_NTU120_TRAIN_SUBJECTS = _NTU60_TRAIN_SUBJECTS | frozenset(
    [45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85,
     86, 89, 91, 92, 93, 94, 95, 97, 98, 100, 103]
)
BENCHMARKS: tuple[str, ...] = ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset")


# ----------------------------------------------------------------------------------------------
# File names


_NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


@dataclass(frozen=True)
class SkeletonName:
    """Fields of an NTU file name (all 1-based as written)."""

    setup: int
    camera: int
    subject: int
    replication: int
    action: int

    @property
    def label(self) -> int:
        return self.action - 1


def parse_skeleton_name(path: str | os.PathLike) -> SkeletonName:
    stem = Path(path).name.removesuffix(".skeleton")
    match = _NAME_RE.match(stem)
    if match is None:
        raise UserInputError(
            f"file {path}: name does not match SsssCcccPpppRrrrAaaa.skeleton (e.g. "
            f"S001C002P003R002A013.skeleton); rename or remove it"
        )
    return SkeletonName(*(int(g) for g in match.groups()))


def in_benchmark(name: SkeletonName, benchmark: str) -> bool:
    """Whether a file belongs to the benchmark's dataset (NTU-60 = setups 1-17, actions 1-60)."""
    if benchmark.startswith("ntu60"):
        return name.setup <= 17 and name.action <= 60
    return name.action <= 120


def is_train(name: SkeletonName, benchmark: str) -> bool:
    """Official training side of each protocol; the rest is the test split."""
    if benchmark == "ntu60-xsub":
        return name.subject in _NTU60_TRAIN_SUBJECTS
    if benchmark == "ntu60-xview":
        return name.camera in (2, 3)
    if benchmark == "ntu120-xsub":
        return name.subject in _NTU120_TRAIN_SUBJECTS
    if benchmark == "ntu120-xset":
        return name.setup % 2 == 0
    raise UserInputError(
        f"benchmark {benchmark!r} is unknown; choose one of {', '.join(BENCHMARKS)}"
    )


# ----------------------------------------------------------------------------------------------
# Parsing


@dataclass
class ParsedSkeleton:
    """Every body observation of one file, flat: observation b is body `body_ids[b]` in frame
    `frame_index[b]` with joints (V, 3) xyz in metres (camera space)."""

    num_frames: int
    frame_index: np.ndarray  # (B,) int32
    body_ids: list[str]
    joints: np.ndarray  # (B, V, 3) float32

    def equals(self, other: "ParsedSkeleton") -> bool:
        return (
            self.num_frames == other.num_frames
            and self.body_ids == other.body_ids
            and np.array_equal(self.frame_index, other.frame_index)
            and self.joints.shape == other.joints.shape
            and np.array_equal(self.joints, other.joints)
        )


def _empty_parse(num_frames: int, num_joints: int = 25) -> ParsedSkeleton:
    return ParsedSkeleton(num_frames, np.zeros(0, np.int32), [],
                          np.zeros((0, num_joints, 3), np.float32))


class _Lines:
    """Numbered non-blank lines of a binary file, with the reference parser's error messages."""

    def __init__(self, f, where: str):
        self._f = f
        self.where = where
        self.number = 0  # 1-based number of the last line read

    def next(self, what: str) -> list[bytes]:
        for line in self._f:
            self.number += 1
            fields = line.split()
            if fields:
                return fields
        raise UserInputError(f"{self.where}: truncated at line {self.number + 1}, expected "
                             f"{what}; {_FIX}")

    def integer(self, what: str) -> int:
        fields = self.next(what)
        if len(fields) != 1:
            raise self.error(f"has {len(fields)} fields, expected one number: {what}")
        try:
            value = int(fields[0])
        except ValueError:
            raise self.error(f"expected {what}, got {fields[0].decode(errors='replace')!r}")
        if value < 0:
            raise self.error(f"expected {what}, got {value}")
        return value

    def numbers(self, fields: list[bytes]) -> list[float]:
        try:
            return [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_float(v))
            raise self.error(f"field {bad.decode(errors='replace')!r} is not a number") from None

    def error(self, message: str) -> UserInputError:
        return UserInputError(f"{self.where}: line {self.number} {message}; {_FIX}")

    def rest_is_blank(self) -> int | None:
        """Line number of the first non-blank line left, or None."""
        for line in self._f:
            self.number += 1
            if line.strip():
                return self.number
        return None


def _is_float(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_skeleton_reference(path: str | os.PathLike) -> ParsedSkeleton:
    """Line-by-line parser of one .skeleton file; every field is converted and checked."""
    where = f"file {path}"
    frames, ids, xyz = [], [], []
    num_joints: int | None = None
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserInputError(f"{where}: cannot be read ({e.strerror})") from None
    with f:
        lines = _Lines(f, where)
        num_frames = lines.integer("the frame count")
        if num_frames > LIMITS.frames:
            raise lines.error(f"gives {num_frames} frames, more than raysearch reads (at most "
                              f"{LIMITS.frames} frames)")
        for frame in range(num_frames):
            num_bodies = lines.integer(f"the body count of frame {frame + 1}")
            for body in range(num_bodies):
                what = f"frame {frame + 1}, body {body + 1}"
                header = lines.next(f"the body line of {what}")
                if len(header) != 10:
                    raise lines.error(
                        f"has {len(header)} fields, expected 10 (body line of {what})"
                    )
                lines.numbers(header[1:])
                count = lines.integer(f"the joint count of {what}")
                if count > LIMITS.joints:
                    raise lines.error(f"gives {count} joints for {what}, more than raysearch "
                                      f"reads (at most {LIMITS.joints} joints)")
                if num_joints is None:
                    num_joints = count
                if count != num_joints or count == 0:
                    raise lines.error(f"gives {count} joints for {what}, expected "
                                      f"{num_joints or 'at least 1'}")
                for joint in range(count):
                    fields = lines.next(f"{count} joint lines ({what})")
                    if len(fields) != 12:
                        raise lines.error(f"has {len(fields)} fields, expected 12 (joint "
                                          f"{joint + 1} of {what})")
                    values = lines.numbers(fields)
                    if not all(np.isfinite(values[:3])):
                        raise UserInputError(
                            f"{where}: line {lines.number} holds a non-finite joint coordinate "
                            f"({b' '.join(fields[:3]).decode()}); {_FIX}, or skip bad files "
                            f"(--skip-bad)"
                        )
                    xyz.append(values[:3])
                frames.append(frame)
                ids.append(header[0].decode(errors="replace"))
        extra = lines.rest_is_blank()
        if extra is not None:
            raise UserInputError(f"{where}: line {extra}: unexpected content after the last "
                                 f"frame ({num_frames} frames); {_FIX}")
    if not ids:
        return _empty_parse(num_frames)
    joints = np.asarray(xyz, dtype=np.float32).reshape(len(ids), num_joints, 3)
    return ParsedSkeleton(num_frames, np.asarray(frames, np.int32), ids, joints)


_CSV_COLUMNS = [f"f{i}" for i in range(12)]
_CSV_READ = pa_csv.ReadOptions(column_names=_CSV_COLUMNS, use_threads=False, block_size=1 << 26)
_CSV_PARSE = pa_csv.ParseOptions(
    delimiter=" ", quote_char=False, double_quote=False, escape_char=False,
    # Count and body lines (1 or 10 fields) are not joint rows: the walk below reads them.
    invalid_row_handler=lambda row: "skip",
)
_CSV_CONVERT = pa_csv.ConvertOptions(
    include_columns=_CSV_COLUMNS[:3],
    column_types={c: pa.float64() for c in _CSV_COLUMNS[:3]},
    null_values=[],
    strings_can_be_null=False,
)


def _parse_fast(data: bytes) -> ParsedSkeleton | None:
    """Whole-file parse; None whenever the file is anything but plain (the reference decides)."""
    nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    starts = np.concatenate([[0], nl + 1])
    ends = np.concatenate([nl, [len(data)]])
    num_lines = len(starts)

    def line(i: int) -> bytes:
        return data[starts[i]: ends[i]]

    try:
        # The walk visits count and body lines only: O(frames + bodies) Python steps.
        num_frames = int(line(0))
        if num_frames > LIMITS.frames:
            return None
        li = 1
        frames, ids, block_lines = [], [], []
        num_joints = None
        for frame in range(num_frames):
            num_bodies = int(line(li))
            li += 1
            for _ in range(num_bodies):
                header = line(li).split()
                if len(header) != 10:
                    return None
                count = int(line(li + 1))
                if num_joints is None:
                    num_joints = count
                if count != num_joints or count <= 0 or count > LIMITS.joints:
                    return None
                frames.append(frame)
                ids.append(header[0].decode())
                block_lines.append(li + 2)
                li += 2 + count
            if num_bodies < 0:
                return None
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    if num_frames < 0 or li > num_lines or any(line(i).strip() for i in range(li, num_lines)):
        return None
    if not ids:
        return _empty_parse(num_frames)
    try:
        table = pa_csv.read_csv(pa.py_buffer(data), read_options=_CSV_READ,
                                parse_options=_CSV_PARSE, convert_options=_CSV_CONVERT)
    except pa.ArrowInvalid:
        return None
    # Every non-structural line is a joint line; all of them must have parsed as 12-field rows.
    if table.num_rows != len(ids) * num_joints:
        return None
    xyz = np.stack([table.column(c).to_numpy() for c in range(3)], axis=-1)  # (B*V, 3)
    if not np.isfinite(xyz).all():
        return None
    joints = xyz.astype(np.float32).reshape(len(ids), num_joints, 3)
    return ParsedSkeleton(num_frames, np.asarray(frames, np.int32), ids, joints)


def parse_skeleton(path: str | os.PathLike) -> ParsedSkeleton:
    """Parse one .skeleton file (fast path, falling back to the reference parser)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserInputError(f"file {path}: cannot be read ({e.strerror})") from None
    parsed = _parse_fast(data)
    return parsed if parsed is not None else parse_skeleton_reference(path)


def format_skeleton(
    num_frames: int, bodies: Sequence[tuple[int, str, np.ndarray]], seed: int = 0
) -> bytes:
    """Text of a .skeleton file: `bodies` lists (frame, body id, joints (V, 3)) observations.

    Fields the importer does not use are filled with plausible values (depth/colour pixels
    from a pinhole projection, random orientations) so that files look like Kinect output;
    lines end in CRLF like the released dataset.
    """
    rng = np.random.default_rng(seed)
    by_frame: dict[int, list[tuple[str, np.ndarray]]] = {}
    for frame, body_id, joints in bodies:
        by_frame.setdefault(frame, []).append((body_id, np.asarray(joints, np.float64)))
    out = [str(num_frames)]
    for frame in range(num_frames):
        present = by_frame.get(frame, [])
        out.append(str(len(present)))
        for body_id, joints in present:
            lean = rng.uniform(-0.2, 0.2, 2)
            out.append(f"{body_id} 0 1 1 1 1 0 {lean[0]:.7g} {lean[1]:.7g} 2")
            out.append(str(len(joints)))
            z = np.where(np.abs(joints[:, 2]) > 0.1, joints[:, 2], 3.0)
            depth = np.stack([256 + 365 * joints[:, 0] / z, 212 - 365 * joints[:, 1] / z], -1)
            color = np.stack([960 + 1060 * joints[:, 0] / z, 540 - 1060 * joints[:, 1] / z], -1)
            quat = rng.normal(size=(len(joints), 4))
            quat /= np.linalg.norm(quat, axis=1, keepdims=True)
            for j in range(len(joints)):
                values = [*joints[j], *depth[j], *color[j], *quat[j]]
                out.append(" ".join(f"{v:.7g}" for v in values) + " 2")
    return ("\r\n".join(out) + "\r\n").encode()


# ----------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class DenoiseConfig:
    """Thresholds of the body denoising; applied only when a file tracks more than one body."""

    # A body tracked in fewer frames than this is a flicker (CTR-GCN drops <= 11 frames).
    min_body_frames: int = 12
    # A frame is "wide" (noisy) when the body's x extent exceeds this times its y extent.
    spread_ratio: float = 0.8
    # Drop a body when this fraction of its frames or more is wide (CTR-GCN uses 0.69754).
    max_wide_fraction: float = 0.69754


@dataclass
class PreprocessStats:
    bodies: int = 0
    dropped_short: int = 0
    dropped_wide: int = 0
    dropped_overlap: int = 0
    fallback_longest: int = 0
    missing_frames: int = 0
    truncated: int = 0

    def add(self, other: "PreprocessStats") -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)


@dataclass
class _Track:
    body_id: str
    frames: np.ndarray  # (T_b,) frame indices, increasing
    joints: np.ndarray  # (T_b, V, 3)
    motion: float = 0.0


def _tracks(parsed: ParsedSkeleton) -> list[_Track]:
    """Group observations by body id, in order of first appearance."""
    order: dict[str, list[int]] = {}
    for i, body_id in enumerate(parsed.body_ids):
        order.setdefault(body_id, []).append(i)
    tracks = []
    for body_id, rows in order.items():
        rows_arr = np.asarray(rows)
        frames = parsed.frame_index[rows_arr]
        keep = np.concatenate([[True], np.diff(frames) > 0])  # one observation per frame
        tracks.append(_Track(body_id, frames[keep], parsed.joints[rows_arr[keep]]))
    return tracks


def _motion(joints: np.ndarray) -> float:
    """Motion energy: summed temporal variance of every joint coordinate, joints (T, V, 3)."""
    return float(np.var(joints, axis=0).sum()) if len(joints) > 1 else 0.0


def preprocess_skeleton(
    parsed: ParsedSkeleton,
    config: DenoiseConfig = DenoiseConfig(),
    max_frames: int = MAX_FRAMES,
    max_persons: int = MAX_PERSONS,
    normalisation: Normalisation = NTU_NORMALISATION,
) -> tuple[np.ndarray | None, PreprocessStats]:
    """Denoise, pick up to `max_persons` bodies, normalise; returns ((C, T, V, M) float32 or
    None when no frame holds a body, stats)."""
    stats = PreprocessStats()
    tracks = _tracks(parsed)
    stats.bodies = len(tracks)
    if not tracks:
        return None, stats
    if len(tracks) > 1:
        kept = [t for t in tracks if len(t.frames) >= config.min_body_frames]
        stats.dropped_short = len(tracks) - len(kept)
        wide_kept = []
        for t in kept:
            extent = t.joints.max(axis=1) - t.joints.min(axis=1)  # (T_b, 3)
            wide = extent[:, 0] > config.spread_ratio * extent[:, 1]
            if wide.mean() >= config.max_wide_fraction:
                continue
            # Motion is measured on the body's plausible frames only.
            t.motion = _motion(t.joints[~wide])
            wide_kept.append(t)
        stats.dropped_wide = len(kept) - len(wide_kept)
        if not wide_kept:
            # Every body looked like noise: keep the longest one rather than lose the sample.
            wide_kept = [max(tracks, key=lambda t: len(t.frames))]
            wide_kept[0].motion = _motion(wide_kept[0].joints)
            stats.fallback_longest = 1
        tracks = sorted(wide_kept, key=lambda t: -t.motion)

    num_joints = parsed.joints.shape[1]
    full = np.zeros((parsed.num_frames, num_joints, 3, max_persons), np.float32)  # (T, V, C, M)
    occupied = np.zeros((parsed.num_frames, max_persons), bool)
    for t in tracks:
        # A body joins the first slot whose frames it does not overlap (a person re-detected
        # under a new id continues their slot); a body overlapping every slot is dropped.
        slot = next((m for m in range(max_persons) if not occupied[t.frames, m].any()), None)
        if slot is None:
            stats.dropped_overlap += 1
            continue
        full[t.frames, :, :, slot] = t.joints
        occupied[t.frames, slot] = True

    present = np.any(full != 0, axis=(1, 2))  # (T, M)
    valid = present.any(axis=1)
    stats.missing_frames = int((~valid).sum())
    if not valid.any():
        return None, stats
    full = full[valid]
    if len(full) > max_frames:
        stats.truncated = 1
        full = full[:max_frames]
    # Absent persons stay exactly zero: only present (frame, person) pairs move.
    return normalisation.apply(full.transpose(2, 0, 1, 3)), stats  # (C, T, V, M)


# ----------------------------------------------------------------------------------------------
# Import


@dataclass
class _FileResult:
    stem: str
    status: str  # "ok", "empty" (no skeleton), "bad"
    joints: np.ndarray | None = None
    stats: PreprocessStats = field(default_factory=PreprocessStats)
    message: str = ""
    num_bytes: int = 0


def _load_file(args: tuple[str, DenoiseConfig, Normalisation]) -> _FileResult:
    path, config, normalisation = args
    stem = Path(path).name.removesuffix(".skeleton")
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return _FileResult(stem, "bad", message=f"file {path}: cannot be read ({e.strerror}); "
                                                f"{_FIX}")
    try:
        parsed = parse_skeleton(path)
    except UserInputError as e:
        return _FileResult(stem, "bad", message=str(e), num_bytes=size)
    if parsed.joints.shape[1:] != (NTU25_LAYOUT.num_joints, 3) and len(parsed.body_ids):
        return _FileResult(stem, "bad", num_bytes=size, message=(
            f"file {path}: bodies have {parsed.joints.shape[1]} joints, NTU files have 25; "
            f"{_FIX}"))
    joints, stats = preprocess_skeleton(parsed, config, normalisation=normalisation)
    status = "ok" if joints is not None else "empty"
    return _FileResult(stem, status, joints, stats, num_bytes=size)


class _Progress:
    """A single updating line on stderr, at most a few times a second."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled
        self.start = self.last = time.monotonic()
        self.done, self.bytes = 0, 0

    def update(self, num_bytes: int) -> None:
        self.done += 1
        self.bytes += num_bytes
        now = time.monotonic()
        if self.enabled and (now - self.last > 0.5 or self.done == self.total):
            self.last = now
            rate = self.bytes / max(now - self.start, 1e-9) / 1e6
            print(f"\r{self.label}: {self.done}/{self.total} files ({rate:.1f} MB/s)",
                  end="\n" if self.done == self.total else "", file=sys.stderr, flush=True)


def _find_files(raw_dir: Path, benchmark: str, skip_bad: bool) -> tuple[list[Path], list[str]]:
    files, bad_names = [], []
    seen: dict[str, Path] = {}
    for path in sorted(raw_dir.rglob("*.skeleton"), key=lambda p: p.name):
        if not path.is_file():
            kind = "a broken link (its target does not exist)" if path.is_symlink() else \
                "not a regular file"
            message = f"file {path}: {kind}; fix or remove it, or skip it with --skip-bad"
            if not skip_bad:
                raise UserInputError(message)
            bad_names.append(message)
            continue
        try:
            name = parse_skeleton_name(path)
        except UserInputError as e:
            if not skip_bad:
                raise
            bad_names.append(str(e))
            continue
        if not in_benchmark(name, benchmark):
            continue
        if path.name in seen:
            raise UserInputError(f"file {path}: same sample as {seen[path.name]}; keep one copy")
        seen[path.name] = path
        files.append(path)
    return files, bad_names


def prepare_ntu(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    benchmark: str,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    workers: int | None = None,
    *,
    val_per_class: int | None = None,
    val_subjects: int | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    denoise: DenoiseConfig = DenoiseConfig(),
    normalise: NormalisationRequest = NormalisationRequest(),
) -> Path:
    """Import raw NTU .skeleton files (searched recursively under raw_dir) for one benchmark.

    Splits: the protocol's training side becomes train + val (`splits.carve_validation` with
    `val_per_class` / `val_fraction`, or every clip of `val_subjects` performers with
    `splits.carve_validation_by_subject`; chosen from the file names before parsing, so it does not
    depend on worker timing),
    the other side becomes test. Files without any skeleton are dropped and listed in the
    manifest's source. A corrupt file stops the import with its name and line, unless
    `skip_bad`, which skips and lists it. `workers` defaults to the CPU count (1 = no pool).
    """
    if benchmark not in BENCHMARKS:
        raise UserInputError(
            f"--benchmark {benchmark!r} is unknown; choose one of {', '.join(BENCHMARKS)}"
        )
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise UserInputError(f"--raw {raw}: not a directory; point it at the folder holding "
                             f"the NTU .skeleton files")
    num_classes = 60 if benchmark.startswith("ntu60") else 120
    files, bad = _find_files(raw, benchmark, skip_bad)
    if not files:
        raise UserInputError(f"--raw {raw}: no {benchmark.split('-')[0]} .skeleton files "
                             f"(SsssCcccPpppRrrrAaaa.skeleton) found under it")
    names = [parse_skeleton_name(p) for p in files]
    train = np.array([is_train(n, benchmark) for n in names])
    labels = np.array([n.label for n in names])
    train_idx = np.flatnonzero(train)
    if val_subjects is not None:
        if val_per_class is not None:
            raise UserInputError("--val-subjects and --val-per-class: choose one way to carve validation")
        performers = np.array([n.subject for n in names])
        _, held, chosen = carve_validation_by_subject(labels[train_idx], performers[train_idx], val_subjects, seed)
        rule = subject_carve_rule(val_subjects, chosen)
    else:
        _, held = carve_validation(labels[train_idx], seed, val_per_class, val_fraction)
        rule = carve_rule(val_per_class, val_fraction)
    split_of = np.where(train, "train", "test").astype(object)
    split_of[train_idx[held]] = "val"
    layout, normalisation = normalise.resolve(NTU25_LAYOUT, f"--raw {raw}")

    # Fail on the output directory before the long parse, not after.
    writer = DatasetWriter(
        out_dir, layout, NTU_ACTION_NAMES[:num_classes], max_persons=MAX_PERSONS,
        max_frames=MAX_FRAMES, overwrite=overwrite, normalisation=normalisation,
        required_splits=("train", "val"),
    )
    totals = PreprocessStats()
    empty: list[str] = []
    meter = _Progress(len(files), f"ntu {benchmark}", progress)
    jobs = [(str(p), denoise, normalisation) for p in files]
    if workers is None:
        workers = os.cpu_count() or 1
    with writer:
        pool = None
        try:
            if int(workers) > 1 and len(files) > 1:
                pool = multiprocessing.get_context("spawn").Pool(workers)
                results: Iterable[_FileResult] = pool.imap(_load_file, jobs, chunksize=16)
            else:
                results = map(_load_file, jobs)
            # imap keeps file order, so the dataset is identical for any worker count.
            for i, result in enumerate(results):
                meter.update(result.num_bytes)
                if result.status == "bad":
                    if not skip_bad:
                        raise UserInputError(result.message)
                    bad.append(result.message)
                    continue
                if result.status == "empty":
                    empty.append(result.stem)
                    continue
                totals.add(result.stats)
                n = names[i]
                writer.add(
                    split_of[i], result.joints, n.label, result.stem, subject=n.subject,
                    camera=n.camera, setup=n.setup, replication=n.replication,
                )
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        if bad:
            print(f"ntu {benchmark}: skipped {len(bad)} bad files (listed in manifest.json)",
                  file=sys.stderr)
        if empty:
            print(f"ntu {benchmark}: dropped {len(empty)} files with no skeleton",
                  file=sys.stderr)
        source = {
            "importer": "ntu",
            "benchmark": benchmark,
            "raw_dir": str(raw.resolve()),
            "files_found": len(files),
            "val_fraction": val_fraction,
            "val_per_class": val_per_class,
            "val_subjects": val_subjects,
            "splits": f"protocol's training side -> train + val ({rule})",
            "seed": seed,
            "no_skeleton": {"count": len(empty), "files": empty},
            "bad_files": {"count": len(bad), "messages": bad},
            "preprocessing": {
                "denoise": asdict(denoise),
                "persons": f"up to {MAX_PERSONS} bodies ranked by motion energy",
                "center": normalisation.describe(layout),
                "frames": f"frames without a body dropped; at most {MAX_FRAMES} kept",
            },
            "preprocess_stats": asdict(totals),
        }
        return writer.finish(source)
