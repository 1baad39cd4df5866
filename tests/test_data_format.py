"""Dataset directory: round trip, zero-copy reads, safe writes and one-line errors."""

import json
import pickle

import numpy as np
import pytest

from raysearch.data.format import (
    FORMAT_VERSION,
    DatasetWriter,
    SplitData,
    open_dataset,
    write_dataset,
)
from raysearch.data.layouts import NTU25_LAYOUT, generic_layout
from raysearch.errors import UserInputError


def make_split(n, seed, num_joints=5, max_frames=12, persons=2):
    rng = np.random.default_rng(seed)
    joints = []
    for _ in range(n):
        x = rng.standard_normal((3, int(rng.integers(1, max_frames + 1)), num_joints, persons))
        if persons > 1 and rng.random() < 0.5:
            x[..., 1] = 0  # second person absent
        joints.append(x.astype(np.float32))
    return SplitData(
        joints=joints,
        labels=rng.integers(0, 3, n),
        sample_ids=[f"s{seed}-{i}" for i in range(n)],
        subject=rng.integers(1, 9, n),
    )


@pytest.fixture
def small(tmp_path):
    splits = {"train": make_split(40, 0), "val": make_split(7, 1), "test": make_split(9, 2)}
    path = write_dataset(tmp_path / "ds", generic_layout(5), ["a", "b", "c"], splits,
                         {"importer": "test"}, max_frames=12)
    return path, splits


def test_round_trip_preserves_every_column(small):
    path, splits = small
    ds = open_dataset(path)
    assert ds.num_joints == 5 and ds.max_persons == 2 and ds.num_classes == 3
    assert ds.class_names == ("a", "b", "c")
    assert ds.manifest.max_frames == 12 and ds.manifest.source == {"importer": "test"}
    for name, data in splits.items():
        view = ds.split(name)
        assert len(view) == len(data) == ds.manifest.splits[name].count
        assert view.sample_ids == data.sample_ids
        np.testing.assert_array_equal(view.labels, data.labels)
        np.testing.assert_array_equal(view.subject, data.subject)
        np.testing.assert_array_equal(view.camera, -1)
        for i, x in enumerate(data.joints):
            assert view.num_frames[i] == x.shape[1]
            assert view.num_persons[i] == int(np.any(x[..., 0] != 0)) + int(np.any(x[..., 1] != 0))
            np.testing.assert_array_equal(view.joints(i), x)


def test_joints_are_zero_copy_views_of_the_memory_map(small):
    view = open_dataset(small[0]).split("train")
    a, b = view.joints(3), view.joints(3)
    assert a.dtype == np.float32 and a.shape == small[1]["train"].joints[3].shape
    assert not a.flags.owndata and not a.flags.writeable
    assert np.shares_memory(a, b)
    # Neighbouring samples live in the same mapped buffer (one record batch).
    assert np.shares_memory(view._values[0], a)


def test_many_record_batches_round_trip(tmp_path):
    data = make_split(1300, 5, num_joints=3, max_frames=4, persons=1)  # > one writer batch
    path = write_dataset(tmp_path / "big", generic_layout(3), ["a", "b", "c"],
                         {"train": data}, {})
    view = open_dataset(path).split("train")
    for i in (0, 511, 512, 1024, 1299):
        np.testing.assert_array_equal(view.joints(i), data.joints[i])


def test_split_view_and_dataset_dir_pickle_without_the_mmap(small):
    ds = open_dataset(small[0])
    view = ds.split("val")
    clone = pickle.loads(pickle.dumps(view))
    np.testing.assert_array_equal(clone.joints(2), view.joints(2))
    assert len(pickle.dumps(view)) < 10_000  # path + manifest only, no sample data
    assert pickle.loads(pickle.dumps(ds)).split("val").sample_ids == view.sample_ids


def test_from_padded_keeps_only_valid_frames(tmp_path):
    x = np.arange(2 * 3 * 6 * 4 * 1, dtype=np.float32).reshape(2, 3, 6, 4, 1)
    data = SplitData.from_padded(x, np.array([2, 6]), np.array([0, 1]))
    path = write_dataset(tmp_path / "p", generic_layout(4), ["a", "b"], {"train": data}, {})
    view = open_dataset(path).split("train")
    np.testing.assert_array_equal(view.num_frames, [2, 6])
    np.testing.assert_array_equal(view.joints(0), x[0, :, :2])


def test_refuses_a_non_empty_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty and is not a raysearch dataset"):
        write_dataset(tmp_path, generic_layout(5), ["a", "b", "c"], {"train": make_split(3, 0)}, {})
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_needs_the_flag_and_replaces_the_dataset(small):
    path, _ = small
    with pytest.raises(UserInputError, match="already holds a raysearch dataset.*overwrite"):
        write_dataset(path, generic_layout(5), ["a", "b", "c"], {"train": make_split(3, 9)}, {})
    write_dataset(path, generic_layout(5), ["a", "b", "c"], {"train": make_split(3, 9)}, {},
                  overwrite=True)
    ds = open_dataset(path)
    assert ds.split_names == ["train"] and len(ds.split("train")) == 3
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "train.arrow"]


def test_a_failed_write_leaves_the_previous_dataset_intact(small):
    path, splits = small
    before = (path / "manifest.json").read_text()
    with pytest.raises(RuntimeError):
        with DatasetWriter(path, generic_layout(5), ["a", "b", "c"], max_persons=2,
                           max_frames=12, overwrite=True) as writer:
            writer.add("train", splits["train"].joints[0], 0, "x")
            raise RuntimeError("crash in the middle of an import")
    assert (path / "manifest.json").read_text() == before
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json", "test.arrow", "train.arrow", "val.arrow"]
    np.testing.assert_array_equal(open_dataset(path).split("train").joints(0),
                                  splits["train"].joints[0])


def test_writer_checks_samples(tmp_path):
    with DatasetWriter(tmp_path / "w", NTU25_LAYOUT, ["a"], max_persons=2, max_frames=10) as w:
        with pytest.raises(UserInputError, match="sample 'bad-shape'.*expected \\(C=3, T, V=25, M=2\\)"):
            w.add("train", np.zeros((3, 4, 24, 2)), 0, "bad-shape")
        with pytest.raises(UserInputError, match="sample 'nan'.*NaN or Inf"):
            w.add("train", np.full((3, 4, 25, 2), np.nan), 0, "nan")
        with pytest.raises(UserInputError, match="sample 'label'.*label 3 is outside 0..0"):
            w.add("train", np.zeros((3, 4, 25, 2)), 3, "label")
        with pytest.raises(UserInputError, match="sample 'long'.*11 frames, expected 1..10"):
            w.add("train", np.zeros((3, 11, 25, 2)), 0, "long")


def test_error_missing_directory(tmp_path):
    with pytest.raises(UserInputError, match=f"dataset directory {tmp_path / 'nope'} does not exist"):
        open_dataset(tmp_path / "nope")


def test_error_missing_manifest(tmp_path):
    with pytest.raises(UserInputError, match="has no manifest.json"):
        open_dataset(tmp_path)


def test_error_corrupt_manifest_json(small):
    path, _ = small
    (path / "manifest.json").write_text('{"format_version": 1,')
    with pytest.raises(UserInputError, match=r"manifest.json: not valid JSON \(line 1"):
        open_dataset(path)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda m: m.pop("class_names"), "'class_names' is missing"),
        (lambda m: m["layout"].__setitem__("num_joints", "25"), "'layout.num_joints' must be"),
        (lambda m: m["layout"].__setitem__("center_joint", 99), "'layout.center_joint' must be"),
        (lambda m: m["splits"]["val"].pop("count"), "'splits.val.count' is missing"),
        (lambda m: m["splits"]["val"].__setitem__("file", "../x.arrow"), "'splits.val.file'"),
        (lambda m: m.__setitem__("max_persons", 0), "'max_persons' must be an integer >= 1"),
    ],
)
def test_error_manifest_field_is_named(small, edit, field):
    path, _ = small
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=field) as info:
        open_dataset(path)
    assert "\n" not in str(info.value) and "manifest.json" in str(info.value)


def test_error_format_version_mismatch(small):
    path, _ = small
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match=f"format_version {FORMAT_VERSION + 1} is not supported"):
        open_dataset(path)


def test_error_unknown_split_lists_available(small):
    with pytest.raises(UserInputError, match="no split 'dev'; available: train, val, test"):
        open_dataset(small[0]).split("dev")


def test_error_count_mismatch_and_damaged_arrow(small):
    path, _ = small
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["splits"]["val"]["count"] = 8
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="val.arrow: 7 rows but manifest.json says 8"):
        open_dataset(path).split("val")
    (path / "test.arrow").write_bytes(b"not arrow")
    with pytest.raises(UserInputError, match="test.arrow: not a readable Arrow IPC file"):
        open_dataset(path).split("test")
