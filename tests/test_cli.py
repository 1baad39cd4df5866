"""Every bad input through the command line: one line on stderr naming the culprit, exit code 2,
nothing already written lost, and no Ray started."""

import json

import numpy as np
import pytest
import torch

import models
from raysearch.cli import main
from raysearch.data.ntu import format_skeleton


def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_one_line_error(capsys, *args, names: str):
    code, _, err = run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("raysearch: error: ")]
    assert code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err  # progress may come first, the reason last
    assert names in errors[0], errors[0]
    return errors[0]


def ok(capsys, *args) -> str:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return capsys.readouterr().out


@pytest.fixture(autouse=True)
def no_ray():
    yield
    import ray

    assert not ray.is_initialized(), "bad input must be refused before Ray starts"


# -- data ---------------------------------------------------------------------------------------------
def test_missing_paths(capsys, tmp_path):
    assert_one_line_error(capsys, "prepare", "npz", tmp_path / "nope.npz", "--out", tmp_path / "d", names="nope.npz")
    assert_one_line_error(capsys, "data-info", tmp_path / "nodir", names="nodir")
    assert_one_line_error(capsys, "prepare", "ntu", "--raw", tmp_path / "raw", "--out", tmp_path / "d",
                          "--benchmark", "ntu60-xsub", names="raw")


def test_npz_with_pickled_objects_is_refused(capsys, tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, dtype=np.int64))
    line = assert_one_line_error(capsys, "prepare", "npz", path, "--out", tmp_path / "d", names="objects.npz")
    assert "pickle" in line or "object" in line


def test_npz_wrong_rank_labels_out_of_range_and_nan(capsys, tmp_path):
    good = np.random.default_rng(0).normal(size=(6, 3, 20, 5, 1)).astype(np.float32)
    np.savez(tmp_path / "rank.npz", x=good[:, :, :, :, 0], y=np.zeros(6, dtype=np.int64))
    assert_one_line_error(capsys, "prepare", "npz", tmp_path / "rank.npz", "--out", tmp_path / "a", names="'x'")
    np.savez(tmp_path / "labels.npz", x=good, y=np.array([0, 1, 2, -1, 0, 1]))
    assert_one_line_error(capsys, "prepare", "npz", tmp_path / "labels.npz", "--out", tmp_path / "b", names="labels.npz")
    bad = good.copy()
    bad[2, 0, 3, 1, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=np.arange(6) % 2)
    line = assert_one_line_error(capsys, "prepare", "npz", tmp_path / "nan.npz", "--out", tmp_path / "c", names="nan.npz")
    assert "NaN" in line or "non-finite" in line or "finite" in line


def test_truncated_skeleton_file_is_named(capsys, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    joints = np.random.default_rng(0).normal(size=(25, 3))
    text = format_skeleton(4, [(f, "72057594037931101", joints) for f in range(4)])
    (raw / "S001C001P001R001A001.skeleton").write_bytes(text[: len(text) // 2])
    assert_one_line_error(capsys, "prepare", "ntu", "--raw", raw, "--out", tmp_path / "d", "--benchmark", "ntu60-xsub",
                          names="S001C001P001R001A001.skeleton")


def test_prepare_never_overwrites_what_is_not_a_dataset(capsys, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert_one_line_error(capsys, "prepare", "synthetic", "--out", out, "--classes", "3", "--per-class", "5",
                          names="precious")
    assert (out / "notes.txt").read_text() == "keep me"


# -- models -------------------------------------------------------------------------------------------
def test_model_info_json_and_bad_names(capsys):
    info = json.loads(ok(capsys, "model-info", "mvqvae-tiny", "--set", "codebook_size=8", "--json"))
    assert {"params", "encoder_params", "pretrain_gflops", "classifier_gflops", "input_shape"} <= set(info)
    assert_one_line_error(capsys, "model-info", "mvae-huge", names="mvae-huge")
    assert_one_line_error(capsys, "model-info", "mvae-tiny", "--set", "latent_size=4", names="latent_size")
    assert_one_line_error(capsys, "model-info", "mvae-tiny", "--set", "frame_mask_ratio=0.95", names="frame_mask_ratio")
    assert_one_line_error(capsys, "model-info", "mvae-tiny", "--set", "beta", names="beta")


# -- train (all refused before Ray starts) ------------------------------------------------------------
def test_train_refuses_bad_checkpoints_and_settings(capsys, tmp_path, synthetic_data):
    wrong = models.build("sttformer-tiny", encoder_blocks=((8, 8, 2), (8, 24, 4), (24, 24, 4))).state_dict()
    torch.save(wrong, tmp_path / "wrong.pt")
    assert_one_line_error(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data,
                          "--init-from", tmp_path / "wrong.pt", "--out", tmp_path / "run", names="wrong.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert_one_line_error(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data,
                          "--init-from", tmp_path / "corrupt.pt", "--out", tmp_path / "run", names="corrupt.pt")
    torch.save({"w": torch.zeros(1), "code": Payload()}, tmp_path / "code.pt")
    assert_one_line_error(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data,
                          "--init-from", tmp_path / "code.pt", "--out", tmp_path / "run", names="code.pt")
    assert_one_line_error(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data,
                          "--set", "label_fraction=2", names="label_fraction")
    assert_one_line_error(capsys, "train", "--preset", "mvae-tiny", "--data", tmp_path / "nodata", names="nodata")


class Payload:
    """Pickled code that weights_only loading must refuse."""


# -- search, report, export, predict ------------------------------------------------------------------
def test_search_refuses_bad_spaces_and_storage_before_ray(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: x\npreset: mvae-tiny\ndata: synthetic\nobjectives: [{metric: val_acc, mode: max}]\n"
                     "budget: {num_samples: 1, pretrain_epochs: 1, finetune_epochs: 1}\n"
                     "parameters: {beta: {type: float, low: 0.001, high: 0.1, log: true}}\nbogus: 1\n")
    assert_one_line_error(capsys, "search", space, names="bogus")
    assert_one_line_error(capsys, "search", tmp_path / "none.yaml", names="none.yaml")
    good = space.read_text().replace("bogus: 1\n", "")
    space.write_text(good)
    assert_one_line_error(capsys, "search", space, "--data", tmp_path / "missing-data", names="missing-data")
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    assert_one_line_error(capsys, "search", space, "--storage", blocker / "runs", names="--storage")


def test_report_export_predict_bad_paths(capsys, tmp_path):
    assert_one_line_error(capsys, "report", tmp_path / "norun", names="norun")
    assert_one_line_error(capsys, "export", tmp_path / "norun", "--out", tmp_path / "art", names="norun")
    assert_one_line_error(capsys, "predict", tmp_path / "noartifact", tmp_path / "x.npz", names="noartifact")
