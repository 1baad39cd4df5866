"""Connecting to Ray: one place that knows how raysearch starts or joins a cluster."""

from __future__ import annotations

import os


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



def runtime_env() -> dict:
    """The job's runtime env: every worker pins its Ray address; Train polls its workers often."""
    return {"worker_process_setup_hook": pin_ray_address,
            "env_vars": {HEALTH_CHECK_ENV: os.environ.get(HEALTH_CHECK_ENV, "0.2")}}
