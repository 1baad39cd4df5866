"""The one training loop for every variant: masked pre-training, then fine-tuning.

`TrialLoop` is plain PyTorch plus `torch.distributed`; it talks to the outside world through a
`Reporter` (metrics and checkpoints out, the checkpoint to resume from in). `train_loop_per_worker`
plugs it into Ray Train; tests and benchmarks run it in-process with `LocalReporter`.

A trial is a sequence of `Phase`s run by one epoch loop: pre-training (masked reconstruction of
the whole SkeletonMAE) and fine-tuning (encoder + fresh head). A phase says what it trains, on
which loader, at which learning rate, how one step goes, how it is evaluated, and which epoch's
weights it keeps: pre-training keeps the encoder with the lowest `val_pretrain_loss`, fine-tuning
the classifier with the best `val_acc` (paper section 4.2).

Every epoch reports a monotonic `global_epoch` (pre-train epochs, then fine-tune epochs), the
phase, losses, learning rate and throughput. Pre-training reports its validation losses and a
representation proxy (`val_knn_acc` or `val_probe_acc`), fine-tuning `val_acc` and `val_ce_loss`;
the names are `raysearch.contract.Metric`. Every checkpoint holds model, optimizer, scheduler,
phase, epoch, RNG state and the best weights so far, so a restarted worker group resumes without
repeating finished epochs.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

import models
from models import ModelConfig, SkeletonMAE, STTFormerClassifier, reconstruction_error_per_joint

from ..contract import (BEST_CLASSIFIER_FILE, DIVERGED, FINETUNE, META_FILE, PRETRAIN, PROXY_METRICS, STATE_FILE,
                        BestSoFar, Metric, TrialMeta)
from ..data.cache import resolve_data
from ..data.dataset import SkeletonDataset
from ..data.format import open_dataset
from ..data.splits import label_fraction_subset
from ..errors import UserInputError
from .config import TrialConfig
from .distributed import WorkerContext
from .encoder_cache import EncoderCache, EncoderCacheSpec, encoder_key, key_fields
from .evaluate import classifier_metrics, knn_accuracy, linear_probe_accuracy, pretrain_val_loss

KNN_BANK_SIZE = 4096          # training samples whose features form the kNN / linear-probe bank
EPOCH_SEED_STRIDE = 1_000_003  # a prime: (seed, global epoch) pairs give distinct epoch seeds


def epoch_seed(seed: int, global_epoch: int) -> int:
    """Seed of the shuffle and the augmentations of the epoch that follows `global_epoch`."""
    return seed * EPOCH_SEED_STRIDE + global_epoch


class Reporter(Protocol):
    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def restored_checkpoint(self) -> str | None: ...


class LocalReporter:
    """Keeps reports in memory and checkpoints in `root` (latest only): for tests and benchmarks."""

    def __init__(self, root: str | Path | None = None, resume: bool = False):
        self.root = Path(root) if root is not None else None
        self.history: list[dict[str, Any]] = []
        self._resume = resume

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir is not None and self.root is not None:
            target = self.root / "checkpoint"
            staging = self.root / "checkpoint.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint_dir, staging)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)

    def restored_checkpoint(self) -> str | None:
        if self._resume and self.root is not None and (self.root / "checkpoint" / STATE_FILE).exists():
            return str(self.root / "checkpoint")
        return None


class TrainingDiverged(RuntimeError):
    pass


# -- what a trial is built from -------------------------------------------------------------------
@dataclass(frozen=True)
class Loaders:
    pretrain: DataLoader          # the whole training split, augmented
    finetune: DataLoader          # the label-fraction subset of it, augmented
    val: DataLoader               # this worker's shard of the validation split
    bank: DataLoader              # this worker's shard of the kNN / probe bank (training samples)
    finetune_indices: list[int]   # the training samples fine-tuning sees


@dataclass(frozen=True)
class TrialSetup:
    """The opened data, the seeded model, the loaders and the static metrics of one trial."""

    dataset: Any                  # raysearch.data.format.Dataset
    model_config: ModelConfig
    model: torch.nn.Module        # SkeletonMAE, or the classifier alone for variant sttformer
    loaders: Loaders
    static_metrics: dict[str, float]


def prepare_trial(trial: TrialConfig, ctx: WorkerContext) -> TrialSetup:
    """Open (or generate) the data, build the model with the same initial weights on every worker,
    count its parameters and FLOPs, and build the loaders."""
    dataset = open_dataset(resolve_data(trial.data_dir))
    trial = trial.resolved(len(dataset.split("train")))  # the recipe's batch size for this data
    recipe = trial.train
    if recipe.batch_size < ctx.world_size:
        raise UserInputError(f"batch_size={recipe.batch_size} is smaller than the {ctx.world_size} workers; "
                             "raise batch_size or use fewer workers")
    if "val" not in dataset.split_names:
        raise UserInputError(f"dataset {trial.data_dir} has no 'val' split; re-run `raysearch prepare` "
                             "(it carves a per-class validation split from train)")
    model_config = trial.model_config(dataset.num_joints, dataset.max_persons, dataset.num_classes,
                                      dataset.num_channels)
    torch.manual_seed(recipe.seed)  # identical initial weights on every worker
    model = models.build_from_config(model_config, collectives=ctx).to(ctx.device)
    if recipe.init_from:
        models.load_encoder_weights(model.encoder, models.read_state_dict(recipe.init_from), recipe.init_from)
    return TrialSetup(dataset, model_config, model, _loaders(dataset, trial, model_config.num_frames, ctx),
                      _static_metrics(model, ctx))


def _static_metrics(model: torch.nn.Module, ctx: WorkerContext) -> dict[str, float]:
    info = {Metric.PARAMS: float(models.count_parameters(model))}
    if ctx.is_main:  # FLOP counting runs the model once; the main worker's report is the one kept
        info.update({k: float(v) for k, v in models.model_info(model).items()
                     if k in (Metric.PRETRAIN_GFLOPS, Metric.CLASSIFIER_GFLOPS) and v is not None})
    return info


def _loader(dataset, recipe, ctx: WorkerContext, train: bool) -> DataLoader:
    """Training: shuffled shards per worker (a label-fraction subset smaller than one batch keeps
    its last partial batch). Evaluation: this worker's shard in order."""
    workers = recipe.loader_workers
    drop_last = train and len(dataset) >= recipe.batch_size
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=recipe.seed, drop_last=drop_last) if train else None
    return DataLoader(dataset, batch_size=recipe.batch_size // ctx.world_size, sampler=sampler, drop_last=drop_last,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=ctx.device.type == "cuda")


def _loaders(data, trial: TrialConfig, num_frames: int, ctx: WorkerContext) -> Loaders:
    r, T = trial.train, num_frames
    train_labels = data.split("train").labels
    finetune_indices = label_fraction_subset(train_labels, r.label_fraction, r.seed)
    train_aug = SkeletonDataset(data, "train", T, train=r.augment, seed=r.seed)
    # A small subset repeated to an epoch's clips; every repeat is an augmented view of its own.
    epoch_indices = np.resize(finetune_indices, r.finetune_epoch_clips(len(train_labels), len(finetune_indices)))
    finetune_set = SkeletonDataset(data, "train", T, train=r.augment, indices=epoch_indices, seed=r.seed)
    val_len = len(data.split("val"))
    val = Subset(SkeletonDataset(data, "val", T, train=False), ctx.shard(range(val_len)))
    g = torch.Generator().manual_seed(r.seed)
    bank = torch.randperm(len(train_labels), generator=g)[:KNN_BANK_SIZE].sort().values.tolist()
    return Loaders(pretrain=_loader(train_aug, r, ctx, train=True), finetune=_loader(finetune_set, r, ctx, train=True),
                   val=_loader(val, r, ctx, train=False),
                   bank=_loader(SkeletonDataset(data, "train", T, train=False, indices=ctx.shard(bank)), r, ctx, False),
                   finetune_indices=finetune_indices)


# -- one phase ------------------------------------------------------------------------------------
Step = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class Phase:
    """One phase of a trial, as the epoch loop runs it."""

    name: str                                   # contract.PRETRAIN or contract.FINETUNE
    module: torch.nn.Module                     # what the optimizer steps (and the checkpoint holds)
    loader: DataLoader
    epochs: int
    lr: float
    step: Step                                  # (module, x, y) -> (loss, named terms of this batch)
    evaluate: Callable[[], dict[str, float]]    # validation metrics after an epoch
    select: Callable[[dict[str, float]], None]  # keeps the weights if this epoch is the best so far
    before_epoch: Callable[[], None] = lambda: None
    after_epoch: Callable[[], None] = lambda: None
    extra_metrics: dict[str, Any] | None = None  # reported with every epoch of this phase


def pretrain_step(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    out = module(x)
    return out.loss, out.metrics()


def finetune_step(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    logits = module(x)
    loss = F.cross_entropy(logits.float(), y)
    return loss, {Metric.CE_LOSS_TERM: float(loss.detach()),
                  Metric.ACC_TERM: float((logits.argmax(1) == y).float().mean())}


class TrialLoop:
    """Runs one trial on one worker. The constructor only wires things up; `build` prepares the
    data and the model first, `run` trains."""

    def __init__(self, trial: TrialConfig, setup: TrialSetup, ctx: WorkerContext, reporter: Reporter,
                 log_dir: str | None = None, encoder_cache: EncoderCache | None = None):
        # The recipe made concrete for this data, as prepare_trial made it for the loaders.
        self.train_clips = len(setup.dataset.split("train"))
        trial = trial.resolved(self.train_clips)
        self.trial, self.recipe, self.setup, self.ctx, self.reporter = trial, trial.train, setup, ctx, reporter
        self.encoder_cache = encoder_cache
        # {"key", "hit", "location"} once the cache was asked; travels in checkpoints and meta.json
        self.cache_use: dict[str, Any] = {}
        self.best_pretrain_metrics: dict[str, float] = {}
        self.log_dir = log_dir
        self.dataset, self.model_config, self.model = setup.dataset, setup.model_config, setup.model
        self.loaders = setup.loaders
        self.finetune_indices = setup.loaders.finetune_indices
        self.classifier: STTFormerClassifier | None = None if isinstance(self.model, SkeletonMAE) else self.model
        self.best = BestSoFar()
        self.best_encoder: dict[str, torch.Tensor] | None = None
        self.best_classifier: dict[str, torch.Tensor] | None = None
        self.global_epoch = 0
        self.resumed_from = 0
        self.writer = None

    @classmethod
    def build(cls, trial: TrialConfig, ctx: WorkerContext, reporter: Reporter,
              log_dir: str | None = None, encoder_cache: EncoderCache | None = None) -> "TrialLoop":
        return cls(trial, prepare_trial(trial, ctx), ctx, reporter, log_dir, encoder_cache)

    # -- the trial --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every phase in turn (resuming from the reporter's checkpoint); returns the last report."""
        state = self._restore()
        self.global_epoch = state[Metric.GLOBAL_EPOCH] if state else 0
        self.resumed_from = self.global_epoch  # 0 for a fresh start; reported so restarts are visible
        if self.ctx.is_main and self.log_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.log_dir)
        last: dict[str, Any] = {}
        try:
            for phase in self._phases(state):
                resume = state if state is not None and state[Metric.PHASE] == phase.name else None
                last = self._run_phase(phase, resume) or last
        except TrainingDiverged as exc:
            last = {Metric.DIVERGED: 1, Metric.STATUS_REASON: str(exc), Metric.PHASE: DIVERGED}
            self._report(last, None)  # meta and best weights; a diverged trial is not resumed
        finally:
            if self.encoder_cache is not None:
                self.encoder_cache.release()  # a no-op once published; stopped or failed: others may take it
            if self.writer is not None:
                self.writer.close()
        return last

    def _phases(self, state: dict[str, Any] | None) -> Iterator[Phase]:
        """The phases still to run. Each is built when the one before it has finished, since
        fine-tuning starts from the encoder that pre-training selected."""
        pretrains = isinstance(self.model, SkeletonMAE) and self.recipe.pretrain_epochs > 0
        if pretrains and (state is None or state[Metric.PHASE] == PRETRAIN) and not self._encoder_from_cache():
            start = time.perf_counter()
            yield self._pretrain_phase()
            self._publish_encoder(time.perf_counter() - start)
        yield self._finetune_phase()

    # -- the encoder cache ------------------------------------------------------------------------
    def _encoder_from_cache(self) -> bool:
        """Take the pre-trained encoder from the cache when its key is there (waiting while another
        trial pre-trains it); False: this trial pre-trains it and publishes it when done."""
        cache = self.encoder_cache
        if cache is None:
            return False
        self._key_fields = key_fields(self.trial, self.model_config, self.dataset, self.ctx.world_size)
        key = encoder_key(self._key_fields)
        cached = cache.acquire(key, self.ctx)
        self.cache_use = {"key": key, "hit": cached is not None, "location": cache.location}
        if cached is None:
            return False
        self.model.encoder.load_state_dict(cached.state)
        self.best_encoder = cached.state
        self.best = replace(self.best, pretrain_val_loss=cached.record.get("best_pretrain_val_loss"),
                            pretrain_epoch=cached.record.get("best_pretrain_epoch"))
        # One time axis for the scheduler: fine-tuning starts after the pre-training epochs.
        self.global_epoch = self.recipe.pretrain_epochs
        return True

    def _publish_encoder(self, wall_s: float) -> None:
        """Only a finished pre-training phase gets here (a stopped trial never does)."""
        if self.encoder_cache is None or self.best_encoder is None:
            return
        record = {"best_pretrain_val_loss": self.best.pretrain_val_loss, "best_pretrain_epoch": self.best.pretrain_epoch,
                  "best_pretrain_metrics": self.best_pretrain_metrics, "pretrain_wall_time_s": wall_s}
        self.encoder_cache.publish(self.cache_use["key"], self._key_fields, self.best_encoder, record, self.ctx)

    def _run_phase(self, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
        optimizer, scheduler = self._optimizer(phase.module, phase.lr, phase.epochs)
        start = 0
        if state is not None:
            phase.module.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start = state[Metric.EPOCH]
        wrapped, metrics = self._wrap(phase.module), {}
        for epoch in range(start, phase.epochs):
            lr = optimizer.param_groups[0]["lr"]
            phase.before_epoch()
            metrics = self._run_epoch(wrapped, phase, optimizer, epoch_seed(self.recipe.seed, self.global_epoch))
            scheduler.step()
            metrics.update(phase.evaluate())
            self.global_epoch += 1
            phase.select(metrics)
            phase.after_epoch()
            metrics.update({Metric.PHASE: phase.name, Metric.EPOCH: epoch + 1, Metric.LR: lr,
                            **(phase.extra_metrics or {})})
            if phase.name == FINETUNE:
                metrics[Metric.FINETUNE_EPOCH] = epoch + 1  # the scheduler's time axis (contract.Metric)
            self._report(metrics, self._state(phase.name, epoch + 1, phase.module, optimizer, scheduler))
        return metrics

    def _run_epoch(self, module: torch.nn.Module, phase: Phase, optimizer, seed: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        phase.loader.sampler.set_epoch(seed)  # reshuffle ...
        phase.loader.dataset.set_epoch(seed)  # ... and draw new augmentations every epoch
        for x, y in phase.loader:
            x, y = x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)
            with self._autocast():
                loss, terms = phase.step(module, x, y)
            # All workers agree before any of them steps, so none is left waiting in a collective.
            if self.ctx.any(not bool(torch.isfinite(loss))):
                raise TrainingDiverged(f"{phase.name} loss became {float(loss.detach())} at "
                                       f"global_epoch {self.global_epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * len(x)
            seen += len(x)
        names = sorted(sums)
        totals = self.ctx.sum(torch.tensor([sums[n] for n in names] + [float(seen)], dtype=torch.float64))
        elapsed = time.perf_counter() - start
        metrics = {Metric.train(n): float(totals[i] / max(totals[-1].item(), 1.0)) for i, n in enumerate(names)}
        metrics.update({Metric.SAMPLES_PER_S: float(totals[-1]) / max(elapsed, 1e-9), Metric.EPOCH_TIME_S: elapsed})
        return metrics

    # -- the two phases ---------------------------------------------------------------------------
    def _pretrain_phase(self) -> Phase:
        model = self.model
        return Phase(name=PRETRAIN, module=model, loader=self.loaders.pretrain, epochs=self.recipe.pretrain_epochs,
                     lr=self.recipe.lr_for(model.config.variant), step=pretrain_step,
                     evaluate=self._pretrain_eval, select=self._select_encoder, after_epoch=self._log_joint_errors)

    def _finetune_phase(self) -> Phase:
        r = self.recipe
        self.classifier = classifier = self._make_classifier()
        linear = r.finetune_mode == "linear"
        return Phase(name=FINETUNE, module=classifier, loader=self.loaders.finetune, epochs=r.finetune_epochs,
                     lr=r.finetune_lr_for(self.model_config.variant), step=finetune_step,
                     evaluate=lambda: classifier_metrics(classifier, self.loaders.val, self.ctx),
                     select=self._select_classifier,
                     # frozen features: BatchNorm statistics stay put
                     before_epoch=classifier.encoder.eval if linear else (lambda: None),
                     extra_metrics={Metric.FINETUNE_SAMPLES: len(self.finetune_indices)})

    def _pretrain_eval(self) -> dict[str, float]:
        metrics = pretrain_val_loss(self.model, self.loaders.val, self.recipe.seed, self.ctx)
        probe = self.model.to_classifier()
        classes = self.model_config.num_classes
        if self.recipe.pretrain_metric == "knn":
            value = knn_accuracy(probe, self.loaders.bank, self.loaders.val, self.recipe.knn_k, classes, self.ctx)
        else:
            value = linear_probe_accuracy(probe, self.loaders.bank, self.loaders.val, classes, self.ctx)
        metrics[PROXY_METRICS[self.recipe.pretrain_metric]] = value
        return metrics

    def _select_encoder(self, metrics: dict[str, float]) -> None:
        """Keeps this epoch's encoder when `pretrain_select` says so: always for "last", else when
        its val_pretrain_loss is the lowest so far (which is recorded either way)."""
        lowest = self.best.pretrain_improved(metrics[Metric.VAL_PRETRAIN_LOSS])
        if lowest:
            self.best = replace(self.best, pretrain_val_loss=metrics[Metric.VAL_PRETRAIN_LOSS])
        if lowest or self.recipe.pretrain_select == "last":
            self.best = replace(self.best, pretrain_epoch=self.global_epoch)
            self.best_encoder = copy.deepcopy(self.model.encoder.state_dict())
            self.best_pretrain_metrics = {k: v for k, v in metrics.items() if k.startswith("val_")}

    def _select_classifier(self, metrics: dict[str, float]) -> None:
        acc = metrics[Metric.VAL_ACC]
        if self.best.finetune_improved(acc):
            self.best = replace(self.best, val_acc=acc, epoch=self.global_epoch)
            self.best_classifier = copy.deepcopy(self.classifier.state_dict())

    def _make_classifier(self) -> STTFormerClassifier:
        if isinstance(self.model, SkeletonMAE):
            if self.best_encoder is not None:
                self.model.encoder.load_state_dict(self.best_encoder)
            classifier = self.model.to_classifier(num_classes=self.model_config.num_classes)
        else:
            classifier = self.model
        classifier = classifier.to(self.ctx.device)
        if self.recipe.finetune_mode == "linear":
            for p in classifier.encoder.parameters():
                p.requires_grad_(False)
        return classifier

    def _log_joint_errors(self) -> None:
        if self.writer is None:
            return
        x, _ = next(iter(self.loaders.val), (None, None))
        if x is None:
            return
        self.model.eval()
        with torch.no_grad():
            x = x.to(self.ctx.device)
            out = self.model(x, generator=torch.Generator(device=self.ctx.device).manual_seed(self.recipe.seed))
            per_joint = reconstruction_error_per_joint(out, x)
        self.model.train()
        self.writer.add_histogram(f"{PRETRAIN}/recon_error_per_joint", per_joint, self.global_epoch)

    # -- optimisation ---------------------------------------------------------------------------
    def _optimizer(self, module: torch.nn.Module, lr: float, epochs: int):
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=self.recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.recipe.milestones_for(epochs)),
                                                         self.recipe.lr_gamma)
        return optimizer, scheduler

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.distributed:
            return module
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def _autocast(self):
        if self.ctx.device.type == "cuda" and self.recipe.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self, phase: str, epoch: int, module, optimizer, scheduler) -> dict[str, Any]:
        return {
            Metric.PHASE: phase, Metric.EPOCH: epoch, Metric.GLOBAL_EPOCH: self.global_epoch,
            "model": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "best": asdict(self.best), "best_encoder": self.best_encoder, "best_classifier": self.best_classifier,
            "torch_rng": torch.get_rng_state(), "encoder_cache": dict(self.cache_use),
        }

    def _meta(self, last_metrics: dict[str, Any]) -> TrialMeta:
        return TrialMeta(recipe=self.recipe.recipe_record(self.train_clips, len(self.finetune_indices)),
                         model_config=asdict(self.model_config), trial_config=self.trial.to_flat(),
                         class_names=list(self.dataset.class_names), layout=asdict(self.dataset.layout),
                         best=self.best, global_epoch=self.global_epoch, last_metrics=last_metrics,
                         encoder_cache=dict(self.cache_use))

    def _report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Every worker reports; rank 0 attaches a checkpoint to every report, so the run's result
        always shows the last report, including a divergence."""
        best = {Metric.BEST_VAL_ACC: self.best.val_acc} if self.best.val_acc is not None else {}
        metrics = {**self.setup.static_metrics, **metrics, Metric.GLOBAL_EPOCH: self.global_epoch, **best,
                   Metric.RESUMED_FROM: self.resumed_from}
        if self.cache_use:
            metrics[Metric.ENCODER_CACHE_HIT] = int(self.cache_use["hit"])
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{metrics.get(Metric.PHASE, 'trial')}/{name}", value, self.global_epoch)
            self.writer.flush()
        if not self.ctx.is_main:
            self.reporter.report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="raysearch-ckpt-") as tmp:
            if state is not None:
                torch.save(state, os.path.join(tmp, STATE_FILE))
            if self.best_classifier is not None:
                torch.save(self.best_classifier, os.path.join(tmp, BEST_CLASSIFIER_FILE))
            Path(tmp, META_FILE).write_text(self._meta(metrics).to_json())
            self.reporter.report(metrics, tmp)

    def _restore(self) -> dict[str, Any] | None:
        path = self.reporter.restored_checkpoint()
        if path is None or not os.path.exists(os.path.join(path, STATE_FILE)):
            return None
        state = torch.load(os.path.join(path, STATE_FILE), map_location=self.ctx.device, weights_only=True)
        self.best = BestSoFar(**state["best"])
        self.best_encoder, self.best_classifier = state["best_encoder"], state["best_classifier"]
        self.cache_use = dict(state.get("encoder_cache") or {})
        torch.set_rng_state(state["torch_rng"].cpu())
        return state


# -- Ray Train entry point ------------------------------------------------------------------------
class RayReporter:
    """Reports through a Ray API module, `ray.train` in Train workers or `ray.tune` in a Tune
    function (both offer `report`, `Checkpoint` and `get_checkpoint`). Every worker reports; rank 0
    attaches the checkpoint, which the API persists before `report` returns."""

    def __init__(self, api):
        self.api = api

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = self.api.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        self.api.report(metrics, checkpoint=checkpoint)

    def restored_checkpoint(self) -> str | None:
        checkpoint = self.api.get_checkpoint()
        if checkpoint is None:
            return None
        self._restored = checkpoint.to_directory()  # a local copy, also when storage is remote
        return self._restored


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker function. `config`: {"trial": the TrialConfig (validated where it was
    built), "log_dir": str | None, "threads": CPU threads this worker owns, "encoder_cache": an
    EncoderCacheSpec or None}."""
    import ray.train
    import ray.train.torch

    threads = int(config.get("threads") or 1)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    context = ray.train.get_context()
    ctx = WorkerContext(rank=context.get_world_rank(), world_size=context.get_world_size(),
                        device=ray.train.torch.get_device())
    trial: TrialConfig = config["trial"]
    spec: EncoderCacheSpec | None = config.get("encoder_cache")
    cache = EncoderCache.open(spec, source=context.get_experiment_name()) if spec is not None else None
    TrialLoop.build(trial, ctx, RayReporter(ray.train), log_dir=config.get("log_dir"), encoder_cache=cache).run()
