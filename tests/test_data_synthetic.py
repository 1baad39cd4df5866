"""Synthetic actions: deterministic, split by subject, classes distinguishable."""

import numpy as np
import pytest

from raysearch.data.format import open_dataset
from raysearch.data.layouts import NTU25_LAYOUT
from raysearch.data.synthetic import generate_synthetic, prepare_synthetic
from raysearch.errors import UserInputError


@pytest.fixture(scope="module")
def generated():
    return generate_synthetic(num_classes=8, per_class=30, max_frames=40, seed=5)


def test_same_seed_same_data_and_other_seed_other_data(generated):
    _, names, splits = generated
    _, names2, splits2 = generate_synthetic(num_classes=8, per_class=30, max_frames=40, seed=5)
    assert names == names2
    for key in splits:
        assert splits[key].sample_ids == splits2[key].sample_ids
        for a, b in zip(splits[key].joints, splits2[key].joints):
            np.testing.assert_array_equal(a, b)
    _, _, other = generate_synthetic(num_classes=8, per_class=30, max_frames=40, seed=6)
    assert not np.array_equal(other["train"].joints[0], splits["train"].joints[0])


def test_shapes_lengths_centering_and_persons(generated):
    layout, names, splits = generated
    assert layout == NTU25_LAYOUT and len(names) == 8 and len(set(names)) == 8
    assert sum(len(s) for s in splits.values()) == 8 * 30
    for data in splits.values():
        for x, persons in zip(data.joints, data.num_persons):
            assert x.dtype == np.float32 and x.shape[0] == 3 and x.shape[2:] == (25, 2)
            assert 24 <= x.shape[1] <= 40  # 60%..100% of max_frames
            # Centred on spine_mid of person 1 in frame 1 (up to sensor noise).
            assert np.abs(x[:, 0, 1, 0]).max() < 0.15
            assert np.abs(x).max() < 3.0  # metres
            assert persons == 1 + int(np.any(x[..., 1] != 0))
            if persons == 1:
                assert not np.any(x[..., 1])


def test_splits_follow_subjects(generated):
    _, _, splits = generated
    train_subjects = set(splits["train"].subject) | set(splits["val"].subject)
    assert train_subjects.isdisjoint(set(splits["test"].subject))
    assert set(splits["val"].labels) == set(range(8))


def test_classes_differ(generated):
    _, _, splits = generated
    data = splits["train"]
    # Mean motion energy per joint differs between classes: the class is in the motion.
    def energy(c):
        xs = [x[..., 0] for x, y in zip(data.joints, data.labels) if y == c]
        return np.mean([x.var(axis=1).sum(axis=0) for x in xs], axis=0)  # (V,)
    profiles = np.stack([energy(c) for c in range(8)])
    distances = np.linalg.norm(profiles[:, None] - profiles[None], axis=-1)
    assert distances[~np.eye(8, dtype=bool)].min() > 1e-3
    # Interaction classes (every fourth) have a second person, others never do.
    for c in range(8):
        persons = {p for p, y in zip(data.num_persons, data.labels) if y == c}
        assert persons == ({2} if c % 4 == 3 else {1})


def test_only_the_ntu_layout_is_generated():
    with pytest.raises(UserInputError, match="--joints 17 is not supported"):
        generate_synthetic(num_joints=17)


def test_prepare_synthetic_writes_a_dataset(tmp_path):
    path = prepare_synthetic(tmp_path / "syn", num_classes=4, per_class=10, max_frames=20, seed=1)
    ds = open_dataset(path)
    assert ds.split_names == ["train", "val", "test"] and ds.num_classes == 4
    assert ds.manifest.source["importer"] == "synthetic"
    assert sum(len(ds.split(s)) for s in ds.split_names) == 40
