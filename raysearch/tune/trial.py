"""The per-trial driver of a search: a Tune function that runs one Ray Train run.

Tune's search algorithm hands the trainable a flat dict of sampled parameters (plus the space's
constants); `run_trial` parses it once into a `TrialConfig` and fits the trial's TorchTrainer,
whose reports `TuneReportCallback` forwards to Tune. The resources and the storage of the inner
runs are bound with `tune.with_parameters`, never packed into the sampled config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..contract import TENSORBOARD_DIR, Resources
from ..train.config import TrialConfig
from ..train.driver import make_trainer

# The per-trial Tune function only waits on its TorchTrainer. At Tune's default of 1 CPU, a 2-core
# machine would run one trial's driver and no workers, and deadlock with 2 workers per trial.
DRIVER_CPUS = 0.05


def run_trial(config: dict[str, Any], resources: Resources, storage: str) -> None:
    """Tune function trainable. The inner run is named after the Tune trial id, so a restored
    trial finds its own checkpoints and resumes instead of starting over."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = TrialConfig.from_flat(config)
    context = ray.tune.get_context()
    log_dir = str(Path(context.get_trial_dir()) / TENSORBOARD_DIR)
    trainer = make_trainer(trial, resources, storage, f"train-{context.get_trial_id()}", log_dir,
                           callbacks=[TuneReportCallback()])
    trainer.fit()


def make_trainable(resources: Resources, storage: str):
    """The Tune trainable of every trial of a search (the same for a fresh and a resumed search)."""
    import ray.tune

    return ray.tune.with_resources(ray.tune.with_parameters(run_trial, resources=resources, storage=storage),
                                   {"CPU": DRIVER_CPUS})
