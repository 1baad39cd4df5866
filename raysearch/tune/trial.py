"""The per-trial driver of a search: a Tune function that runs one trial.

Tune's search algorithm hands the trainable a flat dict of sampled parameters (plus the space's
constants); `run_trial` parses it once into a `TrialConfig`. A one-worker trial runs the
`TrialLoop` right here, in the Tune actor (reports through `ray.tune.report`, resumes from
`ray.tune.get_checkpoint()`), and Tune reuses the actor for the next trial: no Train controller,
no worker actors, no process group. A multi-worker trial fits a TorchTrainer, whose reports
`TuneReportCallback` forwards to Tune. Both run the same loop and the same reporter protocol. The
resources, the storage of the inner runs and the encoder cache are bound with
`tune.with_parameters`, never packed into the sampled config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..contract import TENSORBOARD_DIR, Resources
from ..train.config import TrialConfig
from ..train.driver import make_trainer
from ..train.encoder_cache import EncoderCache, EncoderCacheSpec

# The per-trial Tune function of a multi-worker trial only waits on its TorchTrainer. At Tune's
# default of 1 CPU, a 2-core machine would run one trial's driver and no workers, and deadlock with
# 2 workers per trial.
DRIVER_CPUS = 0.05


def trial_resources(resources: Resources) -> dict[str, float]:
    """What the Tune trainable reserves: the worker itself for a one-worker trial, else a sliver
    for the driver (the TorchTrainer reserves its workers)."""
    if resources.workers > 1:
        return {"CPU": DRIVER_CPUS}
    return {"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker}


def run_in_this_actor(trial: TrialConfig, resources: Resources, log_dir: str, cache: EncoderCache | None) -> None:
    """One worker's TrialLoop in the Tune actor, with the threads and the device it was given."""
    import ray
    import ray.tune
    import torch

    from ..train.distributed import WorkerContext
    from ..train.loop import RayReporter, TrialLoop

    torch.set_num_threads(resources.threads)
    os.environ["OMP_NUM_THREADS"] = str(resources.threads)
    # Ray narrows CUDA_VISIBLE_DEVICES to this actor's GPUs, so its first is cuda:0.
    device = torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")
    TrialLoop.build(trial, WorkerContext(device=device), RayReporter(ray.tune), log_dir=log_dir,
                    encoder_cache=cache).run()


def run_trial(config: dict[str, Any], resources: Resources, storage: str,
              encoder_cache: EncoderCacheSpec | None = None) -> None:
    """Tune function trainable. A multi-worker trial's inner run is named after the Tune trial id,
    so a restored trial finds its own checkpoints and resumes instead of starting over."""
    import ray.tune

    trial = TrialConfig.from_flat(config)
    context = ray.tune.get_context()
    log_dir = str(Path(context.get_trial_dir()) / TENSORBOARD_DIR)
    if resources.workers == 1:
        cache = EncoderCache.open(encoder_cache, source=context.get_trial_id()) if encoder_cache else None
        run_in_this_actor(trial, resources, log_dir, cache)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = make_trainer(trial, resources, storage, f"train-{context.get_trial_id()}", log_dir,
                           callbacks=[TuneReportCallback()], encoder_cache=encoder_cache)
    trainer.fit()


def make_trainable(resources: Resources, storage: str, encoder_cache: EncoderCacheSpec | None = None):
    """The Tune trainable of every trial of a search (the same for a fresh and a resumed search)."""
    import ray.tune

    return ray.tune.with_resources(
        ray.tune.with_parameters(run_trial, resources=resources, storage=storage, encoder_cache=encoder_cache),
        trial_resources(resources))
