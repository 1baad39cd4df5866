""".npz input, two layouts, one reader (`read_npz`) for import and for `predict`.

Never unpickles: every member's header is read first and object dtypes are refused before any
data is loaded (`allow_pickle=False` throughout).

CTR-GCN / STTFormer (keys x_train, y_train, x_test, y_test):
    x_*  (N, T, M*V*C) with V = 25, C = 3, i.e. per frame M persons x 25 joints x xyz;
         reshaped (N, T, M, V, C) -> (N, C, T, V, M). Zero frames pad the end of each sample.
    y_*  one-hot (N, K), or class indices (N,).
    Valid length = frames up to the last frame with any nonzero value. Val is carved from train.
Generic (key x):
    x     (N, C, T, V, M) numeric, any V and M;   y (N,) integer class indices
    split (N,) strings train/val/test, optional   length (N,) valid frames, optional
    class_names (K,) strings, optional            subject (N,) integer ids, -1 unknown, optional
    Without `split`, a seeded `test_fraction` of every class becomes test; without any val
    entry, val is carved per class from train (`splits.carve_validation`), or with `val_subjects`
    it holds every training clip of that many subjects (`splits.carve_validation_by_subject`).
    Without `length`, the valid length is found as in the CTR-GCN layout.

`read_npz(path)` checks everything (keys, shapes, dtypes, caps, labels, lengths, non-finite
values) and returns `NpzClips`: parts of (N, C, T, V, M) samples read lazily, one clip
(C, T_valid, V, M) float32 at a time. `read_npz(path, labelled=False)` is what `predict` reads:
labels are not needed, and a CTR-GCN file gives x_test (x_train when it has no x_test).

Uncompressed archives (what `np.savez` writes; CTR-GCN's NTU files are several GB) are
memory-mapped member by member, so importing does not need the data to fit in RAM.
A member whose header promises more bytes than the archive holds is refused before anything is
allocated. Non-finite joints are refused, naming how many samples and the first one;
`drop_nonfinite=True` (`--drop-nonfinite`) drops those samples instead (counted in the manifest).
"""

from __future__ import annotations

import os
import struct
import sys
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from raysearch.data.format import LIMITS, SUBJECT_MAX, DatasetWriter
from raysearch.data.layouts import KNOWN_LAYOUTS, NTU25_LAYOUT, SkeletonLayout, generic_layout
from raysearch.data.normalise import Normalisation, NormalisationRequest, read_layout_file
from raysearch.data.ntu import NTU_ACTION_NAMES
from raysearch.data.splits import (VAL_FRACTION, carve_rule, carve_validation, carve_validation_by_subject,
                                   stratified_split, subject_carve_rule)
from raysearch.errors import UserInputError

_CHUNK = 256  # samples per vectorised validation step
_CTRGCN_JOINTS, _CTRGCN_CHANNELS = 25, 3


class _Archive:
    """Members of an .npz: headers checked first, then memory-mapped when stored uncompressed,
    else read into memory."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise UserInputError(f"file {path}: does not exist; check the path")
        if not path.is_file():
            raise UserInputError(f"file {path}: is not a regular file, expected an .npz file")
        try:
            self._zip = zipfile.ZipFile(path)
            names = self._zip.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise UserInputError(
                f"file {path}: not a readable .npz archive ({str(e)[:120]}); save it with "
                f"numpy.savez"
            ) from None
        self.keys = [n[:-4] for n in names if n.endswith(".npy")]

    def close(self) -> None:
        self._zip.close()

    def has(self, key: str) -> bool:
        return key in self.keys

    def get(self, key: str) -> np.ndarray:
        try:
            info = self._zip.getinfo(key + ".npy")
            shape, fortran, dtype, header_end = self._header(info, key)
            if info.compress_type == zipfile.ZIP_STORED:
                return self._mmap(info, key, shape, fortran, dtype, header_end)
            with self._zip.open(info) as f:
                f.seek(header_end)
                count = int(np.prod(shape, dtype=np.int64)) if shape else 1
                data = f.read(count * dtype.itemsize)
            array = np.frombuffer(data, dtype=dtype, count=count)
            return array.reshape(shape, order="F" if fortran else "C")
        except UserInputError:
            raise
        # What numpy's header parser and zipfile raise for damaged bytes (tokenize and
        # SyntaxError come from numpy evaluating the header's dict literal).
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, TypeError,
                struct.error, RuntimeError, NotImplementedError, SyntaxError, OverflowError,
                tokenize.TokenError, zlib.error) as e:
            raise UserInputError(
                f"file {self.path}: array '{key}' is damaged ({str(e)[:120]}); re-create the file"
            ) from None

    def _pickle_error(self, key: str) -> UserInputError:
        return UserInputError(
            f"file {self.path}: array '{key}' holds Python objects (pickle); re-save with "
            f"numeric dtypes (and fixed-width strings for names)"
        )

    def _header(self, info: zipfile.ZipInfo, key: str) -> tuple[tuple, bool, np.dtype, int]:
        """(shape, fortran order, dtype, offset of the data inside the member), checked against
        the member's size so that a forged header cannot make us allocate."""
        with self._zip.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise UserInputError(f"file {self.path}: array '{key}' uses .npy format "
                                     f"{version}; re-save it with numpy.savez")
            header_end = f.tell()
        if dtype.hasobject:
            raise self._pickle_error(key)
        if dtype.itemsize == 0:
            raise UserInputError(f"file {self.path}: array '{key}' has the empty dtype {dtype}; "
                                 f"re-save it with numbers or non-empty strings")
        nbytes = dtype.itemsize
        for d in shape:
            nbytes *= int(d)  # Python ints: no overflow
        if header_end + nbytes > info.file_size:
            raise UserInputError(
                f"file {self.path}: array '{key}' is damaged (its header promises shape {shape}, "
                f"{nbytes} bytes, the archive holds {info.file_size - header_end}); re-create it"
            )
        return tuple(int(d) for d in shape), fortran, dtype, header_end

    def _mmap(self, info: zipfile.ZipInfo, key: str, shape: tuple, fortran: bool,
              dtype: np.dtype, header_end: int) -> np.ndarray:
        """A read-only memmap of a stored (uncompressed) member."""
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise UserInputError(f"file {self.path}: array '{key}' is damaged (bad zip entry); "
                                 f"re-create the file")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len + header_end
        if int(np.prod(shape, dtype=np.int64)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")


# ----------------------------------------------------------------------------------------------
# The checked content of a file


@dataclass
class NpzPart:
    """One block of samples: `x` (N, C, T, V, M) (a lazily reshaped view, maybe of a memmap)."""

    key: str                          # the array it came from: x, x_train or x_test
    x: np.ndarray
    ids: list[str]
    lengths: np.ndarray               # (N,) valid frames
    keep: np.ndarray                  # (N',) sample indices in use (non-finite ones dropped)
    labels: np.ndarray | None = None  # (N,) class indices; None when read unlabelled
    split: np.ndarray | None = None   # (N,) train/val/test (generic layout with `split`)
    subjects: np.ndarray | None = None  # (N,) subject ids, -1 unknown (generic layout with `subject`)

    def clip(self, i: int) -> np.ndarray:
        """Sample i's valid frames as float32 (C, T_valid, V, M), as every importer stores it."""
        return np.asarray(self.x[i, :, : int(self.lengths[i])], dtype=np.float32)

    def clips(self) -> Iterator[tuple[str, np.ndarray]]:
        for i in self.keep.tolist():
            yield self.ids[i], self.clip(i)


@dataclass
class NpzClips:
    """A checked .npz: layout kind, parts and class names. Close it (or use `with`)."""

    path: Path
    kind: str                        # "npz-ctrgcn" or "npz-generic"
    shape: tuple[int, int, int, int]  # (C, T, V, M) of every sample
    parts: list[NpzPart]
    class_names: list[str] | None    # None when read unlabelled
    lengths_given: bool
    dropped_nonfinite: int
    _archive: _Archive = field(repr=False)

    def close(self) -> None:
        self._archive.close()

    def __enter__(self) -> "NpzClips":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_lengths(lengths: np.ndarray, n: int, t: int, where: str) -> np.ndarray:
    """The generic layout's optional `length` array: (N,) integers in 1..T, as int64."""
    if lengths.shape != (n,) or lengths.dtype.kind not in "iu":
        raise UserInputError(f"{where}: array 'length' has shape {lengths.shape} dtype "
                             f"{lengths.dtype}, expected ({n},) integers")
    bad = np.flatnonzero((lengths < 1) | (lengths > t))
    if bad.size:
        raise UserInputError(f"{where}: array 'length' has {bad.size} values outside "
                             f"1..{t} (first: {lengths[bad[0]]} at index {bad[0]})")
    return lengths.astype(np.int64)


def read_subjects(subjects: np.ndarray, n: int, where: str) -> np.ndarray:
    """The generic layout's optional `subject` array: (N,) integers in -1..32767 (-1: unknown)."""
    if subjects.shape != (n,) or subjects.dtype.kind not in "iu":
        raise UserInputError(f"{where}: array 'subject' has shape {subjects.shape} dtype {subjects.dtype}, "
                             f"expected ({n},) integer subject ids")
    bad = np.flatnonzero((subjects < -1) | (subjects > SUBJECT_MAX))
    if bad.size:
        raise UserInputError(f"{where}: array 'subject' has {bad.size} values outside -1..{SUBJECT_MAX} (first: "
                             f"{subjects[bad[0]]} at index {bad[0]}); -1 marks an unknown subject")
    return subjects.astype(np.int64)


def _valid_lengths(x: np.ndarray, where: str, drop: set[int]) -> np.ndarray:
    """Frames up to the last nonzero frame of each sample; x (N, C, T, V, M) with T >= 1."""
    n = x.shape[0]
    lengths = np.zeros(n, dtype=np.int64)
    for s in range(0, n, _CHUNK):
        chunk = np.asarray(x[s: s + _CHUNK])
        nonzero = np.any(chunk != 0, axis=(1, 3, 4))  # (n', T)
        last = chunk.shape[2] - np.argmax(nonzero[:, ::-1], axis=1)
        lengths[s: s + len(chunk)] = np.where(nonzero.any(axis=1), last, 0)
    empty = np.flatnonzero(lengths == 0)
    empty = empty[~np.isin(empty, list(drop))] if drop else empty
    if empty.size:
        raise UserInputError(
            f"{where}: {empty.size} samples are all zeros (first: index {empty[0]}); remove "
            f"them or give a 'length' array"
        )
    return lengths


def _nonfinite(x: np.ndarray) -> np.ndarray:
    """Indices of samples with NaN or Inf, checked chunk by chunk (x may be a memmap)."""
    bad = []
    for s in range(0, x.shape[0], _CHUNK):
        chunk = np.asarray(x[s: s + _CHUNK]).reshape(min(_CHUNK, x.shape[0] - s), -1)
        bad.append(np.flatnonzero(~np.isfinite(chunk).all(axis=1)) + s)
    return np.concatenate(bad) if bad else np.zeros(0, np.int64)


def _check_numeric(array: np.ndarray, key: str, where: str) -> None:
    if array.dtype.kind not in "fiu":
        raise UserInputError(f"{where}: array '{key}' has dtype {array.dtype}, expected numbers")


def _labels_from(y: np.ndarray, key: str, n: int, where: str) -> tuple[np.ndarray, int | None]:
    """Class indices from one-hot (N, K) or indices (N,); returns (labels, K or None)."""
    _check_numeric(y, key, where)
    if y.ndim == 2:
        if y.shape[0] != n:
            raise UserInputError(f"{where}: array '{key}' has {y.shape[0]} rows, x has {n}")
        k = int(y.shape[1])
        if k == 0:
            raise UserInputError(f"{where}: array '{key}' has shape {y.shape}: one-hot rows of "
                                 f"K=0 classes; give (N, K) one-hot rows with K >= 1")
        LIMITS.check("classes", k, f"{where}: array '{key}'")
        labels = np.argmax(y, axis=1) if n else np.zeros(0, np.int64)
        hot = y[np.arange(n), labels]
        if n and not (np.all(hot == 1) and np.all(y.sum(axis=1) == 1)):
            row = int(np.flatnonzero((hot != 1) | (y.sum(axis=1) != 1))[0])
            raise UserInputError(f"{where}: array '{key}' is not one-hot (row {row}); give "
                                 f"(N, K) one-hot rows or (N,) class indices")
        return labels.astype(np.int64), k
    if y.ndim == 1:
        if y.shape[0] != n:
            raise UserInputError(f"{where}: array '{key}' has {y.shape[0]} labels, x has {n}")
        if y.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                whole = np.isfinite(y) & (np.mod(y, 1) == 0) & (np.abs(y) < 2 ** 62)
            if not np.all(whole):
                raise UserInputError(f"{where}: array '{key}' holds non-integer labels (first at "
                                     f"index {int(np.flatnonzero(~whole)[0])})")
        elif y.dtype.kind == "u" and y.size and int(y.max()) >= 2 ** 62:
            raise UserInputError(f"{where}: array '{key}' holds label {int(y.max())}, outside "
                                 f"any class range")
        return y.astype(np.int64), None
    raise UserInputError(f"{where}: array '{key}' has shape {y.shape}, expected (N,) class "
                         f"indices or (N, K) one-hot")


def _implied_classes(labels: list[np.ndarray], where: str) -> int:
    """K = max label + 1 when no class names say otherwise; capped, and refused when most of
    those classes would have no sample (sparse ids such as 99999 are not class indices)."""
    joined = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if joined.size and joined.min() < 0:
        bad = int(np.flatnonzero(joined < 0)[0])
        raise UserInputError(f"{where}: label {joined[bad]} at index {bad} is negative; labels "
                             f"must be class indices from 0")
    k = int(joined.max()) + 1 if joined.size else 0
    if k > LIMITS.classes:
        raise UserInputError(f"{where}: label {k - 1} would make {k} classes, more than "
                             f"raysearch accepts (at most {LIMITS.classes} classes); renumber the "
                             f"labels 0..K-1")
    used = np.unique(joined).size
    if k and used * 2 < k:
        raise UserInputError(f"{where}: labels 0..{k - 1} use only {used} of {k} classes; "
                             f"renumber them 0..K-1 or give a class_names array")
    return k


def _check_label_range(labels: np.ndarray, key: str, k: int, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        raise UserInputError(
            f"{where}: array '{key}' has {bad.size} labels outside 0..{k - 1} (first: "
            f"{labels[bad[0]]} at index {bad[0]}); labels must be class indices from 0"
        )


def _string_array(array: np.ndarray, key: str, where: str, size: int | None = None) -> list[str]:
    if array.dtype.kind not in "US" or array.ndim != 1:
        raise UserInputError(f"{where}: array '{key}' must be a 1-D array of strings, got "
                             f"dtype {array.dtype} shape {array.shape}")
    if size is not None and array.shape[0] != size:
        raise UserInputError(f"{where}: array '{key}' has {array.shape[0]} entries, expected "
                             f"{size}")
    try:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()]
    except UnicodeDecodeError:
        raise UserInputError(f"{where}: array '{key}' holds bytes that are not UTF-8") from None


def _check_sizes(where: str, key: str, n: int, c: int, t: int, v: int, m: int) -> None:
    if t == 0:
        raise UserInputError(f"{where}: array '{key}' has no frames (T=0); every sample needs "
                             f"at least one frame")
    if n == 0:
        raise UserInputError(f"{where}: array '{key}' holds no samples (N=0)")
    if min(c, v, m) == 0:
        raise UserInputError(f"{where}: array '{key}' has an empty axis: C={c}, V={v}, M={m}")
    for what, value in (("channels", c), ("frames", t), ("joints", v), ("persons", m)):
        LIMITS.check(what, value, f"{where}: array '{key}'")


def _ctrgcn_x(arc: _Archive, key: str, where: str) -> np.ndarray:
    x = arc.get(key)
    _check_numeric(x, key, where)
    per_person = _CTRGCN_JOINTS * _CTRGCN_CHANNELS
    if x.ndim != 3 or x.shape[2] % per_person or x.shape[2] == 0:
        raise UserInputError(
            f"{where}: array '{key}' has shape {x.shape}, expected (N, T, 150) = "
            f"(samples, frames, persons x 25 joints x 3 coords)"
        )
    n, t, d = x.shape
    m = d // per_person
    _check_sizes(where, key, n, _CTRGCN_CHANNELS, t, _CTRGCN_JOINTS, m)
    # (N, T, M*V*C) -> (N, T, M, V, C) -> (N, C, T, V, M): a view, nothing is copied yet.
    return x.reshape(n, t, m, _CTRGCN_JOINTS, _CTRGCN_CHANNELS).transpose(0, 4, 1, 3, 2)


def _finish_part(part: NpzPart, where: str, drop_nonfinite: bool,
                 lengths: np.ndarray | None, labelled: bool) -> int:
    """Non-finite check (or drop) and valid lengths; returns the number dropped."""
    bad = _nonfinite(part.x)
    if bad.size and not drop_nonfinite:
        # Only the importer (labelled data) offers the flag; `predict` needs every sample finite.
        fix = ("clean them, or drop them with `raysearch prepare npz ... --drop-nonfinite`" if labelled
               else "clean them first: a clip with NaN/Inf coordinates cannot be classified")
        raise UserInputError(
            f"{where}: array '{part.key}' has NaN/Inf in {bad.size} samples (first: index "
            f"{bad[0]}); {fix}"
        )
    drop = set(bad.tolist())
    part.lengths = lengths if lengths is not None else \
        _valid_lengths(part.x, f"{where}: array '{part.key}'", drop)
    part.keep = np.array(sorted(set(range(part.x.shape[0])) - drop), dtype=np.int64)
    return len(drop)


def read_npz(file: str | os.PathLike, *, labelled: bool = True,
             drop_nonfinite: bool = False) -> NpzClips:
    """Open and check a CTR-GCN/STTFormer or generic .npz (layout detected from its keys)."""
    path = Path(file)
    where = f"file {path}"
    arc = _Archive(path)
    try:
        if arc.has("x"):
            return _read_generic(arc, where, labelled, drop_nonfinite)
        if arc.has("x_train") or arc.has("x_test"):
            return _read_ctrgcn(arc, where, labelled, drop_nonfinite)
        raise UserInputError(
            f"{where}: found arrays {', '.join(arc.keys[:8]) or 'none'}; expected x_train/y_train/"
            f"x_test/y_test (CTR-GCN layout) or x/y (generic layout)"
        )
    except BaseException:
        arc.close()
        raise


def _read_ctrgcn(arc: _Archive, where: str, labelled: bool, drop_nonfinite: bool) -> NpzClips:
    if labelled:
        sides = ("train", "test")
        for side in sides:
            for key in (f"x_{side}", f"y_{side}"):
                if not arc.has(key):
                    raise UserInputError(
                        f"{where}: no array '{key}' (found: {', '.join(arc.keys[:8])}); the "
                        f"CTR-GCN layout needs x_train, y_train, x_test, y_test"
                    )
    else:
        sides = ("test",) if arc.has("x_test") else ("train",)
    parts, num_classes = [], None
    for side in sides:
        x = _ctrgcn_x(arc, f"x_{side}", where)
        part = NpzPart(f"x_{side}", x, [f"{side}-{i:06d}" for i in range(x.shape[0])],
                       np.zeros(0, np.int64), np.zeros(0, np.int64))
        if labelled:
            part.labels, k = _labels_from(arc.get(f"y_{side}"), f"y_{side}", x.shape[0], where)
            if k is not None:
                if num_classes is not None and k != num_classes:
                    raise UserInputError(f"{where}: y_train and y_test have {num_classes} and "
                                         f"{k} classes; they must agree")
                num_classes = k
        parts.append(part)
    shapes = {p.x.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise UserInputError(f"{where}: x_train and x_test differ in frames or persons "
                             f"({' vs '.join(str(s) for s in shapes)}); they must agree")
    class_names = None
    if labelled:
        class_names = _class_names(arc, where, [p.labels for p in parts], num_classes,
                                   ntu_names=True)
        for p in parts:
            _check_label_range(p.labels, "y_" + p.key[2:], len(class_names), where)
    dropped = sum(_finish_part(p, where, drop_nonfinite, None, labelled) for p in parts)
    return NpzClips(arc.path, "npz-ctrgcn", parts[0].x.shape[1:], parts, class_names, False,
                    dropped, arc)


def _class_names(arc: _Archive, where: str, labels: list[np.ndarray], num_classes: int | None,
                 ntu_names: bool = False) -> list[str]:
    if arc.has("class_names"):
        names = arc.get("class_names")
        if names.ndim == 1:
            LIMITS.check("classes", names.shape[0], f"{where}: array 'class_names'")
        class_names = _string_array(names, "class_names", where)
        if not class_names:
            raise UserInputError(f"{where}: array 'class_names' is empty; give one name per class")
        if num_classes is not None and len(class_names) != num_classes:
            raise UserInputError(f"{where}: class_names has {len(class_names)} names for "
                                 f"{num_classes} classes")
        return class_names
    k = num_classes if num_classes is not None else _implied_classes(labels, where)
    if k == 0:
        raise UserInputError(f"{where}: no labels; the input holds no samples")
    if ntu_names and k in (60, 120):
        return list(NTU_ACTION_NAMES[:k])
    return [f"class_{c}" for c in range(k)]


def _read_generic(arc: _Archive, where: str, labelled: bool, drop_nonfinite: bool) -> NpzClips:
    if labelled and not arc.has("y"):
        raise UserInputError(f"{where}: no array 'y' (found: {', '.join(arc.keys[:8])}); the "
                             f"generic layout needs x (N, C, T, V, M) and y (N,)")
    x = arc.get("x")
    _check_numeric(x, "x", where)
    if x.ndim != 5:
        raise UserInputError(f"{where}: array 'x' has shape {x.shape} (rank {x.ndim}), "
                             f"expected (N, C, T, V, M) (rank 5)")
    n, c, t, v, m = x.shape
    _check_sizes(where, "x", n, c, t, v, m)
    part = NpzPart("x", x, [f"{i:06d}" for i in range(n)], np.zeros(0, np.int64),
                   np.zeros(0, np.int64))
    class_names = None
    if labelled:
        y = arc.get("y")
        if y.ndim != 1:
            raise UserInputError(f"{where}: array 'y' has shape {y.shape}, expected ({n},) "
                                 f"class indices")
        part.labels, _ = _labels_from(y, "y", n, where)
        class_names = _class_names(arc, where, [part.labels], None)
        _check_label_range(part.labels, "y", len(class_names), where)
        if arc.has("split"):
            names = np.array(_string_array(arc.get("split"), "split", where, size=n))
            unknown = sorted(set(names.tolist()) - {"train", "val", "test"})
            if unknown:
                raise UserInputError(f"{where}: array 'split' holds {unknown[:3]}; allowed "
                                     f"values are train, val, test")
            part.split = names
        if arc.has("subject"):
            part.subjects = read_subjects(arc.get("subject"), n, where)
    lengths = read_lengths(arc.get("length"), n, t, where) if arc.has("length") else None
    dropped = _finish_part(part, where, drop_nonfinite, lengths, labelled)
    return NpzClips(arc.path, "npz-generic", (c, t, v, m), [part], class_names,
                    lengths is not None, dropped, arc)


# ----------------------------------------------------------------------------------------------
# Import


def choose_layout(num_joints: int, kind: str, layout_file: str | os.PathLike | None,
                  request: NormalisationRequest, where: str
                  ) -> tuple[SkeletonLayout, Normalisation, list[str]]:
    """The layout and normalisation of an import, and notes saying how they were chosen.

    CTR-GCN files are NTU-25. A generic file takes `layout_file` when given, else a layout
    recognised by its joint count (`KNOWN_LAYOUTS`, said in a note), else `generic-V` centred on
    joint 0 (with a warning note). `request` (the --center-joint / --scale flags) overrides.
    """
    notes: list[str] = []
    if layout_file is not None:
        layout = read_layout_file(layout_file, num_joints)
    elif kind == "npz-ctrgcn":
        layout = NTU25_LAYOUT
    elif num_joints in KNOWN_LAYOUTS:
        layout = KNOWN_LAYOUTS[num_joints]
        if request.center_joint is None:
            notes.append(
                f"{num_joints} joints: assuming layout {layout.name} (centre joint "
                f"{layout.center_joint}, {layout.joint_names[layout.center_joint]}); pass "
                f"--center-joint N or --layout FILE if the joints are in another order"
            )
    else:
        layout = generic_layout(num_joints)
        if request.center_joint is None:
            notes.append(
                f"warning: no known layout has {num_joints} joints: centring on joint 0; pass "
                f"--center-joint N (e.g. the hip or spine joint) or --layout FILE"
            )
    layout, normalisation = request.resolve(layout, where)
    return layout, normalisation, notes


def prepare_npz(
    file: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = VAL_FRACTION,
    seed: int = 0,
    *,
    val_per_class: int | None = None,
    val_subjects: int | None = None,
    test_fraction: float = 0.2,
    drop_nonfinite: bool = False,
    overwrite: bool = False,
    normalise: NormalisationRequest = NormalisationRequest(),
    layout_file: str | os.PathLike | None = None,
) -> Path:
    """Import a CTR-GCN/STTFormer or generic .npz file (layout detected from its keys).

    Every clip is normalised (`normalise`, see `choose_layout` for the defaults) and the
    validation split is carved per class from train (`splits.carve_validation` with
    `val_per_class` / `val_fraction`), or by subject with `val_subjects` (the file's `subject`
    array), unless the file's split array has val entries.
    """
    with read_npz(file, drop_nonfinite=drop_nonfinite) as data:
        where = f"file {data.path}"
        c, t, v, m = data.shape
        layout, normalisation, notes = choose_layout(v, data.kind, layout_file, normalise, where)
        # Fail on the output directory before the long part, not after.
        writer = DatasetWriter(out_dir, layout, data.class_names, max_persons=m, max_frames=t,
                               num_channels=c, overwrite=overwrite, normalisation=normalisation,
                               required_splits=("train", "val"))
        for note in notes:
            print(f"raysearch: {note}", file=sys.stderr)
        assignments, how = _assign_splits(data, seed, val_per_class, val_fraction, val_subjects, test_fraction)
        source = {
            "importer": data.kind, "file": str(data.path.resolve()), "seed": seed,
            "val_per_class": val_per_class, "val_fraction": val_fraction, "val_subjects": val_subjects,
            "dropped_nonfinite": data.dropped_nonfinite, "splits": how,
            "preprocessing": {
                "normalisation": normalisation.describe(layout),
                "frames": "valid length from 'length'" if data.lengths_given
                          else "valid length = up to the last nonzero frame",
                **({"layout": "(N, T, M*V*C) -> (N, C, T, V, M)"}
                   if data.kind == "npz-ctrgcn" else {}),
            },
            **({"notes": notes} if notes else {}),
        }
        if data.kind == "npz-generic":
            source["test_fraction"] = test_fraction
        with writer:
            for split, part, idx in assignments:
                for i in idx.tolist():
                    writer.add(split, normalisation.apply(part.clip(i)), int(part.labels[i]), part.ids[i],
                               subject=-1 if part.subjects is None else int(part.subjects[i]))
            return writer.finish(source)


def _assign_splits(data: NpzClips, seed: int, val_per_class: int | None, val_fraction: float,
                   val_subjects: int | None,
                   test_fraction: float) -> tuple[list[tuple[str, NpzPart, np.ndarray]], str]:
    """(split, part, sample indices) triples and the rule used, in words."""
    where = f"file {data.path}"
    if val_subjects is not None and val_per_class is not None:
        raise UserInputError("--val-subjects and --val-per-class: choose one way to carve validation")
    if val_subjects is not None and data.parts[0].subjects is None:
        raise UserInputError(f"{where}: --val-subjects needs an array 'subject' of (N,) subject ids, and the file "
                             "has none; add one, or carve per class with --val-per-class")
    if val_subjects is not None and data.parts[0].split is not None and (data.parts[0].split == "val").any():
        raise UserInputError(f"{where}: its array 'split' already names val clips; drop them or --val-subjects")

    def carve(part: NpzPart, idx: np.ndarray, carve_seed: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(train, val, the rule in words) of the training clips `idx`."""
        if val_subjects is not None:
            keep, held, chosen = carve_validation_by_subject(part.labels[idx], part.subjects[idx], val_subjects,
                                                             carve_seed)
            return idx[keep], idx[held], subject_carve_rule(val_subjects, chosen)
        keep, held = carve_validation(part.labels[idx], carve_seed, val_per_class, val_fraction)
        return idx[keep], idx[held], carve_rule(val_per_class, val_fraction)

    if data.kind == "npz-ctrgcn":
        train, test = data.parts
        train_idx, val_idx, rule = carve(train, train.keep, seed)
        return ([("train", train, train_idx), ("val", train, val_idx), ("test", test, test.keep)],
                f"x_train -> train + val ({rule}); x_test -> test")
    part = data.parts[0]
    keep_all = part.keep
    if part.split is not None:
        names = part.split[keep_all]
        train_idx, val_idx = keep_all[names == "train"], keep_all[names == "val"]
        test_idx = keep_all[names == "test"]
        how = "split array"
        if val_idx.size == 0:
            train_idx, val_idx, rule = carve(part, train_idx, seed)
            how += f"; val carved from train ({rule})"
    else:
        rest, held_test = stratified_split(part.labels[keep_all], test_fraction, seed)
        test_idx = keep_all[held_test]
        train_idx, val_idx, rule = carve(part, keep_all[rest], seed + 1)
        how = f"no split array: test = {test_fraction} of every class; val: {rule}"
    return [("train", part, train_idx), ("val", part, val_idx), ("test", part, test_idx)], how
