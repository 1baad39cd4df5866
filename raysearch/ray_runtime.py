"""Connecting to Ray: one place that knows how raysearch starts or joins a cluster."""

from __future__ import annotations

import os


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS), else start a local Ray.

    The local dashboard is on but bound to 127.0.0.1: Ray Train's PlacementGroupCleaner asks the
    state API (served by the dashboard) whether a trial's controller is alive, and without it the
    worker placement group of every trial that Tune stops early is never released, so later
    trials wait for CPUs forever (seen with ray 2.60).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=False, configure_logging=False)
