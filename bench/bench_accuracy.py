"""Test accuracy on real skeletons (MSR Action3D, cross-subject): does pre-training help? (issue 14)

    python bench/bench_accuracy.py [--seeds 0 1 2] [--methods ...] [--fractions 1.0 0.2 0.1]
        [--pretrain-epochs 100] [--finetune-epochs 100] [--epochs-scale 1.0] [--frames 48]
        [--jobs 2] [--data ../shared/data/msr_action3d/msr_action3d.npz] [--device cpu]
        [--set KEY=VALUE ...]
    python bench/bench_accuracy.py merge A.json B.json [--edit 0:OLD=NEW ...]   # one table from several runs

The .npz is imported with `raysearch prepare npz` defaults (hip-centred, per-class validation
carve) into a temporary directory, never into the repository. Methods (`--methods`):

- `sttformer-small`: the classifier from scratch with our defaults (`recipe: auto`, which is the
  small recipe here: batch 16, lr 1e-3 stepped x0.1 at 60% and 90% of the epochs; random crop of
  50-100% of the frames and rotation up to 0.3 rad);
- `sttformer-small-public`: the same architecture with the public STTFormer recipe as issue 14
  states it: Adam 1e-3, weight decay 1e-4, batch 16, a constant learning rate, 100 epochs, random
  crop of 50-100% of the frames resized to 48, centre crop at test, no rotation;
- `mvae-small`, `mvqvae-small`: pre-trained with our defaults (masked reconstruction on the whole
  training split; the last epoch's encoder, `pretrain_select: last`), then fine-tuned with our defaults.
  One encoder per (variant, seed) is pre-trained once and fine-tuned at every label fraction.

Every method runs at every label fraction (per class, `label_fraction`) and seed. A trial's test
accuracy is its best-validation classifier's on the whole test split (selection never sees test).
Trials run in-process (`TrialLoop` with the local reporter), one torch thread each, `--jobs`
processes side by side. Prints progress on stderr and one JSON object on stdout: every run, mean /
std / min / max per (method, fraction), and the targets of issue 14 item 6 (pre-trained >= public
recipe + 1 point at 100% labels; >= our scratch + 5 points at 20% and 10%).
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import MSR_NPZ, log, machine_info


@dataclass(frozen=True)
class Method:
    preset: str
    pretrained: bool = False
    public: bool = False                      # the public STTFormer recipe instead of ours
    fractions: tuple[float, ...] | None = None  # None: every --fractions; else only these (if asked)
    finetune: dict[str, Any] = field(default_factory=dict)  # settings of its fine-tuning runs only
    encoder_of: str | None = None             # fine-tunes this method's encoders (no pre-training of its own)
    pretrain: dict[str, Any] = field(default_factory=dict)  # settings of its pre-training only
    ablates: str | None = None                # the default method this one changes one thing of
    val_subjects: int | None = None           # validation = every training clip of this many subjects


# The fine-tuning of the small recipe at 10% labels, as before the labelled subset was repeated
# to full epochs: one pass over the subset per epoch, same batch and lr steps.
ONE_PASS = {"recipe": "paper", "batch_size": 16, "lr_milestones": "small", "finetune_lr": 1e-3}
METHODS = {
    "sttformer-small": Method("sttformer-small"),
    "sttformer-small-public": Method("sttformer-small", public=True, fractions=(1.0,)),
    "mvae-small": Method("mvae-small", pretrained=True),
    "mvqvae-small": Method("mvqvae-small", pretrained=True),
    # Ablations of what the defaults changed, side by side with them:
    # the encoder of the lowest val_pretrain_loss (the old default) instead of the last epoch's,
    "mvae-small-minloss": Method("mvae-small", pretrained=True, fractions=(1.0,),
                                 pretrain={"pretrain_select": "val_pretrain_loss"}, ablates="mvae-small"),
    # MVQVAE at the paper's 1e-2 in both phases instead of the small recipe's 1e-3,
    "mvqvae-small-lr1e-2": Method("mvqvae-small", pretrained=True, pretrain={"lr": 1e-2},
                                  finetune={"finetune_lr": 1e-2}, ablates="mvqvae-small"),
    # and, at 1e-2, fine-tuned at 1e-3 or pre-trained with dead codes restarted (a documented
    # option, off by default: not in the paper).
    "mvqvae-small-lr1e-2-ftlr1e-3": Method("mvqvae-small", pretrained=True, fractions=(1.0,),
                                           finetune={"finetune_lr": 1e-3}, encoder_of="mvqvae-small-lr1e-2",
                                           ablates="mvqvae-small-lr1e-2"),
    "mvqvae-small-lr1e-2-restart": Method("mvqvae-small", pretrained=True, fractions=(1.0, 0.1),
                                          pretrain={"lr": 1e-2, "restart_dead_codes": True},
                                          finetune={"finetune_lr": 1e-2}, ablates="mvqvae-small-lr1e-2"),
    # one pass over the labelled subset per fine-tuning epoch instead of full epochs.
    "mvae-small-onepass": Method("mvae-small", pretrained=True, fractions=(0.1,), finetune=ONE_PASS,
                                 encoder_of="mvae-small", ablates="mvae-small"),
    "sttformer-small-onepass": Method("sttformer-small", fractions=(0.1,), finetune=ONE_PASS,
                                      ablates="sttformer-small"),
    # Validation on one held-out training subject instead of 2 clips of every class of all five:
    # selection on people the model never saw, as test is (subject ids from clips.csv).
    "sttformer-small-valsubj": Method("sttformer-small", val_subjects=1, ablates="sttformer-small"),
    "mvae-small-valsubj": Method("mvae-small", pretrained=True, val_subjects=1, ablates="mvae-small"),
}
DEFAULT_METHODS = ("sttformer-small", "sttformer-small-public", "mvae-small", "mvqvae-small")
PUBLIC = "sttformer-small-public"
SCRATCH = "sttformer-small"
# Issue 14 item 6, in accuracy points.
TARGET_FULL_OVER_PUBLIC = 1.0      # pre-trained, 100% labels, over the public recipe from scratch
TARGET_FEW_OVER_SCRATCH = 5.0      # pre-trained, 10% and 20% labels, over our scratch
PUBLIC_RECIPE = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16, "lr_milestones": [], "finetune_lr": None}


# -- one job, in a worker process -------------------------------------------------------------------
def _run_trial(flat: dict[str, Any], root: Path, device: str, no_rotation: bool):
    """Train one trial in this process; (loop, seconds, CPU seconds)."""
    import dataclasses

    import torch

    from raysearch.train.config import TrialConfig
    from raysearch.train.distributed import WorkerContext
    from raysearch.train.loop import LocalReporter, TrialLoop, _loader, prepare_trial
    from raysearch.data.dataset import SkeletonDataset

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    trial = TrialConfig.from_flat(flat)
    ctx = WorkerContext(device=torch.device(device))
    start, cpu = time.perf_counter(), time.process_time()
    setup = prepare_trial(trial, ctx)
    if no_rotation:  # the public recipe: crop-resize only
        resolved = trial.resolved(len(setup.dataset.split("train"))).train
        data = SkeletonDataset(setup.dataset, "train", setup.model_config.num_frames, train=True,
                               indices=setup.loaders.finetune_indices, seed=resolved.seed, max_rotation_rad=0.0)
        setup = dataclasses.replace(setup, loaders=dataclasses.replace(
            setup.loaders, finetune=_loader(data, resolved, ctx, train=True)))
    loop = TrialLoop(trial, setup, ctx, LocalReporter(root))
    last = loop.run()
    return loop, last, time.perf_counter() - start, time.process_time() - cpu


def pretrain_job(job: dict[str, Any]) -> dict[str, Any]:
    """Pre-train one encoder; saves the one `pretrain_select` keeps for the fine-tunes."""
    import torch

    from raysearch.contract import Metric

    root = Path(job["work"]) / f"pretrain-{job['method']}-s{job['seed']}"
    loop, last, wall, cpu = _run_trial(job["flat"], root, job["device"], no_rotation=False)
    encoder = root / "encoder.pt"
    torch.save(loop.best_encoder, encoder)
    knn = [h.get(Metric.VAL_KNN_ACC) for h in loop.reporter.history]
    return {"kind": "pretrain", "method": job["method"], "seed": job["seed"], "encoder": str(encoder),
            "pretrain_wall_s": round(wall, 1), "pretrain_cpu_s": round(cpu, 1),
            "best_pretrain_val_loss": loop.best.pretrain_val_loss, "best_pretrain_epoch": loop.best.pretrain_epoch,
            "last_val_knn_acc": knn[-1] if knn else None, "diverged": bool(last.get(Metric.DIVERGED))}


def finetune_job(job: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune (or train from scratch) at one label fraction; test accuracy of the best-val classifier."""
    from raysearch.contract import Metric
    from raysearch.deploy.evaluate import test_split_metrics

    root = Path(job["work"]) / f"{job['method']}-f{job['fraction']}-s{job['seed']}"
    loop, last, wall, cpu = _run_trial(job["flat"], root, job["device"], no_rotation=METHODS[job["method"]].public)
    test = test_split_metrics(root / "checkpoint", job["flat"]["data_dir"], device=job["device"])
    return {"kind": "finetune", "method": job["method"], "fraction": job["fraction"], "seed": job["seed"],
            "pretrained": METHODS[job["method"]].pretrained, "test_acc": test.get(Metric.TEST_ACC),
            "test_top5_acc": test.get(Metric.TEST_TOP5_ACC), "best_val_acc": loop.best.val_acc,
            "best_epoch": loop.best.epoch, "finetune_samples": len(loop.finetune_indices),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "recipe": loop.recipe.recipe_record(loop.train_clips, len(loop.finetune_indices)),
            "diverged": bool(last.get(Metric.DIVERGED))}


# -- the plan ---------------------------------------------------------------------------------------
def trial_settings(method: str, args, data_dir: str, seed: int, fraction: float, encoder: str | None) -> dict:
    m = METHODS[method]
    flat: dict[str, Any] = {"preset": m.preset, "data_dir": data_dir, "seed": seed, "label_fraction": fraction,
                            "pretrain_epochs": 0, "finetune_epochs": args.finetune_epochs}
    if args.frames:
        flat["num_frames"] = args.frames
    if m.public:
        flat.update(PUBLIC_RECIPE)
        flat["finetune_epochs"] = args.public_epochs
    else:
        flat.update(args.overrides)
    flat.update(m.finetune)
    if flat.get("lr_milestones") == "small":  # the small recipe's steps, written out
        from raysearch.train.config import TrainConfig

        flat["lr_milestones"] = list(TrainConfig(recipe="small").milestones_for(flat["finetune_epochs"]))
    if encoder is not None:
        flat["init_from"] = encoder
    return {k: v for k, v in flat.items() if v is not None}


def pretrain_settings(method: str, args, data_dir: str, seed: int) -> dict:
    m = METHODS[method]
    flat = {"preset": m.preset, "data_dir": data_dir, "seed": seed, "pretrain_epochs": args.pretrain_epochs,
            "finetune_epochs": 0, **args.overrides, **m.pretrain}
    if args.frames:
        flat["num_frames"] = args.frames
    return flat


def encoder_owner(method: str) -> str:
    """The method whose pre-trained encoders `method` fine-tunes (a name from an older run: its own)."""
    return (METHODS[method].encoder_of if method in METHODS else None) or method


def method_fractions(method: str, fractions: list[float]) -> list[float]:
    allowed = METHODS[method].fractions
    return [f for f in fractions if allowed is None or f in allowed]


def spread(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"n": len(values), "mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "min": round(min(values), 4), "max": round(max(values), 4)}


def mean_or_none(values) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 1) if present else None


def summarize(runs: list[dict], pretrains: list[dict]) -> tuple[dict, list[dict], list[dict]]:
    """The table per (method, fraction), issue 14's targets and the ablations' paired differences."""
    table: dict[str, dict[str, Any]] = {}
    pretrain_wall = {(p["method"], p["seed"]): p["pretrain_wall_s"] for p in pretrains}
    pretrained = {r["method"] for r in runs if r["pretrained"]}
    for method in dict.fromkeys(r["method"] for r in runs):
        for fraction in sorted({r["fraction"] for r in runs if r["method"] == method}, reverse=True):
            rows = [r for r in runs if r["method"] == method and r["fraction"] == fraction]
            accs = [r["test_acc"] for r in rows if r["test_acc"] is not None]
            table.setdefault(method, {})[str(fraction)] = {
                "pretrained": method in pretrained, "test_acc": spread(accs) if accs else None,
                "best_val_acc": spread([r["best_val_acc"] for r in rows if r["best_val_acc"] is not None]),
                "wall_s_mean": round(statistics.fmean(r["wall_s"] for r in rows), 1),
                "pretrain_wall_s_mean": mean_or_none(pretrain_wall.get((encoder_owner(method), r["seed"]))
                                                     for r in rows),
                "seeds": [r["seed"] for r in rows]}

    def mean(method: str, fraction: float) -> float | None:
        cell = table.get(method, {}).get(str(fraction))
        return cell["test_acc"]["mean"] if cell and cell["test_acc"] else None

    def seed_differences(method: str, baseline: str, fraction: float) -> dict[str, Any] | None:
        """Per-seed differences in points, method minus baseline (same seed: same split of labels,
        and for ablations the same encoder)."""
        acc = {(r["method"], r["seed"]): r["test_acc"] for r in runs if r["fraction"] == fraction}
        diffs = [100 * (acc[(method, s)] - acc[(baseline, s)]) for (m, s) in acc if m == method and (baseline, s) in acc]
        return spread(diffs)

    targets, ablations = [], []

    def target(name: str, method: str, baseline: str, fraction: float, points: float) -> None:
        ours, base = mean(method, fraction), mean(baseline, fraction)
        if ours is None or base is None:
            return
        difference = round(100 * (ours - base), 2)
        targets.append({"target": name, "method": method, "baseline": baseline, "fraction": fraction,
                        "goal_points": points, "difference_points": difference,
                        "per_seed_difference_points": seed_differences(method, baseline, fraction),
                        "ratio": round(ours / base, 3) if base else None, "met": difference >= points})

    target("our scratch recipe >= the public recipe, 100% labels", SCRATCH, PUBLIC, 1.0, 0.0)
    for method in ("mvae-small", "mvqvae-small"):
        target(f"{method} pre-trained >= public recipe + {TARGET_FULL_OVER_PUBLIC:g} point, 100% labels",
               method, PUBLIC, 1.0, TARGET_FULL_OVER_PUBLIC)
        for fraction in (0.2, 0.1):
            target(f"{method} pre-trained >= scratch + {TARGET_FEW_OVER_SCRATCH:g} points, {fraction:.0%} labels",
                   method, SCRATCH, fraction, TARGET_FEW_OVER_SCRATCH)
    for ablation, m in METHODS.items():
        default = m.ablates
        for fraction in sorted({r["fraction"] for r in runs if r["method"] == ablation}, reverse=True):
            if default and (d := seed_differences(default, ablation, fraction)):
                ablations.append({"default": default, "ablation": ablation, "fraction": fraction,
                                  "default_minus_ablation_points": d})
    return table, targets, ablations


def markdown(result: dict) -> str:
    """The README table: one row per (method, fraction)."""
    lines = ["| method | labels | pre-trained | test acc mean | std | min-max | best val acc mean | seeds | "
             "wall s per run (pre-training) |", "|---|---|---|---|---|---|---|---|---|"]
    for method, cells in result["summary"].items():
        for fraction, cell in cells.items():
            acc, val = cell["test_acc"] or {}, cell["best_val_acc"] or {}
            pre = f" (+{cell['pretrain_wall_s_mean']})" if cell["pretrain_wall_s_mean"] else ""
            lines.append(f"| {method} | {float(fraction):.0%} | {'yes' if cell['pretrained'] else 'no'} | "
                         f"{acc.get('mean', 0):.1%} | {100 * acc.get('std', 0):.1f} | "
                         f"{acc.get('min', 0):.1%}-{acc.get('max', 0):.1%} | {val.get('mean', 0):.1%} | "
                         f"{len(cell['seeds'])} | {cell['wall_s_mean']}{pre} |")
    lines += ["", "| target | goal | measured (per-seed differences: mean, std, min-max) | status |",
              "|---|---|---|---|"]
    for t in result["targets"]:
        d = t["per_seed_difference_points"] or {}
        lines.append(f"| {t['target']} | >= {t['goal_points']:+g} points | {t['difference_points']:+.1f} points "
                     f"(std {d.get('std', 0):.1f}, {d.get('min', 0):+.1f} to {d.get('max', 0):+.1f}) | "
                     f"{'**met**' if t['met'] else '**missed**'} |")
    if result["ablations"]:
        lines += ["", "Ablations, same seeds (and encoders) side by side: our default minus the ablation, test "
                  "accuracy points.", "", "| default | ablation | labels | mean | std | min-max | seeds |",
                  "|---|---|---|---|---|---|---|"]
        for a in result["ablations"]:
            d = a["default_minus_ablation_points"]
            lines.append(f"| {a['default']} | {a['ablation']} | {a['fraction']:.0%} | {d['mean']:+.1f} | "
                         f"{d['std']:.1f} | {d['min']:+.1f} to {d['max']:+.1f} | {d['n']} |")
    return "\n".join(lines)


def prepare_data(npz: Path, out: Path, val_subjects: int | None = None) -> str:
    """`raysearch prepare npz` with defaults; with `val_subjects`, first a copy of the .npz with the
    subject of every clip from the `clips.csv` beside it (MSR Action3D's README)."""
    import csv

    import numpy as np

    from raysearch.data.npz import prepare_npz

    if not npz.is_file():
        sys.exit(f"bench_accuracy: {npz} not found; pass --data with the MSR Action3D .npz")
    if val_subjects is not None:
        with open(npz.parent / "clips.csv", newline="") as f:
            subject = np.array([int(row["subject"]) for row in sorted(csv.DictReader(f), key=lambda r: int(r["index"]))])
        with np.load(npz, allow_pickle=False) as arrays:
            copy = out.parent / f"{out.name}-with-subjects.npz"
            np.savez(copy, **{key: arrays[key] for key in arrays.files}, subject=subject)
        npz = copy
    return str(prepare_npz(str(npz), str(out), val_subjects=val_subjects))


def assemble(runs: list[dict], pretrains: list[dict], settings: dict, wall_s: float, **extra) -> dict:
    """The JSON object a run (or a merge of runs) prints, its markdown table included."""
    runs = sorted(runs, key=lambda r: (r["method"], -r["fraction"], r["seed"]))
    summary, targets, ablations = summarize(runs, pretrains)
    result = {"benchmark": "accuracy", "machine": machine_info(threads=1), **extra, "settings": settings,
              "runs": runs, "pretrain": sorted(pretrains, key=lambda p: (p["method"], p["seed"])),
              "summary": summary, "targets": targets, "ablations": ablations, "wall_s": round(wall_s, 1)}
    result["markdown"] = markdown(result)
    return result


def merge(files: list[Path], edits: list[str]) -> dict:
    """One result from several runs' JSON. `edits` (`I:OLD=NEW`) relabel method OLD of the I-th
    file (0-based) as NEW, or drop it when NEW is empty: for methods whose defaults changed after
    that run, so every row is named by the settings it ran with. Every (method, fraction, seed)
    comes from the last file that has it (a rerun must agree, since training is deterministic on
    CPU: a difference is reported). Targets and ablations are recomputed over the union; which
    run each comparison's sides come from is in every row's `source`."""
    import json

    renames: dict[int, dict[str, str]] = {}
    for edit in edits:
        index, _, pair = edit.partition(":")
        old, _, new = pair.partition("=")
        renames.setdefault(int(index), {})[old] = new
    runs, pretrains, sources = {}, {}, []
    for i, file in enumerate(files):
        doc = json.loads(file.read_text())
        mine = renames.get(i, {})
        sources.append({"file": file.name, "settings": doc["settings"], "wall_s": doc["wall_s"], "edits": mine})
        for kind, records in (("run", doc["runs"]), ("pretrain", doc["pretrain"])):
            for record in records:
                method = mine.get(record["method"], record["method"])
                if not method:
                    continue
                record = {**record, "method": method, "source": file.name}
                if kind == "pretrain":
                    pretrains[(method, record["seed"])] = record
                    continue
                key = (method, record["fraction"], record["seed"])
                if key in runs and runs[key]["test_acc"] != record["test_acc"]:
                    log(f"merge: {key} differs between {runs[key]['source']} ({runs[key]['test_acc']:.4f}) and "
                        f"{file.name} ({record['test_acc']:.4f}); keeping {file.name}")
                runs[key] = record
    return assemble(list(runs.values()), list(pretrains.values()), sources[-1]["settings"],
                    sum(s["wall_s"] for s in sources), merged_from=sources)


def main() -> None:
    if sys.argv[1:2] == ["merge"]:
        merger = argparse.ArgumentParser(prog="bench_accuracy.py merge", description=merge.__doc__.splitlines()[0])
        merger.add_argument("files", type=Path, nargs="+")
        merger.add_argument("--edit", action="append", default=[], metavar="I:OLD=NEW",
                            help="relabel method OLD of the I-th file (0-based) as NEW; drop it if NEW is empty")
        args = merger.parse_args(sys.argv[2:])
        print(__import__("json").dumps(merge(args.files, args.edit)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MSR_NPZ, help="the MSR Action3D .npz (generic layout)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS),
                        help="the methods to run (default: the four issue 14's targets need; the others are "
                             "ablations of our defaults, each at the label fractions it is defined for)")
    parser.add_argument("--fractions", nargs="+", type=float, default=[1.0, 0.2, 0.1])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=100, help="our recipe's fine-tuning / scratch epochs")
    parser.add_argument("--public-epochs", type=int, default=100, help="epochs of the public recipe")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiplies every epoch count (>= 1 epoch)")
    parser.add_argument("--frames", type=int, help="num_frames of every model (default: the presets' 48)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)), help="processes side by side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every trial of our recipe (not the public one), e.g. finetune_lr=3e-4")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    from raysearch.train.config import parse_assignment

    missing = {METHODS[m].encoder_of for m in args.methods} - {None, *args.methods}
    if missing:
        parser.error(f"--methods: add {', '.join(sorted(missing))}, whose encoders the ablations fine-tune")

    args.overrides = dict(parse_assignment(a) for a in args.set)
    for name in ("pretrain_epochs", "finetune_epochs", "public_epochs"):
        setattr(args, name, max(1, round(getattr(args, name) * args.epochs_scale)))

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as work:
        data_dirs = {val: prepare_data(args.data, Path(work) / f"msr-val{val or 'class'}", val)
                     for val in {METHODS[m].val_subjects for m in args.methods}}
        log(f"imported {args.data} into {', '.join(data_dirs.values())}")
        context = multiprocessing.get_context("spawn")  # fresh torch in every worker
        runs, pretrains = [], []
        with futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
            pending: dict[futures.Future, dict] = {}

            def submit(fn, job):
                pending[pool.submit(fn, {**job, "work": work, "device": args.device})] = job

            def data_dir_of(method: str) -> str:
                return data_dirs[METHODS[method].val_subjects]

            def submit_finetunes(owner: str, seed: int, encoder: str | None) -> None:
                for method in args.methods:
                    if encoder_owner(method) == owner and (encoder is not None) == METHODS[method].pretrained:
                        for fraction in method_fractions(method, args.fractions):
                            submit(finetune_job, {"method": method, "seed": seed, "fraction": fraction,
                                                  "flat": trial_settings(method, args, data_dir_of(method), seed,
                                                                         fraction, encoder)})

            for seed in args.seeds:
                for method in args.methods:
                    if METHODS[method].pretrained and METHODS[method].encoder_of is None:
                        submit(pretrain_job, {"method": method, "seed": seed,
                                              "flat": pretrain_settings(method, args, data_dir_of(method), seed)})
                    elif not METHODS[method].pretrained:
                        submit_finetunes(method, seed, None)
            total = len(args.seeds) * sum(len(method_fractions(m, args.fractions)) for m in args.methods)
            while pending:
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    result = future.result()
                    if result["kind"] == "pretrain":
                        pretrains.append(result)
                        log(f"pre-trained {result['method']} seed {result['seed']} in {result['pretrain_wall_s']} s "
                            f"(encoder of epoch {result['best_pretrain_epoch']}, lowest val_pretrain_loss seen "
                            f"{result['best_pretrain_val_loss']})")
                        submit_finetunes(job["method"], job["seed"], result["encoder"])
                    else:
                        runs.append(result)
                        log(f"[{len(runs)}/{total}] {result['method']} labels {result['fraction']:.0%} seed "
                            f"{result['seed']}: test {result['test_acc']:.3f}, best val {result['best_val_acc']}, "
                            f"{result['wall_s']} s")
    settings = {"data": str(args.data), "methods": args.methods, "fractions": args.fractions,
                "seeds": args.seeds, "pretrain_epochs": args.pretrain_epochs,
                "finetune_epochs": args.finetune_epochs, "public_epochs": args.public_epochs,
                "frames": args.frames or 48, "jobs": args.jobs, "device": args.device,
                "overrides": args.overrides, "public_recipe": PUBLIC_RECIPE}
    result = assemble(runs, pretrains, settings, time.perf_counter() - start)
    if args.markdown:
        args.markdown.write_text(result["markdown"] + "\n")
    log("\n" + result["markdown"])
    print(__import__("json").dumps(result))


if __name__ == "__main__":
    main()
