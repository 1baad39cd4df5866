"""One trial = one Ray Train run: build the TorchTrainer, fit it, summarise the result.

`fit_trial` is what `raysearch train` calls. A search runs the same `make_trainer` from its own
per-trial driver (`raysearch.tune.trial`); nothing here knows about the search around it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..contract import (COMPLETED, ERROR, META_FILE, OUTCOME_DIVERGED, TENSORBOARD_DIR, TRAIN_RESULT_FILE,
                        Metric, Resources, TrainSummary, TrialMeta)
from ..errors import UserInputError
from .config import MIN_WORKER_BATCH, TrialConfig
from .encoder_cache import EncoderCacheSpec, start_claims
from .loop import train_loop_per_worker


def preflight(trial: TrialConfig, workers: int = 1) -> None:
    """Everything a trial would reject, checked here before Ray starts: the data directory, the
    model for that data, the batch each of `workers` workers gets, and the encoder checkpoint
    (shapes included)."""
    import models

    from ..data.cache import resolve_data
    from ..data.format import open_dataset

    dataset = open_dataset(resolve_data(trial.data_dir))
    batch = trial.resolved(len(dataset.split("train"))).train.batch_size
    if batch // workers < MIN_WORKER_BATCH:
        given = "the recipe's batch_size" if trial.train.batch_size is None else "batch_size"
        raise UserInputError(f"{given} {batch} gives each of the {workers} workers {batch // workers} clip(s) per "
                             f"batch, and batch norm needs at least {MIN_WORKER_BATCH}; set batch_size >= "
                             f"{MIN_WORKER_BATCH * workers} or use fewer workers")
    config = trial.model_config(dataset.num_joints, dataset.max_persons, dataset.num_classes, dataset.num_channels)
    if trial.train.init_from:
        try:
            model = models.build_from_config(config)
            models.load_encoder_weights(model.encoder, models.read_state_dict(trial.train.init_from),
                                        trial.train.init_from)
        except models.ModelConfigError as exc:
            raise UserInputError(str(exc)) from None


def make_trainer(trial: TrialConfig, resources: Resources, storage_path: str, name: str,
                 log_dir: str | None, callbacks: list | None = None, encoder_cache: EncoderCacheSpec | None = None):
    """The TorchTrainer of one trial. The frozen TrialConfig itself travels to the workers."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"trial": trial, "log_dir": log_dir, "threads": resources.threads,
                           "encoder_cache": encoder_cache},
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


def summarize(result, trial: TrialConfig, resources: Resources, wall_s: float) -> TrainSummary:
    """result.json: how the trial ended, its best metrics, cost, and where the checkpoint is."""
    history = result.metrics_dataframe
    final = dict(result.metrics or {})
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    meta, test = None, {}
    if checkpoint is not None:
        with result.checkpoint.as_directory() as local:
            meta = TrialMeta.from_json(Path(local, META_FILE).read_text(), f"checkpoint {checkpoint}")
            # Once, after training, with the best-validation classifier: reported, never selected by.
            from ..deploy.evaluate import test_split_metrics

            test = test_split_metrics(local, trial.data_dir)
    best = meta.best if meta is not None else None
    outcome = OUTCOME_DIVERGED if final.get(Metric.DIVERGED) else (ERROR if result.error else COMPLETED)
    return TrainSummary(
        outcome=outcome,
        reason=final.get(Metric.STATUS_REASON) or (repr(result.error) if result.error else None),
        best_val_acc=best.val_acc if best else None,
        best_epoch=best.epoch if best else None,
        best_pretrain_val_loss=best.pretrain_val_loss if best else None,
        epochs_run=int(final.get(Metric.GLOBAL_EPOCH, 0)),
        wall_time_s=wall_s,
        cpu_hours=resources.cpu_hours(wall_s),
        gpu_hours=resources.gpu_hours(wall_s),
        checkpoint=checkpoint,
        run_dir=result.path,
        history_rows=0 if history is None else len(history),
        final_metrics=final,
        trial_config=meta.trial_config if meta is not None else trial.to_flat(),  # with the recipe resolved
        recipe=meta.recipe if meta is not None else {},
        test_metrics=test,
    )


def fit_trial(trial: TrialConfig, resources: Resources, out_dir: str | Path, name: str = "train",
              encoder_cache: str | None = None) -> TrainSummary:
    """Run one trial on the connected (or a new local) Ray cluster; writes out_dir/result.json.
    `encoder_cache`: a directory or URI of pre-trained encoders (a search's `<run_dir>/encoders`
    too) to take the encoder from, or to add it to."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    spec = None
    if encoder_cache is not None:
        location = encoder_cache if "://" in encoder_cache else str(Path(encoder_cache).resolve())
        spec, claims = EncoderCacheSpec(location), start_claims(location)  # noqa: F841 (held while the trial runs)
    trainer = make_trainer(trial, resources.validate(), str(out_dir), name, str(out_dir / TENSORBOARD_DIR),
                           encoder_cache=spec)
    result = trainer.fit()
    summary = summarize(result, trial, resources, time.perf_counter() - start)
    (out_dir / TRAIN_RESULT_FILE).write_text(summary.to_json())
    return summary
