"""NTU .skeleton import: both parsers agree, faults name file and line, preprocessing, splits."""

import numpy as np
import pytest

from raysearch.data.format import open_dataset
from raysearch.data.ntu import (
    _parse_fast,
    format_skeleton,
    is_train,
    parse_skeleton,
    parse_skeleton_name,
    parse_skeleton_reference,
    preprocess_skeleton,
    prepare_ntu,
)
from raysearch.errors import UserInputError


def person(num_frames, seed, x_offset=0.0, wobble=0.05):
    """(T, 25, 3) camera-space joints of a standing, swaying person ~3 m from the camera."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.uniform(-0.25, 0.25, 25) + x_offset, np.linspace(-0.9, 0.7, 25),
                     3.0 + rng.uniform(-0.05, 0.05, 25)], axis=-1)
    t = np.arange(num_frames)[:, None, None]
    sway = wobble * np.sin(0.2 * t + rng.uniform(0, 6, (1, 25, 3)))
    return base[None] + sway


def observations(tracks):
    """[(body_id, first_frame, (T, 25, 3))] -> sorted (frame, id, joints) observations."""
    obs = [(f0 + i, body_id, j[i]) for body_id, f0, j in tracks for i in range(len(j))]
    return sorted(obs, key=lambda o: o[0])


def write(path, num_frames, tracks, seed=0):
    path.write_bytes(format_skeleton(num_frames, observations(tracks), seed=seed))
    return path


@pytest.fixture
def one_body(tmp_path):
    return write(tmp_path / "S001C001P001R001A001.skeleton", 30, [("72057594037931101", 0, person(30, 1))])


@pytest.fixture
def two_bodies_with_empty_frame(tmp_path):
    # Frames 0-19 body A, frames 3-21 body B, frame 22 has no body, frames 23-24 A again.
    a = person(20, 2)
    b = person(19, 3, x_offset=1.0)
    return write(tmp_path / "S002C002P002R002A050.skeleton", 25,
                 [("72057594037931101", 0, a), ("72057594037931102", 3, b),
                  ("72057594037931101", 23, person(2, 4))])


def test_fast_and_reference_parsers_agree(one_body, two_bodies_with_empty_frame):
    for path in (one_body, two_bodies_with_empty_frame):
        assert _parse_fast(path.read_bytes()) is not None  # the fast path really ran
        fast, ref = parse_skeleton(path), parse_skeleton_reference(path)
        assert fast.equals(ref)
    parsed = parse_skeleton(two_bodies_with_empty_frame)
    assert parsed.num_frames == 25 and parsed.joints.shape == (20 + 19 + 2, 25, 3)
    assert parsed.body_ids[:2] == ["72057594037931101", "72057594037931101"]
    assert 22 not in parsed.frame_index
    # Text keeps 7 significant digits; the parse returns them as float32.
    np.testing.assert_allclose(parsed.joints[0], person(20, 2)[0], rtol=1e-6)


def test_unusual_but_valid_text_goes_to_the_reference_parser(one_body, tmp_path):
    text = one_body.read_bytes().replace(b"\r\n", b"\n").replace(b" 2\n", b"  2\n\n")
    odd = tmp_path / "S001C001P001R001A002.skeleton"
    odd.write_bytes(text)
    assert _parse_fast(text) is None
    assert parse_skeleton(odd).equals(parse_skeleton(one_body))


def lines_of(path):
    return path.read_bytes().split(b"\r\n")


@pytest.mark.parametrize("parser", [parse_skeleton, parse_skeleton_reference])
def test_truncated_file_names_file_and_line(one_body, parser):
    lines = lines_of(one_body)
    # Keep the frame count, frame 1's body count, body line, joint count and 10 joint lines.
    one_body.write_bytes(b"\r\n".join(lines[:14]) + b"\r\n")
    with pytest.raises(UserInputError) as info:
        parser(one_body)
    message = str(info.value)
    assert message.startswith(f"file {one_body}: truncated at line 15, expected 25 joint lines")
    assert "re-download or remove it" in message and "\n" not in message


@pytest.mark.parametrize("parser", [parse_skeleton, parse_skeleton_reference])
def test_corrupt_line_names_line(one_body, parser):
    lines = lines_of(one_body)
    lines[7] = b" ".join(lines[7].split()[:11])  # a joint line loses a field
    one_body.write_bytes(b"\r\n".join(lines))
    with pytest.raises(UserInputError, match="line 8 has 11 fields, expected 12 \\(joint 4 of frame 1, body 1\\)"):
        parser(one_body)


@pytest.mark.parametrize("parser", [parse_skeleton, parse_skeleton_reference])
def test_non_finite_coordinate_is_refused(one_body, parser):
    lines = lines_of(one_body)
    fields = lines[9].split()
    lines[9] = b" ".join([b"nan"] + fields[1:])
    one_body.write_bytes(b"\r\n".join(lines))
    with pytest.raises(UserInputError, match="line 10 holds a non-finite joint coordinate"):
        parser(one_body)


def test_garbage_count_and_trailing_content(one_body):
    lines = lines_of(one_body)
    one_body.write_bytes(b"\r\n".join([b"thirty"] + lines[1:]))
    with pytest.raises(UserInputError, match="line 1 expected the frame count, got 'thirty'"):
        parse_skeleton(one_body)
    one_body.write_bytes(b"\r\n".join(lines[:-1] + [b"5", b""]))
    with pytest.raises(UserInputError, match="unexpected content after the last frame"):
        parse_skeleton(one_body)


def test_file_names():
    name = parse_skeleton_name("x/S017C003P008R002A060.skeleton")
    assert (name.setup, name.camera, name.subject, name.replication, name.action) == (17, 3, 8, 2, 60)
    assert name.label == 59
    with pytest.raises(UserInputError, match="name does not match SsssCcccPpppRrrrAaaa"):
        parse_skeleton_name("clip01.skeleton")


def test_official_protocols():
    n = parse_skeleton_name
    assert is_train(n("S001C001P001R001A001"), "ntu60-xsub")
    assert not is_train(n("S001C001P003R001A001"), "ntu60-xsub")
    assert is_train(n("S001C002P003R001A001"), "ntu60-xview")
    assert not is_train(n("S001C001P001R001A001"), "ntu60-xview")
    assert is_train(n("S020C001P045R001A100"), "ntu120-xsub")
    assert not is_train(n("S020C001P044R001A100"), "ntu120-xsub")
    assert is_train(n("S020C001P044R001A100"), "ntu120-xset")
    assert not is_train(n("S021C001P045R001A100"), "ntu120-xset")


def test_preprocess_centres_fills_two_slots_and_drops_empty_frames(two_bodies_with_empty_frame):
    x, stats = preprocess_skeleton(parse_skeleton(two_bodies_with_empty_frame))
    assert x.shape == (3, 24, 25, 2)  # 25 frames minus the empty one
    assert stats.missing_frames == 1 and stats.bodies == 2
    # Each body keeps its own slot and is exactly zero where it was not tracked.
    present = np.any(x != 0, axis=(0, 2))  # (T, M)
    body_a = np.r_[np.ones(20, bool), np.zeros(2, bool), np.ones(2, bool)]  # frame 22 removed
    body_b = np.r_[np.zeros(3, bool), np.ones(19, bool), np.zeros(2, bool)]
    slots = [tuple(present[:, m]) for m in range(2)]
    assert sorted(slots) == sorted([tuple(body_a), tuple(body_b)])
    # Centred on the spine of person 1 (the more active body) in its first frame.
    first = int(np.argmax(present[:, 0]))
    np.testing.assert_allclose(x[:, first, 1, 0], 0, atol=1e-6)


def test_preprocess_denoises_short_and_wide_bodies(tmp_path):
    wide = person(40, 7)
    wide[..., 0] *= 20  # a body far wider than tall: furniture, not a person
    path = write(tmp_path / "S001C001P001R001A001.skeleton", 40, [
        ("1", 0, person(40, 5)),
        ("2", 0, wide),
        ("3", 10, person(5, 6, x_offset=0.5)),  # seen in 5 frames only
    ])
    x, stats = preprocess_skeleton(parse_skeleton(path))
    assert stats.dropped_short == 1 and stats.dropped_wide == 1
    assert not np.any(x[..., 1])


def test_preprocess_truncates_and_reports_no_skeleton(tmp_path):
    path = write(tmp_path / "S001C001P001R001A001.skeleton", 320, [("1", 0, person(320, 1))])
    x, stats = preprocess_skeleton(parse_skeleton(path))
    assert x.shape[1] == 300 and stats.truncated == 1
    empty = write(tmp_path / "S001C001P001R001A002.skeleton", 10, [])
    assert preprocess_skeleton(parse_skeleton(empty))[0] is None


def make_raw(root):
    """Eight NTU-60 clips (subjects 1/3, cameras 1/2, actions 1/2/50) + one NTU-120-only clip."""
    root.mkdir()
    names = []
    for k, (s, c, p, a) in enumerate([(1, 1, 1, 1), (1, 2, 1, 1), (1, 1, 3, 1), (1, 2, 3, 1),
                                      (2, 1, 2, 2), (2, 2, 2, 2), (2, 1, 3, 2), (2, 2, 4, 50),
                                      (18, 1, 1, 100)]):
        name = f"S{s:03d}C{c:03d}P{p:03d}R001A{a:03d}"
        tracks = [("1", 0, person(30, k))]
        if a == 50:
            tracks.append(("2", 0, person(30, k + 100, x_offset=1.0)))
        write(root / f"{name}.skeleton", 30, tracks, seed=k)
        names.append(name)
    write(root / "S001C003P001R001A003.skeleton", 12, [])  # no skeleton at all
    return names


def test_prepare_ntu60_xsub(tmp_path):
    make_raw(tmp_path / "raw")
    path = prepare_ntu(tmp_path / "raw", tmp_path / "out", "ntu60-xsub", val_fraction=0.5,
                       workers=1, progress=False)
    ds = open_dataset(path)
    assert ds.num_classes == 60 and ds.class_names[0] == "drink water"
    assert ds.manifest.max_frames == 300 and ds.max_persons == 2
    ids = {s: ds.split(s).sample_ids for s in ds.split_names}
    assert sorted(ids["test"]) == ["S001C001P003R001A001", "S001C002P003R001A001",
                                   "S002C001P003R001A002"]
    train_val = sorted(ids["train"] + ids["val"])
    assert train_val == ["S001C001P001R001A001", "S001C002P001R001A001", "S002C001P002R001A002",
                         "S002C002P002R001A002", "S002C002P004R001A050"]
    assert len(ids["val"]) == 2  # round(0.5 * 2) of actions 1 and 2; action 50 keeps its one
    source = ds.manifest.source
    assert source["no_skeleton"] == {"count": 1, "files": ["S001C003P001R001A003"]}
    view = ds.split("test")
    i = view.sample_ids.index("S002C001P003R001A002")
    assert view.labels[i] == 1 and view.subject[i] == 3 and view.camera[i] == 1
    assert view.setup[i] == 2 and view.num_frames[i] == 30
    pair = ds.split("train" if "S002C002P004R001A050" in ids["train"] else "val")
    assert pair.num_persons[pair.sample_ids.index("S002C002P004R001A050")] == 2


def test_prepare_ntu_validation_by_performer(tmp_path):
    make_raw(tmp_path / "raw")
    ds = open_dataset(prepare_ntu(tmp_path / "raw", tmp_path / "out", "ntu60-xsub", val_subjects=1, workers=1,
                                  progress=False))
    val, train = set(ds.split("val").subject.tolist()), set(ds.split("train").subject.tolist())
    assert len(val) == 1 and val | train == {1, 2, 4} and not val & train
    assert f"subjects {sorted(val)}" in ds.manifest.source["splits"]
    with pytest.raises(UserInputError, match="has 3 subject"):
        prepare_ntu(tmp_path / "raw", tmp_path / "more", "ntu60-xsub", val_subjects=3, workers=1, progress=False)


def test_prepare_ntu_is_the_same_with_a_worker_pool(tmp_path):
    make_raw(tmp_path / "raw")
    one = open_dataset(prepare_ntu(tmp_path / "raw", tmp_path / "a", "ntu120-xset", workers=1,
                                   progress=False))
    two = open_dataset(prepare_ntu(tmp_path / "raw", tmp_path / "b", "ntu120-xset", workers=2,
                                   progress=False))
    assert one.num_classes == 120
    for split in one.split_names:
        a, b = one.split(split), two.split(split)
        assert a.sample_ids == b.sample_ids
        for i in range(len(a)):
            np.testing.assert_array_equal(a.joints(i), b.joints(i))


def test_prepare_ntu_bad_file_stops_or_is_skipped(tmp_path):
    make_raw(tmp_path / "raw")
    bad = tmp_path / "raw" / "S001C001P001R001A001.skeleton"
    bad.write_bytes(b"\r\n".join(bad.read_bytes().split(b"\r\n")[:40]))
    with pytest.raises(UserInputError, match=f"file {bad}: truncated at line 41"):
        prepare_ntu(tmp_path / "raw", tmp_path / "out", "ntu60-xview", workers=1, progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    path = prepare_ntu(tmp_path / "raw", tmp_path / "out", "ntu60-xview", workers=1,
                       progress=False, skip_bad=True)
    source = open_dataset(path).manifest.source
    assert source["bad_files"]["count"] == 1 and "truncated" in source["bad_files"]["messages"][0]


def test_prepare_ntu_input_errors(tmp_path):
    with pytest.raises(UserInputError, match="--benchmark 'ntu60-xsetup' is unknown"):
        prepare_ntu(tmp_path, tmp_path / "out", "ntu60-xsetup")
    with pytest.raises(UserInputError, match="not a directory"):
        prepare_ntu(tmp_path / "missing", tmp_path / "out", "ntu60-xsub")
    with pytest.raises(UserInputError, match="no ntu60 .skeleton files"):
        prepare_ntu(tmp_path, tmp_path / "out", "ntu60-xsub")
