"""What a trial pays for being a Ray Train run, and where that time goes. Prints one JSON object.

    python bench/bench_ray_overhead.py [--repeats 2] [--skip-tune] [--skip-real] [--skip-noop]
                                       [--fixed-cost-trials 4] [--startup-variants 0]

On one local Ray (started here with 2 CPUs, as `raysearch` starts it):
- no-op 2-worker runs (each worker reports once and returns), alternated repetition by repetition:
  TorchTrainer with Train's default 2 s controller poll, with the 0.2 s poll that
  raysearch/train/driver.py sets, with that plus the optional controller/worker services switched
  off ("lean": RAY_TRAIN_METRICS_ENABLED=0, RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0), and a
  DataParallelTrainer with the 0.2 s poll (no torch backend: no torch import for the backend, no
  process group), which isolates what the torch backend costs;
- inside Tune: a plain function trial, and a function trial that fits the no-op TorchTrainer
  (the search's pattern), with the 2 s and the 0.2 s poll;
- the fixed cost per trial of the search path, side by side in one run (issue 15 item 5): a tiny
  one-worker trial through `run_search` (a Tune function trainable running the TrialLoop in its
  reused actor), a plain no-op Tune function trial, and the same tiny trial with two workers
  (TorchTrainer). Each is the marginal wall time of one more trial (a search of N trials against
  a search of one, so start-up paid once per search cancels) minus the trial's compute in-process;
- with `--startup-variants FITS`, job configurations that might shorten a 2-worker trial's start
  (a setup hook importing torch, the job env matching what Train adds to its actors' env, Ray's
  worker prestart), each in a fresh local Ray, FITS no-op fits per session, alternated;
- a tiny real trial (mvae-tiny, synthetic data, 1 pre-train + 2 fine-tune epochs) through
  `fit_trial`, against the same epochs in this process with `TrialLoop` (torch using every core).

Each no-op run is broken down from Train's own structured logs (ray 2.60 message texts; missing
entries come back as null) and from timestamps the train function writes: controller actor start,
PlacementGroupCleaner start, worker actors created, train context on the workers, process group,
train function launch and first report, and teardown (train function return to `fit()` return).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from harness import emit, log, machine_info  # noqa: E402

POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
LEAN_ENV = {"RAY_TRAIN_METRICS_ENABLED": "0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
NOOP_CASES = {
    "torch_trainer_poll_2s": ("torch", {POLL_ENV: "2"}),
    "torch_trainer_poll_0.2s": ("torch", {POLL_ENV: "0.2"}),
    "torch_trainer_poll_0.2s_lean": ("torch", {POLL_ENV: "0.2", **LEAN_ENV}),
    "data_parallel_trainer_poll_0.2s": ("plain", {POLL_ENV: "0.2"}),
}


def noop_train_fn(config: dict) -> None:
    """Report once, write when this worker entered, reported and returned (runs in a Ray worker)."""
    import os
    import time

    import ray.train

    entered = time.time()
    with open("/proc/self/status") as f:
        rss_mb = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    context = ray.train.get_context()
    ray.train.report({"rank": context.get_world_rank()})
    reported = time.time()
    stamp = {"entered": entered, "reported": reported, "rss_at_entry_mb": rss_mb, "pid": os.getpid(),
             "returned": time.time()}
    Path(config["stamp_dir"], f"rank{context.get_world_rank()}.json").write_text(json.dumps(stamp))


@contextlib.contextmanager
def environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def session_logs() -> str:
    import ray

    return os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "train")


def train_log_events(run_name: str) -> list[tuple[float, str, str]]:
    """(unix time, component, message) of Train's structured log lines for one run, in time order."""
    events = []
    for path in glob.glob(os.path.join(session_logs(), "ray-train-*.log")):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if record.get("run_name") == run_name:
                    events.append((record["timestamp_ns"] / 1e9, record.get("component", ""), record["message"]))
    return sorted(events)


def breakdown(run_name: str, start: float, end: float, stamps: list[dict]) -> dict:
    """Seconds spent in each start-up stage, from Train's log lines and the workers' stamps."""
    events = train_log_events(run_name)

    def first(pattern: str, component: str | None = None) -> float | None:
        return next((t for t, c, m in events if re.search(pattern, m) and (component is None or c == component)), None)

    def seconds_in(pattern: str) -> float | None:
        match = next((re.search(pattern, m) for _, _, m in events if re.search(pattern, m)), None)
        return float(match.group(1)) if match else None

    def since(a: float | None, b: float | None) -> float | None:
        return round(b - a, 3) if a is not None and b is not None else None

    controller_up = events[0][0] if events else None
    cleaner = first(r"PlacementGroupCleaner launched")
    group_start = first(r"Attempting to start training worker group")
    pg_setup = first(r"Setting up process group", "worker")
    after_pg = next((t for t, c, m in events if c == "worker" and pg_setup is not None and t > pg_setup
                     and "process group" not in m and m != "using gloo"), None)
    launch = first(r"Launching training function")
    entered = min((s["entered"] for s in stamps), default=None)
    reported = max((s["reported"] for s in stamps), default=None)
    returned = max((s["returned"] for s in stamps), default=None)
    return {
        "controller_actor_start_s": since(start, controller_up),
        "placement_group_cleaner_start_s": since(controller_up, cleaner),
        "worker_actors_created_s": seconds_in(r"worker actors created in (\d+\.\d+)s"),
        "train_context_on_workers_s": seconds_in(r"Train context initialized on workers in (\d+\.\d+)s"),
        "process_group_s": since(pg_setup, after_pg),
        "fit_start_to_worker_group_start_s": since(start, group_start),
        "fit_start_to_train_fn_launch_s": since(start, launch),
        "fit_start_to_train_fn_entry_s": since(start, entered),
        "train_fn_entry_to_first_report_s": since(entered, reported),
        "train_fn_return_to_fit_return_s": since(returned, end),
    }


def run_noop(kind: str, env: dict[str, str], storage: Path, label: str) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer  # not re-exported by ray.train in 2.60

    name = f"{label}-{time.time_ns()}"
    stamp_dir = Path(tempfile.mkdtemp(prefix="stamps-", dir=storage))
    trainer_cls = TorchTrainer if kind == "torch" else DataParallelTrainer
    with environment(env):
        trainer = trainer_cls(noop_train_fn, train_loop_config={"stamp_dir": str(stamp_dir)},
                              scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.95}),
                              run_config=ray.train.RunConfig(name=name, storage_path=str(storage)))
        start = time.time()
        trainer.fit()
        end = time.time()
    stamps = [json.loads(p.read_text()) for p in sorted(stamp_dir.glob("rank*.json"))]
    return {"wall_s": round(end - start, 3), "breakdown": breakdown(name, start, end, stamps),
            "worker_rss_at_entry_mb": [round(s["rss_at_entry_mb"], 1) for s in stamps]}


def tune_function_trial(config: dict) -> None:
    import ray.tune

    ray.tune.report({"done": 1})


def tune_torch_trainer_trial(config: dict) -> None:
    """The search's pattern: a Tune function trial whose body fits a 2-worker TorchTrainer."""
    import os

    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    os.environ[POLL_ENV] = config["poll_s"]
    stamp_dir = tempfile.mkdtemp(prefix="stamps-", dir=config["storage"])
    trainer = TorchTrainer(noop_train_fn, train_loop_config={"stamp_dir": stamp_dir},
                           scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.95}),
                           run_config=ray.train.RunConfig(name=f"inner-{time.time_ns()}", storage_path=config["storage"],
                                                          callbacks=[TuneReportCallback()]))
    trainer.fit()


def run_tune(trainable, config: dict, storage: Path, label: str) -> float:
    import ray.tune

    resourced = ray.tune.with_resources(trainable, {"CPU": 0.05})  # as raysearch.tune.search does
    tuner = ray.tune.Tuner(resourced, param_space=config,
                           tune_config=ray.tune.TuneConfig(num_samples=1),
                           run_config=ray.tune.RunConfig(name=f"{label}-{time.time_ns()}", storage_path=str(storage),
                                                         verbose=0))
    start = time.time()
    tuner.fit()
    return round(time.time() - start, 3)


def run_real(storage: Path, repeats: int) -> dict:
    """fit_trial (2 Ray Train workers) against TrialLoop in this process, same trial, alternated.

    The in-process baseline runs in a warm process (one untimed run first), so the difference is
    everything a Ray trial adds, one-time start-up work in fresh worker processes included."""
    import torch

    from raysearch.data.synthetic import prepare_synthetic
    from raysearch.train.config import TrialConfig
    from raysearch.train.distributed import WorkerContext
    from raysearch.contract import Resources
    from raysearch.train.driver import fit_trial
    from raysearch.train.loop import LocalReporter, TrialLoop

    data = prepare_synthetic(storage / "synthetic", num_classes=6, per_class=150, seed=0)
    trial = TrialConfig.from_flat(dict(preset="mvae-tiny", data_dir=str(data), pretrain_epochs=1, finetune_epochs=2,
                                       batch_size=32, finetune_lr=1e-2, seed=0))
    torch.set_num_threads(os.cpu_count() or 1)

    def in_process() -> float:
        start = time.time()
        TrialLoop.build(trial, WorkerContext(), LocalReporter()).run()
        return time.time() - start

    in_process()  # warm-up: first-call initialisation in this process is not what we compare
    ray_walls, local_walls, stages = [], [], []
    for rep in range(repeats):
        with environment({POLL_ENV: "0.2"}):
            name = f"real-{rep}"
            start = time.time()
            summary = fit_trial(trial, Resources(workers=2, cpus_per_worker=0.95), storage / name, name=name)
            end = time.time()
        ray_walls.append(end - start)
        events = train_log_events(name)
        launch = next((t for t, _, m in events if "Launching training function" in m), None)
        reports = [t for t, c, m in events if c == "worker" and m.startswith("Reporting training result")]
        if launch is not None and reports:
            stages.append({"fit_start_to_train_fn_launch_s": launch - start,
                           "train_fn_launch_to_last_report_s": reports[-1] - launch,
                           "last_report_to_fit_return_s": end - reports[-1]})
        local_walls.append(in_process())
        log(f"real trial {rep + 1}/{repeats}: fit_trial {ray_walls[-1]:.1f} s, in-process {local_walls[-1]:.1f} s")
    ray_wall, local_wall = median(ray_walls), median(local_walls)
    return {
        "trial": "mvae-tiny, 6 classes x 150 synthetic sequences, 1 pre-train + 2 fine-tune epochs, batch 32",
        "fit_trial_wall_s": round(ray_wall, 2),
        "in_process_wall_s": round(local_wall, 2),
        "ratio_ray_to_in_process": round(ray_wall / local_wall, 2),
        "fixed_cost_s": round(ray_wall - local_wall, 2),
        "fit_trial_runs_s": [round(v, 2) for v in ray_walls],
        "in_process_runs_s": [round(v, 2) for v in local_walls],
        "fit_trial_stages_s": {k: round(median([s[k] for s in stages]), 2) for k in stages[0]} if stages else None,
        "final_best_val_acc": summary.best_val_acc,
    }


# -- fixed cost per trial through the search path ----------------------------------------------------
def search_space_file(folder: Path, workers: int, cpus_per_worker: float, trials: int) -> Path:
    """A tiny search (mvae-tiny, 6 x 30 synthetic clips, 1 pre-train + 1 fine-tune epoch), one
    trial at a time; `seed` is searched so that every trial pre-trains its own encoder."""
    import yaml

    doc = {"name": f"w{workers}-n{trials}", "preset": "mvae-tiny", "data": "synthetic",
           "synthetic": {"classes": 6, "per_class": 30, "seed": 0},
           "budget": {"num_samples": trials, "pretrain_epochs": 1, "finetune_epochs": 1, "max_concurrent": 1},
           "resources": {"workers": workers, "cpus_per_worker": cpus_per_worker, "gpus_per_worker": 0},
           "scheduler": {"type": "fifo"}, "sampler": {"type": "random", "seed": 0},
           "fixed": {"batch_size": 16}, "parameters": {"seed": {"type": "int", "low": 0, "high": 10**6}}}
    path = folder / f"space-w{workers}-n{trials}-{time.time_ns()}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_search_path(storage: Path, workers: int, cpus_per_worker: float, trials: int) -> float:
    """Wall time of `raysearch search` (run_search, the trainable of every real search) over
    `trials` sequential trials."""
    from raysearch.data.cache import synthetic_spec
    from raysearch.tune.search import run_search
    from raysearch.tune.space import load_search_space

    space = load_search_space(search_space_file(storage, workers, cpus_per_worker, trials))
    data_dir = synthetic_spec(classes=6, per_class=30, seed=0, max_frames=space.synthetic.max_frames)
    start = time.time()
    run_search(space, data_dir, str(storage / "searches"), f"{space.name}-{time.time_ns()}", resume=False)
    return time.time() - start


def run_plain_tune(storage: Path, trials: int) -> float:
    """Wall time of a Tune run of `trials` no-op function trials, one at a time, actors reused."""
    import ray.tune

    tuner = ray.tune.Tuner(ray.tune.with_resources(tune_function_trial, {"CPU": 1}),
                           tune_config=ray.tune.TuneConfig(num_samples=trials, max_concurrent_trials=1,
                                                           reuse_actors=True),
                           run_config=ray.tune.RunConfig(name=f"plain-{time.time_ns()}", storage_path=str(storage),
                                                         verbose=0))
    start = time.time()
    tuner.fit()
    return time.time() - start


def in_process_trial_s(storage: Path) -> float:
    """The tiny search's trial run by TrialLoop in this process (warm, 1 thread): its compute."""
    import torch

    from raysearch.data.cache import resolve_data, synthetic_spec
    from raysearch.train.config import TrialConfig
    from raysearch.train.distributed import WorkerContext
    from raysearch.train.loop import LocalReporter, TrialLoop

    data = resolve_data(synthetic_spec(classes=6, per_class=30, seed=0, max_frames=64))
    torch.set_num_threads(1)
    walls = []
    for seed in range(4):  # the first is a warm-up
        trial = TrialConfig.from_flat(dict(preset="mvae-tiny", data_dir=data, pretrain_epochs=1, finetune_epochs=1,
                                           batch_size=16, seed=seed))
        start = time.time()
        TrialLoop.build(trial, WorkerContext(), LocalReporter()).run()
        walls.append(time.time() - start)
    torch.set_num_threads(os.cpu_count() or 1)
    return median(walls[1:])


def fixed_cost_per_trial(storage: Path, many: int) -> dict:
    """Per-trial fixed cost, side by side: the marginal wall time of one more trial (a run of
    `many` trials against a run of one: start-up paid once per search cancels) minus the trial's
    compute in this process. Cases: a tiny one-worker trial through the search path (Tune function
    trainable, actor reused), a plain no-op Tune function trial, and a tiny two-worker trial
    through the search path (TorchTrainer)."""
    compute = in_process_trial_s(storage)
    log(f"tiny trial in process: {compute:.2f} s")
    cases = {
        "search_1_worker": (lambda n: run_search_path(storage, 1, 1, n), compute),
        "plain_tune_function": (lambda n: run_plain_tune(storage, n), 0.0),
        "search_2_workers_torch_trainer": (lambda n: run_search_path(storage, 2, 0.95, n), compute),
    }
    out: dict = {"trial": "mvae-tiny, 6 x 30 synthetic clips, 1 pre-train + 1 fine-tune epoch, batch 16",
                 "in_process_trial_s": round(compute, 2), "trials_in_long_run": many}
    for case, (run, work) in cases.items():
        one = run(1)
        log(f"{case}: 1 trial {one:.1f} s")
        long = run(many)
        log(f"{case}: {many} trials {long:.1f} s")
        marginal = (long - one) / (many - 1)
        out[case] = {"one_trial_run_s": round(one, 2), f"{many}_trial_run_s": round(long, 2),
                     "marginal_trial_s": round(marginal, 2), "fixed_cost_per_trial_s": round(marginal - work, 2)}
    return out


def torch_setup_hook() -> None:
    """Worker setup hook of the `*hook_torch` start-up variants: raysearch's hook, then torch, so a
    worker process started ahead of time arrives with torch loaded."""
    from raysearch.ray_runtime import pin_ray_address

    pin_ray_address()
    import torch  # noqa: F401


# name: (setup hook is torch_setup_hook, job env_vars hold what Train adds to its actors' env
# (ray_runtime.TRAIN_ADDED_ENV, what raysearch does since this comparison), Ray system config)
STARTUP_VARIANTS = {
    "baseline": (False, False, {}),
    "hook_torch": (True, False, {}),
    "env_aligned": (False, True, {}),
    "env_aligned_hook_torch": (True, True, {}),
    "env_aligned_prestart": (False, True, {"enable_worker_prestart": True}),
}


def startup_variants(storage: Path, repeats: int, fits: int, pause_s: float) -> dict:
    """No-op 2-worker fits (0.2 s poll) under job configurations that might shorten start-up, each in
    its own fresh local Ray (2 CPUs), variants alternated repetition by repetition: `fits` fits per
    session with `pause_s` between them (a trial's training time, in which Ray may start workers)."""
    import ray

    from raysearch.ray_runtime import TRAIN_ADDED_ENV, runtime_env

    walls: dict[str, list[list[float]]] = {v: [] for v in STARTUP_VARIANTS}
    stages: dict[str, list[dict]] = {v: [] for v in STARTUP_VARIANTS}
    for rep in range(repeats):
        order = list(STARTUP_VARIANTS)
        order = order[rep % len(order):] + order[:rep % len(order)]
        for variant in order:
            hook, aligned, system_config = STARTUP_VARIANTS[variant]
            env = runtime_env()
            if hook:
                env["worker_process_setup_hook"] = torch_setup_hook
            if not aligned:
                env["env_vars"] = {k: v for k, v in env["env_vars"].items() if k not in TRAIN_ADDED_ENV}
            ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                     configure_logging=False, runtime_env=env, _system_config=system_config or None)
            try:
                time.sleep(pause_s)  # the first fit finds what Ray prestarts at start-up
                session = []
                for fit in range(fits):
                    run = run_noop("torch", {POLL_ENV: "0.2"}, storage, f"sv-{variant}-{rep}-{fit}")
                    session.append(run["wall_s"])
                    stages[variant].append(run["breakdown"])
                    time.sleep(pause_s)
            finally:
                ray.shutdown()
            walls[variant].append(session)
            log(f"start-up variant {variant} {rep + 1}/{repeats}: fits {session} s")
    out: dict = {"fits_per_session": fits, "pause_s": pause_s, "repeats": repeats}
    for variant in STARTUP_VARIANTS:
        firsts = [w[0] for w in walls[variant]]
        later = [x for w in walls[variant] for x in w[1:]]
        keys = ("controller_actor_start_s", "worker_actors_created_s", "train_context_on_workers_s",
                "train_fn_return_to_fit_return_s")
        out[variant] = {
            "first_fit_median_s": round(median(firsts), 2),
            "later_fits_median_s": round(median(later), 2) if later else None,
            "runs_s": walls[variant],
            "stages_median_s": {k: round(median([b[k] for b in stages[variant] if b[k] is not None] or [float("nan")]), 3)
                                for k in keys},
        }
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-tune", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-noop", action="store_true", help="skip the no-op 2-worker breakdown runs")
    parser.add_argument("--fixed-cost-trials", type=int, default=4,
                        help="trials in the long run of the per-trial fixed-cost cases (0: skip them)")
    parser.add_argument("--startup-variants", type=int, default=0, metavar="FITS",
                        help="no-op 2-worker fits per Ray session for each start-up variant (0: skip them)")
    args = parser.parse_args()
    import ray

    from raysearch.ray_runtime import connect

    storage = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    result: dict = {"machine": machine_info() | {"ray": ray.__version__}}
    # Tune and Train print progress on stdout; the JSON object must be alone there.
    with contextlib.redirect_stdout(sys.stderr):
        start = time.time()
        connect(num_cpus=2)
        result["ray_init_s"] = round(time.time() - start, 2)
        log(f"ray.init: {result['ray_init_s']} s")
        runs: dict[str, list[dict]] = {case: [] for case in NOOP_CASES}
        for rep in range(0 if args.skip_noop else args.repeats):
            for case, (kind, env) in NOOP_CASES.items():
                runs[case].append(run_noop(kind, env, storage, case.replace(".", "")))
                log(f"no-op {case} {rep + 1}/{args.repeats}: {runs[case][-1]['wall_s']} s")
        if args.fixed_cost_trials > 1:
            result["fixed_cost_per_trial"] = fixed_cost_per_trial(storage, args.fixed_cost_trials)
        result["noop_2_worker_fit"] = {}
        for case, rows in runs.items():
            if not rows:
                continue
            stages = {key: median([r["breakdown"][key] for r in rows if r["breakdown"][key] is not None] or [float("nan")])
                      for key in rows[0]["breakdown"]}
            result["noop_2_worker_fit"][case] = {
                "wall_s": round(median([r["wall_s"] for r in rows]), 2),
                "runs_s": [r["wall_s"] for r in rows],
                "stages_s": {k: (round(v, 3) if v == v else None) for k, v in stages.items()},
                "worker_rss_at_entry_mb": rows[-1]["worker_rss_at_entry_mb"],
            }
        if not args.skip_tune:
            tune = {"function_trial_s": run_tune(tune_function_trial, {}, storage, "tune-fn")}
            log(f"tune function trial: {tune['function_trial_s']} s")
            for poll in ("2", "0.2"):
                key = f"torch_trainer_trial_poll_{poll}s_s"
                tune[key] = run_tune(tune_torch_trainer_trial, {"poll_s": poll, "storage": str(storage)}, storage,
                                     f"tune-tt-{poll.replace('.', '')}")
                log(f"tune torch-trainer trial (poll {poll} s): {tune[key]} s")
            result["tune_1_trial"] = tune
        if not args.skip_real:
            result["real_trial"] = run_real(storage, args.repeats)
        ray.shutdown()
        if args.startup_variants:
            result["startup_variants"] = startup_variants(storage, args.repeats, args.startup_variants, pause_s=3.0)
    noop = result["noop_2_worker_fit"]
    fixed = result.get("fixed_cost_per_trial", {})
    result["summary"] = {
        "fixed_cost_per_trial_s": result.get("real_trial", {}).get("fixed_cost_s"),
        "noop_fit_poll_0.2s_s": noop.get("torch_trainer_poll_0.2s", {}).get("wall_s"),
        "noop_fit_poll_2s_s": noop.get("torch_trainer_poll_2s", {}).get("wall_s"),
        # issue 15 item 5: one-worker trials (Tune actor) <= 2 s, two-worker trials (TorchTrainer) <= 5 s
        "search_1_worker_fixed_cost_s": fixed.get("search_1_worker", {}).get("fixed_cost_per_trial_s"),
        "plain_tune_function_fixed_cost_s": fixed.get("plain_tune_function", {}).get("fixed_cost_per_trial_s"),
        "search_2_workers_fixed_cost_s": fixed.get("search_2_workers_torch_trainer", {}).get("fixed_cost_per_trial_s"),
        "target_1_worker_s": 2.0,
        "target_2_workers_s": 5.0,
    }
    emit(result)


if __name__ == "__main__":
    main()
