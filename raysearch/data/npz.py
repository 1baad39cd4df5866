"""`.npz` importer for two layouts (never unpickles: `allow_pickle=False` throughout).

CTR-GCN / STTFormer (keys x_train, y_train, x_test, y_test):
    x_*  (N, T, M*V*C) with V = 25, C = 3, i.e. per frame 2 persons x 25 joints x xyz;
         reshaped (N, T, M, V, C) -> (N, C, T, V, M). Zero frames pad the end of each sample.
    y_*  one-hot (N, K), or class indices (N,).
    Valid length = frames up to the last frame with any nonzero value. Val is carved from train.
Generic (key x):
    x     (N, C, T, V, M) numeric, any V and M;   y (N,) integer class indices
    split (N,) strings train/val/test, optional   length (N,) valid frames, optional
    class_names (K,) strings, optional
    Without `split`, a seeded `test_fraction` of every class becomes test; without any val
    entry, `val_fraction` of every class of train becomes val. Without `length`, the valid
    length is found as in the CTR-GCN layout. Layout "generic-V": joints j0.., no bones.

Uncompressed archives (what `np.savez` writes; CTR-GCN's NTU files are several GB) are
memory-mapped member by member, so importing does not need the data to fit in RAM.
Non-finite joints are refused, naming how many samples and the first one; pass
`drop_nonfinite=True` to drop those samples instead (their count goes into the manifest).
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysearch.data.format import DatasetWriter
from raysearch.data.layouts import NTU25_LAYOUT, SkeletonLayout, generic_layout
from raysearch.data.ntu import NTU_ACTION_NAMES
from raysearch.data.splits import stratified_split
from raysearch.errors import UserInputError

_CHUNK = 256  # samples per vectorised validation step


class _Archive:
    """Members of an .npz, memory-mapped when stored uncompressed, else read into memory."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise UserInputError(f"file {path}: does not exist; check the path")
        if not path.is_file():
            raise UserInputError(f"file {path}: is a directory, expected an .npz file")
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise UserInputError(
                f"file {path}: not a readable .npz archive ({e}); save it with numpy.savez"
            ) from None
        self.keys = [n[:-4] for n in self._zip.namelist() if n.endswith(".npy")]

    def close(self) -> None:
        self._zip.close()

    def has(self, key: str) -> bool:
        return key in self.keys

    def get(self, key: str) -> np.ndarray:
        try:
            array = self._mmap(key)
            if array is None:
                with np.load(self.path, allow_pickle=False) as npz:
                    array = npz[key]
        except UserInputError:
            raise
        except ValueError as e:
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise self._pickle_error(key) from None
            raise UserInputError(f"file {self.path}: array '{key}' cannot be read ({e})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise UserInputError(
                f"file {self.path}: array '{key}' is damaged ({e}); re-create the file"
            ) from None
        if array.dtype.hasobject:
            raise self._pickle_error(key)
        return array

    def _pickle_error(self, key: str) -> UserInputError:
        return UserInputError(
            f"file {self.path}: array '{key}' holds Python objects (pickle); re-save with "
            f"numeric dtypes (and fixed-width strings for names)"
        )

    def _mmap(self, key: str) -> np.ndarray | None:
        """A read-only memmap of a stored (uncompressed) member, or None to load it instead."""
        info = self._zip.getinfo(key + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            f.seek(start)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                return None
            offset = f.tell()
        if dtype.hasobject:
            raise self._pickle_error(key)
        if int(np.prod(shape)) == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")


@dataclass
class _Part:
    """One importable block: x (N, C, T, V, M) (possibly lazily reshaped), labels, ids."""

    x_name: str
    x: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray | None
    ids: list[str]
    keep: np.ndarray | None = None  # samples that are written (non-finite ones may be dropped)


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


def _valid_lengths(x: np.ndarray, where: str, drop: set[int]) -> np.ndarray:
    """Frames up to the last nonzero frame of each sample; x (N, C, T, V, M)."""
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
        labels = np.argmax(y, axis=1)
        hot = y[np.arange(n), labels]
        if n and not (np.all(hot == 1) and np.all(y.sum(axis=1) == 1)):
            row = int(np.flatnonzero((hot != 1) | (y.sum(axis=1) != 1))[0])
            raise UserInputError(f"{where}: array '{key}' is not one-hot (row {row}); give "
                                 f"(N, K) one-hot rows or (N,) class indices")
        return labels.astype(np.int64), int(y.shape[1])
    if y.ndim == 1:
        if y.shape[0] != n:
            raise UserInputError(f"{where}: array '{key}' has {y.shape[0]} labels, x has {n}")
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise UserInputError(f"{where}: array '{key}' holds non-integer labels")
        return y.astype(np.int64), None
    raise UserInputError(f"{where}: array '{key}' has shape {y.shape}, expected (N,) class "
                         f"indices or (N, K) one-hot")


def _check_label_range(labels: np.ndarray, key: str, k: int, where: str) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        raise UserInputError(
            f"{where}: array '{key}' has {bad.size} labels outside 0..{k - 1} (first: "
            f"{labels[bad[0]]} at index {bad[0]}); labels must be class indices from 0"
        )


def _string_array(array: np.ndarray, key: str, where: str) -> list[str]:
    if array.dtype.kind not in "US" or array.ndim != 1:
        raise UserInputError(f"{where}: array '{key}' must be a 1-D array of strings, got "
                             f"dtype {array.dtype} shape {array.shape}")
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist()]


def _load_ctrgcn(arc: _Archive, where: str) -> tuple[list[_Part], int, SkeletonLayout, list]:
    parts = []
    num_classes = None
    for side in ("train", "test"):
        for key in (f"x_{side}", f"y_{side}"):
            if not arc.has(key):
                raise UserInputError(
                    f"{where}: no array '{key}' (found: {', '.join(arc.keys)}); the CTR-GCN "
                    f"layout needs x_train, y_train, x_test, y_test"
                )
        x = arc.get(f"x_{side}")
        _check_numeric(x, f"x_{side}", where)
        if x.ndim != 3 or x.shape[2] % 75 or x.shape[2] == 0:
            raise UserInputError(
                f"{where}: array 'x_{side}' has shape {x.shape}, expected (N, T, 150) = "
                f"(samples, frames, persons x 25 joints x 3 coords)"
            )
        n, t, d = x.shape
        m = d // 75
        # (N, T, M*V*C) -> (N, T, M, V, C) -> (N, C, T, V, M): a view, nothing is copied yet.
        x5 = x.reshape(n, t, m, 25, 3).transpose(0, 4, 1, 3, 2)
        labels, k = _labels_from(arc.get(f"y_{side}"), f"y_{side}", n, where)
        if k is not None:
            if num_classes is not None and k != num_classes:
                raise UserInputError(f"{where}: y_train and y_test have {num_classes} and {k} "
                                     f"classes; they must agree")
            num_classes = k
        parts.append(_Part(f"x_{side}", x5, labels, None,
                           [f"{side}-{i:06d}" for i in range(n)]))
    if num_classes is None:
        num_classes = int(max(p.labels.max(initial=-1) for p in parts)) + 1
    for p in parts:
        _check_label_range(p.labels, "y_" + p.x_name[2:], num_classes, where)
    if arc.has("class_names"):
        class_names = _string_array(arc.get("class_names"), "class_names", where)
    elif num_classes in (60, 120):
        class_names = list(NTU_ACTION_NAMES[:num_classes])
    else:
        class_names = [f"class_{c}" for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise UserInputError(f"{where}: class_names has {len(class_names)} names for "
                             f"{num_classes} classes")
    return parts, num_classes, NTU25_LAYOUT, class_names


def prepare_npz(
    file: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.05,
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    drop_nonfinite: bool = False,
    overwrite: bool = False,
) -> Path:
    """Import a CTR-GCN/STTFormer or generic .npz file (layout detected from its keys)."""
    path = Path(file)
    where = f"file {path}"
    arc = _Archive(path)
    try:
        if arc.has("x_train"):
            return _prepare_ctrgcn(arc, where, out_dir, val_fraction, seed, drop_nonfinite,
                                   overwrite)
        if arc.has("x"):
            return _prepare_generic(arc, where, out_dir, val_fraction, test_fraction, seed,
                                    drop_nonfinite, overwrite)
        raise UserInputError(
            f"{where}: found arrays {', '.join(arc.keys) or 'none'}; expected x_train/y_train/"
            f"x_test/y_test (CTR-GCN layout) or x/y (generic layout)"
        )
    finally:
        arc.close()


def _drop_set(part: _Part, where: str, drop_nonfinite: bool) -> set[int]:
    bad = _nonfinite(part.x)
    if bad.size and not drop_nonfinite:
        raise UserInputError(
            f"{where}: array '{part.x_name}' has NaN/Inf in {bad.size} samples (first: index "
            f"{bad[0]}); clean them, or drop them with --drop-nonfinite"
        )
    return set(bad.tolist())


def _write(
    out_dir: str | os.PathLike,
    layout: SkeletonLayout,
    class_names: list[str],
    shape: tuple[int, int, int, int],
    assignments: list[tuple[str, _Part, np.ndarray]],
    source: dict,
    overwrite: bool,
) -> Path:
    """Stream (split, part, indices) assignments into a dataset; shape is (C, T, V, M)."""
    c, t, _, m = shape
    with DatasetWriter(out_dir, layout, class_names, max_persons=m, max_frames=t,
                       num_channels=c, overwrite=overwrite) as writer:
        for split, part, idx in assignments:
            for i in idx:
                length = int(part.lengths[i])
                writer.add(split, np.asarray(part.x[i, :, :length]), int(part.labels[i]),
                           part.ids[i])
        return writer.finish(source)


def _prepare_ctrgcn(
    arc: _Archive, where: str, out_dir: str | os.PathLike, val_fraction: float, seed: int,
    drop_nonfinite: bool, overwrite: bool,
) -> Path:
    parts, _, layout, class_names = _load_ctrgcn(arc, where)
    dropped = 0
    for p in parts:
        drop = _drop_set(p, where, drop_nonfinite)
        dropped += len(drop)
        p.lengths = _valid_lengths(p.x, f"{where}: array '{p.x_name}'", drop)
        p.keep = np.array(sorted(set(range(len(p.labels))) - drop), dtype=np.int64)
    train, test = parts
    keep, held = stratified_split(train.labels[train.keep], val_fraction, seed)
    assignments = [("train", train, train.keep[keep]), ("val", train, train.keep[held]),
                   ("test", test, test.keep)]
    source = {
        "importer": "npz-ctrgcn", "file": str(arc.path.resolve()), "val_fraction": val_fraction,
        "seed": seed, "dropped_nonfinite": dropped,
        "preprocessing": "(N, T, M*V*C) -> (N, C, T, V, M); valid length = up to the last "
                         "nonzero frame; val carved per class from train",
    }
    shape = parts[0].x.shape[1:]
    return _write(out_dir, layout, class_names, shape, assignments, source, overwrite)


def _prepare_generic(
    arc: _Archive, where: str, out_dir: str | os.PathLike, val_fraction: float,
    test_fraction: float, seed: int, drop_nonfinite: bool, overwrite: bool,
) -> Path:
    if not arc.has("y"):
        raise UserInputError(f"{where}: no array 'y' (found: {', '.join(arc.keys)}); the "
                             f"generic layout needs x (N, C, T, V, M) and y (N,)")
    x = arc.get("x")
    _check_numeric(x, "x", where)
    if x.ndim != 5:
        raise UserInputError(f"{where}: array 'x' has shape {x.shape} (rank {x.ndim}), "
                             f"expected (N, C, T, V, M) (rank 5)")
    n, c, t, v, m = x.shape
    if min(x.shape[1:]) == 0:
        raise UserInputError(f"{where}: array 'x' has an empty axis: shape {x.shape}")
    y = arc.get("y")
    if y.ndim != 1:
        raise UserInputError(f"{where}: array 'y' has shape {y.shape}, expected ({n},) class "
                             f"indices")
    labels, _ = _labels_from(y, "y", n, where)
    if arc.has("class_names"):
        class_names = _string_array(arc.get("class_names"), "class_names", where)
    else:
        class_names = [f"class_{k}" for k in range(int(labels.max(initial=0)) + 1)]
    _check_label_range(labels, "y", len(class_names), where)

    part = _Part("x", x, labels, None, [f"{i:06d}" for i in range(n)])
    drop = _drop_set(part, where, drop_nonfinite)
    if arc.has("length"):
        part.lengths = read_lengths(arc.get("length"), n, t, where)
    else:
        part.lengths = _valid_lengths(x, f"{where}: array 'x'", drop)

    keep_all = np.array(sorted(set(range(n)) - drop), dtype=np.int64)
    if arc.has("split"):
        names = np.array(_string_array(arc.get("split"), "split", where))
        if names.shape != (n,):
            raise UserInputError(f"{where}: array 'split' has {names.size} entries, x has {n}")
        unknown = sorted(set(names.tolist()) - {"train", "val", "test"})
        if unknown:
            raise UserInputError(f"{where}: array 'split' holds {unknown[:3]}; allowed values "
                                 f"are train, val, test")
        names = names[keep_all]
        train_idx = keep_all[names == "train"]
        test_idx = keep_all[names == "test"]
        val_idx = keep_all[names == "val"]
        if val_idx.size == 0:
            keep, held = stratified_split(labels[train_idx], val_fraction, seed)
            train_idx, val_idx = train_idx[keep], train_idx[held]
        how = "split array" + ("" if (names == "val").any() else "; val carved from train")
    else:
        rest, held_test = stratified_split(labels[keep_all], test_fraction, seed)
        test_idx = keep_all[held_test]
        keep, held = stratified_split(labels[keep_all[rest]], val_fraction, seed + 1)
        train_idx, val_idx = keep_all[rest][keep], keep_all[rest][held]
        how = f"no split array: test = {test_fraction} and val = {val_fraction} per class"
    assignments = [("train", part, train_idx), ("val", part, val_idx), ("test", part, test_idx)]
    source = {
        "importer": "npz-generic", "file": str(arc.path.resolve()), "val_fraction": val_fraction,
        "test_fraction": test_fraction, "seed": seed, "dropped_nonfinite": len(drop),
        "splits": how,
        "preprocessing": "valid length from 'length'" if arc.has("length")
                         else "valid length = up to the last nonzero frame",
    }
    return _write(out_dir, generic_layout(v), class_names, (c, t, v, m), assignments, source,
                  overwrite)
