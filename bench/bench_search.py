"""Search efficiency: TPE + ASHA against random search without early stopping. One JSON object.

    python bench/bench_search.py [--seeds 0 1 2] [--random-samples 8] [--tpe-samples 12]

Both searches run `raysearch.tune.search.run_search` on the same synthetic task and space (a
mvae-tiny trial: 1 pre-training epoch, then 5 fine-tuning epochs; searched: the pre-training and
fine-tuning learning rates and the frame mask ratio), for each sampler seed. Trials run one Ray
Train worker each so that two share this 2-core machine at once; compute is counted in epochs,
which does not depend on that. Trial-seconds (the same sum in seconds of trial wall time, Ray's
per-trial start-up included) are reported beside it.

The two get about the same compute: random search runs 8 trials to the end (at most 48 epochs;
diverging trials end sooner), TPE + ASHA 12 trials of which ASHA stops about two thirds after 2
epochs (about 40-45 epochs; with 16 trials it used 48-55, more than random search). ASHA's first rung is the first fine-tuning epoch
(grace period 2): during pre-training the reported val_acc is a kNN proxy that cannot see the
fine-tuning learning rate, and cutting two thirds of the trials on it would be a coin toss. The
validation split is a quarter of the training subjects (about 140 sequences, steps of 0.7%) so that
rung decisions and the target are not decided by one or two sequences.

Compute to reach the target = epochs run by all trials (every report is one epoch of one trial,
ordered by when it was reported) up to the first fine-tuning report whose val_acc reaches the
target. Only fine-tuned accuracy counts, since that is the classifier a user exports: the
pre-training kNN proxy sits near its ceiling after one epoch of any trial (0.64-0.68 here, above
what 5 fine-tuning epochs reach), so counting it would make every search "reach" the target at its
first report. The target is the median over seeds of random search's best fine-tuned val_acc, so
random search typically needs most of its budget; a seed that never reaches it counts as infinitely
expensive. Goal: TPE + ASHA needs 3x less.

Ray is started by `raysearch.ray_runtime.connect`, whose worker setup hook pins RAY_ADDRESS in
every worker (without it a second Ray on the host made ASHA searches hang: see that module).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness import emit, log, machine_info

from raysearch.contract import Metric

TARGET_SPEEDUP = 3.0
CLASSES = 10
VAL_FRACTION = 0.25  # of the training subjects' sequences: about 140 of 800, val_acc in steps of 0.7%


def space_doc(method: str, seed: int, num_samples: int, finetune_epochs: int, data_dir: Path) -> dict:
    doc = {
        "name": f"{method}-seed{seed}",
        "preset": "mvae-tiny",
        "data": str(data_dir),
        "objectives": [{"metric": Metric.VAL_ACC, "mode": "max"}],
        "budget": {"num_samples": num_samples, "pretrain_epochs": 1, "finetune_epochs": finetune_epochs},
        "resources": {"workers": 1, "cpus_per_worker": 0.95, "gpus_per_worker": 0},
        "fixed": {"batch_size": 32},
        "parameters": {
            "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
            "finetune_lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
            "frame_mask_ratio": {"type": "float", "low": 0.3, "high": 0.7, "step": 0.1},
        },
    }
    if method == "tpe_asha":
        doc["sampler"] = {"type": "tpe", "seed": seed, "n_startup_trials": 3, "multivariate": True,
                          "group": False, "constant_liar": True}
        doc["scheduler"] = {"type": "asha", "grace_period": 2, "reduction_factor": 3}
    else:
        doc["sampler"] = {"type": "random", "seed": seed}
        doc["scheduler"] = {"type": "fifo"}
    return doc


def reports(run_dir: str) -> list[dict]:
    """Every epoch report of every trial: when it came (approximately), its score (the fine-tuned
    val_acc, or the pre-training kNN proxy val_knn_acc), trial seconds."""
    from raysearch.contract import FINETUNE, Column, Metric
    from raysearch.runs import collect_results, open_location, trial_history

    filesystem, _ = open_location(run_dir)
    rows = []
    for trial_dir in collect_results(run_dir)[Column.TRIAL_DIR]:
        history = trial_history(filesystem, trial_dir)
        if not history:
            continue
        # Tune's `timestamp` has 1 s resolution; anchor every report on the trial's last one and
        # its exact time_total_s instead.
        started = history[-1][Metric.TIMESTAMP] - history[-1][Metric.TIME_TOTAL_S]
        previous = 0.0
        for h in history:
            finetuned = h.get(Metric.PHASE) == FINETUNE
            rows.append({"at": started + h[Metric.TIME_TOTAL_S],
                         "score": h.get(Metric.VAL_ACC if finetuned else Metric.VAL_KNN_ACC, 0.0),
                         "finetuned": finetuned, "trial_s": h[Metric.TIME_TOTAL_S] - previous, "trial": trial_dir})
            previous = h[Metric.TIME_TOTAL_S]
    return sorted(rows, key=lambda r: r["at"])


def cost_to_reach(rows: list[dict], target: float) -> dict:
    epochs, seconds = 0, 0.0
    for row in rows:
        epochs += 1
        seconds += row["trial_s"]
        if row["finetuned"] and row["score"] >= target:
            return {"reached": True, "epochs": epochs, "trial_s": round(seconds, 1)}
    return {"reached": False, "epochs": None, "trial_s": None}


def median_cost(costs: list[dict], key: str) -> float:
    """Median over seeds; a run that never reached the target counts as infinitely expensive."""
    return statistics.median([c[key] if c["reached"] else float("inf") for c in costs])


def ratio(random_cost: float, tpe_cost: float) -> float | None:
    """Random search's cost over TPE+ASHA's; None where a median never reached the target."""
    if float("inf") in (random_cost, tpe_cost) or tpe_cost == 0:
        return None
    return round(random_cost / tpe_cost, 2)


def summarize(methods: dict) -> dict:
    """The ratios, and whether the target is met: TPE+ASHA's median reached the target with at most
    1/3 of random search's compute (or random search's median never reached it at all)."""
    def cost(method: str, key: str) -> float:
        value = methods[method][key]
        return float("inf") if value is None else value

    random_epochs, tpe_epochs = cost("random_fifo", "median_epochs_to_target"), cost("tpe_asha", "median_epochs_to_target")
    epochs_ratio = ratio(random_epochs, tpe_epochs)
    return {
        "epochs_ratio_random_to_tpe_asha": epochs_ratio,
        "trial_seconds_ratio_random_to_tpe_asha": ratio(cost("random_fifo", "median_trial_s_to_target"),
                                                        cost("tpe_asha", "median_trial_s_to_target")),
        "median_reached": {"random_fifo": random_epochs != float("inf"), "tpe_asha": tpe_epochs != float("inf")},
        "target_ratio": TARGET_SPEEDUP,
        "met": tpe_epochs != float("inf") and (random_epochs == float("inf") or epochs_ratio >= TARGET_SPEEDUP),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--random-samples", type=int, default=8, help="trials of random search (run to the end)")
    parser.add_argument("--tpe-samples", type=int, default=12, help="trials of TPE + ASHA (most stopped early)")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=80, help="synthetic sequences per class")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from raysearch.data.synthetic import prepare_synthetic
    from raysearch.ray_runtime import connect
    from raysearch.tune.search import run_search
    from raysearch.tune.space import load_search_space

    data_dir = prepare_synthetic(work / "data", num_classes=CLASSES, per_class=args.per_class, seed=0,
                                 val_fraction=VAL_FRACTION)
    samples = {"random_fifo": args.random_samples, "tpe_asha": args.tpe_samples}
    runs: dict[str, dict[int, dict]] = {"random_fifo": {}, "tpe_asha": {}}
    with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables
        connect(num_cpus=2)  # run_search then finds it running
        for seed in args.seeds:
            for method in runs:
                path = work / f"{method}-{seed}.yaml"
                path.write_text(yaml.safe_dump(space_doc(method, seed, samples[method], args.finetune_epochs,
                                                         data_dir), sort_keys=False))
                space = load_search_space(path)
                start = time.time()
                run_dir = run_search(space, str(data_dir), str(work / "runs"), space.name, resume=False)
                rows = reports(run_dir)
                runs[method][seed] = {
                    "wall_s": round(time.time() - start, 1), "rows": rows, "epochs_total": len(rows),
                    "final_best": max((r["score"] for r in rows if r["finetuned"]), default=0.0),
                    "best_pretrain_knn": max((r["score"] for r in rows if not r["finetuned"]), default=0.0)}
                log(f"{method} seed {seed}: {len(rows)} epochs, best val_acc {runs[method][seed]['final_best']:.3f}, "
                    f"{runs[method][seed]['wall_s']} s")
        ray.shutdown()
    target = statistics.median(r["final_best"] for r in runs["random_fifo"].values())
    result = {"machine": machine_info(), "target_val_acc": round(target, 4),
              "settings": {"num_samples": samples, "pretrain_epochs": 1, "val_fraction": VAL_FRACTION,
                           "finetune_epochs": args.finetune_epochs, "synthetic": f"{CLASSES} classes x {args.per_class}",
                           "preset": "mvae-tiny", "trial_workers": 1, "concurrent_trials": 2,
                           "asha": {"grace_period": 2, "reduction_factor": 3}, "tpe_startup_trials": 3},
              "methods": {}}
    for method, by_seed in runs.items():
        costs = {seed: cost_to_reach(run["rows"], target) for seed, run in by_seed.items()}
        result["methods"][method] = {
            "per_seed": {str(seed): {**costs[seed], "final_best_val_acc": round(run["final_best"], 4),
                                     "best_pretrain_knn_val_acc": round(run["best_pretrain_knn"], 4),
                                     "epochs_total": run["epochs_total"], "wall_s": run["wall_s"]}
                         for seed, run in by_seed.items()},
            "median_epochs_to_target": median_cost(list(costs.values()), "epochs"),
            "median_trial_s_to_target": median_cost(list(costs.values()), "trial_s"),
            "median_epochs_total": statistics.median(run["epochs_total"] for run in by_seed.values()),
        }
    result["summary"] = summarize(result["methods"])
    # JSON has no infinity: a median that never reached the target is reported as null.
    for method in result["methods"].values():
        for key in ("median_epochs_to_target", "median_trial_s_to_target"):
            if method[key] == float("inf"):
                method[key] = None
    emit(result)


if __name__ == "__main__":
    main()
