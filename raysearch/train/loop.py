"""The one training loop for every variant: masked pre-training, then fine-tuning.

`TrialLoop` is plain PyTorch plus `torch.distributed`; it talks to the outside world through a
`Reporter` (metrics and checkpoints out, the checkpoint to resume from in). `train_loop_per_worker`
plugs it into Ray Train; tests and benchmarks run it in-process with `LocalReporter`.

Every epoch reports a monotonic `global_epoch` (pre-train epochs, then fine-tune epochs), the
phase, losses, learning rate, throughput and `val_acc`: kNN (or linear-probe) accuracy of pooled
encoder features during pre-training, classifier accuracy during fine-tuning. Pre-training keeps
the encoder with the lowest validation loss, fine-tuning the classifier with the best accuracy
(paper section 4.2). Every checkpoint holds model, optimizer, scheduler, phase, epoch, RNG state and
the best weights so far, so a restarted worker group resumes without repeating finished epochs.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

import models
from models import SkeletonMAE, STTFormerClassifier, reconstruction_error_per_joint

from ..data.dataset import SkeletonDataset
from ..data.cache import resolve_data
from ..data.format import open_dataset
from ..data.splits import label_fraction_subset
from ..errors import UserInputError
from .config import TrialConfig
from .distributed import WorkerContext
from .evaluate import classifier_metrics, knn_accuracy, pooled_features, pretrain_val_loss

STATE_FILE = "state.pt"                  # everything needed to resume (weights_only-loadable)
BEST_CLASSIFIER_FILE = "best_classifier.pt"  # state dict of the best fine-tuned classifier
META_FILE = "meta.json"                  # configs, class names and best metrics, for export
KNN_BANK_SIZE = 4096                     # training samples whose features form the kNN bank


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


def _phase_lr(base_lr: float, milestones, gamma: float, epoch: int) -> float:
    return base_lr * gamma ** sum(epoch >= m for m in milestones)


class TrialLoop:
    def __init__(self, trial: TrialConfig, ctx: WorkerContext, reporter: Reporter,
                 log_dir: str | None = None):
        self.trial, self.recipe, self.ctx, self.reporter = trial, trial.train, ctx, reporter
        torch.manual_seed(self.recipe.seed)  # identical initial weights on every worker
        self.dataset = open_dataset(resolve_data(trial.data_dir))
        self.class_names = list(self.dataset.class_names)
        self.model_config = trial.model_config(self.dataset.num_joints, self.dataset.max_persons,
                                               self.dataset.num_classes, self.dataset.num_channels)
        self.model = models.build_from_config(self.model_config).to(ctx.device)
        if self.recipe.init_from:
            models.load_encoder_weights(self.model.encoder, models.read_state_dict(self.recipe.init_from),
                                        self.recipe.init_from)
        self.pretrains = isinstance(self.model, SkeletonMAE) and self.recipe.pretrain_epochs > 0
        self.classifier: STTFormerClassifier | None = None if isinstance(self.model, SkeletonMAE) else self.model
        if self.recipe.batch_size < ctx.world_size:
            raise UserInputError(f"batch_size={self.recipe.batch_size} is smaller than the {ctx.world_size} workers; "
                                 "raise batch_size or use fewer workers")
        self.worker_batch = self.recipe.batch_size // ctx.world_size
        self.writer = None
        if ctx.is_main and log_dir:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir)
        self.static_metrics = self._static_metrics()
        self.best = {"pretrain_val_loss": math.inf, "val_acc": -1.0, "epoch": 0}
        self.best_encoder: dict[str, torch.Tensor] | None = None
        self.best_classifier: dict[str, torch.Tensor] | None = None
        self._build_loaders()

    # -- set-up -----------------------------------------------------------------------------------
    def _static_metrics(self) -> dict[str, float]:
        info = {"params": float(models.count_parameters(self.model))}
        if self.ctx.is_main:
            info.update({k: float(v) for k, v in models.model_info(self.model).items()
                         if k in ("pretrain_gflops", "classifier_gflops") and v is not None})
        return info

    def _loader(self, dataset, train: bool) -> DataLoader:
        """Training: shuffled shards per worker (a label-fraction subset smaller than one batch
        keeps its last partial batch). Evaluation: this worker's shard in order."""
        ctx, workers = self.ctx, self.recipe.loader_workers
        drop_last = train and len(dataset) >= self.recipe.batch_size
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=self.recipe.seed, drop_last=drop_last) if train else None
        return DataLoader(dataset, batch_size=self.worker_batch, sampler=sampler, drop_last=drop_last,
                          num_workers=workers, persistent_workers=workers > 0,
                          pin_memory=ctx.device.type == "cuda")

    def _build_loaders(self) -> None:
        r, T = self.recipe, self.model_config.num_frames
        data = self.dataset
        if "val" not in data.split_names:
            raise UserInputError(f"dataset {self.trial.data_dir} has no 'val' split; re-run `raysearch prepare` "
                                 "(it carves a per-class validation split from train)")
        train_labels = data.split("train").labels
        self.finetune_indices = label_fraction_subset(train_labels, r.label_fraction, r.seed)
        augment = r.augment
        train_aug = SkeletonDataset(data, "train", T, train=augment, seed=r.seed)
        finetune_set = SkeletonDataset(data, "train", T, train=augment, indices=self.finetune_indices, seed=r.seed)
        self.pretrain_loader = self._loader(train_aug, train=True)
        self.finetune_loader = self._loader(finetune_set, train=True)
        val_len = len(data.split("val"))
        self.val_loader = self._loader(Subset(SkeletonDataset(data, "val", T, train=False), self.ctx.shard(range(val_len))), False)
        g = torch.Generator().manual_seed(r.seed)
        bank = torch.randperm(len(train_labels), generator=g)[:KNN_BANK_SIZE].sort().values.tolist()
        self.bank_loader = self._loader(SkeletonDataset(data, "train", T, train=False, indices=self.ctx.shard(bank)), False)

    def _optimizer(self, module: torch.nn.Module, lr: float):
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=self.recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.recipe.lr_milestones), self.recipe.lr_gamma)
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

    # -- one epoch --------------------------------------------------------------------------------
    def _run_epoch(self, module: torch.nn.Module, loader: DataLoader, optimizer, step, phase: str) -> dict[str, float]:
        sums: dict[str, float] = {}
        seen, start = 0, time.perf_counter()
        loader.sampler.set_epoch(self._epoch_seed)  # reshuffle ...
        loader.dataset.set_epoch(self._epoch_seed)  # ... and draw new augmentations every epoch
        for x, y in loader:
            x, y = x.to(self.ctx.device, non_blocking=True), y.to(self.ctx.device, non_blocking=True)
            with self._autocast():
                loss, terms = step(module, x, y)
            # All workers agree before any of them steps, so none is left waiting in a collective.
            if self.ctx.any(not bool(torch.isfinite(loss))):
                raise TrainingDiverged(f"{phase} loss became {float(loss.detach())} at global_epoch {self.global_epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value * len(x)
            seen += len(x)
        names = sorted(sums)
        totals = self.ctx.sum(torch.tensor([sums[n] for n in names] + [float(seen)], dtype=torch.float64))
        elapsed = time.perf_counter() - start
        metrics = {f"train_{n}": float(totals[i] / max(totals[-1].item(), 1.0)) for i, n in enumerate(names)}
        metrics.update(samples_per_s=float(totals[-1]) / max(elapsed, 1e-9), epoch_time_s=elapsed)
        return metrics

    @staticmethod
    def _pretrain_step(module, x, y):
        out = module(x)
        return out.loss, out.metrics()

    @staticmethod
    def _finetune_step(module, x, y):
        logits = module(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"loss": float(loss.detach()), "acc": float((logits.argmax(1) == y).float().mean())}

    # -- evaluation -------------------------------------------------------------------------------
    def _pretrain_eval(self) -> dict[str, float]:
        metrics = pretrain_val_loss(self.model, self.val_loader, self.recipe.seed, self.ctx)
        probe = self.model.to_classifier()
        k, classes = self.recipe.knn_k, self.model_config.num_classes
        if self.recipe.pretrain_metric == "knn":
            metrics["val_acc"] = knn_accuracy(probe, self.bank_loader, self.val_loader, k, classes, self.ctx)
        else:
            metrics["val_acc"] = self._linear_probe_accuracy(probe, classes)
        return metrics

    def _linear_probe_accuracy(self, probe: STTFormerClassifier, classes: int) -> float:
        """Logistic regression on frozen pooled features of the kNN bank, scored on validation."""
        bank, bank_y = pooled_features(probe, self.bank_loader, self.ctx)
        bank, bank_y = self.ctx.gather_rows(bank), self.ctx.gather_rows(bank_y)
        val, val_y = pooled_features(probe, self.val_loader, self.ctx)
        mean, std = bank.mean(0), bank.std(0).clamp_min(1e-6)
        head = torch.nn.Linear(bank.shape[1], classes).to(self.ctx.device)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
        with torch.enable_grad():
            for _ in range(200):  # full-batch; the same on every worker since the bank is gathered
                optimizer.zero_grad()
                F.cross_entropy(head((bank - mean) / std), bank_y).backward()
                optimizer.step()
        correct = (head((val - mean) / std).argmax(1) == val_y).sum().item() if len(val_y) else 0
        totals = self.ctx.sum(torch.tensor([float(correct), float(len(val_y))]))
        return float(totals[0] / totals[1].clamp_min(1))

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self, phase: str, epoch: int, module, optimizer, scheduler) -> dict[str, Any]:
        return {
            "phase": phase, "epoch": epoch, "global_epoch": self.global_epoch,
            "model": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "best": dict(self.best), "best_encoder": self.best_encoder, "best_classifier": self.best_classifier,
            "torch_rng": torch.get_rng_state(),
        }

    def _meta(self) -> dict[str, Any]:
        return {"model_config": asdict(self.model_config), "trial_config": self.trial.to_flat(),
                "class_names": self.class_names, "layout": asdict(self.dataset.layout),
                "best": dict(self.best), "global_epoch": self.global_epoch}

    def _report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        """Every worker reports; rank 0 attaches a checkpoint to every report, so the run's result
        always shows the last report, including a divergence."""
        metrics = {**self.static_metrics, **metrics, "global_epoch": self.global_epoch,
                   "best_val_acc": max(self.best["val_acc"], 0.0),
                   "resumed_from_global_epoch": self.resumed_from}
        if self.writer is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(f"{metrics.get('phase', 'trial')}/{name}", value, self.global_epoch)
            self.writer.flush()
        if not self.ctx.is_main:
            self.reporter.report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="raysearch-ckpt-") as tmp:
            if state is not None:
                torch.save(state, os.path.join(tmp, STATE_FILE))
            if self.best_classifier is not None:
                torch.save(self.best_classifier, os.path.join(tmp, BEST_CLASSIFIER_FILE))
            Path(tmp, META_FILE).write_text(json.dumps({**self._meta(), "last_metrics": metrics}, indent=1, default=list))
            self.reporter.report(metrics, tmp)

    def _restore(self) -> dict[str, Any] | None:
        path = self.reporter.restored_checkpoint()
        if path is None or not os.path.exists(os.path.join(path, STATE_FILE)):
            return None
        state = torch.load(os.path.join(path, STATE_FILE), map_location=self.ctx.device, weights_only=True)
        self.best = dict(state["best"])
        self.best_encoder, self.best_classifier = state["best_encoder"], state["best_classifier"]
        torch.set_rng_state(state["torch_rng"].cpu())
        return state

    # -- the trial --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Pre-train then fine-tune; returns the last reported metrics."""
        r = self.recipe
        state = self._restore()
        pretrain_epochs = r.pretrain_epochs if self.pretrains else 0
        self.global_epoch = state["global_epoch"] if state else 0
        self.resumed_from = self.global_epoch  # 0 for a fresh start; reported so restarts are visible
        last: dict[str, Any] = {}
        try:
            if pretrain_epochs and (state is None or state["phase"] == "pretrain"):
                last = self._pretrain(pretrain_epochs, state)
                state = None
            last = self._finetune(pretrain_epochs, state) or last
        except TrainingDiverged as exc:
            last = {"diverged": 1, "status_reason": str(exc), "val_acc": max(self.best["val_acc"], 0.0),
                    "phase": "diverged"}
            self._report(last, None)  # meta and best weights; a diverged trial is not resumed
        finally:
            if self.writer is not None:
                self.writer.close()
        return last

    def _pretrain(self, epochs: int, state: dict | None) -> dict[str, Any]:
        r, model = self.recipe, self.model
        if self.ctx.distributed and model.config.variant == "mvqvae":
            model.latent.reduce_counts = self.ctx.sum
            model.latent.broadcast = lambda t: (torch.distributed.broadcast(t, 0), t)[1]
        optimizer, scheduler = self._optimizer(model, r.lr_for(model.config.variant))
        start = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start = state["epoch"]
        wrapped, metrics = self._wrap(model), {}
        for epoch in range(start, epochs):
            self._epoch_seed = r.seed * 1_000_003 + epoch
            lr = optimizer.param_groups[0]["lr"]
            metrics = self._run_epoch(wrapped, self.pretrain_loader, optimizer, self._pretrain_step, "pretrain")
            scheduler.step()
            metrics.update(self._pretrain_eval())
            self.global_epoch += 1
            if metrics["val_loss"] < self.best["pretrain_val_loss"]:
                self.best["pretrain_val_loss"] = metrics["val_loss"]
                self.best_encoder = copy.deepcopy(model.encoder.state_dict())
            self._log_joint_errors()
            metrics.update(phase="pretrain", epoch=epoch + 1, lr=lr)
            self._report(metrics, self._state("pretrain", epoch + 1, model, optimizer, scheduler))
        return metrics

    def _finetune(self, pretrain_epochs: int, state: dict | None) -> dict[str, Any]:
        r = self.recipe
        self.classifier = self._make_classifier()
        lr = r.finetune_lr or r.lr_for(self.model_config.variant)
        optimizer, scheduler = self._optimizer(self.classifier, lr)
        start = 0
        if state is not None and state["phase"] == "finetune":
            self.classifier.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start = state["epoch"]
        wrapped, metrics = self._wrap(self.classifier), {}
        for epoch in range(start, r.finetune_epochs):
            self._epoch_seed = r.seed * 1_000_003 + pretrain_epochs + epoch
            current_lr = optimizer.param_groups[0]["lr"]
            if r.finetune_mode == "linear":
                self.classifier.encoder.eval()  # frozen features: BatchNorm statistics stay put
            metrics = self._run_epoch(wrapped, self.finetune_loader, optimizer, self._finetune_step, "finetune")
            scheduler.step()
            metrics.update(classifier_metrics(self.classifier, self.val_loader, self.ctx))
            self.global_epoch += 1
            if metrics["val_acc"] > self.best["val_acc"]:
                self.best.update(val_acc=metrics["val_acc"], epoch=self.global_epoch)
                self.best_classifier = copy.deepcopy(self.classifier.state_dict())
            metrics.update(phase="finetune", epoch=epoch + 1, lr=current_lr,
                           finetune_samples=len(self.finetune_indices))
            self._report(metrics, self._state("finetune", epoch + 1, self.classifier, optimizer, scheduler))
        return metrics

    def _log_joint_errors(self) -> None:
        if self.writer is None:
            return
        x, _ = next(iter(self.val_loader), (None, None))
        if x is None:
            return
        self.model.eval()
        with torch.no_grad():
            x = x.to(self.ctx.device)
            out = self.model(x, generator=torch.Generator(device=self.ctx.device).manual_seed(self.recipe.seed))
            per_joint = reconstruction_error_per_joint(out, x)
        self.model.train()
        self.writer.add_histogram("pretrain/recon_error_per_joint", per_joint, self.global_epoch)


# -- Ray Train entry point ------------------------------------------------------------------------
class RayTrainReporter:
    """Reports through `ray.train.report`; every worker calls it, rank 0 attaches the checkpoint."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def restored_checkpoint(self) -> str | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        self._restored = checkpoint.to_directory()  # a local copy, also when storage is remote
        return self._restored


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker function. `config`: {"trial": flat trial dict, "log_dir": str | None,
    "threads": CPU threads this worker owns}."""
    import ray.train
    import ray.train.torch

    threads = int(config.get("threads") or 1)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    context = ray.train.get_context()
    ctx = WorkerContext(rank=context.get_world_rank(), world_size=context.get_world_size(),
                        device=ray.train.torch.get_device())
    trial = TrialConfig.from_flat(config["trial"])
    TrialLoop(trial, ctx, RayTrainReporter(), log_dir=config.get("log_dir")).run()
