"""Connecting to Ray: one place that knows how raysearch starts or joins a cluster."""

from __future__ import annotations

import os

from .contract import Resources
from .errors import UserInputError

# How a command's user spells the per-run resources: search-space fields, or train's flags.
SPACE_RESOURCE_NAMES = ("resources.workers", "resources.cpus_per_worker", "resources.gpus_per_worker")
FLAG_RESOURCE_NAMES = ("--workers", "--cpus-per-worker", "--gpus-per-worker")


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray.

    The local dashboard is on but bound to 127.0.0.1: Ray Train's PlacementGroupCleaner asks the
    state API (served by the dashboard) whether a trial's controller is alive, and without it the
    worker placement group of every trial that Tune stops early is never released, so later
    trials wait for CPUs forever (seen with ray 2.60).

    Every worker also pins $RAY_ADDRESS to its own cluster (`pin_ray_address`): that state-API
    lookup otherwise goes by the sessions under /tmp/ray and fails with "Found multiple active Ray
    instances" whenever a second Ray runs on the host, with the same leak as a result.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env())
        return
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=False, configure_logging=False, runtime_env=runtime_env())


def pin_ray_address() -> None:
    """Worker setup hook: state-API calls made in this worker go to this worker's own cluster."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


# Ray Train's controller polls its workers every 2 s by default; a trial then waits up to that long
# to be noticed as started or finished. 0.2 s cut a no-op 2-worker trial from ~13 s to ~8-12 s here.
# The controller is an actor of this job, so the job's runtime env carries the setting to it (an
# explicit setting in this process's environment wins).
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train (2.60) starts its controller with this variable added to the runtime env, and its workers
# with the controller's Train variables. With the same values in the job's env, both keep the job's
# runtime env: a no-op 2-worker fit took a median 10.4 s instead of 18.1 s on a loaded 2-core host
# (bench_ray_overhead.py --startup-variants; bench/README.md).
TRAIN_ADDED_ENV = {"RAY_WARN_BLOCKING_GET_INSIDE_ASYNC": "0"}


def runtime_env() -> dict:
    """The job's runtime env: every worker pins its Ray address; Train polls its workers often, and
    its actors find the job's env unchanged (TRAIN_ADDED_ENV)."""
    return {"worker_process_setup_hook": pin_ray_address,
            "env_vars": {HEALTH_CHECK_ENV: os.environ.get(HEALTH_CHECK_ENV, "0.2"), **TRAIN_ADDED_ENV}}


def check_cluster_fits(resources: Resources, allow_pending: bool, *, driver_cpus: float = 0.0,
                       names: tuple[str, str, str] = SPACE_RESOURCE_NAMES) -> int:
    """How many runs of `resources` (its workers, plus `driver_cpus` for whatever waits on them)
    the connected cluster holds at once. Refused in one line, before anything waits forever for
    resources that never come: a worker no node can host, or one run bigger than the whole
    cluster. `allow_pending` (an autoscaling cluster, which grows once work waits) refuses
    nothing. `names` spell workers / CPUs / GPUs as the user wrote them."""
    import ray

    workers, cpus, gpus = names
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= resources.cpus_per_worker
            and n.get("GPU", 0) >= resources.gpus_per_worker]
    if not fits and not allow_pending:
        raise UserInputError(
            f"resources: no node offers {resources.cpus_per_worker} CPU and {resources.gpus_per_worker} GPU for one "
            f"worker (nodes: {[{k: v for k, v in n.items() if k in ('CPU', 'GPU')} for n in nodes]}); lower "
            f"{cpus}/{gpus}, or pass --allow-pending-resources on an autoscaling cluster")
    total = ray.cluster_resources()
    per_run_cpu = resources.workers * resources.cpus_per_worker + driver_cpus
    slots = total.get("CPU", 0) // per_run_cpu
    if resources.gpus_per_worker:
        slots = min(slots, total.get("GPU", 0) // (resources.workers * resources.gpus_per_worker))
    if slots < 1 and not allow_pending:
        gpu_part = f" and {resources.gpus_per_worker} GPU" if resources.gpus_per_worker else ""
        raise UserInputError(
            f"resources: one run needs {resources.workers} workers x {resources.cpus_per_worker} CPU{gpu_part}"
            + (f" (+{driver_cpus} CPU for its driver)" if driver_cpus else "")
            + f" but the cluster has {total.get('CPU', 0)} CPU and {total.get('GPU', 0)} GPU; lower {workers}, "
            "or pass --allow-pending-resources on an autoscaling cluster")
    return max(1, int(slots))
