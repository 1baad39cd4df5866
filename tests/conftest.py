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
def _local_ray():
    """Local Ray with 2 CPUs, started here and shut down here (never `ray stop`)."""
    import ray
    from raysearch.ray_runtime import connect

    connect(num_cpus=2)
    yield
    ray.shutdown()


def wait_for_free_cpus(timeout_s: float, what: str) -> None:
    """Wait until every CPU of the session's Ray is free; after `timeout_s`, fail with `what` and the
    placement groups that still hold CPUs."""
    import time

    import ray

    cpus, deadline = ray.cluster_resources()["CPU"], time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < cpus - 1e-6:
        if time.monotonic() > deadline:
            held = [(g["placement_group_id"][:8], g["state"], g["bundles"]) for g in
                    ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
            pytest.fail(f"{what}: {ray.available_resources().get('CPU', 0)} of {cpus} CPUs free after {timeout_s} s; "
                        f"placement groups {held}")
        time.sleep(0.5)


@pytest.fixture
def ray_two_cpus(_local_ray):
    """The session's local Ray, with every CPU free when the test starts: CPUs that an earlier test
    left held (a search driver it did not stop, a leaked placement group) fail this test at once,
    naming what holds them, instead of letting its search wait for them until CI's time runs out.
    Returns `wait_for_free_cpus`, for a test that frees CPUs itself (by killing a driver)."""
    wait_for_free_cpus(60, "an earlier test left CPUs held")
    return wait_for_free_cpus


# -- a local S3 endpoint (moto's standalone server) ------------------------------------------------
@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory):
    """A real S3 HTTP endpoint on a free loopback port, started here and stopped here.

    Yields a dict: `endpoint` ("http://127.0.0.1:PORT"), `env` (what a process, Ray's workers
    included, needs to reach it through pyarrow: AWS_ENDPOINT_URL_S3 plus non-empty dummy
    credentials and a region; with empty credentials pyarrow stores the aws-chunked upload body
    as the object) and `query` ("endpoint_override=127.0.0.1:PORT&scheme=http", for a single
    `s3://bucket/path?...` URI that pyarrow and Ray's storage_path accept). Make buckets with
    boto3: `boto3.client("s3", endpoint_url=moto_s3["endpoint"], region_name="us-east-1")`."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # moto logs every request to stderr: into a file, since an unread pipe fills after ~1000
    # requests and the server then stops answering (a search makes that many).
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    log = open(log_path, "wb")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"moto_server exited {server.returncode}: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not listen on 127.0.0.1:{port}")
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        yield {"endpoint": endpoint, "query": f"endpoint_override=127.0.0.1:{port}&scheme=http",
               "env": {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
