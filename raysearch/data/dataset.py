"""torch Dataset over one memory-mapped split, with STTFormer's augmentation.

Items are (x, label): x float32 (C, T, V, M) with T = num_frames, resampled from the valid
frames (train: random crop + rotation; eval: centre crop 0.95). Nothing is read until an item
is asked for, and the memory map is opened lazily in each process: pickling the dataset (as a
DataLoader does for its workers) carries only the path, split name and indices.

Randomness, train mode only:
- after `set_epoch(e)`, item i of epoch e uses a generator seeded by (seed, e, i), so the
  augmentation is the same whatever the number of workers or the order of loading. The epoch
  lives in a shared-memory tensor, so persistent DataLoader workers see every `set_epoch`
  made in the main process before the next pass over the loader;
- without it, each process draws from its own stream seeded by (seed, worker seed); torch
  gives workers a new seed every epoch (derived from torch's global seed), so views still
  change between epochs and repeat under the same `torch.manual_seed`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from raysearch.data.augment import eval_transform, train_transform
from raysearch.data.format import DatasetDir, SplitView, open_dataset
from raysearch.errors import UserInputError


class SkeletonDataset(Dataset):
    def __init__(
        self,
        data: str | os.PathLike | DatasetDir,
        split: str,
        num_frames: int,
        train: bool,
        indices: np.ndarray | None = None,
        seed: int = 0,
        *,
        crop_range: tuple[float, float] = (0.5, 1.0),
        test_crop_fraction: float = 0.95,
        max_rotation_rad: float = 0.3,
        min_crop_frames: int = 0,
    ):
        if num_frames < 1:
            raise UserInputError(f"num_frames must be >= 1, got {num_frames}")
        if not 0 < crop_range[0] <= crop_range[1] <= 1:
            raise UserInputError(f"crop_range must satisfy 0 < low <= high <= 1, got {crop_range}")
        if not 0 < test_crop_fraction <= 1:
            raise UserInputError(f"test_crop_fraction must be in (0, 1], got {test_crop_fraction}")
        dataset = open_dataset(data)
        view = dataset.split(split)  # fails here, with the list of splits, on a bad name
        self.path = dataset.path
        self.split = split
        self.manifest = dataset.manifest
        self.num_frames = int(num_frames)
        self.train = bool(train)
        self.seed = int(seed)
        self.crop_range = (float(crop_range[0]), float(crop_range[1]))
        self.test_crop_fraction = float(test_crop_fraction)
        self.max_rotation_rad = float(max_rotation_rad)
        self.min_crop_frames = int(min_crop_frames)
        n = len(view)
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
                raise ValueError(f"indices must lie in [0, {n}) for split {split!r}")
        # Labels of this dataset's items (after `indices`), for samplers and class counts.
        self.labels: np.ndarray = view.labels[self.indices]
        # One int64 in shared memory (-1 = never set); see the module docstring.
        self._epoch = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self._view: SplitView | None = view
        self._rng: np.random.Generator | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_view"] = None  # never pickle the memory map; each process reopens it
        state["_rng"] = None
        return state

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def epoch(self) -> int | None:
        value = int(self._epoch[0])
        return None if value < 0 else value

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return self.indices.size

    def _split_view(self) -> SplitView:
        if self._view is None:
            self._view = open_dataset(self.path).split(self.split)
        return self._view

    def _generator(self, item: int) -> np.random.Generator:
        epoch = self.epoch
        if epoch is not None:
            return np.random.default_rng([self.seed, epoch, item])
        if self._rng is None:
            info = get_worker_info()
            self._rng = np.random.default_rng([self.seed, 0 if info is None else info.seed])
        return self._rng

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        row = int(self.indices[item])
        x = self._split_view().joints(row)  # (C, T_valid, V, M), read-only view
        if self.train:
            out = train_transform(
                x, self.num_frames, self._generator(item), self.crop_range,
                self.max_rotation_rad, self.min_crop_frames,
            )
        else:
            out = eval_transform(x, self.num_frames, self.test_crop_fraction)
        return torch.from_numpy(out), int(self.labels[item])  # (C, T, V, M), label
