"""One trial = one Ray Train run: build the TorchTrainer, fit it, summarise the result.

`fit_trial` is what `raysearch train` calls; `tune_trial_driver` is the per-trial function that a
Ray Tune search runs (it reports every epoch to Tune through `TuneReportCallback`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserInputError

# Ray Train's controller polls its workers every 2 s by default; a trial then waits up to that long
# to be noticed as started or finished. 0.2 s cut a no-op 2-worker trial from ~13 s to ~8-12 s here.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
from .config import TrialConfig
from .loop import META_FILE, train_loop_per_worker


@dataclass(frozen=True)
class Resources:
    """Per-trial compute: `workers` Ray Train workers with these CPUs/GPUs each."""

    workers: int = 2
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_failures: int = 2       # worker-group restarts from the last checkpoint before giving up

    def validate(self) -> "Resources":
        if self.workers < 1:
            raise UserInputError(f"--workers {self.workers}: must be >= 1")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise UserInputError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")
        return self

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_worker))


def preflight(trial: TrialConfig) -> None:
    """Everything a trial would reject, checked here before Ray starts: the data directory, the
    model for that data, and the encoder checkpoint (shapes included)."""
    import models

    from ..data.cache import resolve_data
    from ..data.format import open_dataset

    dataset = open_dataset(resolve_data(trial.data_dir))
    config = trial.model_config(dataset.num_joints, dataset.max_persons, dataset.num_classes, dataset.num_channels)
    if trial.train.init_from:
        try:
            model = models.build_from_config(config)
            models.load_encoder_weights(model.encoder, models.read_state_dict(trial.train.init_from),
                                        trial.train.init_from)
        except models.ModelConfigError as exc:
            raise UserInputError(str(exc)) from None


def make_trainer(trial: TrialConfig, resources: Resources, storage_path: str, name: str,
                 log_dir: str | None, callbacks: list | None = None):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": trial.to_flat(), "log_dir": log_dir, "threads": resources.threads},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=resources.max_failures),
            # The latest checkpoint always carries the best weights so far, so one is enough.
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks or [],
        ),
    )


def summarize(result, trial: TrialConfig, resources: Resources, wall_s: float) -> dict[str, Any]:
    """result.json: final and best metrics, cost, and where the checkpoint is."""
    history = result.metrics_dataframe
    final = dict(result.metrics or {})
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    best = {}
    if checkpoint is not None:
        with result.checkpoint.as_directory() as local:
            best = json.loads(Path(local, META_FILE).read_text())["best"]
    status = "diverged" if final.get("diverged") else ("error" if result.error else "completed")
    return {
        "status": status,
        "reason": final.get("status_reason") or (repr(result.error) if result.error else None),
        "final_metrics": final,
        # -1 and inf are the loop's "nothing yet" markers.
        "best_val_acc": best["val_acc"] if best.get("val_acc", -1) >= 0 else None,
        "best_epoch": best.get("epoch") or None,
        "best_pretrain_val_loss": best["pretrain_val_loss"] if math.isfinite(best.get("pretrain_val_loss", math.inf)) else None,
        "epochs_run": int(final.get("global_epoch", 0)),
        "wall_time_s": wall_s,
        "cpu_hours": wall_s / 3600 * resources.workers * resources.cpus_per_worker,
        "gpu_hours": wall_s / 3600 * resources.workers * resources.gpus_per_worker,
        "checkpoint": checkpoint,
        "run_dir": result.path,
        "history_rows": 0 if history is None else len(history),
        "trial_config": trial.to_flat(),
    }


def fit_trial(trial: TrialConfig, resources: Resources, out_dir: str | Path, name: str = "train") -> dict[str, Any]:
    """Run one trial on the connected (or a new local) Ray cluster; writes out_dir/result.json."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    trainer = make_trainer(trial, resources.validate(), str(out_dir), name, str(out_dir / "tensorboard"))
    result = trainer.fit()
    summary = summarize(result, trial, resources, time.perf_counter() - start)
    (out_dir / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def tune_trial_driver(config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one TorchTrainer per trial, metrics forwarded to Tune.

    `config` holds the flat trial settings plus `_resources` (a dict of Resources fields) and
    `_storage` (where the inner Train runs go). The inner run's name is the Tune trial id, so a
    restored trial finds its own checkpoints and resumes instead of starting over.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    config = dict(config)
    resources = Resources(**config.pop("_resources"))
    storage = config.pop("_storage")
    trial = TrialConfig.from_flat(config)
    trial_id = ray.tune.get_context().get_trial_id()
    log_dir = str(Path(ray.tune.get_context().get_trial_dir()) / "tensorboard")
    trainer = make_trainer(trial, resources, storage, f"train-{trial_id}", log_dir,
                           callbacks=[TuneReportCallback()])
    trainer.fit()
