"""The search: a Ray Tune `Tuner` over the per-trial Ray Train driver, Optuna picking the
parameters, ASHA stopping weak trials on `global_epoch`, results on (shared) storage.

Three layers, each small (Ray's own examples): `train_loop_per_worker` trains, `tune_trial_driver`
runs one TorchTrainer per trial, and `run_search` here assembles the Tuner.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import UserInputError
from ..ray_runtime import connect
from ..train.driver import Resources, tune_trial_driver
from .space import SearchSpace, build_sampler, define_by_run

DRIVER_CPUS = 0.05  # the per-trial Tune function only waits on its TorchTrainer (RAY_NOTES.md)
SPACE_FILE = "search_space.json"


def storage_root(storage: str | None) -> str:
    """Absolute local path or a URI (s3://, gs://) for the run; local `runs/` by default."""
    if storage is None:
        return str(Path("runs").resolve())
    if "://" in storage:
        return storage
    return str(Path(storage).resolve())


def check_storage_writable(root: str) -> None:
    """Fail before any trial starts when results could not be written."""
    if "://" in root:
        import pyarrow.fs

        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(root)
            filesystem.create_dir(path, recursive=True)
        except Exception as exc:  # missing credentials, unknown bucket, no network
            raise UserInputError(f"--storage {root}: cannot write there ({str(exc).splitlines()[0][:160]})") from None
        return
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".raysearch-write-test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as exc:
        raise UserInputError(f"--storage {root}: cannot write there ({exc.strerror}); "
                             "choose a writable directory or free some space") from None


def check_cluster_fits(resources: Resources, allow_pending: bool) -> int:
    """How many trials can run at once; refuse per-trial resources no node offers."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= resources.cpus_per_worker
            and n.get("GPU", 0) >= resources.gpus_per_worker]
    if not fits and not allow_pending:
        raise UserInputError(
            f"resources: no node offers {resources.cpus_per_worker} CPU and {resources.gpus_per_worker} GPU for one "
            f"worker (nodes: {[{k: v for k, v in n.items() if k in ('CPU', 'GPU')} for n in nodes]}); lower "
            "resources.cpus_per_worker/gpus_per_worker, or pass --allow-pending-resources on an autoscaling cluster")
    total = ray.cluster_resources()
    per_trial_cpu = resources.workers * resources.cpus_per_worker + DRIVER_CPUS
    slots = total.get("CPU", 0) // per_trial_cpu
    if resources.gpus_per_worker:
        slots = min(slots, total.get("GPU", 0) // (resources.workers * resources.gpus_per_worker))
    if slots < 1 and not allow_pending:
        raise UserInputError(
            f"resources: one trial needs {resources.workers} workers x {resources.cpus_per_worker} CPU "
            f"(+{DRIVER_CPUS} for its driver) but the cluster has {total.get('CPU', 0)} CPU; lower resources.workers")
    return max(1, int(slots))


def make_tuner(space: SearchSpace, data_dir: str, root: str, name: str, resources: Resources,
               max_concurrent: int):
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .reaper import PlacementGroupReaper

    metrics, modes = space.metric_names(), space.modes()
    multi = len(metrics) > 1
    searcher = OptunaSearch(
        space=functools.partial(define_by_run, space=space, data_dir=data_dir),
        metric=metrics if multi else metrics[0], mode=modes if multi else modes[0],
        sampler=build_sampler(space), points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None,
    )
    limit = min(max_concurrent, space.budget.max_concurrent or max_concurrent)
    searcher = ConcurrencyLimiter(searcher, max_concurrent=max(1, limit))
    max_epochs = space.budget.pretrain_epochs + space.budget.finetune_epochs
    if space.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr="global_epoch", max_t=max(1, max_epochs),
                                  grace_period=space.scheduler.grace_period,
                                  reduction_factor=space.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, resources=asdict(resources), storage=f"{root}/{name}/trials"),
        {"CPU": DRIVER_CPUS},
    )
    tune_config = ray.tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=space.budget.num_samples,
        # Schedulers follow the primary objective; Optuna gets all of them.
        metric=None if multi else metrics[0], mode=None if multi else modes[0],
        time_budget_s=space.budget.time_limit_s, max_concurrent_trials=max(1, limit),
        reuse_actors=False, trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )
    reporter = ray.tune.CLIReporter(
        metric_columns=["global_epoch", "phase", "val_acc", "best_val_acc"],
        parameter_columns=[p.name for p in space.parameters], max_report_frequency=15,
        print_intermediate_tables=True, sort_by_metric=True,
    ) if not multi else None
    run_config = ray.tune.RunConfig(
        name=name, storage_path=root, progress_reporter=reporter,
        failure_config=ray.tune.FailureConfig(max_failures=1), callbacks=[PlacementGroupReaper()],
    )
    return ray.tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def trial_name(trial) -> str:
    """`trial_<id>`: Tune's default names repeat every constant (data_dir too) in the directory name."""
    return f"trial_{trial.trial_id}"


def _trial(config: dict[str, Any], resources: dict, storage: str) -> None:
    """Tune trainable: adds where the inner Train runs go and their resources, then runs one."""
    tune_trial_driver({**config, "_resources": resources, "_storage": storage})


def run_search(space: SearchSpace, data_dir: str, storage: str | None, name: str | None, resume: bool,
               allow_pending_resources: bool = False) -> str:
    """Run (or resume) a search; returns the run directory (local path or URI)."""
    import ray
    import ray.tune

    root = storage_root(storage)
    name = name or space.name
    run_dir = f"{root}/{name}"
    check_storage_writable(root)
    if "://" not in root and not resume and Path(run_dir, "tuner.pkl").exists():
        raise UserInputError(f"run {run_dir} already exists; pass --resume to continue it or --name for a new one")
    resources = Resources(workers=space.resources.workers, cpus_per_worker=space.resources.cpus_per_worker,
                          gpus_per_worker=space.resources.gpus_per_worker).validate()
    connect()
    slots = check_cluster_fits(resources, allow_pending_resources)
    _save_space(space, data_dir, run_dir)
    if resume:
        if not ray.tune.Tuner.can_restore(run_dir):
            raise UserInputError(f"--resume: no search to resume at {run_dir}; run it without --resume first")
        trainable = ray.tune.with_resources(
            ray.tune.with_parameters(_trial, resources=asdict(resources), storage=f"{root}/{name}/trials"),
            {"CPU": DRIVER_CPUS})
        tuner = ray.tune.Tuner.restore(run_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = make_tuner(space, data_dir, root, name, resources, slots)
    print(f"raysearch: search {name}: up to {slots} trial(s) at once, results in {run_dir}", file=sys.stderr)
    tuner.fit()
    return run_dir


def _save_space(space: SearchSpace, data_dir: str, run_dir: str) -> None:
    """Keep the validated space beside the results, so `report` knows objectives and budget."""
    payload = {"source": str(space.source), "data_dir": data_dir, "name": space.name,
               "objectives": [{"metric": m, "mode": o} for m, o in zip(space.metric_names(), space.modes())],
               "max_epochs": space.budget.pretrain_epochs + space.budget.finetune_epochs,
               "parameters": [p.name for p in space.parameters],
               "resources": asdict(space.resources)}
    text = json.dumps(payload, indent=1, default=str)
    if "://" in run_dir:
        import pyarrow.fs

        filesystem, path = pyarrow.fs.FileSystem.from_uri(run_dir)
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path}/{SPACE_FILE}") as f:
            f.write(text.encode())
    else:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        Path(run_dir, SPACE_FILE).write_text(text)


__all__ = ["run_search", "make_tuner", "check_storage_writable", "check_cluster_fits", "storage_root"]
