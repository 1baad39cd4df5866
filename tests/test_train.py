"""One trial: pre-train then fine-tune, in-process (fast) and on local Ray Train (slow)."""

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from raysearch.contract import BEST_CLASSIFIER_FILE, META_FILE, STATE_FILE, TrialMeta
from raysearch.errors import UserInputError
from raysearch.train.config import TrialConfig
from raysearch.train.distributed import WorkerContext
from raysearch.train.loop import LocalReporter, TrialLoop


def trial(data_dir, **settings) -> TrialConfig:
    base = dict(preset="mvae-tiny", data_dir=str(data_dir), pretrain_epochs=1, finetune_epochs=1,
                batch_size=32, seed=0)
    return TrialConfig.from_flat({**base, **settings})


def run_local(config: TrialConfig, root=None, resume=False):
    torch.set_num_threads(1)
    reporter = LocalReporter(root, resume=resume)
    loop = TrialLoop.build(config, WorkerContext(), reporter)
    last = loop.run()
    return loop, reporter, last


def test_trial_reports_every_epoch_with_monotonic_global_epoch(synthetic_data):
    _, reporter, last = run_local(trial(synthetic_data, pretrain_epochs=2, finetune_epochs=2))
    history = reporter.history
    assert [h["global_epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["phase"] for h in history] == ["pretrain", "pretrain", "finetune", "finetune"]
    for h in history:
        assert h["samples_per_s"] > 0 and h["lr"] > 0
    pretrain, finetune = history[:2], history[2:]
    for h in pretrain:  # a proxy under its own name; no val_acc a scheduler could mistake for accuracy
        assert 0.0 <= h["val_knn_acc"] <= 1.0
        assert not {"val_acc", "best_val_acc", "val_ce_loss"} & set(h)
        assert {"train_pretrain_loss", "train_recon_loss", "train_kl_loss", "val_pretrain_loss",
                "val_recon_loss", "val_kl_loss"} <= set(h)
    for h in finetune:
        assert 0.0 <= h["val_acc"] <= 1.0 and h["val_ce_loss"] > 0 and "train_ce_loss" in h
        assert not {"val_knn_acc", "val_pretrain_loss"} & set(h)
    assert history[-1]["best_val_acc"] == max(h["val_acc"] for h in finetune)


def test_linear_probe_proxy_is_reported_as_val_probe_acc(synthetic_data):
    _, reporter, _ = run_local(trial(synthetic_data, finetune_epochs=0, pretrain_metric="linear_probe"))
    first = reporter.history[0]
    assert 0.0 <= first["val_probe_acc"] <= 1.0 and "val_knn_acc" not in first and "val_acc" not in first


def test_checkpoint_meta_records_the_best_so_far_without_sentinels(synthetic_data, tmp_path):
    run_local(trial(synthetic_data, finetune_epochs=0), root=tmp_path)
    meta = TrialMeta.from_json((tmp_path / "checkpoint" / META_FILE).read_text(), "meta")
    assert meta.best.val_acc is None and meta.best.epoch is None  # never fine-tuned: nothing, not -1
    assert meta.best.pretrain_epoch == 1 and meta.best.pretrain_val_loss > 0
    assert not (tmp_path / "checkpoint" / BEST_CLASSIFIER_FILE).exists()


@pytest.mark.parametrize("select", ["last", "val_pretrain_loss"])
def test_fine_tuning_starts_from_the_encoder_pretrain_select_names(synthetic_data, select):
    settings = dict(finetune_epochs=0, lr_milestones=[100])  # one lr schedule whatever the epochs
    loop, reporter, _ = run_local(trial(synthetic_data, pretrain_epochs=3, pretrain_select=select, **settings))
    losses = [h["val_pretrain_loss"] for h in reporter.history]
    assert loop.best.pretrain_val_loss == min(losses)  # recorded whichever encoder is kept
    kept = loop.best.pretrain_epoch
    assert kept == (3 if select == "last" else 1 + losses.index(min(losses)))
    # The same seed stopped after the kept epoch trains the same weights.
    shorter, _, _ = run_local(trial(synthetic_data, pretrain_epochs=kept, **settings))
    again = shorter.model.encoder.state_dict()
    assert all(torch.equal(loop.best_encoder[k], again[k]) for k in again)
    assert all(torch.equal(loop.model.encoder.state_dict()[k], again[k]) for k in again)


def test_mvqvae_reports_codebook_statistics(synthetic_data):
    _, reporter, _ = run_local(trial(synthetic_data, preset="mvqvae-tiny", finetune_epochs=0))
    first = reporter.history[0]
    assert 1.0 <= first["train_perplexity"] <= 32 and 0 < first["train_codebook_usage"] <= 1
    assert "train_commitment_loss" in first and "train_codebook_loss" in first


def test_label_fraction_trains_on_exactly_that_fraction_of_each_class(synthetic_data):
    loop, reporter, _ = run_local(trial(synthetic_data, pretrain_epochs=0, label_fraction=0.05))
    labels = loop.dataset.split("train").labels
    per_class = Counter(labels.tolist())
    chosen = Counter(labels[loop.finetune_indices].tolist())
    assert chosen == {c: max(1, round(0.05 * n)) for c, n in per_class.items()}
    assert reporter.history[-1]["finetune_samples"] == sum(chosen.values())


def test_linear_probe_keeps_encoder_frozen(synthetic_data):
    loop, _, _ = run_local(trial(synthetic_data, pretrain_epochs=0, finetune_mode="linear"))
    before = dict(TrialLoop.build(trial(synthetic_data), WorkerContext(), LocalReporter()).model.encoder.state_dict())
    after = loop.classifier.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k and "num_batches" not in k)


def test_nan_loss_ends_the_trial_with_a_reason(synthetic_data):
    _, reporter, last = run_local(trial(synthetic_data, pretrain_epochs=3, lr=1e30))
    assert last["diverged"] == 1 and "loss became" in last["status_reason"]
    assert len(reporter.history) < 4, "a diverged trial stops instead of burning its budget"


def test_resume_continues_without_repeating_epochs(synthetic_data, tmp_path):
    config = trial(synthetic_data, pretrain_epochs=2, finetune_epochs=2)

    class Crash(Exception):
        pass

    class CrashAfter(LocalReporter):
        def report(self, metrics, checkpoint_dir):
            super().report(metrics, checkpoint_dir)
            if metrics["global_epoch"] == 3:
                raise Crash()

    with pytest.raises(Crash):
        TrialLoop.build(config, WorkerContext(), CrashAfter(tmp_path)).run()
    saved = torch.load(tmp_path / "checkpoint" / STATE_FILE, weights_only=True)
    assert (saved["phase"], saved["epoch"]) == ("finetune", 1)
    _, reporter, _ = run_local(config, root=tmp_path, resume=True)
    assert [h["global_epoch"] for h in reporter.history] == [4]
    assert reporter.history[0]["resumed_from_global_epoch"] == 3
    best = torch.load(tmp_path / "checkpoint" / BEST_CLASSIFIER_FILE, weights_only=True)
    assert "fc.weight" in best


def test_bad_settings_are_refused_before_training(synthetic_data):
    with pytest.raises(UserInputError, match="unknown setting 'betta'"):
        trial(synthetic_data, betta=0.1)
    with pytest.raises(UserInputError, match="label_fraction"):
        trial(synthetic_data, label_fraction=0)
    with pytest.raises(UserInputError, match="num_joints comes from the dataset"):
        trial(synthetic_data, num_joints=17)


# -- on local Ray Train with 2 workers --------------------------------------------------------------
@pytest.mark.slow
def test_two_worker_trial_learns_far_above_chance(synthetic_data, ray_two_cpus, tmp_path):
    from raysearch.contract import Resources
    from raysearch.train.driver import fit_trial

    config = trial(synthetic_data, pretrain_epochs=1, finetune_epochs=8, finetune_lr=1e-2)
    summary = fit_trial(config, Resources(workers=2, cpus_per_worker=1), tmp_path / "run")
    assert summary.outcome == "completed", summary.reason
    chance = 1.0 / 6
    assert summary.best_val_acc > 3 * chance, summary.best_val_acc
    assert summary.epochs_run == 9
    written = json.loads((tmp_path / "run" / "result.json").read_text())
    assert written["outcome"] == "completed" and written["best_val_acc"] == summary.best_val_acc
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_and_finishes(synthetic_data, ray_two_cpus, tmp_path):
    import psutil
    from raysearch.contract import Resources
    from raysearch.train.driver import fit_trial

    config = trial(synthetic_data, pretrain_epochs=3, finetune_epochs=5)
    out = tmp_path / "run"
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=fit_trial(config, Resources(workers=2), out)))
    thread.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and time.time() < deadline and thread.is_alive():
        # A checkpoint counts once the controller has registered it (not when its upload starts).
        snapshot = out / "train" / "checkpoint_manager_snapshot.json"
        if snapshot.exists() and json.loads(snapshot.read_text() or "{}").get("checkpoint_results"):
            workers = [p for p in psutil.Process().children(recursive=True)
                       if "RayTrainWorker" in " ".join(p.cmdline())]
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.2)
    thread.join(timeout=400)
    assert killed is not None, "the trial finished before a worker could be killed"
    summary = result["summary"]
    assert summary.outcome == "completed", summary.reason
    final = summary.final_metrics
    assert final["global_epoch"] == 8
    assert final["resumed_from_global_epoch"] >= 1, "the restarted group resumed from a checkpoint"


@pytest.mark.slow
def test_two_worker_mvqvae_trial_syncs_codebook_stats_without_deadlock(synthetic_data, ray_two_cpus, tmp_path):
    """Codebook counts are all-reduced in training steps only: evaluation shards differ in batch
    count across workers, and a collective there hung the second trial of a smoke search."""
    from raysearch.contract import Resources
    from raysearch.train.driver import fit_trial

    config = trial(synthetic_data, preset="mvqvae-tiny", pretrain_epochs=2, finetune_epochs=1)
    summary = fit_trial(config, Resources(workers=2, cpus_per_worker=0.95), tmp_path / "run")
    assert summary.outcome == "completed", summary.reason
    assert summary.final_metrics["global_epoch"] == 3
    assert summary.best_pretrain_val_loss is not None


@pytest.mark.slow
def test_local_dashboard_listens_on_loopback_only(ray_two_cpus):
    """The dashboard we start (Ray Train's placement-group cleaner needs its state API) must not
    be reachable from other machines unless the user asks."""
    import ray

    webui = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert webui.split(":")[0] in ("127.0.0.1", "localhost"), webui


def test_local_ray_refuses_requests_without_its_token(ray_two_cpus):
    """The local Ray we start runs with token authentication (Ray 2.60 turns it on for a new local
    cluster unless RAY_AUTH_MODE says otherwise): its HTTP API (jobs, state) refuses a request
    without the token or with a wrong one. Plain HTTP: Ray's own clients in this process would
    attach this process's token themselves."""
    import urllib.error
    import urllib.request

    import ray

    webui = "http://" + ray._private.worker.global_worker.node.address_info["webui_url"]
    for path in ("/api/jobs/", "/api/v0/nodes"):
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(webui + path, headers=headers), timeout=20)
            assert refused.value.code in (401, 403), (path, headers, refused.value.code)


def test_workers_pin_ray_address_to_their_own_cluster(ray_two_cpus):
    """Train's placement-group cleaner asks the state API from a worker; with a second Ray on the
    host an address lookup would find both and fail, leaking every stopped trial's CPUs. Workers
    started through `connect` pin RAY_ADDRESS to their own cluster."""
    import ray

    @ray.remote(num_cpus=0)
    def address_and_actor_count():
        from ray.util.state import list_actors

        return os.environ.get("RAY_ADDRESS"), len(list_actors())

    address, _ = ray.get(address_and_actor_count.remote())
    assert address == ray.get_runtime_context().gcs_address
