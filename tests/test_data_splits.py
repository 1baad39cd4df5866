"""Per-class selection: exact counts, determinism, disjointness."""

import numpy as np
import pytest

from raysearch.data.splits import label_fraction_subset, stratified_split
from raysearch.errors import UserInputError

# Uneven classes, as in NTU: sizes 3, 17, 40, 101, 260 (class 2 absent entirely).
SIZES = {0: 3, 1: 17, 3: 40, 4: 101, 5: 260}
LABELS = np.random.default_rng(0).permutation(np.concatenate([np.full(n, c) for c, n in SIZES.items()]))


@pytest.mark.parametrize("fraction", [0.05, 0.10])
def test_label_fraction_subset_takes_exact_count_of_every_class(fraction):
    idx = label_fraction_subset(LABELS, fraction, seed=3)
    got = np.bincount(LABELS[idx], minlength=6)
    for c, n in SIZES.items():
        assert got[c] == max(1, round(fraction * n)), (c, n)
    assert got[2] == 0
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats


def test_label_fraction_subset_is_seeded():
    a = label_fraction_subset(LABELS, 0.1, seed=1)
    np.testing.assert_array_equal(a, label_fraction_subset(LABELS, 0.1, seed=1))
    assert not np.array_equal(a, label_fraction_subset(LABELS, 0.1, seed=2))
    np.testing.assert_array_equal(label_fraction_subset(LABELS, 1.0, 0), np.arange(LABELS.size))


def test_stratified_split_is_deterministic_disjoint_and_complete():
    keep, held = stratified_split(LABELS, 0.05, seed=7)
    keep2, held2 = stratified_split(LABELS, 0.05, seed=7)
    np.testing.assert_array_equal(keep, keep2)
    np.testing.assert_array_equal(held, held2)
    assert not np.array_equal(held, stratified_split(LABELS, 0.05, seed=8)[1])
    assert np.intersect1d(keep, held).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(LABELS.size))
    got = np.bincount(LABELS[held], minlength=6)
    for c, n in SIZES.items():
        assert got[c] == max(1, round(0.05 * n))


def test_stratified_split_never_empties_a_class():
    labels = np.array([0, 1, 1, 2, 2, 2])
    keep, held = stratified_split(labels, 0.9, seed=0)
    assert set(labels[keep]) == {0, 1, 2}
    assert stratified_split(labels, 0.0, seed=0)[1].size == 0


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_label_fraction_out_of_range_is_a_user_error(fraction):
    with pytest.raises(UserInputError, match="label fraction must be in \\(0, 1\\]"):
        label_fraction_subset(LABELS, fraction, seed=0)


def test_validation_carve_is_sized_in_clips_per_class():
    from raysearch.data.splits import carve_validation, val_counts

    labels = np.repeat([0, 1, 2, 3], [15, 4, 1, 400])
    # max(2, round(0.05 n)) capped at n // 2: small classes still give 2, a big one keeps 5%.
    assert val_counts(labels) == {0: 2, 1: 2, 2: 0, 3: 20}
    assert val_counts(labels, per_class=5) == {0: 5, 1: 2, 2: 0, 3: 5}
    keep, held = carve_validation(labels, seed=3)
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 2, 0, 20]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(labels.size))
    again = carve_validation(labels, seed=3)
    assert np.array_equal(again[1], held) and not np.array_equal(carve_validation(labels, seed=4)[1], held)
    with pytest.raises(UserInputError, match="--val-per-class must be an integer >= 1"):
        val_counts(labels, per_class=0)
