"""Deployment: export a trained trial, load it back, predict on raw input, refuse bad files."""

import argparse
import inspect
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import raysearch.deploy.export as export_module
from models import STTFormerClassifier
from raysearch.data.dataset import SkeletonDataset
from raysearch.data.format import open_dataset
from raysearch.data.ntu import format_skeleton
from raysearch.deploy import export_artifact, load_artifact, predict, resolve_checkpoint
from raysearch.deploy.cli_commands import add_export_parser, add_predict_parser
from raysearch.deploy.export import PROGRAM_FILES, REQUIRED_FILES, TEST_CROP_FRACTION, _model_config
from raysearch.errors import UserInputError
from raysearch.train.config import TrialConfig
from raysearch.train.distributed import WorkerContext
from raysearch.contract import BEST_CLASSIFIER_FILE, META_FILE, STATE_FILE
from raysearch.train.loop import LocalReporter, TrialLoop


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from raysearch.data.synthetic import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("deploy-data") / "synthetic", num_classes=6, per_class=60, seed=0)


@pytest.fixture(scope="module")
def checkpoint(data_dir, tmp_path_factory):
    """The checkpoint directory of one short in-process trial (1 pre-train + 2 fine-tune epochs)."""
    root = tmp_path_factory.mktemp("deploy-trial")
    trial = TrialConfig.from_flat(dict(preset="mvae-tiny", data_dir=str(data_dir), pretrain_epochs=1,
                                       finetune_epochs=2, batch_size=32, seed=0, finetune_lr=1e-2))
    TrialLoop.build(trial, WorkerContext(), LocalReporter(root)).run()
    return root / "checkpoint"


@pytest.fixture(scope="module")
def artifact_dir(checkpoint, tmp_path_factory):
    return export_artifact(checkpoint, tmp_path_factory.mktemp("deploy-out") / "artifact")


@pytest.fixture
def artifact_copy(artifact_dir, tmp_path):
    return Path(shutil.copytree(artifact_dir, tmp_path / "artifact"))


def meta_of(checkpoint) -> dict:
    return json.loads((checkpoint / META_FILE).read_text())


def trial_classifier(checkpoint) -> STTFormerClassifier:
    """The trial's own best classifier, straight from its checkpoint."""
    config = _model_config(meta_of(checkpoint)["model_config"], "meta")
    classifier = STTFormerClassifier(config)
    classifier.load_state_dict(torch.load(checkpoint / BEST_CLASSIFIER_FILE, weights_only=True))
    return classifier.eval()


def split_arrays(data_dir, split="val"):
    """Raw valid frames of a split, zero-padded: x (N, C, T, V, M), length (N,), y (N,)."""
    view = open_dataset(data_dir).split(split)
    samples = [np.asarray(view.joints(i)) for i in range(len(view))]  # (C, T_i, V, M)
    x = np.zeros((len(samples), *samples[0].shape[:1], max(s.shape[1] for s in samples), *samples[0].shape[2:]),
                 np.float32)
    for i, s in enumerate(samples):
        x[i, :, : s.shape[1]] = s
    return x, np.array([s.shape[1] for s in samples]), view.labels


def labels_of(result) -> list[int]:
    return [p["label"] for p in result["predictions"]]


# -- export -----------------------------------------------------------------------------------------
def test_export_writes_every_file_and_weights_load_with_weights_only(artifact_dir, checkpoint):
    assert {p.name for p in artifact_dir.iterdir()} == set(REQUIRED_FILES) | {PROGRAM_FILES["torch.export"]}
    weights = torch.load(artifact_dir / "weights.pt", weights_only=True)
    best = torch.load(checkpoint / BEST_CLASSIFIER_FILE, weights_only=True)
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in best)
    config = json.loads((artifact_dir / "config.json").read_text())
    assert config["export_format"] == "torch.export" and config["torch_version"] == torch.__version__
    assert config["model_config"]["variant"] == "sttformer"
    assert config["verification"]["max_abs_diff"] <= 1e-4
    meta = meta_of(checkpoint)
    assert json.loads((artifact_dir / "labels.json").read_text()) == meta["class_names"]
    metrics = json.loads((artifact_dir / "metrics.json").read_text())
    assert metrics["best_val_acc"] == meta["best"]["val_acc"] and metrics["trial_config"]["preset"] == "mvae-tiny"
    prep = json.loads((artifact_dir / "preprocessing.json").read_text())
    assert (prep["num_frames"], prep["num_joints"], prep["max_persons"]) == (16, 25, 2)
    assert prep["test_crop_fraction"] == 0.95 and prep["layout"]["name"] == "ntu-25"
    assert prep["layout"]["center_joint_name"] == "spine_mid"
    assert prep["training_data"]["importer"] == "synthetic"


def test_test_crop_fraction_is_the_one_validation_uses():
    default = inspect.signature(SkeletonDataset).parameters["test_crop_fraction"].default
    assert TEST_CROP_FRACTION == default


def test_exported_program_matches_eager_at_any_batch_size(artifact_dir):
    artifact = load_artifact(artifact_dir)
    program = artifact.load_program()
    generator = torch.Generator().manual_seed(1)
    for n in (1, 2, 9):
        x = 0.3 * torch.randn(n, 3, 16, 25, 2, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(program(x), artifact.logits(x), atol=1e-4, rtol=0)


def test_torchscript_fallback_when_torch_export_fails(checkpoint, tmp_path, monkeypatch, capsys):
    def refuses(*args):
        raise RuntimeError("cannot capture this model")

    monkeypatch.setattr(export_module, "EXPORTERS", (("torch.export", refuses),) + export_module.EXPORTERS[1:])
    out = export_artifact(checkpoint, tmp_path / "ts")
    config = json.loads((out / "config.json").read_text())
    assert config["export_format"] == "torchscript" and (out / "classifier.ts").is_file()
    assert "cannot capture" in config["verification"]["failed_formats"][0]
    assert not (out / "classifier.pt2").exists()
    assert load_artifact(out).export_format == "torchscript"
    assert "fell back to torchscript" in capsys.readouterr().err


# -- predict ----------------------------------------------------------------------------------------
def test_predict_npz_gives_the_labels_of_the_trials_own_evaluation(artifact_dir, checkpoint, data_dir, tmp_path):
    x, length, y = split_arrays(data_dir)
    np.savez(tmp_path / "val.npz", x=x, length=length, y=y)
    result = predict(artifact_dir, tmp_path / "val.npz", top_k=3)

    classifier = trial_classifier(checkpoint)
    val = SkeletonDataset(data_dir, "val", 16, train=False)
    with torch.no_grad():
        expected = classifier(torch.stack([val[i][0] for i in range(len(val))])).argmax(1).tolist()
    assert labels_of(result) == expected
    accuracy = float(np.mean(np.array(labels_of(result)) == y))
    assert accuracy == pytest.approx(meta_of(checkpoint)["best"]["val_acc"])  # what the trial reported

    first = result["predictions"][0]
    assert first["index"] == 0 and first["sample_id"] == "000000" and len(first["top_k"]) == 3
    assert first["top_k"][0] == [first["class_name"], first["probability"]]
    assert first["class_name"] == json.loads((artifact_dir / "labels.json").read_text())[first["label"]]
    assert all(a[1] >= b[1] for p in result["predictions"] for a, b in zip(p["top_k"], p["top_k"][1:]))


def test_predict_ctrgcn_npz_agrees_with_the_generic_layout(artifact_dir, data_dir, tmp_path):
    x, length, y = split_arrays(data_dir)
    x, length = x[:20], length[:20]
    np.savez(tmp_path / "generic.npz", x=x, length=length)
    flat = x.transpose(0, 2, 4, 3, 1).reshape(len(x), x.shape[2], -1)  # (N, T, M*V*C), zero padded
    np.savez(tmp_path / "ctrgcn.npz", x_test=flat, y_test=np.eye(6)[y[:20]])
    generic = predict(artifact_dir, tmp_path / "generic.npz")
    ctrgcn = predict(artifact_dir, tmp_path / "ctrgcn.npz")
    assert ctrgcn["format"] == "npz-ctrgcn" and ctrgcn["predictions"][3]["sample_id"] == "test-000003"
    assert labels_of(ctrgcn) == labels_of(generic)
    np.testing.assert_allclose([p["probability"] for p in ctrgcn["predictions"]],
                               [p["probability"] for p in generic["predictions"]], atol=1e-5)


def test_predict_skeleton_applies_the_importers_preprocessing(artifact_dir, data_dir, tmp_path):
    x, length, _ = split_arrays(data_dir)
    i = next(i for i in range(len(x)) if not x[i, ..., 1].any())  # a one-person sequence
    sample = x[i, :, : length[i]]  # (C, T, V, M)
    # As the importer would: centred on spine_mid (joint 1) of person 1 in its first frame.
    centred = sample - sample[:, :1, 1:2, :1] * (sample.any(axis=(0, 2), keepdims=True))
    np.savez(tmp_path / "centred.npz", x=centred[None], length=length[i: i + 1])
    camera = sample[..., 0].transpose(1, 2, 0) + np.array([0.1, 0.2, 3.0])  # (T, V, 3), 3 m from the camera
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(format_skeleton(len(camera), [(t, "72057594037931101", camera[t]) for t in range(len(camera))]))

    from_skeleton = predict(artifact_dir, path)
    from_npz = predict(artifact_dir, tmp_path / "centred.npz")
    assert from_skeleton["format"] == "skeleton"
    assert from_skeleton["predictions"][0]["sample_id"] == "S001C001P001R001A001"
    assert labels_of(from_skeleton) == labels_of(from_npz)
    assert from_skeleton["predictions"][0]["probability"] == pytest.approx(
        from_npz["predictions"][0]["probability"], abs=1e-3)  # the text file keeps 7 digits


def test_predict_refuses_a_joint_or_person_count_that_cannot_be_made_to_fit(artifact_dir, tmp_path):
    np.savez(tmp_path / "v17.npz", x=np.ones((2, 3, 30, 17, 2), np.float32))
    with pytest.raises(UserInputError, match="has 17 joints per person but artifact .* expects 25"):
        predict(artifact_dir, tmp_path / "v17.npz")
    np.savez(tmp_path / "m3.npz", x=np.random.default_rng(0).normal(size=(2, 3, 30, 25, 3)).astype(np.float32))
    with pytest.raises(UserInputError, match="has 3 persons with joints in the same clip but the artifact takes 2"):
        predict(artifact_dir, tmp_path / "m3.npz")
    (tmp_path / "clip.txt").write_text("1")
    with pytest.raises(UserInputError, match="give a .skeleton or .npz"):
        predict(artifact_dir, tmp_path / "clip.txt")


def test_predict_never_imports_ray(artifact_dir, tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((1, 3, 20, 25, 2), np.float32))
    code = ("import sys; from raysearch.deploy.predict import predict; "
            f"predict({str(artifact_dir)!r}, {str(tmp_path / 'one.npz')!r}); assert 'ray' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- refusing bad artifacts -------------------------------------------------------------------------
def test_missing_artifact_file_is_named(artifact_copy):
    (artifact_copy / "labels.json").unlink()
    with pytest.raises(UserInputError, match="missing labels.json"):
        load_artifact(artifact_copy)


def test_corrupt_weights_are_refused(artifact_copy):
    data = (artifact_copy / "weights.pt").read_bytes()
    (artifact_copy / "weights.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserInputError, match=r"weights.pt: corrupt") as error:
        load_artifact(artifact_copy)
    assert "\n" not in str(error.value)


class _WritesAFile:
    """Unpickling this would create `path`: proof that code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def test_weights_holding_pickled_code_are_refused_without_running_it(artifact_copy, tmp_path):
    marker = tmp_path / "code-ran"
    state = torch.load(artifact_copy / "weights.pt", weights_only=True)
    torch.save({**state, "payload": _WritesAFile(marker)}, artifact_copy / "weights.pt")
    with pytest.raises(UserInputError, match="holds pickled Python objects"):
        load_artifact(artifact_copy)
    assert not marker.exists()


def test_weights_changed_after_export_are_refused(artifact_copy):
    state = torch.load(artifact_copy / "weights.pt", weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0
    torch.save(state, artifact_copy / "weights.pt")
    with pytest.raises(UserInputError, match="changed since export"):
        load_artifact(artifact_copy)


def test_labels_must_match_the_classifier_outputs(artifact_copy):
    names = json.loads((artifact_copy / "labels.json").read_text())
    (artifact_copy / "labels.json").write_text(json.dumps(names[:-1]))
    with pytest.raises(UserInputError, match="5 class names but the classifier has 6 outputs"):
        load_artifact(artifact_copy)


def test_overwrite_is_refused_and_the_old_artifact_kept(artifact_copy, checkpoint):
    before = {p.name: p.read_bytes() for p in artifact_copy.iterdir()}
    with pytest.raises(UserInputError, match="not empty; .* --overwrite"):
        export_artifact(checkpoint, artifact_copy)
    assert {p.name: p.read_bytes() for p in artifact_copy.iterdir()} == before


def test_failed_overwrite_keeps_the_old_artifact_and_leaves_no_temporaries(artifact_copy, checkpoint, monkeypatch):
    before = {p.name: p.read_bytes() for p in artifact_copy.iterdir()}

    def wrong(classifier, example, path):
        path.write_bytes(b"not a program")

    monkeypatch.setattr(export_module, "EXPORTERS", (("torch.export", wrong), ("torchscript", wrong)))
    with pytest.raises(UserInputError, match="export refused"):
        export_artifact(checkpoint, artifact_copy, overwrite=True)
    assert {p.name: p.read_bytes() for p in artifact_copy.iterdir()} == before
    assert [p.name for p in artifact_copy.parent.iterdir()] == ["artifact"]


def test_overwrite_replaces_an_artifact_but_never_other_directories(artifact_copy, checkpoint, tmp_path):
    (artifact_copy / "config.json").write_text(json.dumps({"format": "raysearch-artifact", "stale": True}))
    export_artifact(checkpoint, artifact_copy, overwrite=True)
    assert "stale" not in json.loads((artifact_copy / "config.json").read_text())
    load_artifact(artifact_copy)
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="not a raysearch artifact"):
        export_artifact(checkpoint, other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_checkpoint_that_never_fine_tuned_is_refused(checkpoint, tmp_path):
    pretrain_only = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    (pretrain_only / BEST_CLASSIFIER_FILE).unlink()
    with pytest.raises(UserInputError, match="never finished a fine-tuning epoch"):
        export_artifact(pretrain_only, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- finding the checkpoint -------------------------------------------------------------------------
def write_train_run(root: Path, checkpoint: str, outcome="completed") -> Path:
    root.mkdir(parents=True)
    (root / "result.json").write_text(json.dumps({"outcome": outcome, "reason": None, "checkpoint": checkpoint,
                                                  "best_val_acc": 0.5}))
    return root


def test_resolve_train_run_uses_its_checkpoint_in_place(checkpoint, tmp_path):
    run = write_train_run(tmp_path / "run", str(checkpoint))
    local, info = resolve_checkpoint(str(run))
    assert Path(local) == checkpoint and info["kind"] == "train" and not info["fetched"]
    with pytest.raises(UserInputError, match="drop --trial"):
        resolve_checkpoint(str(run), "t1")


def test_resolve_copies_a_uri_checkpoint_without_the_resume_state(checkpoint, tmp_path):
    run = write_train_run(tmp_path / "run", checkpoint.as_uri())
    local, info = resolve_checkpoint(run.as_uri())
    try:
        assert info["fetched"] and Path(local) != checkpoint
        assert sorted(p.name for p in Path(local).iterdir()) == sorted([BEST_CLASSIFIER_FILE, META_FILE])
        assert not (Path(local) / STATE_FILE).exists()
        assert export_artifact(local, tmp_path / "out").is_dir()
    finally:
        shutil.rmtree(local)


def test_resolve_refuses_a_diverged_train_run_and_says_how_to_export_anyway(checkpoint, tmp_path):
    run = write_train_run(tmp_path / "run", str(checkpoint), outcome="diverged")
    with pytest.raises(UserInputError, match=f"ended diverged .*`raysearch export {checkpoint} --out DIR`"):
        resolve_checkpoint(str(run))
    assert resolve_checkpoint(str(checkpoint))[1]["kind"] == "checkpoint"  # the way out it names


@pytest.fixture
def search_run(checkpoint, tmp_path):
    """A search run directory: six trials of every outcome, all pointing at real checkpoints."""
    pretrain_only = Path(shutil.copytree(checkpoint, tmp_path / "pretrain-only"))
    (pretrain_only / BEST_CLASSIFIER_FILE).unlink()
    ckpt = str(checkpoint)
    rows = [
        dict(trial_id="t_low", outcome="completed", val_acc=0.40, best_val_acc=0.50, checkpoint=ckpt),
        dict(trial_id="t_best", outcome="completed", val_acc=0.75, best_val_acc=0.80, checkpoint=ckpt),
        dict(trial_id="t_late_peak", outcome="stopped_early", val_acc=0.90, best_val_acc=0.70, checkpoint=ckpt),
        dict(trial_id="t_diverged", outcome="diverged", val_acc=0.0, best_val_acc=0.95, checkpoint=ckpt),
        dict(trial_id="t_error", outcome="error", val_acc=None, best_val_acc=None, checkpoint=None),
        dict(trial_id="t_pretrain", outcome="stopped_early", val_acc=0.99, best_val_acc=0.99,
             checkpoint=str(pretrain_only)),
    ]
    run = tmp_path / "search"
    run.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), run / "results.parquet")
    (run / "search_space.json").write_text(json.dumps({"objectives": [{"metric": "val_acc", "mode": "max"}]}))
    return run, rows


def test_resolve_search_picks_the_best_finished_trial_with_fine_tuned_weights(search_run):
    run, _ = search_run
    local, info = resolve_checkpoint(str(run))
    # t_pretrain ranks first but has no classifier; t_diverged and t_error are not finished;
    # t_late_peak's last val_acc is higher, but its exported (best) weights score 0.70.
    assert info["trial_id"] == "t_best" and info["objective"] == {"metric": "best_val_acc", "mode": "max",
                                                                  "value": 0.80}
    assert info["skipped"] == ["t_pretrain"] and (Path(local) / BEST_CLASSIFIER_FILE).is_file()


def test_resolve_search_trial_selection(search_run):
    run, _ = search_run
    assert resolve_checkpoint(str(run), "t_low")[1]["trial_id"] == "t_low"
    with pytest.raises(UserInputError, match="--trial nope: not in run .* available: t_low, t_best, t_late_peak"):
        resolve_checkpoint(str(run), "nope")
    with pytest.raises(UserInputError, match="--trial t_error: has no checkpoint"):
        resolve_checkpoint(str(run), "t_error")


def test_resolve_search_with_nothing_usable_says_why(search_run):
    run, rows = search_run
    bad = [r for r in rows if r["outcome"] in ("diverged", "error")]
    pq.write_table(pa.Table.from_pylist(bad), run / "results.parquet")
    with pytest.raises(UserInputError, match=r"no finished trial .* \(1 diverged, 1 error\)"):
        resolve_checkpoint(str(run))
    with pytest.raises(UserInputError, match="holds neither result.json"):
        resolve_checkpoint(str(run.parent))
    moved = [{**rows[0], "checkpoint": str(run / "elsewhere" / "checkpoint_000002")}]
    pq.write_table(pa.Table.from_pylist(moved), run / "results.parquet")
    with pytest.raises(UserInputError, match="not reachable from here .*elsewhere"):
        resolve_checkpoint(str(run))


# -- command line -----------------------------------------------------------------------------------
def run_cli(argv):
    parser = argparse.ArgumentParser(prog="raysearch")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_predict_parser(sub)
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_export_and_predict(checkpoint, data_dir, tmp_path, capsys):
    run = write_train_run(tmp_path / "run", str(checkpoint))
    run_cli(["export", str(run), "--out", str(tmp_path / "art"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["artifact"] == str(tmp_path / "art") and summary["export_format"] == "torch.export"

    x, length, _ = split_arrays(data_dir)
    np.savez(tmp_path / "few.npz", x=x[:4], length=length[:4])
    run_cli(["predict", str(tmp_path / "art"), str(tmp_path / "few.npz"), "--json", "--top-k", "2"])
    out = capsys.readouterr().out
    result = json.loads(out)  # one JSON object, nothing else on stdout
    assert len(result["predictions"]) == 4 and all(len(p["top_k"]) == 2 for p in result["predictions"])

    run_cli(["predict", str(tmp_path / "art"), str(tmp_path / "few.npz")])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["index", "sample_id", "class", "prob"] and len(table) == 5
    assert result["predictions"][2]["class_name"] in table[3]
