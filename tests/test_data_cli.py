"""`raysearch prepare` / `data-info` on hostile input: exit 2, one `raysearch: error:` line, nothing
of the user's lost, no dataset written by a refused import."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from raysearch.cli import main
from raysearch.data.format import open_dataset
from raysearch.data.ntu import format_skeleton
from raysearch.data.synthetic import prepare_synthetic

MSR = Path(__file__).resolve().parents[2] / "shared" / "data" / "msr_action3d" / "msr_action3d.npz"


def fails(argv, capsys, *patterns):
    """Run the CLI, expect exit 2 and one error line matching every pattern; returns the line."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("raysearch: error:")]
    assert info.value.code == 2 and len(lines) == 1, err
    assert not [line for line in err.splitlines() if "Traceback" in line]
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def generic(path, n=40, classes=4, t=12, v=20, m=1, **extra):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (n, 3, t, v, m)).astype(np.float32) + 2.0
    np.savez(path, x=x, y=np.arange(n) % classes, **extra)
    return path


def test_overwrite_never_deletes_a_folder_of_arrow_files_without_a_manifest(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.arrow").write_bytes(b"the user's own arrow file")
    (mine / "other.arrow").write_bytes(b"another one")
    before = snapshot(mine)
    fails(["prepare", "npz", generic(tmp_path / "g.npz"), "--out", mine, "--overwrite"], capsys,
          "not a raysearch dataset", "never replaced")
    assert snapshot(mine) == before


def test_overwrite_replaces_a_dataset_and_only_the_files_its_manifest_lists(tmp_path, capsys):
    out = prepare_synthetic(tmp_path / "ds", num_classes=3, per_class=30, max_frames=8)
    (out / "notes.txt").write_text("keep me")
    main(["prepare", "npz", str(generic(tmp_path / "g.npz")), "--out", str(out), "--overwrite"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert open_dataset(out).manifest.source["importer"] == "npz-generic"
    (out / "manifest.json").write_text("[1, 2, 3]")  # valid JSON, not a manifest: not ours any more
    fails(["prepare", "npz", generic(tmp_path / "g.npz"), "--out", out, "--overwrite"], capsys,
          "not a raysearch dataset")
    assert (out / "manifest.json").read_text() == "[1, 2, 3]" and (out / "train.arrow").is_file()


def test_ctrgcn_with_no_frames_or_no_classes(tmp_path, capsys):
    x = np.zeros((4, 0, 150), np.float32)
    np.savez(tmp_path / "t0.npz", x_train=x, y_train=np.eye(2)[[0, 1, 0, 1]], x_test=x, y_test=np.eye(2)[[0, 1, 0, 1]])
    fails(["prepare", "npz", tmp_path / "t0.npz", "--out", tmp_path / "o"], capsys, "no frames (T=0)")
    x = np.ones((4, 5, 150), np.float32)
    np.savez(tmp_path / "k0.npz", x_train=x, y_train=np.zeros((4, 0)), x_test=x, y_test=np.zeros((4, 0)))
    fails(["prepare", "npz", tmp_path / "k0.npz", "--out", tmp_path / "o"], capsys, "K=0 classes")
    assert not (tmp_path / "o").exists()


def test_manifest_that_is_valid_json_but_not_an_object(tmp_path, capsys):
    out = prepare_synthetic(tmp_path / "ds", num_classes=3, per_class=30, max_frames=8)
    for text in ("[]", "5", '"format_version"', "null"):
        (out / "manifest.json").write_text(text)
        fails(["data-info", out], capsys, "manifest.json", "top level must be a JSON object")


def test_deeply_nested_manifest(tmp_path, capsys):
    out = prepare_synthetic(tmp_path / "ds", num_classes=3, per_class=30, max_frames=8)
    (out / "manifest.json").write_text("[" * 200_000 + "]" * 200_000)
    fails(["data-info", out], capsys, "nested too deeply")
    manifest = {"source": {}}
    node = manifest["source"]
    for _ in range(100):
        node["a"] = {}
        node = node["a"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    fails(["data-info", out], capsys, "nested more than")


def test_caps_in_a_manifest(tmp_path, capsys):
    out = prepare_synthetic(tmp_path / "ds", num_classes=3, per_class=30, max_frames=8)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "max_persons": 10 ** 12}))
    fails(["data-info", out], capsys, "max_persons", "at most 16 persons")
    (out / "manifest.json").write_text(json.dumps({**manifest, "max_frames": 10 ** 9}))
    fails(["data-info", out], capsys, "max_frames", "at most 100000 frames")


def test_broken_symlink_among_ntu_files(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    joints = np.random.default_rng(0).normal(0, 0.3, (25, 3))
    for subject in (1, 2, 3):
        name = raw / f"S001C001P{subject:03d}R001A001.skeleton"
        name.write_bytes(format_skeleton(4, [(t, "1", joints) for t in range(4)]))
    os.symlink(raw / "gone.skeleton", raw / "S001C001P004R001A002.skeleton")
    fails(["prepare", "ntu", "--raw", raw, "--out", tmp_path / "o", "--benchmark", "ntu60-xsub"], capsys,
          "S001C001P004R001A002.skeleton", "broken link")
    assert not (tmp_path / "o").exists()


def test_npz_with_zero_frames_or_zero_samples(tmp_path, capsys):
    np.savez(tmp_path / "t0.npz", x=np.zeros((4, 3, 0, 20, 1), np.float32), y=np.zeros(4, int))
    fails(["prepare", "npz", tmp_path / "t0.npz", "--out", tmp_path / "o"], capsys, "no frames (T=0)")
    np.savez(tmp_path / "n0.npz", x=np.zeros((0, 3, 5, 20, 1), np.float32), y=np.zeros(0, int))
    fails(["prepare", "npz", tmp_path / "n0.npz", "--out", tmp_path / "o"], capsys, "holds no samples")
    assert not (tmp_path / "o").exists()


def test_empty_splits_are_refused_and_nothing_is_written(tmp_path, capsys):
    split = np.array(["test"] * 40)
    fails(["prepare", "npz", generic(tmp_path / "a.npz", split=split), "--out", tmp_path / "o"], capsys,
          "split train and val would be empty", "nothing written")
    one_each = np.array(["train"] * 4 + ["test"] * 36)  # one training clip per class: no val after the carve
    fails(["prepare", "npz", generic(tmp_path / "b.npz", split=one_each), "--out", tmp_path / "o"], capsys,
          "split val would be empty")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_sparse_labels_do_not_make_100000_classes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, (6, 3, 5, 20, 1)).astype(np.float32)
    np.savez(tmp_path / "big.npz", x=x, y=np.array([0, 1, 0, 1, 0, 99999]))
    fails(["prepare", "npz", tmp_path / "big.npz", "--out", tmp_path / "o"], capsys, "100000 classes",
          "at most 10000 classes")
    np.savez(tmp_path / "sparse.npz", x=x, y=np.array([0, 1, 0, 1, 0, 50]))
    fails(["prepare", "npz", tmp_path / "sparse.npz", "--out", tmp_path / "o"], capsys,
          "use only 3 of 51 classes", "class_names")


def test_joint_and_person_caps_of_an_input_file(tmp_path, capsys):
    np.savez(tmp_path / "v.npz", x=np.ones((2, 3, 2, 2000, 1), np.float32), y=np.zeros(2, int))
    fails(["prepare", "npz", tmp_path / "v.npz", "--out", tmp_path / "o"], capsys, "2000 joints", "at most 1024")
    np.savez(tmp_path / "m.npz", x=np.ones((2, 3, 2, 5, 40), np.float32), y=np.zeros(2, int))
    fails(["prepare", "npz", tmp_path / "m.npz", "--out", tmp_path / "o"], capsys, "40 persons", "at most 16")


def test_object_arrays_are_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    x = np.empty(2, dtype=object)
    x[0], x[1] = Payload(), 1
    np.savez(tmp_path / "evil.npz", x=x, y=np.zeros(2, int))
    fails(["prepare", "npz", tmp_path / "evil.npz", "--out", tmp_path / "o"], capsys, "holds Python objects")
    assert not marker.exists()


def test_flags_name_what_is_wrong(tmp_path, capsys):
    g = generic(tmp_path / "g.npz")
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--center-joint", "nose"], capsys,
          "--center-joint 'nose'", "hip_center")
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--scale-bone", "3-6"], capsys, "needs --scale bone")
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--val-per-class", "0"], capsys, "--val-per-class")
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--val-subjects", "1"], capsys, "needs an array 'subject'")
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--val-subjects", "1", "--val-per-class", "2"], capsys,
          "choose one way to carve validation")
    (tmp_path / "layout.json").write_text(json.dumps({"joint_names": ["a", "b"]}))
    fails(["prepare", "npz", g, "--out", tmp_path / "o", "--layout", tmp_path / "layout.json"], capsys,
          "2 joint_names but the data has 20 joints")


def test_layout_file_and_flags_set_the_normalisation(tmp_path, capsys):
    g = generic(tmp_path / "g.npz", v=5)
    layout = {"name": "five", "joint_names": ["pelvis", "chest", "head", "l", "r"], "bones": [[0, 1], [1, 2]],
              "center_joint": "pelvis"}
    (tmp_path / "layout.json").write_text(json.dumps(layout))
    main(["prepare", "npz", str(g), "--out", str(tmp_path / "a"), "--layout", str(tmp_path / "layout.json"),
          "--scale", "bone", "--scale-bone", "pelvis-chest", "--val-per-class", "3"])
    ds = open_dataset(tmp_path / "a")
    assert ds.layout.name == "five" and ds.layout.bones == ((0, 1), (1, 2))
    norm = ds.manifest.normalisation
    assert (norm.center_joint, norm.scale, norm.scale_bone) == (0, "bone", (0, 1))
    assert np.bincount(ds.split("val").labels).tolist() == [3, 3, 3, 3]
    clip = ds.split("train").joints(0)
    np.testing.assert_allclose(clip[:, 0, 0, 0], 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(clip[:, :, 0, 0] - clip[:, :, 1, 0], axis=0).mean(), 1, rtol=1e-5)
    err = capsys.readouterr().err
    assert "validation split has only 12 clips" in err
    assert ds.manifest.source["warnings"][0].startswith("validation split has only 12 clips")


def test_unknown_joint_count_centres_on_joint_0_with_a_warning(tmp_path, capsys):
    main(["prepare", "npz", str(generic(tmp_path / "g.npz", v=7)), "--out", str(tmp_path / "a")])
    assert "no known layout has 7 joints: centring on joint 0" in capsys.readouterr().err
    ds = open_dataset(tmp_path / "a")
    assert ds.manifest.normalisation.center_joint == 0
    assert "no known layout" in ds.manifest.source["notes"][0]


@pytest.mark.skipif(not MSR.is_file(), reason="MSR Action3D is kept in ../shared/data")
def test_msr_action3d_with_defaults_is_hip_centred(tmp_path, capsys):
    main(["prepare", "npz", str(MSR), "--out", str(tmp_path / "msr")])
    assert "assuming layout msr-action3d-20" in capsys.readouterr().err
    ds = open_dataset(tmp_path / "msr")
    assert ds.layout.joint_names[ds.layout.center_joint] == "hip_center"
    assert {s: len(ds.split(s)) for s in ds.split_names} == {"train": 251, "val": 40, "test": 266}
    for name in ds.split_names:
        view = ds.split(name)
        for i in range(len(view)):
            clip = view.joints(i)
            first = int(np.argmax(np.any(clip[..., 0] != 0, axis=(0, 2))))
            assert not clip[:, first, 6, 0].any()  # hip centre of the first tracked frame at the origin


def test_val_subjects_flag_carves_whole_subjects(tmp_path, capsys):
    g = generic(tmp_path / "g.npz", subject=np.arange(40) % 5, split=np.array(["train", "test"] * 20))
    main(["prepare", "npz", str(g), "--out", str(tmp_path / "a"), "--val-subjects", "1", "--seed", "2"])
    ds = open_dataset(tmp_path / "a")
    val = set(ds.split("val").subject.tolist())
    assert len(val) == 1 and not val & set(ds.split("train").subject.tolist())
