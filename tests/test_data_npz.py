"""`.npz` import: both layouts, and a one-line error for every bad input."""

import json

import numpy as np
import pytest

from raysearch.data.format import open_dataset
from raysearch.data.normalise import Normalisation, NormalisationRequest
from raysearch.data.npz import prepare_npz
from raysearch.errors import UserInputError


def ctrgcn_arrays(n=24, t=40, classes=60, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, t, 150), np.float32)
    lengths = rng.integers(5, t + 1, n)
    for i in range(n):
        x[i, : lengths[i], :75] = rng.standard_normal((lengths[i], 75))  # person 1
        if i % 3 == 0:
            x[i, : lengths[i], 75:] = rng.standard_normal((lengths[i], 75))  # person 2
    labels = np.arange(n) % 4
    return x, np.eye(classes, dtype=np.float32)[labels], lengths, labels


def generic_arrays(n=30, c=2, t=16, v=17, m=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, t, v, m)).astype(np.float32)
    return x, np.arange(n) % 5


def test_ctrgcn_layout(tmp_path):
    x, y, lengths, labels = ctrgcn_arrays()
    np.savez(tmp_path / "ntu.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    ds = open_dataset(prepare_npz(tmp_path / "ntu.npz", tmp_path / "out", val_fraction=0.2))
    assert ds.layout.name == "ntu-25" and ds.num_classes == 60 and ds.max_persons == 2
    assert ds.class_names[1] == "eat meal/snack" and ds.manifest.max_frames == 40
    assert len(ds.split("train")) + len(ds.split("val")) == 24 and len(ds.split("test")) == 6
    # 6 training clips per class: max(2, round(0.2 * 6)) = 2 each go to val.
    assert np.bincount(ds.split("val").labels).tolist() == [2, 2, 2, 2]
    assert ds.manifest.normalisation == Normalisation(center_joint=1)  # NTU: spine_mid
    test = ds.split("test")
    for i in range(6):
        assert test.sample_ids[i] == f"test-{i:06d}" and test.labels[i] == labels[i]
        assert test.num_frames[i] == lengths[i]
        expected = x[i, : lengths[i]].reshape(lengths[i], 2, 25, 3).transpose(3, 0, 2, 1)
        np.testing.assert_array_equal(test.joints(i), Normalisation(1).apply(expected))
        assert test.num_persons[i] == (2 if i % 3 == 0 else 1)


def test_generic_layout_with_split_length_and_names(tmp_path):
    x, y = generic_arrays()
    split = np.array(["train"] * 18 + ["val"] * 5 + ["test"] * 7)
    length = np.full(30, 16)
    length[0] = 9
    names = np.array(["a", "b", "c", "d", "e"])
    np.savez_compressed(tmp_path / "g.npz", x=x, y=y, split=split, length=length, class_names=names)
    ds = open_dataset(prepare_npz(tmp_path / "g.npz", tmp_path / "out",
                                  normalise=NormalisationRequest(center_joint="none")))
    assert ds.layout.name == "generic-17" and ds.layout.bones == () and ds.layout.joint_names[3] == "j3"
    assert (ds.num_channels, ds.num_joints, ds.max_persons) == (2, 17, 3)
    assert ds.class_names == tuple(names)
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [18, 5, 7]
    train = ds.split("train")
    assert train.num_frames[0] == 9
    np.testing.assert_array_equal(train.joints(0), x[0, :, :9])


def test_generic_layout_without_split_carves_test_and_val(tmp_path):
    x, y = generic_arrays(n=50)
    x[3, :, 10:] = 0  # valid length 10, found from the trailing zero frames
    np.savez(tmp_path / "g.npz", x=x, y=y)
    ds = open_dataset(prepare_npz(tmp_path / "g.npz", tmp_path / "out", val_fraction=0.1,
                                  test_fraction=0.2))
    counts = {s: np.bincount(ds.split(s).labels, minlength=5).tolist() for s in ds.split_names}
    # 8 clips per class left after test: max(2, round(0.1 * 8)) = 2 go to val.
    assert counts == {"train": [6] * 5, "val": [2] * 5, "test": [2] * 5}
    views = [ds.split(s) for s in ds.split_names]
    where = [(v, v.sample_ids.index("000003")) for v in views if "000003" in v.sample_ids][0]
    assert where[0].num_frames[where[1]] == 10


def expect_error(tmp_path, pattern, **arrays):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserInputError, match=pattern) as info:
        prepare_npz(tmp_path / "bad.npz", tmp_path / "out")
    message = str(info.value)
    assert "\n" not in message and "bad.npz" in message


def test_error_pickled_object_array(tmp_path):
    x, y = generic_arrays()
    expect_error(tmp_path, "array 'split' holds Python objects \\(pickle\\); re-save with numeric",
                 x=x, y=y, split=np.array(["train", 3] * 15, dtype=object))


def test_error_wrong_rank(tmp_path):
    x, y = generic_arrays()
    expect_error(tmp_path, r"array 'x' has shape \(30, 2, 16, 17\) \(rank 4\), expected \(N, C, T, V, M\)",
                 x=x[..., 0], y=y)
    xc, yc, _, _ = ctrgcn_arrays()
    expect_error(tmp_path, r"array 'x_test' has shape \(24, 40, 149\), expected \(N, T, 150\)",
                 x_train=xc, y_train=yc, x_test=xc[..., :149], y_test=yc)


def test_error_labels_out_of_range(tmp_path):
    x, y = generic_arrays()
    y[[4, 9]] = -1
    expect_error(tmp_path, r"array 'y' has 2 labels outside 0..4 \(first: -1 at index 4\)", x=x, y=y,
                 class_names=np.array(list("abcde")))
    y = np.arange(30) % 7
    expect_error(tmp_path, r"array 'y' has 8 labels outside 0..4", x=x, y=y,
                 class_names=np.array(list("abcde")))


def test_error_nonfinite_joints_or_drop_them(tmp_path):
    x, y = generic_arrays()
    x[7, 0, 3, 2, 1] = np.nan
    x[12, 1, 0, 0, 0] = np.inf
    expect_error(tmp_path, r"array 'x' has NaN/Inf in 2 samples \(first: index 7\)", x=x, y=y)
    ds = open_dataset(prepare_npz(tmp_path / "bad.npz", tmp_path / "ok", drop_nonfinite=True))
    assert sum(len(ds.split(s)) for s in ds.split_names) == 28
    assert ds.manifest.source["dropped_nonfinite"] == 2


def test_error_missing_keys_and_bad_split_values(tmp_path):
    x, y = generic_arrays()
    expect_error(tmp_path, "no array 'y' \\(found: x\\)", x=x)
    expect_error(tmp_path, "found arrays data; expected x_train", data=x)
    xc, yc, _, _ = ctrgcn_arrays()
    expect_error(tmp_path, "no array 'y_test'", x_train=xc, y_train=yc, x_test=xc)
    expect_error(tmp_path, r"array 'split' holds \['dev'\]", x=x, y=y, split=np.array(["dev"] * 30))
    expect_error(tmp_path, "array 'y_train' is not one-hot \\(row 0\\)", x_train=xc, y_train=yc * 2,
                 x_test=xc, y_test=yc)


def test_error_missing_or_unreadable_file(tmp_path):
    with pytest.raises(UserInputError, match="missing.npz: does not exist"):
        prepare_npz(tmp_path / "missing.npz", tmp_path / "out")
    (tmp_path / "junk.npz").write_bytes(b"no zip here")
    with pytest.raises(UserInputError, match="junk.npz: not a readable .npz archive"):
        prepare_npz(tmp_path / "junk.npz", tmp_path / "out")


def test_validation_by_subject_holds_out_whole_subjects(tmp_path):
    x, y = generic_arrays(n=60)
    subject = np.arange(60) // 6          # 10 subjects, one clip of each class (and one more)
    split = np.where(subject % 2 == 0, "train", "test")
    np.savez(tmp_path / "g.npz", x=x, y=y, split=split, subject=subject)
    out = prepare_npz(tmp_path / "g.npz", tmp_path / "out", val_subjects=2, seed=3)
    ds = open_dataset(out)
    train, val, test = (set(ds.split(s).subject.tolist()) for s in ("train", "val", "test"))
    assert len(val) == 2 and len(train) == 3 and not val & train, "validation holds subjects train never sees"
    assert val | train == {0, 2, 4, 6, 8} and test == {1, 3, 5, 7, 9}
    assert len(ds.split("val")) == 12
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["val_subjects"] == 2 and f"subjects {sorted(val)}" in source["splits"]
    again = open_dataset(prepare_npz(tmp_path / "g.npz", tmp_path / "again", val_subjects=2, seed=3))
    assert set(again.split("val").subject.tolist()) == val, "the seed decides which subjects"


@pytest.mark.parametrize("arrays, options, pattern", [
    ({}, {"val_subjects": 1}, "needs an array 'subject'"),
    ({"subject": np.arange(30) % 3}, {"val_subjects": 1, "val_per_class": 2}, "choose one way"),
    ({"subject": np.arange(30) % 3}, {"val_subjects": 3}, "has 3 subject.*at most 2"),
    ({"subject": np.where(np.arange(30) == 4, -1, 0)}, {"val_subjects": 1}, "1 training clips have no subject"),
    ({"subject": np.full(30, 40_000)}, {}, "outside -1..32767"),
    ({"subject": np.zeros(29, int)}, {}, r"expected \(30,\) integer subject ids"),
    ({"subject": np.arange(30) % 3, "split": np.array(["train", "val", "test"] * 10)}, {"val_subjects": 1},
     "already names val clips"),
])
def test_validation_by_subject_errors_name_the_fix(tmp_path, arrays, options, pattern):
    x, y = generic_arrays()
    np.savez(tmp_path / "g.npz", x=x, y=y, **arrays)
    with pytest.raises(UserInputError, match=pattern) as info:
        prepare_npz(tmp_path / "g.npz", tmp_path / "out", **options)
    assert "\n" not in str(info.value)
