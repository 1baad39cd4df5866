"""The search: a Ray Tune `Tuner` over the per-trial Ray Train driver, Optuna picking the
parameters, ASHA stopping weak trials on fine-tuning epochs (`finetune_epoch`, or `global_epoch`
where the space asks), results on (shared) storage.

Three layers, each small (Ray's own examples): `train_loop_per_worker` trains, `tune.trial.run_trial`
runs one TorchTrainer per trial, and `run_search` here assembles the Tuner.

Objectives are fine-tuning metrics (`contract.OBJECTIVES`); pre-training epochs report proxies under
their own names and no `val_acc`. So Tune's strict metric check is off while a search runs, ASHA
skips reports without its metric (it only ever compares fine-tuned values), and the Optuna searcher
below skips them too (Ray's OptunaSearch would raise a KeyError on such a report).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch

from ..contract import SPACE_FILE, TRIAL_DIR_PREFIX, Metric, Resources
from ..errors import UserInputError, first_line
from .. import ray_runtime
from ..ray_runtime import connect
from ..runs import SearchRecord, check_run_name, join_uri, write_text
from .resume import mark_lost_trials
from .space import SearchSpace, build_sampler, define_by_run, scheduler_horizon
from ..contract import ENCODER_CACHE_DIR
from ..train.encoder_cache import EncoderCacheSpec, start_claims
from .trial import DRIVER_CPUS, make_trainable

STRICT_METRIC_CHECKING_ENV = "TUNE_DISABLE_STRICT_METRIC_CHECKING"


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
            raise UserInputError(f"--storage {root}: cannot write there ({first_line(exc, 160)})") from None
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
    """How many trials can run at once; refuse per-trial resources no node offers. A multi-worker
    trial's Tune function also holds DRIVER_CPUS while its TorchTrainer runs."""
    return ray_runtime.check_cluster_fits(resources, allow_pending,
                                          driver_cpus=DRIVER_CPUS if resources.workers > 1 else 0.0)


class FineTunedOptunaSearch(OptunaSearch):
    """OptunaSearch that passes on only the reports that carry its objective: pre-training reports
    have no fine-tuned metric, and OptunaSearch.on_trial_result indexes it unchecked. Module level,
    so that Tuner.restore can unpickle it."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)


def make_tuner(space: SearchSpace, data_dir: str, root: str, name: str, trainable, max_concurrent: int):
    import ray.tune
    from ray.tune.search import ConcurrencyLimiter

    from .history import RestoreTrialHistory
    from .reaper import PlacementGroupReaper
    from .searcher import OptunaStudySearch

    metrics, modes = space.metric_names(), space.modes()
    multi = len(metrics) > 1
    # Tells Optuna which trials ASHA stopped (PRUNED) and keeps the study in the run directory.
    searcher = OptunaStudySearch(
        functools.partial(define_by_run, space=space, data_dir=data_dir),
        metric=metrics if multi else metrics[0], mode=modes if multi else modes[0],
        max_epochs=space.budget.pretrain_epochs + space.budget.finetune_epochs, run_dir=join_uri(root, name),
        study_name=name, sampler=build_sampler(space), points_to_evaluate=[dict(p) for p in space.points_to_evaluate],
    )
    limit = min(max_concurrent, space.budget.max_concurrent or max_concurrent)
    searcher = ConcurrencyLimiter(searcher, max_concurrent=max(1, limit))
    scheduler = make_scheduler(space)
    tune_config = ray.tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=space.budget.num_samples,
        # Schedulers follow the primary objective; Optuna gets all of them. ASHA carries its own
        # metric (make_scheduler), and Tune refuses a metric given to both.
        metric=None if multi or space.scheduler.type == "asha" else metrics[0],
        mode=None if multi or space.scheduler.type == "asha" else modes[0],
        time_budget_s=space.budget.time_limit_s, max_concurrent_trials=max(1, limit),
        # One-worker trials run in the Tune actor: reusing it skips a process start and the imports.
        reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )
    # Not sorted by the objective: a trial stopped in pre-training has none, and the reporter's
    # sort cannot order None against numbers.
    reporter = ray.tune.CLIReporter(
        metric_columns=[Metric.GLOBAL_EPOCH, Metric.PHASE, Metric.VAL_KNN_ACC, Metric.VAL_PROBE_ACC, Metric.VAL_ACC,
                        Metric.BEST_VAL_ACC],
        parameter_columns=[p.name for p in space.parameters], max_report_frequency=15,
        print_intermediate_tables=True,
    ) if not multi else None
    run_config = ray.tune.RunConfig(
        name=name, storage_path=root, progress_reporter=reporter,
        failure_config=ray.tune.FailureConfig(max_failures=1),
        # One-worker trials checkpoint through Tune; the latest always holds the best weights so far.
        checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=1),
        callbacks=[PlacementGroupReaper(), RestoreTrialHistory()],
    )
    return ray.tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def scheduler_metric(space: SearchSpace) -> tuple[str, str]:
    """What ASHA compares at a rung: the primary objective, except that `val_acc` is compared as
    `best_val_acc`, the trial's best classifier so far (the one it keeps and exports). On MSR
    Action3D's 40 validation clips it ranks trials after a few fine-tuning epochs far better than
    that epoch's val_acc (Spearman with the final result 0.82 against 0.50 after 8 of 24 epochs,
    0.53 against 0.25 after 3; bench/README.md)."""
    objective = space.objectives[0]
    if objective.metric == Metric.VAL_ACC:
        return Metric.BEST_VAL_ACC, objective.mode
    return objective.metric, objective.mode


def make_scheduler(space: SearchSpace):
    """The space's trial scheduler. ASHA runs on `space.scheduler.time_attr` (by default
    `finetune_epoch`, which only fine-tuning reports carry) up to the trial's epochs on that axis,
    comparing `scheduler_metric`; it skips reports without it, so it only ever compares fine-tuned
    values."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if space.scheduler.type != "asha":
        return FIFOScheduler()
    metric, mode = scheduler_metric(space)
    return ASHAScheduler(time_attr=space.scheduler.time_attr, max_t=max(1, scheduler_horizon(space)),
                         metric=metric, mode=mode, grace_period=space.scheduler.grace_period,
                         reduction_factor=space.scheduler.reduction_factor)


def trial_name(trial) -> str:
    """`trial_<id>`: Tune's default names repeat every constant (data_dir too) in the directory name."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


@contextlib.contextmanager
def objective_may_be_absent():
    """Tune refuses a report without the objective unless this variable is set; pre-training
    reports never carry one. Read by the Tune controller, which runs in this process."""
    before = os.environ.get(STRICT_METRIC_CHECKING_ENV)
    os.environ[STRICT_METRIC_CHECKING_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(STRICT_METRIC_CHECKING_ENV, None)
        else:
            os.environ[STRICT_METRIC_CHECKING_ENV] = before


def run_search(space: SearchSpace, data_dir: str, storage: str | None, name: str | None, resume: bool,
               allow_pending_resources: bool = False) -> str:
    """Run (or resume) a search; returns the run directory (local path or URI)."""
    import ray.tune

    root = storage_root(storage)
    name = check_run_name(space.name if name is None else name, "--name")
    run_dir = join_uri(root, name)
    check_storage_writable(root)
    if "://" not in root and not resume and Path(run_dir, "tuner.pkl").exists():
        raise UserInputError(f"run {run_dir} already exists; pass --resume to continue it or --name for a new one")
    resources = space.resources.validate()
    connect()
    slots = check_cluster_fits(resources, allow_pending_resources)
    write_text(run_dir, SPACE_FILE, search_record(space, data_dir, resources, name).to_json())
    # Pre-training done once per pre-training configuration: trials share encoders through the
    # cache, and agree who pre-trains a key through its claims actor, which lives as long as this process.
    cache = EncoderCacheSpec(join_uri(run_dir, ENCODER_CACHE_DIR))
    claims = start_claims(cache.location)  # noqa: F841 (held while the search runs)
    trainable = make_trainable(resources, join_uri(run_dir, "trials"), encoder_cache=cache)
    if resume:
        if not ray.tune.Tuner.can_restore(run_dir):
            raise UserInputError(f"--resume: no search to resume at {run_dir}; run it without --resume first")
        lost = mark_lost_trials(run_dir)
        if lost:
            print(f"raysearch: search {name}: {len(lost)} trial(s) the stopped driver started after Tune's last "
                  f"record will not continue; `report` lists them as lost: {', '.join(lost)}", file=sys.stderr)
        tuner = ray.tune.Tuner.restore(run_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = make_tuner(space, data_dir, root, name, trainable, slots)
    print(f"raysearch: search {name}: up to {slots} trial(s) at once, results in {run_dir}", file=sys.stderr)
    with objective_may_be_absent():
        tuner.fit()
    return run_dir


def search_record(space: SearchSpace, data_dir: str, resources: Resources, name: str) -> SearchRecord:
    """What `report` and `export` read back about this search (search_space.json). `name` is the
    run's name (`--name`, else the space's): several runs of one space each keep their own."""
    return SearchRecord(
        name=name, objectives=space.objectives,
        max_epochs=space.budget.pretrain_epochs + space.budget.finetune_epochs,
        parameters=tuple(p.name for p in space.parameters), resources=resources,
        data_dir=str(data_dir), source=str(space.source))


__all__ = ["run_search", "make_tuner", "make_scheduler", "scheduler_metric", "check_storage_writable",
           "check_cluster_fits", "storage_root"]
