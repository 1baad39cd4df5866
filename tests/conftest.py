"""Shared fixtures: a small synthetic dataset and a local Ray that the test session owns."""

import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """6 classes x 150 sequences of the built-in synthetic actions (train/val/test)."""
    from raysearch.data.synthetic import prepare_synthetic

    return prepare_synthetic(tmp_path_factory.mktemp("data") / "synthetic", num_classes=6, per_class=150, seed=0)


@pytest.fixture(scope="session")
def ray_two_cpus():
    """Local Ray with 2 CPUs, started here and shut down here (never `ray stop`)."""
    import ray
    from raysearch.ray_runtime import connect

    connect(num_cpus=2)
    yield
    ray.shutdown()
