"""Search efficiency on real data (MSR Action3D): record learning curves once, replay searches many times.

    python bench/bench_search_msr.py record [--out bench/results/msr_curves.json]   # ~10 CPU-minutes, one core
    python bench/bench_search_msr.py record --keys 0:10 --out A.json  (and 10: --out B.json, side by side)
    python bench/bench_search_msr.py merge A.json B.json [--out bench/results/msr_curves.json]
    python bench/bench_search_msr.py replay [--seeds 20] [--sweep] [--jobs 2]       # minutes; one JSON object
    python bench/bench_search_msr.py live [--time-box-s 600]                        # real searches, one JSON object

Why a new script beside `bench_search.py`: that one runs live searches on synthetic data, three seeds,
which cannot say whether a 3x difference is real. Here each configuration of a small categorical grid
is trained once and its curves kept in `bench/results/msr_curves.json`; a search is then replayed
through the real searcher and scheduler objects (as `raysearch.tune.search.make_tuner` builds them for
a space) at no training cost, over 20+ seeds per method.

**record.** MSR Action3D (`../shared/data/msr_action3d/msr_action3d.npz`, imported with
`raysearch prepare npz` defaults into `$RAYSEARCH_CACHE/msr_action3d`, never into the repository) with
the tiny presets, one torch thread. The grid (`GRID`) crosses pre-training settings (variant with its
latent or codebook size, frame mask ratio, decoder depth) with fine-tuning learning rates. As the
encoder cache does, each pre-training key (every setting but the fine-tuning ones) is pre-trained once
(`PRETRAIN_EPOCHS`), reporting per epoch `val_pretrain_loss`, `val_recon_loss`, `val_knn_acc` and
`val_probe_acc` (both proxies, so their correlation with the fine-tuned result can be measured), and
its selected encoder (`pretrain_select`; the stored curves used the lowest `val_pretrain_loss`, the
default when they were recorded) is fine-tuned once per fine-tuning setting
(`FINETUNE_EPOCHS`), reporting `val_acc`, `val_ce_loss`, `best_val_acc`. Every epoch's wall time
(training plus evaluation) is kept with it. The file is rewritten after every key, and a rerun
continues where it stopped.

**replay.** A search is an event loop over simulated time: `max_concurrent` trials run at once; each
trial's reports arrive at the recorded wall times of its configuration (pre-training charged only the
first time the search meets its key, as the encoder cache does; later trials with the key start at
fine-tuning); each report goes through `scheduler.on_trial_result` and, unless it stops the trial, the
searcher's `on_trial_result`; a stopped or finished trial goes to both `on_trial_complete`, in the order
Ray Tune's controller calls them (`ray.tune.execution.tune_controller`, 2.60). A free slot asks the
searcher (`ConcurrencyLimiter(OptunaStudySearch)`) for the next configuration. A real `Tuner` with a
replaying function trainable would do the same with Ray's actor start-up per trial, about 1 s
(bench_ray_overhead), so 40 searches of 40-60 trials would take most of an hour of this shared
machine; the event loop calls the same objects with the same arguments in the same order. Methods:
  - `tpe_asha`: the shipped `search_spaces/msr.yaml` sampler and scheduler (TPE, ASHA on
    `finetune_epoch`) over the grid,
  - `random_fifo`: Optuna's random sampler, every trial run to the end.
Compute is trial epochs (pre-training epochs charged once per key, plus fine-tuning epochs) and the
recorded wall seconds of those epochs. Target = the median over random-search seeds of its best
final validation accuracy (the best `val_acc` any of its trials reached; the test split is never
read). A method reaches the target at the first report with `best_val_acc >= target`. The recorded
wall seconds are those of the recording machine at the time (one torch thread per process; on a
shared, loaded machine they vary with the load), so trial epochs are the steadier unit.

**live.** `search_spaces/msr.yaml` as shipped against the same space with random sampling and FIFO,
each a real `raysearch search` with half of the time box as `budget.time_limit_s`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import MSR_NPZ, emit, log, machine_info

from raysearch.contract import FINETUNE, PRETRAIN, Metric

HERE = Path(__file__).resolve().parent
CURVES = HERE / "results" / "msr_curves.json"
SPACE_FILE = HERE.parent / "search_spaces" / "msr.yaml"

PRETRAIN_EPOCHS = 10
FINETUNE_EPOCHS = 24
BATCH_SIZE = 16
# Settings every recorded trial shares (the tiny presets at their 16 frames in tuples of 2).
FIXED = {"batch_size": BATCH_SIZE, "seed": 0}
# The grid, as (name, choices, condition). Pre-training settings first: everything but FINETUNE_KEYS
# decides the encoder. Conditions name a setting above and the values under which this one exists.
GRID = (
    ("variant", ("mae", "mvae", "mvqvae"), None),
    ("latent_dim", (8, 32), ("variant", "mvae")),
    ("codebook_size", (16, 64), ("variant", "mvqvae")),
    ("frame_mask_ratio", (0.4, 0.7), None),
    ("decoder_depth", (2, 4), None),
    ("finetune_lr", (1.0e-3, 1.0e-2), None),
)
FINETUNE_KEYS = ("finetune_lr",)
TARGET_SPEEDUP = 3.0


# -- the grid -----------------------------------------------------------------------------------------
def grid_configs() -> list[dict]:
    """Every configuration of GRID (conditional settings only where their condition holds)."""
    configs = [{}]
    for name, choices, condition in GRID:
        grown = []
        for config in configs:
            if condition is not None and config.get(condition[0]) != condition[1]:
                grown.append(config)
            else:
                grown.extend({**config, name: value} for value in choices)
        configs = grown
    return configs


def key_of(config: dict, names: tuple[str, ...] | None = None) -> str:
    """A stable text key: the settings `names` (default: all) in GRID order."""
    order = [name for name, _, _ in GRID if name in config and (names is None or name in names)]
    return ",".join(f"{name}={config[name]!r}" for name in order)


def pretrain_key(config: dict) -> str:
    return key_of(config, tuple(name for name, _, _ in GRID if name not in FINETUNE_KEYS))


def preset_of(config: dict) -> str:
    return f"{config['variant']}-tiny"


# -- record ------------------------------------------------------------------------------------------
def msr_data_dir() -> str:
    """MSR Action3D imported with `raysearch prepare npz` defaults, once, into the data cache."""
    from raysearch.data.cache import cache_root
    from raysearch.data.npz import prepare_npz

    target = cache_root() / "msr_action3d"
    if not (target / "manifest.json").exists():
        if not MSR_NPZ.is_file():
            sys.exit(f"{MSR_NPZ} not found: the MSR Action3D archive is needed to record curves")
        prepare_npz(MSR_NPZ, target)
    return str(target)


class TimedReporter:
    """Keeps every report with the wall seconds since the previous one (the first one counts the
    trial's set-up: data, model, loaders)."""

    def __init__(self):
        self.history: list[dict] = []
        self.last = time.perf_counter()

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        now = time.perf_counter()
        self.history.append({**metrics, "wall_s": now - self.last})
        self.last = now

    def restored_checkpoint(self) -> None:
        return None


def _both_proxies(loop_cls):
    """The trial loop evaluating both pre-training proxies every epoch (the recipe picks one)."""
    from raysearch.contract import PROXY_METRICS
    from raysearch.train.evaluate import knn_accuracy, linear_probe_accuracy, pretrain_val_loss

    class BothProxies(loop_cls):
        def _pretrain_eval(self):
            metrics = pretrain_val_loss(self.model, self.loaders.val, self.recipe.seed, self.ctx)
            probe, classes = self.model.to_classifier(), self.model_config.num_classes
            metrics[PROXY_METRICS["knn"]] = knn_accuracy(probe, self.loaders.bank, self.loaders.val,
                                                         self.recipe.knn_k, classes, self.ctx)
            metrics[PROXY_METRICS["linear_probe"]] = linear_probe_accuracy(probe, self.loaders.bank, self.loaders.val,
                                                                           classes, self.ctx)
            return metrics

    return BothProxies


PRETRAIN_KEEP = (Metric.EPOCH, Metric.VAL_PRETRAIN_LOSS, Metric.VAL_RECON_LOSS, Metric.VAL_KNN_ACC,
                 Metric.VAL_PROBE_ACC, "wall_s")
FINETUNE_KEEP = (Metric.EPOCH, Metric.VAL_ACC, Metric.VAL_CE_LOSS, Metric.BEST_VAL_ACC, "wall_s")


def _rows(history: list[dict], keep: tuple[str, ...]) -> list[dict]:
    return [{k: (round(h[k], 5) if isinstance(h.get(k), float) else h.get(k)) for k in keep} for h in history]


def record(out: Path, only: slice = slice(None)) -> None:
    import torch

    from raysearch.train.config import TrialConfig
    from raysearch.train.distributed import WorkerContext
    from raysearch.train.loop import TrialLoop

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    data_dir = msr_data_dir()
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.update({"dataset": "MSR Action3D (prepare npz defaults: train 251 / val 40 / test 266 clips)",
                "grid": [[n, list(c), list(w) if w else None] for n, c, w in GRID],
                "finetune_keys": list(FINETUNE_KEYS), "fixed": FIXED, "pretrain_epochs": PRETRAIN_EPOCHS,
                "finetune_epochs": FINETUNE_EPOCHS, "torch_threads": 1, "machine": machine_info(threads=1)})
    pretrains, finetunes = doc.setdefault("pretrain", {}), doc.setdefault("finetune", {})
    loop_cls = _both_proxies(TrialLoop)
    configs = grid_configs()
    by_key: dict[str, list[dict]] = {}
    for config in configs:
        by_key.setdefault(pretrain_key(config), []).append(config)
    ctx = WorkerContext()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="msr-encoders-") as encoders:
        for n, (key, members) in list(enumerate(by_key.items()))[only]:
            if key in pretrains and all(key_of(c) in finetunes for c in members):
                continue
            base = {k: v for k, v in members[0].items() if k not in FINETUNE_KEYS}
            flat = {"preset": preset_of(base), "data_dir": data_dir, **FIXED, **base}
            flat.pop("variant")
            reporter = TimedReporter()
            loop = loop_cls.build(TrialConfig.from_flat({**flat, "pretrain_epochs": PRETRAIN_EPOCHS,
                                                         "finetune_epochs": 0}), ctx, reporter)
            loop.run()
            pretrains[key] = {"config": base, "curve": _rows(reporter.history, PRETRAIN_KEEP)}
            encoder = os.path.join(encoders, f"{n}.pt")
            # Prefixed as in a pre-training model's state dict (a bare encoder's keys read as the public layout).
            torch.save({f"encoder.{k}": v for k, v in loop.best_encoder.items()}, encoder)
            for config in members:
                reporter = TimedReporter()
                ft = {k: v for k, v in config.items() if k in FINETUNE_KEYS}
                TrialLoop.build(TrialConfig.from_flat({**flat, **ft, "pretrain_epochs": 0,
                                                       "finetune_epochs": FINETUNE_EPOCHS, "init_from": encoder}),
                                ctx, reporter).run()
                finetunes[key_of(config)] = {"config": config, "pretrain_key": key,
                                             "curve": _rows(reporter.history, FINETUNE_KEEP)}
            doc["record_wall_s"] = round(doc.get("record_wall_s", 0) + time.time() - started, 1)
            started = time.time()
            partial = out.with_suffix(".partial")
            partial.write_text(json.dumps(doc, indent=1) + "\n")
            partial.replace(out)
            best = max(finetunes[key_of(c)]["curve"][-1][Metric.BEST_VAL_ACC] for c in members)
            log(f"key {n + 1}/{len(by_key)} {key}: knn {pretrains[key]['curve'][-1][Metric.VAL_KNN_ACC]:.3f}, "
                f"best fine-tuned val_acc {best:.3f}; {doc['record_wall_s']:.0f} s so far")


def merge(parts: list[Path], out: Path) -> None:
    """Curves recorded in parts (`record --keys A:B --out PART`, side by side) into one file."""
    doc: dict = {}
    for part in parts:
        piece = json.loads(part.read_text())
        wall = doc.get("record_wall_s", 0) + piece.get("record_wall_s", 0)
        pretrain = {**doc.get("pretrain", {}), **piece["pretrain"]}
        finetune = {**doc.get("finetune", {}), **piece["finetune"]}
        doc.update(piece)
        doc.update({"pretrain": pretrain, "finetune": finetune, "record_wall_s": round(wall, 1)})
    doc["recorded_in_parts"] = len(parts)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"{out}: {len(doc['pretrain'])} pre-training keys, {len(doc['finetune'])} configurations")


# -- replay ------------------------------------------------------------------------------------------
METHODS = ("tpe_asha", "random_fifo")


class _Trial:
    """What a scheduler reads of a Tune trial here: its id."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def replay_doc(curves: dict, data_dir: str, name: str, sampler: dict, scheduler: dict, num_samples: int,
               max_concurrent: int) -> dict:
    """The grid as a search space: one categorical parameter per GRID entry, conditions as `when`."""
    parameters = {}
    for setting, choices, condition in curves["grid"]:
        parameters[setting] = {"type": "categorical", "choices": choices,
                               **({"when": {condition[0]: condition[1]}} if condition else {})}
    return {"name": name, "preset": "mvae-tiny", "data": data_dir,
            "objectives": [{"metric": Metric.VAL_ACC, "mode": "max"}],
            "budget": {"num_samples": num_samples, "pretrain_epochs": curves["pretrain_epochs"],
                       "finetune_epochs": curves["finetune_epochs"], "max_concurrent": max_concurrent},
            "resources": {"workers": 1, "cpus_per_worker": 0.95, "gpus_per_worker": 0},
            "scheduler": scheduler, "sampler": sampler, "fixed": dict(curves["fixed"]), "parameters": parameters}


def search_objects(doc: dict, work: Path, max_concurrent: int):
    """The searcher, the scheduler and the metric/mode exactly as `make_tuner` builds them for this
    space (read back from the Tuner it returns; no Ray needed for that)."""
    import yaml

    from raysearch.tune.search import make_tuner
    from raysearch.tune.space import load_search_space

    path = work / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    space = load_search_space(path)
    tuner = make_tuner(space, space.data, str(work / "runs"), space.name, lambda config: None, max_concurrent)
    config = tuner._local_tuner._tune_config  # private in Ray 2.60: the objects Tune would drive
    config.scheduler.set_search_properties(config.metric, config.mode)  # as Tune's controller does
    return config.search_alg, config.scheduler


def trial_reports(curves: dict, config: dict, pretrained: bool) -> list[dict]:
    """The reports a trial of `config` makes: pre-training (unless its encoder is cached), then
    fine-tuning, with the metric names and the time axes the trial loop reports."""
    grid_names = [n for n, _, _ in curves["grid"]]
    params = {k: v for k, v in config.items() if k in grid_names}
    finetune = curves["finetune"][key_of(params)]
    pretrain_epochs = curves["pretrain_epochs"]
    rows = []
    if not pretrained:
        for row in curves["pretrain"][finetune["pretrain_key"]]["curve"]:
            rows.append({Metric.PHASE: PRETRAIN, Metric.EPOCH: row[Metric.EPOCH],
                         Metric.GLOBAL_EPOCH: row[Metric.EPOCH],
                         Metric.VAL_KNN_ACC: row[Metric.VAL_KNN_ACC], "wall_s": row["wall_s"]})
    for row in finetune["curve"]:
        rows.append({Metric.PHASE: FINETUNE, Metric.EPOCH: row[Metric.EPOCH], Metric.FINETUNE_EPOCH: row[Metric.EPOCH],
                     Metric.GLOBAL_EPOCH: pretrain_epochs + row[Metric.EPOCH], Metric.VAL_ACC: row[Metric.VAL_ACC],
                     Metric.BEST_VAL_ACC: row[Metric.BEST_VAL_ACC], "wall_s": row["wall_s"]})
    return rows


def replay_search(curves: dict, doc: dict, work: Path, max_concurrent: int, seed: int) -> dict:
    """One search, as Tune's controller would run it (module docstring). Returns its trace: after
    every report, the compute spent so far and the best fine-tuned val_acc so far."""
    import numpy as np

    from ray.tune.schedulers import TrialScheduler

    np.random.seed(seed)  # ASHA draws its bracket with numpy (one bracket here: no effect)
    searcher, scheduler = search_objects(doc, work, max_concurrent)
    pretrain_key_of = {k: v["pretrain_key"] for k, v in curves["finetune"].items()}
    grid_names = [n for n, _, _ in curves["grid"]]
    ready: dict[str, float] = {}          # pre-training key -> when its encoder is in the cache
    running: dict[str, dict] = {}         # trial id -> {"rows", "next", "at"}
    trace, epochs, wall, best = [], 0, 0.0, None
    started = stopped = 0
    clock = 0.0
    while True:
        while len(running) < max_concurrent and started < doc["budget"]["num_samples"]:
            trial_id = f"replay_{started:05d}"
            config = searcher.suggest(trial_id)
            if config is None:
                break
            started += 1
            scheduler.on_trial_add(None, _Trial(trial_id))
            key = pretrain_key_of[key_of({k: v for k, v in config.items() if k in grid_names})]
            cached = key in ready
            rows = trial_reports(curves, config, pretrained=cached)
            if not cached:
                ready[key] = clock + sum(r["wall_s"] for r in rows if r[Metric.PHASE] == PRETRAIN)
            # A trial whose encoder another trial is still pre-training waits for it (no compute).
            start = max(clock, ready[key]) if cached else clock
            running[trial_id] = {"rows": rows, "next": 0, "at": start + rows[0]["wall_s"]}
        if not running:
            break
        trial_id = min(running, key=lambda t: running[t]["at"])
        state = running[trial_id]
        clock = state["at"]
        row = state["rows"][state["next"]]
        state["next"] += 1
        epochs += 1
        wall += row["wall_s"]
        result = {k: v for k, v in row.items() if k != "wall_s"}
        if Metric.BEST_VAL_ACC in result:
            best = result[Metric.BEST_VAL_ACC] if best is None else max(best, result[Metric.BEST_VAL_ACC])
        trace.append((epochs, round(wall, 3), best))
        trial = _Trial(trial_id)
        decision = scheduler.on_trial_result(None, trial, result)
        if decision != TrialScheduler.STOP:
            searcher.on_trial_result(trial_id, result)
        last = state["next"] == len(state["rows"])
        if decision == TrialScheduler.STOP or last:
            stopped += int(not last)
            searcher.on_trial_complete(trial_id, result=result)
            scheduler.on_trial_complete(None, trial, result)
            del running[trial_id]
        else:
            state["at"] = clock + state["rows"][state["next"]]["wall_s"]
    return {"trace": trace, "final_best": best, "epochs": epochs, "wall_s": round(wall, 1), "trials": started,
            "stopped_early": stopped, "pretrain_keys_used": len(ready)}


def reach(trace: list, target: float) -> dict:
    for epochs, wall, best in trace:
        if best is not None and best >= target - 1e-9:
            return {"reached": True, "epochs": epochs, "wall_s": wall}
    return {"reached": False, "epochs": None, "wall_s": None}


def spread(values: list[float]) -> dict:
    """Median, quartiles and range; an unreached target counts as infinitely expensive (null in JSON)."""
    import numpy as np

    finite = np.array([v if v is not None else np.inf for v in values], dtype=float)
    q1, med, q3 = (float(np.percentile(finite, q, method="lower" if np.isinf(finite).any() else "linear"))
                   for q in (25, 50, 75))
    show = lambda v: None if not np.isfinite(v) else round(v, 1)  # noqa: E731
    return {"median": show(med), "q1": show(q1), "q3": show(q3), "min": show(float(finite.min())),
            "max": show(float(finite.max()))}


def method_settings(space_file: Path) -> dict[str, tuple[dict, dict, int]]:
    """(sampler, scheduler, num_samples) per method: the shipped msr.yaml's for tpe_asha; random
    sampling with FIFO and RANDOM_SAMPLES trials for random_fifo."""
    import yaml

    shipped = yaml.safe_load(space_file.read_text())
    return {"tpe_asha": (shipped["sampler"], shipped["scheduler"], shipped["budget"]["num_samples"]),
            "random_fifo": ({"type": "random"}, {"type": "fifo"}, RANDOM_SAMPLES)}


RANDOM_SAMPLES = 20


def spearmanr(xs: list[float], ys: list[float], permutations: int = 2000) -> tuple[float, float]:
    """Spearman's rho (ties get their average rank) and a two-sided permutation p-value."""
    import numpy as np
    import pandas as pd

    rx, ry = pd.Series(xs).rank().to_numpy(), pd.Series(ys).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan"), float("nan")
    rho = float(np.corrcoef(rx, ry)[0, 1])
    rng = np.random.default_rng(0)
    null = np.array([np.corrcoef(rx, rng.permutation(ry))[0, 1] for _ in range(permutations)])
    return rho, float((np.abs(null) >= abs(rho) - 1e-12).mean())


def correlations(curves: dict) -> dict:
    """Spearman correlation over the grid between early signals and the fine-tuned result (the
    best val_acc a configuration reaches in its FINETUNE_EPOCHS epochs)."""
    finetunes = list(curves["finetune"].values())
    final = [f["curve"][-1][Metric.BEST_VAL_ACC] for f in finetunes]
    out: dict[str, dict] = {}

    def add(name: str, xs: list[float], ys: list[float]) -> None:
        rho, p = spearmanr(xs, ys)
        finite = rho == rho  # NaN when one side is constant
        out[name] = {"spearman": round(rho, 3) if finite else None, "p": round(p, 4) if finite else None,
                     "n": len(xs)}

    # Pre-training signals, per configuration (the configuration's encoder) and per encoder (its best
    # fine-tuned result over the fine-tuning settings). Losses: lower is better, so negated.
    signals = {Metric.VAL_KNN_ACC: 1, Metric.VAL_PROBE_ACC: 1, Metric.VAL_RECON_LOSS: -1, Metric.VAL_PRETRAIN_LOSS: -1}
    for metric, sign in signals.items():
        for at in ("last", "best"):
            def signal(pretrain_key: str) -> float:
                curve = curves["pretrain"][pretrain_key]["curve"]
                values = [sign * row[metric] for row in curve]
                return values[-1] if at == "last" else max(values)
            add(f"pretrain {metric} ({at} epoch) vs config's final best val_acc",
                [signal(f["pretrain_key"]) for f in finetunes], final)
            by_key: dict[str, float] = {}
            for f, value in zip(finetunes, final):
                by_key[f["pretrain_key"]] = max(by_key.get(f["pretrain_key"], 0.0), value)
            add(f"pretrain {metric} ({at} epoch) vs encoder's best final val_acc",
                [signal(k) for k in by_key], list(by_key.values()))
    # A short fine-tune: val_acc and best_val_acc after e epochs (the rungs ASHA would use).
    for e in (1, 2, 3, 4, 6, 8, 12, 16):
        if e < curves["finetune_epochs"]:
            add(f"fine-tune best_val_acc after {e} epochs vs final best val_acc",
                [f["curve"][e - 1][Metric.BEST_VAL_ACC] for f in finetunes], final)
            add(f"fine-tune val_acc at epoch {e} vs final best val_acc",
                [f["curve"][e - 1][Metric.VAL_ACC] for f in finetunes], final)
    return out


def _replay_one(job: tuple) -> tuple[str, int, dict]:
    curves_file, data_dir, method, sampler, scheduler, samples, max_concurrent, seed, tmp = job
    curves = json.loads(Path(curves_file).read_text())
    doc = replay_doc(curves, data_dir, f"{method}-{seed}", {**sampler, "seed": seed}, scheduler, samples,
                     max_concurrent)
    return method, seed, replay_search(curves, doc, Path(tmp), max_concurrent, seed)


def replay(curves_file: Path, seeds: list[int], max_concurrent: int, space_file: Path,
           variants: dict[str, tuple[dict, dict, int]] | None = None, jobs: int = 1) -> dict:
    """Every method (and variant) over every seed; the target from random_fifo."""
    import statistics

    curves = json.loads(curves_file.read_text())
    expected = {key_of(c) for c in grid_configs()}
    if set(curves["finetune"]) != expected:
        sys.exit(f"{curves_file}: {len(curves['finetune'])} of {len(expected)} configurations recorded; "
                 "finish `record` first")
    data_dir = msr_data_dir()
    settings = {**method_settings(space_file), **(variants or {})}
    runs: dict[str, dict[int, dict]] = {}
    # The study's journal fsyncs every write (~9 ms each on this disk, 90% of a replay): keep the
    # replays' run directories in memory where there is a tmpfs.
    scratch = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="bench-msr-replay-", dir=scratch) as tmp:
        work = [(str(curves_file), data_dir, method, sampler, scheduler, samples, max_concurrent, seed, tmp)
                for method, (sampler, scheduler, samples) in settings.items() for seed in seeds]
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(jobs) as pool:
                done = list(pool.map(_replay_one, work))
        else:
            done = [_replay_one(job) for job in work]
    for method, seed, run in done:
        runs.setdefault(method, {})[seed] = run
    for method, by_seed in runs.items():
        finals = [r["final_best"] for r in by_seed.values()]
        log(f"{method}: final best median {statistics.median(finals):.3f}, "
            f"epochs median {statistics.median(r['epochs'] for r in by_seed.values())}")
    target = statistics.median(r["final_best"] for r in runs["random_fifo"].values())
    methods = {}
    for method, by_seed in runs.items():
        costs = [reach(run["trace"], target) for run in by_seed.values()]
        finals = [run["final_best"] for run in by_seed.values()]
        sampler, scheduler, samples = settings[method]
        methods[method] = {
            "sampler": sampler, "scheduler": scheduler, "num_samples": samples,
            "reached_fraction": round(sum(c["reached"] for c in costs) / len(costs), 3),
            "epochs_to_target": spread([c["epochs"] for c in costs]),
            "wall_s_to_target": spread([c["wall_s"] for c in costs]),
            "final_best_val_acc": {"median": round(statistics.median(finals), 4), "min": round(min(finals), 4),
                                   "max": round(max(finals), 4)},
            "epochs_total": spread([run["epochs"] for run in by_seed.values()]),
            "wall_s_total": spread([run["wall_s"] for run in by_seed.values()]),
            "trials_median": statistics.median(run["trials"] for run in by_seed.values()),
            "stopped_early_median": statistics.median(run["stopped_early"] for run in by_seed.values()),
            "per_seed": {str(seed): {**cost, "final_best": run["final_best"], "epochs_total": run["epochs"],
                                     "wall_s_total": run["wall_s"]}
                         for (seed, run), cost in zip(by_seed.items(), costs)},
        }
    return {"target_val_acc": target, "methods": methods, "curves": curves, "settings": settings}


def ratios(methods: dict, method: str, baseline: str = "random_fifo", draws: int = 2000) -> dict:
    """Baseline compute to the target over `method`'s: the ratio of the medians over seeds, the same
    at the quartiles, and a bootstrap 90% interval of the ratio of medians (seeds resampled, the two
    methods independently; an unreached target is infinitely expensive)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for unit in ("epochs", "wall_s"):
        def costs(name: str) -> np.ndarray:
            return np.array([s[unit] if s["reached"] else np.inf for s in methods[name]["per_seed"].values()], float)

        base, mine = costs(baseline), costs(method)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = np.array([np.median(rng.choice(base, len(base))) / np.median(rng.choice(mine, len(mine)))
                             for _ in range(draws)])
        boot = np.nan_to_num(boot, nan=0.0, posinf=np.inf)  # both unreached: no saving shown

        def show(value: float):
            return round(float(value), 2) if np.isfinite(value) else None

        with np.errstate(invalid="ignore", divide="ignore"):
            out[unit] = {"ratio_of_medians": show(np.median(base) / np.median(mine)),
                         "ratio_at_q1": show(np.percentile(base, 25) / np.percentile(mine, 25)),
                         "ratio_at_q3": show(np.percentile(base, 75) / np.percentile(mine, 75)),
                         "bootstrap_90": [show(np.percentile(boot, 5)), show(np.percentile(boot, 95))]}
    return out


def stopping_bound(curves: dict, target: float, graces: tuple[int, ...] = (1, 2, 4, 8), draws: int = 2000,
                   seed: int = 0) -> dict:
    """How much any early-stopping scheduler could save with random proposals, at best: an oracle
    that stops every trial that will never reach `target` after `grace` fine-tuning epochs and lets
    every other run until it does. Trials are drawn as the random sampler draws them (uniformly from
    the grid, with repeats), one at a time; pre-training is charged once per key. Returns the median
    trial epochs to the target for FIFO and for each grace, and FIFO's over the oracle's."""
    import numpy as np

    configs = [key_of(c) for c in grid_configs()]
    finetune, pretrain_epochs = curves["finetune"], curves["pretrain_epochs"]
    reach_at = {}  # fine-tuning epoch at which each configuration's best_val_acc reaches the target
    for key in configs:
        reach_at[key] = next((row[Metric.EPOCH] for row in finetune[key]["curve"]
                              if row[Metric.BEST_VAL_ACC] >= target - 1e-9), None)
    if not any(reach_at.values()):
        return {"winners": 0}

    def cost(order: list[str], grace: int | None) -> int:
        spent, pretrained = 0, set()
        for key in order:
            if finetune[key]["pretrain_key"] not in pretrained:
                pretrained.add(finetune[key]["pretrain_key"])
                spent += pretrain_epochs
            if reach_at[key] is not None:
                return spent + reach_at[key]
            spent += len(finetune[key]["curve"]) if grace is None else grace
        raise AssertionError("unreachable: the order is long enough to meet a winner")

    rng = np.random.default_rng(seed)
    orders = [[configs[i] for i in rng.integers(0, len(configs), 50 * len(configs))] for _ in range(draws)]
    fifo = float(np.median([cost(o, None) for o in orders]))
    bound = {}
    for grace in graces:
        median = float(np.median([cost(o, grace) for o in orders]))
        bound[str(grace)] = {"epochs_to_target_median": median, "fifo_over_oracle": round(fifo / median, 2)}
    return {"winners": sum(r is not None for r in reach_at.values()), "configurations": len(configs),
            "winner_reach_epochs": sorted(r for r in reach_at.values() if r is not None),
            "fifo_epochs_to_target_median": fifo, "by_grace": bound, "draws": draws}


# -- live ----------------------------------------------------------------------------------------------
def live(time_box_s: float, storage: Path) -> dict:
    """The shipped msr.yaml against the same space with random sampling and FIFO, each a real search
    (`run_search`, Ray, the encoder cache) on MSR Action3D with half of the time box as its
    `budget.time_limit_s`: equal wall-clock budget, whatever each does with it."""
    import contextlib

    import yaml

    import ray
    from bench_search import reports
    from raysearch.ray_runtime import connect
    from raysearch.tune.search import run_search
    from raysearch.tune.space import load_search_space

    data_dir = msr_data_dir()
    shipped = yaml.safe_load(SPACE_FILE.read_text())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    variants = {"tpe_asha": {},
                "random_fifo": {"sampler": {"type": "random", "seed": 0}, "scheduler": {"type": "fifo"}}}
    out = {}
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables
        connect(num_cpus=2)
        for method, changes in variants.items():
            doc = {**shipped, **changes, "name": f"live-{method}-{stamp}", "data": data_dir,
                   "budget": {**shipped["budget"], "time_limit_s": time_box_s / 2}}
            path = storage / f"{doc['name']}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            started = time.time()
            run_dir = run_search(load_search_space(path), data_dir, str(storage / "runs"), doc["name"], resume=False)
            rows = reports(run_dir)
            finetuned = [r for r in rows if r["finetuned"]]
            out[method] = {"wall_s": round(time.time() - started, 1), "trials": len({r["trial"] for r in rows}),
                           "trial_epochs": len(rows), "finetune_epochs": len(finetuned),
                           "pretrain_epochs": len(rows) - len(finetuned),
                           "best_val_acc": max((r["score"] for r in finetuned), default=None),
                           "run_dir": run_dir}
            log(f"live {method}: {out[method]}")
        ray.shutdown()
    return out


TPE = {"type": "tpe", "n_startup_trials": 8, "multivariate": True, "group": True, "constant_liar": True}
# ASHA and TPE settings tried beside the shipped ones (`replay --sweep`), to choose msr.yaml's defaults.
SWEEP = {
    "tpe_asha_g2_rf2": (TPE, {"type": "asha", "grace_period": 2, "reduction_factor": 2}, 48),
    "tpe_asha_g2_rf3": (TPE, {"type": "asha", "grace_period": 2, "reduction_factor": 3}, 48),
    "tpe_asha_g4_rf3": (TPE, {"type": "asha", "grace_period": 4, "reduction_factor": 3}, 48),
    "tpe_asha_g3_rf3_global": (TPE, {"type": "asha", "time_attr": Metric.GLOBAL_EPOCH, "grace_period": 3,
                                     "reduction_factor": 3}, 48),
    "tpe_fifo": (TPE, {"type": "fifo"}, RANDOM_SAMPLES),
    "random_asha_g4_rf2": ({"type": "random"}, {"type": "asha", "grace_period": 4, "reduction_factor": 2}, 48),
}


def summary(result: dict) -> dict:
    methods = result["methods"]
    main = methods["tpe_asha"]
    r = ratios(methods, "tpe_asha")
    no_worse = main["final_best_val_acc"]["median"] >= methods["random_fifo"]["final_best_val_acc"]["median"]
    return {"ratios_random_fifo_to_tpe_asha": r,
            "ratios_per_variant": {m: ratios(methods, m)["epochs"] for m in methods if m != "random_fifo"},
            "target_ratio": TARGET_SPEEDUP,
            "final_best_no_worse": no_worse,
            "met": (r["epochs"]["ratio_of_medians"] or 0) >= TARGET_SPEEDUP and no_worse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("record", help="train the grid once and store its curves")
    rec.add_argument("--out", type=Path, default=CURVES)
    rec.add_argument("--keys", default=":", help="a slice of the pre-training keys, e.g. 10: (to record in parts)")
    mer = sub.add_parser("merge", help="merge curves recorded in parts")
    mer.add_argument("parts", type=Path, nargs="+")
    mer.add_argument("--out", type=Path, default=CURVES)
    rep = sub.add_parser("replay", help="replay searches over the stored curves (the default)")
    rep.add_argument("--curves", type=Path, default=CURVES)
    rep.add_argument("--seeds", type=int, default=20, help="sampler seeds per method (0 .. N-1)")
    rep.add_argument("--max-concurrent", type=int, default=2, help="trials at once (2 one-worker trials on 2 cores)")
    rep.add_argument("--space", type=Path, default=SPACE_FILE, help="tpe_asha takes its sampler and scheduler")
    rep.add_argument("--sweep", action="store_true", help=f"also replay {', '.join(SWEEP)}")
    rep.add_argument("--jobs", type=int, default=1, help="replay processes")
    lv = sub.add_parser("live", help="a real search with msr.yaml against random+FIFO, time-boxed")
    lv.add_argument("--time-box-s", type=float, default=600, help="both searches together")
    lv.add_argument("--storage", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    args = parser.parse_args(sys.argv[1:] or ["replay"])
    if args.command == "live":
        storage = args.storage or Path(tempfile.mkdtemp(prefix="bench-msr-live-"))
        emit({"machine": machine_info(), "time_box_s": args.time_box_s, "space": "search_spaces/msr.yaml",
              "live": live(args.time_box_s, storage)})
        return
    if args.command == "merge":
        merge(args.parts, args.out)
        return
    if args.command == "record":
        start, _, stop = args.keys.partition(":")
        record(args.out, slice(int(start) if start else None, int(stop) if stop else None))
        return
    started = time.time()
    result = replay(args.curves, list(range(args.seeds)), args.max_concurrent, args.space,
                    SWEEP if args.sweep else None, args.jobs)
    curves = result.pop("curves")
    emit({"machine": machine_info(), "replay_wall_s": round(time.time() - started, 1),
          "curves_file": str(args.curves.relative_to(HERE.parent)) if args.curves.is_relative_to(HERE.parent)
          else str(args.curves),
          "recorded": {k: curves[k] for k in ("dataset", "grid", "fixed", "pretrain_epochs", "finetune_epochs",
                                             "record_wall_s")},
          "configurations": len(curves["finetune"]), "pretrain_keys": len(curves["pretrain"]),
          "seeds": args.seeds, "max_concurrent": args.max_concurrent,
          "target_val_acc": result["target_val_acc"], "methods": result["methods"],
          "summary": summary(result), "correlations": correlations(curves),
          "stopping_bound": stopping_bound(curves, result["target_val_acc"])})


if __name__ == "__main__":
    main()
