"""Property tests of every data reader a user feeds (.npz, .skeleton, manifest.json): any generated
input either works or raises UserInputError with a one-line message; nothing else escapes, no
pickle is ever loaded, and each example stays within a time and memory bound."""

import io
import json
import shutil
import tempfile
import tracemalloc
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysearch.data.format import open_dataset
from raysearch.data.normalise import NormalisationRequest
from raysearch.data.npz import prepare_npz, read_npz
from raysearch.data.ntu import format_skeleton, parse_skeleton, parse_skeleton_reference, preprocess_skeleton
from raysearch.data.synthetic import prepare_synthetic
from raysearch.errors import UserInputError

FUZZ = settings(max_examples=60, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MAX_PEAK_BYTES = 64 << 20  # per example, as numpy reports its allocations to tracemalloc


@contextmanager
def scratch():
    path = Path(tempfile.mkdtemp(prefix="raysearch-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def works_or_one_line(call):
    """Run `call`; only UserInputError with a one-line message may escape; memory stays bounded."""
    tracemalloc.start()
    try:
        call()
    except UserInputError as error:
        message = str(error)
        assert message and "\n" not in message and len(message) < 2000, message
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, f"peak {peak / 2**20:.0f} MiB"


class _Payload:
    """Unpickling this would create the marker file: proof that a pickle was loaded."""

    marker = Path(tempfile.gettempdir()) / "raysearch-fuzz-pickle-ran"

    def __reduce__(self):
        return open, (str(self.marker), "w")


# -- .npz ------------------------------------------------------------------------------------------
KEYS = ["x", "y", "split", "length", "class_names", "subject", "x_train", "y_train", "x_test", "y_test", "other"]
DTYPES = ["float32", "float64", "int64", "uint8", "bool", "<U5", "S3", "complex64", "object", "float16"]


@st.composite
def arrays(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=5)))
    if draw(st.booleans()):  # shapes the readers expect, so that deeper checks run too
        shape = draw(st.sampled_from([(6, 3, 5, 20, 1), (6, 3, 5, 7, 2), (6,), (6, 4), (6, 5, 150), (6, 0, 150)]))
    size = int(np.prod(shape)) if shape else 1
    if dtype == "object":
        values = np.empty(size, dtype=object)
        for i in range(size):
            values[i] = _Payload() if i % 2 else i
        return values.reshape(shape)
    if dtype in ("<U5", "S3"):
        words = draw(st.lists(st.sampled_from(["train", "val", "test", "a", "", "dev"]), min_size=size,
                              max_size=size))
        return np.array(words, dtype=dtype).reshape(shape)
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    special = draw(st.sampled_from(["normal", "labels", "zeros", "nonfinite", "onehot"]))
    if special == "labels":
        values = rng.integers(-1, 8, size)
    elif special == "zeros":
        values = np.zeros(size)
    elif special == "onehot" and len(shape) == 2 and shape[1]:
        values = np.eye(shape[1])[rng.integers(0, shape[1], shape[0])].reshape(-1)
    else:
        values = rng.normal(0, 2, size)
        if special == "nonfinite" and size:
            values[rng.integers(0, size)] = [np.nan, np.inf, -np.inf][seed % 3]
    with np.errstate(invalid="ignore", over="ignore"):
        return values.astype(dtype).reshape(shape)


@FUZZ
@given(contents=st.dictionaries(st.sampled_from(KEYS), arrays(), max_size=6), compress=st.booleans(),
       labelled=st.booleans())
def test_npz_reader_and_import(contents, compress, labelled):
    with scratch() as tmp:
        file = tmp / "in.npz"
        (np.savez_compressed if compress else np.savez)(file, **contents)

        def run():
            with read_npz(file, labelled=labelled) as data:
                for part in data.parts:
                    for _, clip in part.clips():
                        assert clip.dtype == np.float32 and clip.ndim == 4
            if labelled:
                prepare_npz(file, tmp / "out", normalise=NormalisationRequest(scale="body"))

        works_or_one_line(run)
        if labelled:  # validation by subject reads the optional array 'subject'
            works_or_one_line(lambda: prepare_npz(file, tmp / "by-subject", val_subjects=1))
    assert not _Payload.marker.exists()


def valid_npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x=rng.normal(size=(8, 3, 4, 20, 1)).astype(np.float32), y=np.arange(8) % 2,
             length=np.full(8, 4), class_names=np.array(["a", "b"]))
    return buffer.getvalue()


VALID_NPZ = valid_npz_bytes()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.integers(0, len(VALID_NPZ)))
def test_npz_with_corrupted_bytes(edits, cut):
    data = bytearray(VALID_NPZ)
    for position, value in edits:
        data[position] = value
    with scratch() as tmp:
        file = tmp / "in.npz"
        file.write_bytes(bytes(data[:cut] if cut is not None else data))
        works_or_one_line(lambda: prepare_npz(file, tmp / "out"))


@FUZZ
@given(shape=st.lists(st.integers(0, 2**40), min_size=1, max_size=5), descr=st.sampled_from(["<f4", "|O", "<U0", "|V8"]))
def test_npz_header_promising_more_than_the_archive_holds(shape, descr):
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 64)
    with scratch() as tmp:
        file = tmp / "in.npz"
        with zipfile.ZipFile(file, "w") as archive:
            archive.writestr("x.npy", member.getvalue())
            archive.writestr("y.npy", member.getvalue())
        works_or_one_line(lambda: prepare_npz(file, tmp / "out"))


# -- .skeleton -------------------------------------------------------------------------------------
def valid_skeleton_text() -> str:
    rng = np.random.default_rng(1)
    bodies = [(t, "72057594037931101", rng.normal(0, 0.3, (25, 3)) + [0, 0, 3]) for t in range(3)]
    bodies += [(t, "72057594037931102", rng.normal(0, 0.3, (25, 3)) + [1, 0, 3]) for t in (1, 2)]
    return format_skeleton(3, bodies).decode()


VALID_SKELETON = valid_skeleton_text().splitlines()
TOKENS = st.sampled_from(["0", "1", "2", "25", "-1", "nan", "inf", "1e308", "999999999999", "x", "", " ",
                          "0.5 0.5 0.5", "1 2 3 4 5 6 7 8 9 10", "\t"])


@st.composite
def skeleton_texts(draw):
    lines = list(VALID_SKELETON)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "delete", "insert", "token"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if kind == "delete" and lines:
            del lines[i]
        elif kind == "insert":
            lines.insert(i, draw(TOKENS))
        elif kind == "replace" and lines:
            lines[i] = draw(TOKENS)
        elif lines:
            fields = lines[i].split()
            if fields:
                fields[draw(st.integers(0, len(fields) - 1))] = draw(TOKENS)
            lines[i] = " ".join(fields)
    return "\r\n".join(lines) + draw(st.sampled_from(["", "\r\n", "\n\n", "junk"]))


@FUZZ
@given(text=skeleton_texts() | st.text(alphabet="0123456789 .-e\n\r", max_size=300))
def test_skeleton_parsers(text):
    with scratch() as tmp:
        file = tmp / "S001C001P001R001A001.skeleton"
        file.write_text(text)

        def run():
            parsed = parse_skeleton(file)
            reference = parse_skeleton_reference(file)
            assert parsed.equals(reference)  # the fast path never answers differently
            if parsed.body_ids and parsed.joints.shape[1] == 25:
                x, _ = preprocess_skeleton(parsed)
                assert x is None or (x.shape[0] == 3 and np.isfinite(x).all())

        works_or_one_line(run)


# -- manifest.json ---------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def dataset_template(tmp_path_factory):
    return prepare_synthetic(tmp_path_factory.mktemp("fuzz-data") / "ds", num_classes=3, per_class=20, max_frames=8)


def manifest_paths(manifest, prefix=()):
    if isinstance(manifest, dict):
        for key, value in manifest.items():
            yield prefix + (key,)
            yield from manifest_paths(value, prefix + (key,))


@FUZZ
@given(data=st.data())
def test_manifest_reader(dataset_template, data):
    manifest = json.loads((dataset_template / "manifest.json").read_text())
    if data.draw(st.booleans()):
        paths = list(manifest_paths(manifest))
        for _ in range(data.draw(st.integers(1, 3))):
            path = data.draw(st.sampled_from(paths))
            node = manifest
            for key in path[:-1]:
                node = node[key] if isinstance(node, dict) and key in node else None
            if isinstance(node, dict):
                node[path[-1]] = data.draw(JSON)
        text = json.dumps(manifest)
    else:
        text = json.dumps(data.draw(JSON))
    with scratch() as tmp:
        copy = Path(shutil.copytree(dataset_template, tmp / "ds"))
        (copy / "manifest.json").write_text(text)

        def run():
            ds = open_dataset(copy)
            for name in ds.split_names:
                view = ds.split(name)
                for i in range(len(view)):
                    assert view.joints(i).shape[1] == view.num_frames[i]

        works_or_one_line(run)
