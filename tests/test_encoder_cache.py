"""Pre-training done once per pre-training configuration: stages, keys, the cache, and its claims."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow.fs
import pytest
import torch
import yaml

from raysearch.contract import (CACHED_ENCODER_FILE, ENCODER_RECORD_FILE, FINETUNE, META_FILE, PRETRAIN, STATE_FILE,
                                Metric, TrialMeta)
from raysearch.data.cache import resolve_data
from raysearch.data.format import open_dataset
from raysearch.runs import trial_history
from raysearch.train.config import TrialConfig, pretrain_key_fields, stage_of
from raysearch.train.distributed import WorkerContext
from raysearch.train.encoder_cache import MINE, PUBLISHED, WAIT, Claims, EncoderCache, encoder_key, key_fields
from raysearch.train.loop import LocalReporter, TrialLoop


def trial(data_dir, **settings) -> TrialConfig:
    base = dict(preset="mvae-tiny", data_dir=str(data_dir), pretrain_epochs=1, finetune_epochs=1, batch_size=32,
                seed=0, finetune_lr=1e-2)
    return TrialConfig.from_flat({**base, **settings})


def key_of(config: TrialConfig, workers: int = 1) -> str:
    """The key a trial computes: from its recipe as resolved for the data, as the loop runs it."""
    data = open_dataset(resolve_data(config.data_dir))
    config = config.resolved(len(data.split("train")))
    model = config.model_config(data.num_joints, data.max_persons, data.num_classes, data.num_channels)
    return encoder_key(key_fields(config, model, data, workers))


def run_cached(config: TrialConfig, cache_dir, root=None, resume=False, reporter=None):
    torch.set_num_threads(1)
    reporter = reporter or LocalReporter(root, resume=resume)
    loop = TrialLoop.build(config, WorkerContext(), reporter, encoder_cache=EncoderCache(str(cache_dir)))
    loop.run()
    return loop, reporter


# -- stages -----------------------------------------------------------------------------------------
def test_fields_belong_to_the_stage_that_reads_them():
    model_fields, train_fields = pretrain_key_fields()
    assert {"variant", "frame_mask_ratio", "joint_mask_ratio", "encoder_blocks", "decoder_depth", "decoder_width",
            "latent_dim", "beta", "codebook_size", "tuple_len"} <= set(model_fields)
    assert {"pretrain_epochs", "lr", "weight_decay", "batch_size", "lr_milestones", "lr_gamma", "seed", "augment",
            "bf16", "init_from", "pretrain_select"} <= set(train_fields)
    for name in ("finetune_epochs", "finetune_lr", "label_fraction", "finetune_mode", "dropout", "num_classes"):
        assert stage_of(name) == FINETUNE and name not in model_fields + train_fields
    assert stage_of("beta") == PRETRAIN


def test_pretraining_settings_change_the_key_and_finetuning_settings_do_not(synthetic_data):
    base = key_of(trial(synthetic_data))
    for change in (dict(frame_mask_ratio=0.5), dict(lr=2e-3), dict(seed=1), dict(pretrain_epochs=3),
                   dict(batch_size=16), dict(variant="mae"), dict(augment=False), dict(decoder_width=32)):
        assert key_of(trial(synthetic_data, **change)) != base, change
    for change in (dict(finetune_lr=1e-3), dict(finetune_epochs=5), dict(label_fraction=0.5),
                   dict(finetune_mode="linear"), dict(dropout=0.3)):
        assert key_of(trial(synthetic_data, **change)) == base, change
    assert key_of(trial(synthetic_data), workers=2) != base
    # lr=None resolves by variant: the same encoder as the explicit value
    assert key_of(trial(synthetic_data, lr=None)) == key_of(trial(synthetic_data, lr=1e-3))


def test_other_data_changes_the_key(synthetic_data, tmp_path):
    from raysearch.data.synthetic import prepare_synthetic

    other = prepare_synthetic(tmp_path / "other", num_classes=6, per_class=150, seed=1)
    assert key_of(trial(other)) != key_of(trial(synthetic_data))


# -- the cache in one process -----------------------------------------------------------------------
@pytest.mark.slow
def test_second_trial_with_the_same_pretraining_key_does_not_pretrain(synthetic_data, tmp_path):
    cache = tmp_path / "encoders"
    first, first_reports = run_cached(trial(synthetic_data), cache, root=tmp_path / "a")
    assert [h["phase"] for h in first_reports.history] == ["pretrain", "finetune"]
    assert {h["encoder_cache_hit"] for h in first_reports.history} == {0}
    key = first.cache_use["key"]
    entry = cache / key
    assert (entry / CACHED_ENCODER_FILE).is_file()
    record = json.loads((entry / ENCODER_RECORD_FILE).read_text())
    assert record["key"] == key and record["best_pretrain_epoch"] == 1
    assert record["best_pretrain_val_loss"] == first.best.pretrain_val_loss

    # Another fine-tuning setting: no pre-training report, the cached encoder, one time axis.
    second, reports = run_cached(trial(synthetic_data, finetune_lr=3e-3, finetune_epochs=2), cache,
                                 root=tmp_path / "b")
    assert [h["phase"] for h in reports.history] == ["finetune", "finetune"]
    assert [h["global_epoch"] for h in reports.history] == [2, 3]
    assert {h["encoder_cache_hit"] for h in reports.history} == {1}
    meta = TrialMeta.from_json((tmp_path / "b" / "checkpoint" / META_FILE).read_text(), "meta")
    assert meta.encoder_cache["key"] == key and meta.encoder_cache["hit"] is True
    assert meta.best.pretrain_val_loss == first.best.pretrain_val_loss
    saved = torch.load(tmp_path / "b" / "checkpoint" / STATE_FILE, weights_only=True)
    cached = torch.load(entry / CACHED_ENCODER_FILE, weights_only=True)
    for name, tensor in first.best_encoder.items():
        assert torch.equal(cached[name], tensor) and torch.equal(saved["best_encoder"][name], tensor), name
    assert [p.name for p in cache.iterdir()] == [key]


def test_a_trial_stopped_during_pretraining_publishes_nothing_and_releases_its_claim(synthetic_data, tmp_path):
    class Stopped(Exception):
        pass

    class StopAfterFirstEpoch(LocalReporter):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            raise Stopped()  # what a scheduler's stop looks like from inside the trial

    config = trial(synthetic_data)
    claims = Claims()
    loop = TrialLoop.build(config, WorkerContext(), StopAfterFirstEpoch(),
                           encoder_cache=EncoderCache(str(tmp_path / "encoders"), claims=claims))
    with pytest.raises(Stopped):
        loop.run()
    key = loop.cache_use["key"]
    assert not (tmp_path / "encoders" / key / ENCODER_RECORD_FILE).exists()
    assert claims.acquire(key, "another trial") == MINE


@pytest.mark.slow
def test_resumed_trial_keeps_its_cache_record(synthetic_data, tmp_path):
    cache = tmp_path / "encoders"
    run_cached(trial(synthetic_data), cache)

    class Crash(Exception):
        pass

    class CrashAfterFirst(LocalReporter):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            raise Crash()

    config = trial(synthetic_data, finetune_lr=3e-3, finetune_epochs=2)
    with pytest.raises(Crash):
        run_cached(config, cache, reporter=CrashAfterFirst(tmp_path / "t"))
    _, reporter = run_cached(config, cache, root=tmp_path / "t", resume=True)
    assert [(h["global_epoch"], h["encoder_cache_hit"], h["resumed_from_global_epoch"]) for h in reporter.history] \
        == [(3, 1, 2)]


# -- claims -----------------------------------------------------------------------------------------
def test_claims_one_owner_per_key_taken_over_after_release_or_a_lapsed_lease():
    claims = Claims(lease_s=0.2)
    assert claims.acquire("k", "a") == MINE
    assert claims.acquire("k", "b") == WAIT and claims.status("k", "b") == WAIT
    assert claims.acquire("k", "a") == MINE and claims.status("k", "a") == MINE
    claims.release("k", "b")  # not b's to release
    assert claims.acquire("k", "b") == WAIT
    claims.release("k", "a")
    assert claims.acquire("k", "b") == MINE
    time.sleep(0.3)  # b died without releasing: its lease lapses
    assert claims.renew("k", "b") and claims.acquire("k", "c") == WAIT
    time.sleep(0.3)
    assert claims.acquire("k", "c") == MINE and not claims.renew("k", "b")
    claims.publish("k", "c")
    assert claims.acquire("k", "d") == PUBLISHED and claims.status("k", "a") == PUBLISHED


@pytest.mark.slow
def test_waiting_trial_takes_the_encoder_the_claimant_publishes(synthetic_data, tmp_path):
    cache = tmp_path / "encoders"
    claims = Claims()
    key = key_of(trial(synthetic_data))
    claims.acquire(key, "someone else")  # pre-training elsewhere
    result = {}
    waiter = threading.Thread(target=lambda: result.update(run=_run_with_cache(
        trial(synthetic_data), EncoderCache(str(cache), claims=claims, poll_s=0.05))))
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "the second trial must wait, not pre-train"
    publisher = EncoderCache(str(cache), claims=claims)
    publisher.owner = "someone else"
    encoder = {"weight": torch.ones(2)}
    publisher.publish(key, {"fields": 1}, encoder, {"best_pretrain_val_loss": 0.5, "best_pretrain_epoch": 2},
                      WorkerContext())
    # The waiting trial loads what was published (a state dict that fits no encoder here) and fails
    # loading it: proof that it took the published entry instead of pre-training.
    waiter.join(timeout=60)
    assert isinstance(result.get("run"), RuntimeError), result


def _run_with_cache(config, cache):
    torch.set_num_threads(1)
    loop = TrialLoop.build(config, WorkerContext(), LocalReporter(), encoder_cache=cache)
    try:
        loop.run()
    except RuntimeError as exc:
        return exc
    return loop



# -- on local Ray ---------------------------------------------------------------------------------------
SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def one_worker_space(tmp_path, **changes) -> Path:
    """smoke.yaml made small: one-worker trials (they run in the Tune actor), FIFO, random over `parameters`."""
    doc = yaml.safe_load(SMOKE.read_text())
    doc.update(synthetic={"classes": 6, "per_class": 100, "seed": 0},
               resources={"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0}, scheduler={"type": "fifo"},
               sampler={"type": "random", "seed": 0}, points_to_evaluate=[],
               budget={"num_samples": 3, "pretrain_epochs": 1, "finetune_epochs": 1, "max_concurrent": 2},
               parameters={"finetune_lr": {"type": "categorical", "choices": [1.0e-2, 3.0e-3, 1.0e-3]}})
    doc["fixed"] = {k: v for k, v in doc["fixed"].items() if k != "finetune_lr"}
    doc.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trial_reports(run_dir: Path) -> dict[str, list[dict]]:
    """Every trial's reports; a last line that Tune is still writing is left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {d.name: trial_history(pyarrow.fs.LocalFileSystem(), str(d)) for d in sorted(run_dir.glob("trial_*"))}


@pytest.mark.slow
def test_search_over_finetuning_parameters_pretrains_once(tmp_path, ray_two_cpus, capsys):
    from raysearch.cli import main as cli_main

    try:
        cli_main(["search", str(one_worker_space(tmp_path)), "--storage", str(tmp_path / "runs"), "--name", "ft",
                  "--json"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    run_dir = tmp_path / "runs" / "ft"
    reports = trial_reports(run_dir)
    assert len(reports) == 3
    pretrained = [t for t, rows in reports.items() if any(r["phase"] == "pretrain" for r in rows)]
    assert len(pretrained) == 1, {t: [r["phase"] for r in rows] for t, rows in reports.items()}
    for name, rows in reports.items():
        assert rows[-1]["global_epoch"] == 2 and rows[-1]["encoder_cache_hit"] == int(name not in pretrained)
    assert len(list((run_dir / "encoders").iterdir())) == 1
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results["outcome"]) == {"completed"} and results["checkpoint"].notna().all()
    # The one-worker trials' checkpoints (Tune's, in the trial directories) export like any other.
    cli_main(["export", str(run_dir), "--out", str(tmp_path / "artifact")])
    assert (tmp_path / "artifact" / "weights.pt").is_file()


@pytest.mark.slow
def test_two_concurrent_trials_with_the_same_key_pretrain_once(synthetic_data, tmp_path, ray_two_cpus):
    import ray

    from raysearch.train.encoder_cache import start_claims

    def _pretrain_with_cache(config: TrialConfig, location: str) -> list[str]:
        """A Ray task (defined here: workers cannot import test modules): one trial with the
        search's encoder cache; returns the phases it reported."""
        from raysearch.train.distributed import WorkerContext
        from raysearch.train.encoder_cache import EncoderCache
        from raysearch.train.loop import LocalReporter, TrialLoop

        torch.set_num_threads(1)
        reporter = LocalReporter()
        TrialLoop.build(config, WorkerContext(), reporter, encoder_cache=EncoderCache(location, poll_s=0.1)).run()
        return [h["phase"] for h in reporter.history]

    location = str(tmp_path / "encoders")
    claims = start_claims(location)  # noqa: F841 (what the search driver holds)
    task = ray.remote(num_cpus=1)(_pretrain_with_cache)
    phases = ray.get([task.remote(trial(synthetic_data, pretrain_epochs=1, finetune_epochs=1, finetune_lr=lr),
                                  location) for lr in (1e-2, 1e-3)])
    assert sorted(phases) == [["finetune"], ["pretrain", "finetune"]]
    assert len(list(Path(location).iterdir())) == 1


@pytest.mark.slow
def test_one_worker_trial_resumes_from_its_checkpoint_after_a_kill(tmp_path, ray_two_cpus):
    import ray
    from ray.util.state import list_actors

    space = one_worker_space(tmp_path, budget={"num_samples": 1, "pretrain_epochs": 1, "finetune_epochs": 2},
                             parameters={"finetune_lr": {"type": "categorical", "choices": [1.0e-2]}})
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen([sys.executable, "-m", "raysearch.cli", "search", str(space), "--storage",
                               str(tmp_path / "runs"), "--name", "kill"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    run_dir = tmp_path / "runs" / "kill"
    try:
        # The Tune actor that runs the trial, in this test's own cluster, found before its first
        # checkpoint, so that the kill follows the checkpoint at once (the state API can take
        # seconds on a busy machine, and the trial has only two epochs left by then). The kill
        # waits for the report that names the checkpoint: Tune writes it to result.json once it has
        # registered the checkpoint, which the checkpoint's directory precedes.
        pid, killed, deadline = None, None, time.time() + 400
        while killed is None and time.time() < deadline and driver.poll() is None:
            if pid is None:
                actors = list_actors(address=env["RAY_ADDRESS"],
                                     filters=[("class_name", "=", "ImplicitFunc"), ("state", "=", "ALIVE")])
                pid = actors[0].pid if actors else None
            elif any(r.get(Metric.CHECKPOINT_DIR_NAME) for rows in trial_reports(run_dir).values() for r in rows):
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.05)
        assert killed is not None, (tmp_path / "driver.log").read_text()[-2000:]
        assert driver.wait(timeout=400) == 0, (tmp_path / "driver.log").read_text()[-2000:]
    finally:
        if driver.poll() is None:   # a failed test leaves no search holding the cluster's CPUs
            driver.kill()
            driver.wait()
    (rows,) = trial_reports(run_dir).values()
    assert rows[-1]["global_epoch"] == 3
    assert rows[-1]["resumed_from_global_epoch"] >= 1, "the restarted trial resumed from its checkpoint"
    assert sorted({r["global_epoch"] for r in rows}) == [1, 2, 3]


def test_search_space_knows_the_stage_of_each_parameter(tmp_path):
    from raysearch.tune.space import load_search_space

    space = load_search_space(one_worker_space(tmp_path, parameters={
        "finetune_lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
        "frame_mask_ratio": {"type": "float", "low": 0.3, "high": 0.6},
        "dropout": {"type": "categorical", "choices": [0.0, 0.2]}}))
    assert space.stages() == {"finetune_lr": FINETUNE, "frame_mask_ratio": PRETRAIN, "dropout": FINETUNE}
