"""predict replays the import: raw clips give the logits of the imported clips, the recorded
normalisation travels into the artifact, and one-person clips fit a two-person model."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import models
from raysearch.cli import main
from raysearch.contract import BEST_CLASSIFIER_FILE, META_FILE, TrialMeta
from raysearch.data.dataset import SkeletonDataset
from raysearch.data.format import open_dataset
from raysearch.data.normalise import Normalisation
from raysearch.data.npz import prepare_npz
from raysearch.deploy import export_artifact, load_artifact, predict
from raysearch.errors import UserInputError

CLASSES, JOINTS = 4, 20


def raw_clips(n=40, t=30, seed=0):
    """Camera-space clips of 20 joints, one person, 2.5 m from the sensor, with padding."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 3, t, JOINTS, 1), np.float32)
    length = rng.integers(8, t + 1, n)
    for i in range(n):
        body = rng.normal(0, 0.3, (3, 1, JOINTS, 1)) + rng.normal(0, 0.05, (3, length[i], JOINTS, 1))
        x[i, :, : length[i]] = body + np.array([0.4, 0.1, 2.5])[:, None, None, None]
    y = np.arange(n) % CLASSES
    split = np.where(np.arange(n) < 28, "train", "test")
    return x, length, y, split


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-data")
    x, length, y, split = raw_clips()
    np.savez(root / "raw.npz", x=x, length=length, y=y, split=split)
    return prepare_npz(root / "raw.npz", root / "data"), (x, length, y, split)


@pytest.fixture(scope="module")
def artifact(imported, tmp_path_factory):
    """An artifact of a randomly initialised two-person sttformer-tiny on the one-person data."""
    data_dir, _ = imported
    ds = open_dataset(data_dir)
    config = models.preset_config("sttformer-tiny", num_joints=JOINTS, num_persons=2, num_classes=CLASSES)
    torch.manual_seed(0)
    classifier = models.build_from_config(config).eval()
    with torch.no_grad():  # random logits are in the hundreds; small ones keep every probability informative
        classifier.fc.weight.mul_(1e-4)
    checkpoint = tmp_path_factory.mktemp("predict-ckpt")
    torch.save(classifier.state_dict(), checkpoint / BEST_CLASSIFIER_FILE)
    meta = TrialMeta(model_config=asdict(config), trial_config={"data_dir": str(data_dir), "preset": "sttformer-tiny"},
                     class_names=list(ds.class_names), layout=ds.layout.to_json())
    (checkpoint / META_FILE).write_text(meta.to_json())
    return export_artifact(checkpoint, tmp_path_factory.mktemp("predict-out") / "artifact")


def test_import_centres_on_the_recognised_layouts_hip(imported):
    data_dir, (x, length, _, split) = imported
    ds = open_dataset(data_dir)
    assert ds.layout.name == "msr-action3d-20" and ds.manifest.normalisation == Normalisation(center_joint=6)
    test = ds.split("test")
    raw_test = np.flatnonzero(split == "test")
    for row, i in enumerate(raw_test):
        clip = test.joints(row)
        np.testing.assert_array_equal(clip[:, 0, 6, 0], 0.0)  # hip of the first frame at the origin
        np.testing.assert_allclose(clip, x[i, :, : length[i]] - x[i, :, :1, 6:7, :1], atol=1e-6)


def test_raw_clip_through_predict_gives_the_logits_of_the_imported_clip(imported, artifact, tmp_path):
    data_dir, (x, length, _, split) = imported
    raw_test = np.flatnonzero(split == "test")
    np.savez(tmp_path / "raw-test.npz", x=x[raw_test], length=length[raw_test])
    result = predict(artifact, tmp_path / "raw-test.npz", top_k=CLASSES)

    model = load_artifact(artifact)
    test = SkeletonDataset(data_dir, "test", model.config.num_frames, train=False)
    imported_x = torch.stack([test[i][0] for i in range(len(test))])  # (N, C, T, V, 1)
    padded = torch.cat([imported_x, torch.zeros_like(imported_x)], dim=-1)  # the absent second person
    expected = torch.softmax(model.logits(padded), dim=1)
    assert len(result["predictions"]) == len(raw_test)
    for p, row in zip(result["predictions"], expected):
        got = torch.zeros(CLASSES)
        for name, prob in p["top_k"]:
            got[model.class_names.index(name)] = prob
        torch.testing.assert_close(got, row, atol=1e-6, rtol=0)
    assert all(p["probability"] < 0.99 for p in result["predictions"])  # not saturated: the check has teeth
    # Uncentred input would give other answers: the transform really is applied.
    np.savez(tmp_path / "pre-centred.npz", x=x[raw_test] - x[raw_test][:, :, :1, 6:7, :1], length=length[raw_test])
    again = predict(artifact, tmp_path / "pre-centred.npz", top_k=CLASSES)
    assert [p["label"] for p in again["predictions"]] == [p["label"] for p in result["predictions"]]


def test_preprocessing_json_records_the_training_normalisation(artifact):
    prep = json.loads((artifact / "preprocessing.json").read_text())
    assert prep["normalisation"]["center_joint"] == 6 and prep["normalisation"]["scale"] == "none"
    assert prep["layout"]["center_joint_name"] == "hip_center"
    assert prep["training_data"]["importer"] == "npz-generic"


def test_one_person_clip_fits_a_two_person_model_and_says_so(imported, artifact, tmp_path, capsys):
    _, (x, length, _, _) = imported
    np.savez(tmp_path / "one.npz", x=x[:3], length=length[:3])
    main(["predict", str(artifact), str(tmp_path / "one.npz"), "--json"])
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["predictions"]) == 3
    assert any("padded the person axis from 1 to 2" in note for note in result["notes"])
    assert "padded the person axis" in captured.err


def test_more_persons_than_the_model_fit_only_when_the_extra_ones_are_empty(imported, artifact, tmp_path):
    _, (x, length, _, _) = imported
    three = np.zeros(x[:2].shape[:-1] + (3,), np.float32)
    three[..., 0] = x[:2, ..., 0]
    np.savez(tmp_path / "three-empty.npz", x=three, length=length[:2])
    result = predict(artifact, tmp_path / "three-empty.npz")
    assert any("dropped persons 3..3" in note for note in result["notes"])
    three[1, ..., 2] = 0.5
    np.savez(tmp_path / "three.npz", x=three, length=length[:2])
    with pytest.raises(UserInputError, match="sample 000001: has 3 persons .* artifact takes 2"):
        predict(artifact, tmp_path / "three.npz")


def test_predict_refuses_other_joint_counts_in_one_line(artifact, tmp_path, capsys):
    np.savez(tmp_path / "v25.npz", x=np.ones((2, 3, 12, 25, 1), np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(artifact), str(tmp_path / "v25.npz")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("raysearch: error: ") and "25 joints per person but artifact" in err


def test_tampered_normalisation_in_preprocessing_json_is_one_line(artifact, tmp_path):
    import shutil

    copy = shutil.copytree(artifact, tmp_path / "copy")
    prep = json.loads((copy / "preprocessing.json").read_text())
    prep["normalisation"]["center_joint"] = "hip"
    (copy / "preprocessing.json").write_text(json.dumps(prep))
    np.savez(tmp_path / "one.npz", x=np.ones((1, 3, 12, 20, 1), np.float32))
    with pytest.raises(UserInputError, match="normalisation.center_joint must be a joint index"):
        predict(copy, tmp_path / "one.npz")
