"""Validation metrics: classifier accuracy and cross-entropy (fine-tuning), the masked
reconstruction losses with fixed masks so epochs are comparable (pre-training), and two proxies of
how good the pre-trained encoder is, on pooled encoder features: kNN accuracy and linear-probe
accuracy (`val_knn_acc`, `val_probe_acc`). The proxies rank encoders; they are never `val_acc`."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from models import SkeletonMAE, STTFormerClassifier

from ..contract import Metric
from .distributed import WorkerContext

KNN_TEMPERATURE = 0.07  # similarity weighting of neighbour votes, as in instance-discrimination kNN
# Linear probe: logistic regression on standardised frozen features of the bank, full batch with
# Adam. 200 steps at 1e-2 reach a plateau on the bank sizes we use (<= KNN_BANK_SIZE samples),
# at a cost well below one training epoch.
PROBE_STEPS = 200
PROBE_LR = 1e-2


@torch.no_grad()
def pooled_features(classifier: STTFormerClassifier, batches: Iterable, ctx: WorkerContext):
    """(features (n, D), labels (n,)) of this worker's batches, encoder in eval mode."""
    was_training = classifier.training
    classifier.eval()
    feats, labels = [], []
    for x, y in batches:
        feats.append(classifier.features(x.to(ctx.device, non_blocking=True)).float())
        labels.append(y.to(ctx.device))
    classifier.train(was_training)
    if not feats:
        return torch.zeros(0, classifier.encoder.out_channels, device=ctx.device), torch.zeros(0, dtype=torch.long, device=ctx.device)
    return torch.cat(feats), torch.cat(labels)


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int,
                num_classes: int) -> torch.Tensor:
    """Weighted kNN on cosine similarity: each of the k neighbours votes exp(sim / 0.07)."""
    similarity = F.normalize(queries, dim=1) @ F.normalize(bank, dim=1).t()  # (q, bank)
    top_sim, top_idx = similarity.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(queries.shape[0], num_classes, device=queries.device)
    votes.scatter_add_(1, bank_labels[top_idx], (top_sim / KNN_TEMPERATURE).exp())
    return votes.argmax(dim=1)


@torch.no_grad()
def knn_accuracy(classifier: STTFormerClassifier, bank_batches: Iterable, val_batches: Iterable,
                 k: int, num_classes: int, ctx: WorkerContext) -> float:
    bank, bank_labels = pooled_features(classifier, bank_batches, ctx)
    bank, bank_labels = ctx.gather_rows(bank), ctx.gather_rows(bank_labels)
    queries, labels = pooled_features(classifier, val_batches, ctx)
    correct = (knn_predict(bank, bank_labels, queries, k, num_classes) == labels).sum() if len(labels) else 0
    totals = ctx.sum(torch.tensor([float(correct), float(len(labels))], device=ctx.device))
    return float(totals[0] / totals[1].clamp_min(1))


@torch.no_grad()
def classifier_metrics(classifier: STTFormerClassifier, batches: Iterable, ctx: WorkerContext) -> dict[str, float]:
    """Accuracy and mean cross-entropy over every worker's share of the validation split."""
    was_training = classifier.training
    classifier.eval()
    totals = torch.zeros(3, device=ctx.device)  # correct, loss sum, count
    for x, y in batches:
        x, y = x.to(ctx.device), y.to(ctx.device)
        logits = classifier(x).float()
        totals += torch.stack([(logits.argmax(1) == y).sum().float(), F.cross_entropy(logits, y, reduction="sum"),
                               torch.tensor(float(len(y)), device=ctx.device)])
    classifier.train(was_training)
    totals = ctx.sum(totals)
    count = totals[2].clamp_min(1)
    return {Metric.VAL_ACC: float(totals[0] / count), Metric.VAL_CE_LOSS: float(totals[1] / count)}


@torch.no_grad()
def pretrain_val_loss(model: SkeletonMAE, batches: Iterable, seed: int, ctx: WorkerContext) -> dict[str, float]:
    """Masked-reconstruction validation losses (`val_<term>` of every term the model reports,
    `val_pretrain_loss` the whole objective); the same masks every epoch (seeded generator)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=ctx.device).manual_seed(seed + ctx.rank)
    sums, count = {}, 0
    for x, _ in batches:
        x = x.to(ctx.device)
        out = model(x, generator=generator)
        for name, value in out.metrics().items():
            sums[name] = sums.get(name, 0.0) + value * len(x)
        count += len(x)
    model.train(was_training)
    names = sorted(sums)
    totals = ctx.sum(torch.tensor([sums[n] for n in names] + [float(count)], device=ctx.device, dtype=torch.float64))
    return {Metric.val(n): float(totals[i] / max(totals[-1].item(), 1.0)) for i, n in enumerate(names)}


def linear_probe_accuracy(probe: STTFormerClassifier, bank_batches: Iterable, val_batches: Iterable,
                          num_classes: int, ctx: WorkerContext) -> float:
    """Accuracy on validation of a linear head trained on the frozen pooled features of the bank."""
    bank, bank_y = pooled_features(probe, bank_batches, ctx)
    bank, bank_y = ctx.gather_rows(bank), ctx.gather_rows(bank_y)
    val, val_y = pooled_features(probe, val_batches, ctx)
    mean, std = bank.mean(0), bank.std(0).clamp_min(1e-6)
    head = torch.nn.Linear(bank.shape[1], num_classes).to(ctx.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=PROBE_LR)
    with torch.enable_grad():
        for _ in range(PROBE_STEPS):  # the same on every worker, since the bank is gathered
            optimizer.zero_grad()
            F.cross_entropy(head((bank - mean) / std), bank_y).backward()
            optimizer.step()
    correct = (head((val - mean) / std).argmax(1) == val_y).sum().item() if len(val_y) else 0
    totals = ctx.sum(torch.tensor([float(correct), float(len(val_y))], device=ctx.device))
    return float(totals[0] / totals[1].clamp_min(1))
