"""The search end to end on local Ray: ASHA, results and report, export, resume, Pareto front."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs
import pytest
import yaml

from raysearch.cli import main as cli_main
from raysearch.data.cache import resolve_data, synthetic_spec
from raysearch.data.format import open_dataset
from raysearch.runs import collect_results, trial_history
from raysearch.tune.space import load_search_space

pytestmark = pytest.mark.slow

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


def space_file(tmp_path, name="space.yaml", **changes) -> Path:
    """smoke.yaml with `changes` written to tmp_path: `budget` is merged, other sections replaced."""
    doc = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        doc[key] = {**doc[key], **value} if key == "budget" else value
    doc["synthetic"] = {"classes": 6, "per_class": 100, "seed": 0}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_cli(*args):
    try:
        cli_main([str(a) for a in args])
    except SystemExit as exc:
        assert exc.code in (0, None), f"raysearch {' '.join(map(str, args))} exited {exc.code}"


def test_smoke_search_stops_weak_trials_reports_and_exports(tmp_path, ray_two_cpus, capsys):
    space = space_file(tmp_path, budget={"num_samples": 5, "pretrain_epochs": 1, "finetune_epochs": 3},
                       scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 3})
    run_cli("search", space, "--storage", tmp_path / "runs", "--name", "smoke-run", "--json")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_dir = Path(summary["run_dir"])
    # The run is recorded under the name it was given, not the space's (smoke).
    assert run_dir.name == "smoke-run"
    assert json.loads((run_dir / "search_space.json").read_text())["name"] == "smoke-run"
    assert (run_dir / "summary.md").read_text().startswith("# Search `smoke-run`")

    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(results) == 5
    assert (results["outcome"] == "stopped_early").sum() >= 1, results[["trial_id", "outcome", "epochs_run"]]
    assert (results["outcome"] == "completed").sum() >= 1
    # Conditional parameters: MVQVAE trials never carry beta or latent_dim, MVAE trials no codebook.
    mvqvae = results[results["param_variant"] == "mvqvae"]
    assert mvqvae["param_beta"].isna().all() and mvqvae["param_latent_dim"].isna().all()
    mvae = results[results["param_variant"] == "mvae"]
    assert mvae["param_codebook_size"].isna().all()
    # The warm-start point ran exactly as the YAML gives it.
    warm = results[(results["param_beta"] == 0.005) & (results["param_latent_dim"] == 16)]
    assert len(warm) == 1 and warm.iloc[0]["param_variant"] == "mvae"
    for name in ("summary.md", "optimization_history.png", "learning_curves.png"):
        assert (run_dir / name).exists(), name

    run_cli("export", run_dir, "--out", tmp_path / "artifact")
    best = results.loc[results["best_val_acc"].idxmax()]
    metrics = json.loads((tmp_path / "artifact" / "metrics.json").read_text())
    assert metrics["source"]["trial_id"] == best["trial_id"]
    assert metrics["best_val_acc"] == pytest.approx(best["best_val_acc"])

    spec = synthetic_spec(classes=6, per_class=100, seed=0, max_frames=64)
    view = open_dataset(resolve_data(spec)).split("val")
    x = view.joints(0)  # (C, T_valid, V, M)
    npz = tmp_path / "one.npz"
    np.savez(npz, x=x[None].astype(np.float32), y=np.array([view.labels[0]]), length=np.array([x.shape[1]]))
    capsys.readouterr()
    run_cli("predict", tmp_path / "artifact", npz, "--json")
    prediction = json.loads(capsys.readouterr().out)
    assert len(prediction["predictions"]) == 1 and 0 <= prediction["predictions"][0]["label"] < 6


def test_killed_driver_resumes_without_losing_or_repeating_trials(tmp_path, ray_two_cpus):
    import ray

    from raysearch.contract import LOST, TRIAL_DIR_PREFIX
    from raysearch.tune.resume import recorded_trials

    space = space_file(tmp_path, budget={"num_samples": 4, "pretrain_epochs": 1, "finetune_epochs": 2},
                       scheduler={"type": "fifo"})
    storage = tmp_path / "runs"
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "raysearch.cli", "search", str(space), "--storage", str(storage), "--name", "resume"]
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    run_dir = storage / "resume"

    def recorded_done():
        # What the driver has recorded, not what the trials wrote: Tune records every few seconds,
        # and a resumed search continues from its record.
        recorded = recorded_trials(str(run_dir)) if run_dir.exists() else None
        return sorted(t for t, status in (recorded or {}).items() if status == "TERMINATED")

    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None and len(recorded_done()) < 2:
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
    finally:
        driver.kill()   # SIGKILL: the interruption under test, and no search left running by a failure
        driver.wait()
    # Ray ends a killed driver's job and gives its trials' CPUs back; the resumed search needs them.
    wait_for_free_cpus = ray_two_cpus
    wait_for_free_cpus(120, "the killed driver's trials still hold CPUs")
    done_before = recorded_done()
    assert 2 <= len(done_before) < 4
    lines_before = {t: len(trial_history(pyarrow.fs.LocalFileSystem(), str(run_dir / f"{TRIAL_DIR_PREFIX}{t}")))
                    for t in done_before}
    # A trial the driver started after its last record (a kill between two records leaves one
    # behind now and then; here always): the resumed search must not count it as one of its own.
    orphan = run_dir / f"{TRIAL_DIR_PREFIX}0bad0bad"
    orphan.mkdir()
    (orphan / "params.json").write_text((run_dir / f"{TRIAL_DIR_PREFIX}{done_before[0]}" / "params.json").read_text())
    (orphan / "result.json").write_text("")

    try:
        finished = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the resumed search did not finish in 600 s; its stderr ends: {(exc.stderr or b'')[-3000:]!r}")
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "0bad0bad" in finished.stderr
    after = collect_results(str(run_dir))
    searched = after[after["outcome"] != LOST]
    assert len(searched) == 4 and after["trial_id"].is_unique
    assert set(searched["outcome"]) == {"completed"}
    assert "0bad0bad" in set(after[after["outcome"] == LOST]["trial_id"])
    for trial_id, lines in lines_before.items():
        row = after[after["trial_id"] == trial_id].iloc[0]
        assert len(trial_history_of(row)) == lines, "a finished trial ran again"


def trial_history_of(row):
    return trial_history(pyarrow.fs.LocalFileSystem(), row.trial_dir)


def test_two_objectives_give_a_pareto_front(tmp_path, ray_two_cpus, capsys):
    space = space_file(
        tmp_path,
        objectives=[{"metric": "val_acc", "mode": "max"}, {"metric": "params", "mode": "min"}],
        scheduler={"type": "fifo"},
        budget={"num_samples": 3, "pretrain_epochs": 1, "finetune_epochs": 1},
        parameters={"variant": {"type": "categorical", "choices": ["mvae", "mvqvae"]},
                    "decoder_width": {"type": "categorical", "choices": [8, 16, 32]}},
        points_to_evaluate=[],
        sampler={"type": "random", "seed": 1},
    )
    assert len(load_search_space(space).objectives) == 2
    run_cli("search", space, "--storage", tmp_path / "runs", "--name", "pareto", "--json")
    run_dir = Path(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"])
    results = pd.read_parquet(run_dir / "results.parquet")
    assert results["params"].nunique() >= 2
    front = results[results["pareto"]]
    assert 1 <= len(front) <= len(results)
    for row in results.itertuples():  # nothing off the front beats a front member on both objectives
        if not row.pareto:
            assert any(f.val_acc >= row.val_acc and f.params <= row.params for f in front.itertuples())
    assert (run_dir / "pareto_front.png").exists()
    assert "## Pareto front" in (run_dir / "summary.md").read_text()


def test_reaper_releases_only_placement_groups_of_dead_train_controllers(ray_two_cpus):
    """A Train controller that dies mid-abort leaves the placement group it created CREATED and
    empty (ray-project/ray#62753); the search's reaper removes it, after a grace period, and no
    other group: not a live controller's, not one a dead actor of another kind made, not the
    driver's."""
    import ray
    from ray.util import placement_group, placement_group_table, remove_placement_group

    from raysearch.tune.reaper import PlacementGroupReaper, remove_placement_group_by_id

    def creator_class(name):
        # The state API knows actors by their class's name; Train's controller is "TrainController".
        def make_group(self):
            group = placement_group([{"CPU": 0.25}])
            ray.get(group.ready(), timeout=60)
            return group.id.hex()
        return ray.remote(num_cpus=0)(type(name, (), {"make_group": make_group}))

    def group_of(actor):
        return ray.get(actor.make_group.remote(), timeout=60)

    dead_controller, live_controller = creator_class("TrainController").remote(), creator_class("TrainController").remote()
    other = creator_class("SomethingElse").remote()
    orphan, kept, others = group_of(dead_controller), group_of(live_controller), group_of(other)
    ray.kill(dead_controller)
    ray.kill(other)
    driver_group = placement_group([{"CPU": 0.25}])
    ray.get(driver_group.ready(), timeout=60)
    try:
        reaper = PlacementGroupReaper(grace_s=1.0)
        deadline = time.monotonic() + 30
        while not reaper.removed and time.monotonic() < deadline:
            reaper.sweep()
            time.sleep(0.5)
        states = {pg: placement_group_table()[pg]["state"] for pg in (orphan, kept, others, driver_group.id.hex())}
        assert reaper.removed == [orphan]
        assert states == {orphan: "REMOVED", kept: "CREATED", others: "CREATED", driver_group.id.hex(): "CREATED"}
    finally:
        ray.kill(live_controller)
        remove_placement_group(driver_group)
        for pg in (kept, others):
            remove_placement_group_by_id(pg)
