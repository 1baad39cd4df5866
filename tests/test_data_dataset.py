"""SkeletonDataset: shapes, augmentation semantics, determinism and worker safety."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from raysearch.data.augment import crop_resize, eval_transform, rotation_matrix
from raysearch.data.dataset import SkeletonDataset
from raysearch.data.format import open_dataset
from raysearch.data.synthetic import prepare_synthetic
from raysearch.errors import UserInputError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return prepare_synthetic(tmp_path_factory.mktemp("ds") / "syn", num_classes=4, per_class=12,
                             max_frames=30, seed=0)


def test_item_shapes_and_labels(data_dir):
    ds = SkeletonDataset(data_dir, "train", num_frames=48, train=True)
    view = open_dataset(data_dir).split("train")
    assert len(ds) == len(view) and ds.num_classes == 4
    np.testing.assert_array_equal(ds.labels, view.labels)
    for i in (0, len(ds) - 1):
        x, y = ds[i]
        assert x.shape == (3, 48, 25, 2) and x.dtype == torch.float32
        assert isinstance(y, int) and y == view.labels[i]


def test_indices_select_items_and_labels(data_dir):
    ds = SkeletonDataset(open_dataset(data_dir), "train", 20, train=False, indices=[5, 2])
    full = SkeletonDataset(data_dir, "train", 20, train=False)
    assert len(ds) == 2 and ds.labels.tolist() == [full.labels[5], full.labels[2]]
    assert torch.equal(ds[1][0], full[2][0])
    with pytest.raises(ValueError, match="indices must lie in"):
        SkeletonDataset(data_dir, "train", 20, train=False, indices=[10_000])


def test_eval_mode_is_deterministic_centre_crop(data_dir):
    a = SkeletonDataset(data_dir, "test", 40, train=False, seed=0)
    b = SkeletonDataset(data_dir, "test", 40, train=False, seed=9)
    assert torch.equal(a[3][0], b[3][0]) and torch.equal(a[3][0], a[3][0])
    raw = open_dataset(data_dir).split("test").joints(3)
    np.testing.assert_allclose(a[3][0].numpy(), eval_transform(raw, 40), rtol=0, atol=0)


def test_train_mode_varies_with_seed_and_epoch_but_repeats_exactly(data_dir):
    def item(seed, epoch, i=4):
        ds = SkeletonDataset(data_dir, "train", 32, train=True, seed=seed)
        ds.set_epoch(epoch)
        return ds[i][0]

    assert torch.equal(item(0, 0), item(0, 0))
    assert not torch.equal(item(0, 0), item(1, 0))
    assert not torch.equal(item(0, 0), item(0, 1))
    # Without set_epoch, one process's stream still differs per seed and per draw.
    ds = SkeletonDataset(data_dir, "train", 32, train=True, seed=0)
    first, second = ds[4][0], ds[4][0]
    assert not torch.equal(first, second)
    assert torch.equal(first, SkeletonDataset(data_dir, "train", 32, train=True, seed=0)[4][0])


def test_absent_person_stays_zero_under_augmentation(data_dir):
    ds = SkeletonDataset(data_dir, "train", 32, train=True)
    view = open_dataset(data_dir).split("train")
    single = int(np.flatnonzero(view.num_persons == 1)[0])
    x = ds[single][0]
    assert torch.count_nonzero(x[..., 1]) == 0 and torch.count_nonzero(x[..., 0]) > 0


def test_crop_resize_matches_torch_linear_interpolation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 37, 5, 2)).astype(np.float32)
    ours = crop_resize(x, start=4, length=21, num_frames=50)
    seg = torch.from_numpy(x[:, 4:25]).permute(0, 2, 3, 1).reshape(1, -1, 21)  # (1, C*V*M, T)
    ref = torch.nn.functional.interpolate(seg, size=50, mode="linear", align_corners=False)
    ref = ref.reshape(3, 5, 2, 50).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rotation_is_a_rotation():
    r = rotation_matrix(np.array([0.3, -0.2, 0.1]))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-6)
    assert np.isclose(np.linalg.det(r), 1.0, atol=1e-6)


def test_pickles_without_the_memory_map_and_loads_in_workers(data_dir):
    ds = SkeletonDataset(data_dir, "val", 16, train=True, seed=3)
    ds.set_epoch(2)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # path, indices, labels and manifest; no sample data
    clone = pickle.loads(blob)
    assert clone._view is None
    assert torch.equal(clone[1][0], ds[1][0])
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batches = list(loader)
    assert sum(len(b[1]) for b in batches) == len(ds)
    # With set_epoch the augmentation does not depend on which worker loaded the item.
    assert torch.equal(batches[0][0][1], ds[1][0])


def test_bad_arguments_are_user_errors(data_dir):
    with pytest.raises(UserInputError, match="no split 'dev'; available: train, val, test"):
        SkeletonDataset(data_dir, "dev", 16, train=False)
    with pytest.raises(UserInputError, match="num_frames must be >= 1"):
        SkeletonDataset(data_dir, "train", 0, train=False)


def test_set_epoch_reaches_persistent_workers(data_dir):
    ds = SkeletonDataset(data_dir, "train", 16, train=True, seed=1)
    loader = DataLoader(ds, batch_size=len(ds), num_workers=2, persistent_workers=True)
    passes = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        passes.append(next(iter(loader))[0])
    assert not torch.equal(passes[0], passes[1])
    ds.set_epoch(1)
    np.testing.assert_array_equal(passes[1][7].numpy(), ds[7][0].numpy())
