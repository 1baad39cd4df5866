"""A search on a real S3 endpoint (moto's standalone server on loopback), as cluster/README.md
tells a non-AWS store to be set up: the driver is killed part-way, resumed from the bucket alone
(a fresh local Ray, nothing local kept), and report, export, predict and evaluate then read the
bucket."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from test_search import run_cli, space_file

pytestmark = pytest.mark.slow

BUCKET = "raysearch-e2e"
NAME = "s3smoke"
NUM_SAMPLES = 2


# -- processes a driver started ------------------------------------------------------------------
def session_of(pid: int) -> int | None:
    """The session id of a process (field 6 of /proc/PID/stat), None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])


def processes_of_session(session: int) -> list[int]:
    """Processes in `session`. Each driver runs in a session of its own (start_new_session), and
    the local Ray it starts (GCS, raylet, dashboard, workers, the reaper after its setpgrp) stays
    in it, so this finds exactly what that driver started, whatever titles Ray's workers set."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if pid != os.getpid() and session_of(pid) == session]


def end_session(session: int, ray_tmp: Path, grace_s: float) -> None:
    """Give the driver's Ray `grace_s` to go by itself, then SIGKILL, by PID, whatever of that
    session is left (until nothing is: a raylet may still be starting workers); delete its
    private temp dir."""
    deadline = time.monotonic() + grace_s
    while processes_of_session(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while (left := processes_of_session(session)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    shutil.rmtree(ray_tmp, ignore_errors=True)


# -- the search, once killed and once resumed -----------------------------------------------------
@pytest.fixture(scope="module")
def s3_run(moto_s3, tmp_path_factory):
    """A finished search in s3://BUCKET/runs/NAME that was killed once and resumed. Yields what the
    tests below check: the run's URI, the reports each trial had in the bucket when the driver
    was killed, and a scratch directory. The endpoint settings stay set for the module."""
    import boto3

    from raysearch.runs import collect_results

    tmp = tmp_path_factory.mktemp("s3")
    run_uri = f"s3://{BUCKET}/runs/{NAME}"
    # Two trials, one at a time on 2 cores (2 workers x 0.95 CPU each): the kill falls between them.
    space = space_file(tmp, budget={"num_samples": NUM_SAMPLES, "pretrain_epochs": 1, "finetune_epochs": 1},
                       scheduler={"type": "fifo"})
    command = [str(Path(sys.executable).parent / "raysearch"), "search", str(space),
               "--storage", f"s3://{BUCKET}/runs", "--name", NAME]

    with pytest.MonkeyPatch.context() as patch:
        for name, value in moto_s3["env"].items():   # this process reads the bucket too
            patch.setenv(name, value)
        patch.delenv("RAY_ADDRESS", raising=False)    # each driver starts its own local Ray
        boto3.client("s3", endpoint_url=moto_s3["endpoint"]).create_bucket(Bucket=BUCKET)

        def start_driver(extra, log_name):
            # A private Ray temp dir per driver (short: Ray's socket paths must fit 107 bytes), so
            # the resumed driver finds nothing of the first one but the bucket.
            ray_tmp = Path(tempfile.mkdtemp(prefix="rs3-", dir="/tmp"))
            env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONUNBUFFERED": "1"}
            with open(tmp / log_name, "w") as log:
                driver = subprocess.Popen(command + extra, env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            return driver, ray_tmp

        def reported_trials():
            """{trial_dir: its reports} of the trials that reported into the bucket so far."""
            try:
                frame = collect_results(run_uri)
            except Exception:  # the run's first files are not in the bucket yet
                return {}, 0
            if frame.empty:
                return {}, 0
            histories = {row.trial_dir: history_of(row.trial_dir) for row in frame.itertuples()}
            return {d: h for d, h in histories.items() if h}, int((frame["outcome"] == "completed").sum())

        # Kill once a trial has reported to its last epoch: at least one trial has reported, and one
        # that finished before the kill must not run again.
        driver, ray_tmp = start_driver([], "first.log")
        try:
            deadline, before, completed = time.monotonic() + 240, {}, 0
            while driver.poll() is None and time.monotonic() < deadline and not completed:
                time.sleep(1)
                before, completed = reported_trials()
            assert driver.poll() is None, (tmp / "first.log").read_text()[-3000:]
            assert 1 <= completed < NUM_SAMPLES, (tmp / "first.log").read_text()[-3000:]
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            end_session(driver.pid, ray_tmp, grace_s=0)
        before, _ = reported_trials()   # what the bucket holds once the driver is gone

        driver, ray_tmp = start_driver(["--resume"], "resumed.log")
        try:
            driver.wait(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            end_session(driver.pid, ray_tmp, grace_s=15)
        assert driver.returncode == 0, (tmp / "resumed.log").read_text()[-3000:]
        yield {"uri": run_uri, "before": before, "tmp": tmp}


def search_data(run_uri: str) -> str:
    """The local dataset directory of the data the search trained on (as its record in the bucket says)."""
    from raysearch.data.cache import resolve_data
    from raysearch.runs import read_search

    return resolve_data(read_search(run_uri).data_dir)


def history_of(trial_dir: str) -> list[dict]:
    from raysearch.runs import open_location, trial_history

    filesystem, path = open_location(trial_dir, "trial")
    return trial_history(filesystem, path)


def test_killed_search_on_a_bucket_resumes_from_the_bucket_alone(s3_run):
    from raysearch.contract import Metric
    from raysearch.runs import collect_results, read_search

    after = collect_results(s3_run["uri"])
    max_epochs = read_search(s3_run["uri"]).max_epochs
    assert len(after) == NUM_SAMPLES and after["trial_id"].is_unique
    assert set(after["outcome"]) == {"completed"}, after[["trial_id", "outcome", "epochs_run"]]
    assert after["trial_dir"].str.startswith(f"s3://{BUCKET}/runs/{NAME}/").all()
    # Every report in the bucket at the kill is still there after the resume, first and unchanged;
    # a trial that had reported its last epoch reported nothing more.
    for trial_dir, reports in s3_run["before"].items():
        assert trial_dir in set(after["trial_dir"]), f"{trial_dir} is gone after the resume"
        history = history_of(trial_dir)
        assert history[:len(reports)] == reports, f"{trial_dir}: reports from before the kill were lost"
        if reports[-1][Metric.GLOBAL_EPOCH] == max_epochs:
            assert len(history) == len(reports), f"{trial_dir} finished before the kill and ran again"


def test_report_export_and_predict_read_the_bucket(s3_run, capsys):
    import pyarrow.fs
    import pyarrow.parquet

    from raysearch.data.format import open_dataset
    from raysearch.deploy.export import load_artifact

    tmp = s3_run["tmp"]
    capsys.readouterr()
    run_cli("report", s3_run["uri"], "--out", tmp / "report", "--json")
    report = json.loads(capsys.readouterr().out)
    # results.parquet goes into the bucket beside the trials; plots and summary.md to --out.
    filesystem, path = pyarrow.fs.FileSystem.from_uri(f"{s3_run['uri']}/results.parquet")
    results = pyarrow.parquet.read_table(path, filesystem=filesystem).to_pandas()
    assert report["trials"] == len(results) == NUM_SAMPLES
    assert f"{NUM_SAMPLES} trials: {NUM_SAMPLES} completed." in (tmp / "report" / "summary.md").read_text()
    assert (tmp / "report" / "learning_curves.png").stat().st_size > 0

    run_cli("export", s3_run["uri"], "--out", tmp / "artifact", "--json")
    exported = json.loads(capsys.readouterr().out)
    best = results.loc[results["best_val_acc"].idxmax()]
    assert exported["trial_id"] == best["trial_id"]
    assert exported["checkpoint"].startswith(f"s3://{BUCKET}/")
    assert len(load_artifact(tmp / "artifact").class_names) == exported["num_classes"] == 6

    # Six validation clips of the search's own data.
    view = open_dataset(search_data(s3_run["uri"])).split("val")
    clips = [view.joints(i) for i in range(6)]   # each (C, T_valid, V, M)
    frames = max(c.shape[1] for c in clips)
    x = np.zeros((len(clips), *clips[0].shape[:1], frames, *clips[0].shape[2:]), np.float32)
    for i, clip in enumerate(clips):
        x[i, :, :clip.shape[1]] = clip
    np.savez(tmp / "clips.npz", x=x, length=np.array([c.shape[1] for c in clips]))
    run_cli("predict", tmp / "artifact", tmp / "clips.npz", "--top-k", "6", "--json")
    predictions = json.loads(capsys.readouterr().out)["predictions"]
    assert len(predictions) == len(clips)
    for p in predictions:
        probabilities = [prob for _, prob in p["top_k"]]
        assert len(probabilities) == 6 and sum(probabilities) == pytest.approx(1.0, abs=1e-4)
        assert all(0.0 <= prob <= 1.0 for prob in probabilities)
        assert probabilities == sorted(probabilities, reverse=True) and p["probability"] == probabilities[0]
        assert 0 <= p["label"] < 6


def test_evaluate_reads_the_best_trial_from_the_bucket(s3_run, capsys):
    from raysearch.data.format import open_dataset
    from raysearch.runs import collect_results

    best = collect_results(s3_run["uri"]).iloc[0]   # best validation accuracy first
    data = search_data(s3_run["uri"])
    out = s3_run["tmp"] / "evaluation"
    capsys.readouterr()
    run_cli("evaluate", s3_run["uri"], "--data", data, "--out", out, "--json")
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["source"]["trial_id"] == best["trial_id"]
    assert evaluation["source"]["checkpoint"].startswith(f"s3://{BUCKET}/")
    clips = len(open_dataset(data).split("test").labels)
    assert evaluation["split"] == "test" and evaluation["clips"] == clips
    assert sum(map(sum, evaluation["confusion_matrix"])) == clips
    assert 0.0 <= evaluation["top1_acc"] <= 1.0
    assert json.loads((out / "evaluation.json").read_text())["clips"] == clips
