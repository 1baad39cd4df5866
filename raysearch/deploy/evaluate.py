"""Evaluate a trained classifier on a split of a prepared dataset (by default `test`).

    evaluation, info = evaluate_source("artifact/", "data/msr")           # an exported artifact
    evaluation, info = evaluate_source("runs/train", "data/msr")          # a train or search run
    write_evaluation(evaluation, "out/")     # evaluation.json, confusion_matrix.json / .png

Top-1, top-k (k = 5, or the number of classes when fewer), per-class accuracy and the confusion
matrix, from the logits of the classifier on every clip of the split. Clips go through the same
evaluation view a trial validated with (`SkeletonDataset(train=False)`: the central 95% of the
valid frames resized to the model's frames); the dataset directory is already normalised by its
importer, so nothing else is applied.

A run is evaluated through the checkpoint `resolve_checkpoint` picks: the best trial by the
search's objective on validation, and inside it the classifier of its best validation epoch.
Nothing here chooses anything by test accuracy; `raysearch train` and `raysearch report` call it
after selection is over. This module imports models, data, contract and the run reader only (no
tune, no train, no Ray), so training and deployment can both use it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models import STTFormerClassifier

from ..contract import BEST_CLASSIFIER_FILE, META_FILE, Metric, TrialMeta
from ..errors import UserInputError

TOP_K = 5
EVAL_BATCH = 64
EVALUATION_FILE = "evaluation.json"
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"


@dataclass(frozen=True)
class Evaluation:
    """Accuracy of one classifier on one split. `confusion[i][j]`: clips of class i predicted j."""

    split: str
    clips: int
    top1: float
    topk: float
    k: int
    per_class: dict[str, float | None]   # None: the class has no clip in this split
    confusion: list[list[int]]
    class_names: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "clips": self.clips, "top1_acc": self.top1, f"top{self.k}_acc": self.topk,
                "k": self.k, "per_class_acc": self.per_class, "class_names": list(self.class_names),
                "confusion_matrix": self.confusion}

    def test_metrics(self) -> dict[str, Any]:
        """The contract's test metric names (for result.json): only meaningful on the test split."""
        return {Metric.TEST_ACC: self.top1, Metric.TEST_TOP5_ACC: self.topk,
                Metric.TEST_PER_CLASS_ACC: self.per_class, Metric.TEST_CLIPS: self.clips,
                "selection": "best validation epoch; test never used for selection"}


def evaluation_from_logits(logits: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...] | list[str],
                           split: str = "test") -> Evaluation:
    """Metrics of (n, K) logits against (n,) labels; argmax ties go to the lower class index."""
    num_classes = len(class_names)
    if logits.ndim != 2 or logits.shape[1] != num_classes or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not fit "
                         f"{num_classes} classes")
    n, k = int(labels.shape[0]), min(TOP_K, num_classes)
    labels = labels.long()
    predicted = logits.argmax(dim=1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones(n, dtype=torch.long), accumulate=True)
    in_topk = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    counts, hits = confusion.sum(dim=1), confusion.diagonal()
    per_class = {name: (float(hits[c]) / int(counts[c]) if counts[c] else None)
                 for c, name in enumerate(class_names)}
    return Evaluation(split=split, clips=n, top1=float(hits.sum()) / max(n, 1), topk=float(in_topk.sum()) / max(n, 1),
                      k=k, per_class=per_class, confusion=confusion.tolist(), class_names=tuple(class_names))


def _check_fit(config, class_names, dataset, split: str, where: str) -> None:
    """The dataset must be the classifier's kind of data: same channels, joints, classes."""
    if split not in dataset.split_names:
        raise UserInputError(f"--data {dataset.path}: has no {split!r} split (splits: "
                             f"{', '.join(dataset.split_names)}); pass --split with one of them")
    problems = []
    if dataset.num_channels != config.num_channels or dataset.num_joints != config.num_joints:
        problems.append(f"{dataset.num_channels} channels x {dataset.num_joints} joints, the model takes "
                        f"{config.num_channels} x {config.num_joints}")
    if dataset.max_persons > config.num_persons:
        problems.append(f"up to {dataset.max_persons} persons, the model takes {config.num_persons}")
    if tuple(dataset.class_names) != tuple(class_names):
        problems.append(f"classes {list(dataset.class_names)[:3]}... ({dataset.num_classes}) differ from the "
                        f"model's {list(class_names)[:3]}... ({len(class_names)})")
    if problems:
        raise UserInputError(f"--data {dataset.path}: does not fit {where}: {'; '.join(problems)}; evaluate on "
                             "data prepared like the training data")


def _check_normalisation(expected, dataset, where: str) -> None:
    found = dataset.manifest.normalisation
    if expected is not None and found is not None and expected != found:
        layout = dataset.layout
        raise UserInputError(f"--data {dataset.path}: normalised as {found.describe(layout)!r} but {where} was "
                             f"trained on data normalised as {expected.describe(layout)!r}; re-import it with the "
                             "training data's settings")


@torch.no_grad()
def evaluate_classifier(classifier: STTFormerClassifier, class_names, data_dir: str, split: str = "test",
                        *, test_crop_fraction: float = 0.95, where: str = "the classifier", expected_normalisation=None,
                        device: torch.device | str = "cpu") -> Evaluation:
    """Logits of every clip of `split` through the evaluation view, then `evaluation_from_logits`."""
    from torch.utils.data import DataLoader

    from ..data.cache import resolve_data
    from ..data.dataset import SkeletonDataset
    from ..data.format import open_dataset

    dataset = open_dataset(resolve_data(data_dir))
    config = classifier.config
    _check_fit(config, class_names, dataset, split, where)
    _check_normalisation(expected_normalisation, dataset, where)
    clips = SkeletonDataset(dataset, split, config.num_frames, train=False, test_crop_fraction=test_crop_fraction)
    was_training = classifier.training
    classifier.eval().to(device)
    logits, labels = [], []
    for x, y in DataLoader(clips, batch_size=EVAL_BATCH):  # x: (B, C, T, V, M_data)
        if x.shape[-1] < config.num_persons:  # absent persons are all zeros in the data format
            x = torch.nn.functional.pad(x, (0, config.num_persons - x.shape[-1]))
        logits.append(classifier(x.to(device)).float().cpu())
        labels.append(y)
    classifier.train(was_training)
    if not logits:
        raise UserInputError(f"--data {dataset.path}: split {split!r} is empty; nothing to evaluate")
    return evaluation_from_logits(torch.cat(logits), torch.cat(labels), tuple(class_names), split)


def _training_normalisation(data_dir: Any):
    """The normalisation of the data a checkpoint was trained on, when its manifest is reachable."""
    from ..data.preprocessing import _training_data

    return _training_data(data_dir)[1]


def load_checkpoint_classifier(checkpoint_dir: str | Path) -> tuple[STTFormerClassifier, TrialMeta]:
    """The best-validation classifier of a local checkpoint directory, in eval mode, and its meta."""
    from .export import _build_classifier, _model_config, _read_weights

    checkpoint = Path(checkpoint_dir)
    fix = "evaluate a checkpoint written by `raysearch train` or `raysearch search` that reached fine-tuning"
    for name in (META_FILE, BEST_CLASSIFIER_FILE):
        if not (checkpoint / name).is_file():
            raise UserInputError(f"checkpoint {checkpoint}: no {name}; {fix}")
    meta = TrialMeta.from_json((checkpoint / META_FILE).read_text(errors="replace"), f"file {checkpoint / META_FILE}")
    config = _model_config(meta.model_config, f"file {checkpoint / META_FILE}")
    state = _read_weights(checkpoint / BEST_CLASSIFIER_FILE, fix)
    return _build_classifier(config, state, f"file {checkpoint / BEST_CLASSIFIER_FILE}", fix), meta


def evaluate_checkpoint(checkpoint_dir: str | Path, data_dir: str, split: str = "test",
                        device: torch.device | str = "cpu") -> Evaluation:
    classifier, meta = load_checkpoint_classifier(checkpoint_dir)
    return evaluate_classifier(classifier, meta.class_names, data_dir, split, where=f"checkpoint {checkpoint_dir}",
                               expected_normalisation=_training_normalisation(meta.trial_config.get("data_dir")),
                               device=device)


def is_artifact(source: str) -> bool:
    from .export import ARTIFACT_FORMAT, CONFIG_FILE

    config = Path(source, CONFIG_FILE)
    if "://" in source or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == ARTIFACT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def evaluate_source(source: str, data_dir: str, split: str = "test", trial_id: str | None = None,
                    device: torch.device | str = "cpu") -> tuple[Evaluation, dict[str, Any]]:
    """Evaluate an artifact directory, or the checkpoint `resolve_checkpoint` picks in a train run,
    a search run (the best trial by its objective, or `trial_id`) or a checkpoint directory."""
    from ..data.preprocessing import read_preprocessing
    from .export import PREPROCESSING_FILE, load_artifact, resolve_checkpoint

    if is_artifact(source):
        if trial_id is not None:
            raise UserInputError(f"--trial {trial_id}: {source} is an artifact (one classifier); drop --trial")
        artifact = load_artifact(source)
        config = artifact.config
        spec = read_preprocessing(artifact.preprocessing, Path(source, PREPROCESSING_FILE),
                                  num_channels=config.num_channels, num_frames=config.num_frames,
                                  num_joints=config.num_joints, num_persons=config.num_persons)
        evaluation = evaluate_classifier(artifact.classifier, artifact.class_names, data_dir, split,
                                         test_crop_fraction=spec.test_crop_fraction, where=f"artifact {source}",
                                         expected_normalisation=spec.normalisation, device=device)
        return evaluation, {"kind": "artifact", "source": source}
    local, info = resolve_checkpoint(source, trial_id)
    try:
        evaluation = evaluate_checkpoint(local, data_dir, split, device=device)
    finally:
        if info.get("fetched"):
            shutil.rmtree(local, ignore_errors=True)
    return evaluation, {k: v for k, v in info.items() if k != "fetched"}


# -- files ----------------------------------------------------------------------------------------
def plot_confusion(evaluation: Evaluation, path: Path) -> None:
    """Rows: true class, columns: predicted, each row as a fraction of its clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.tensor(evaluation.confusion, dtype=torch.float64)
    rows = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    n = len(evaluation.class_names)
    size = min(4 + 0.35 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), evaluation.class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), evaluation.class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"{evaluation.split}: top-1 {evaluation.top1:.1%}, {evaluation.clips} clips")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_evaluation(evaluation: Evaluation, out_dir: str | Path, source: dict[str, Any] | None = None) -> dict[str, str]:
    """evaluation.json (everything), confusion_matrix.json and confusion_matrix.png into out_dir."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: is a file; choose a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = {"evaluation": out / EVALUATION_FILE, "confusion_json": out / CONFUSION_JSON,
             "confusion_png": out / CONFUSION_PNG}
    paths["evaluation"].write_text(json.dumps({**evaluation.to_dict(), "source": source or {}}, indent=1,
                                              default=str) + "\n")
    paths["confusion_json"].write_text(json.dumps({"class_names": list(evaluation.class_names),
                                                   "rows": "true class", "columns": "predicted class",
                                                   "counts": evaluation.confusion}) + "\n")
    plot_confusion(evaluation, paths["confusion_png"])
    return {k: str(v) for k, v in paths.items()}


def test_split_metrics(checkpoint_dir: str | Path, data_dir: str, device: torch.device | str = "cpu") -> dict[str, Any]:
    """`Evaluation.test_metrics()` of a checkpoint's best-validation classifier on the test split,
    for a caller whose selection is over; {} when the data has no test split or the checkpoint no
    fine-tuned classifier."""
    from ..data.cache import resolve_data
    from ..data.format import open_dataset

    if not Path(checkpoint_dir, BEST_CLASSIFIER_FILE).is_file():
        return {}
    if "test" not in open_dataset(resolve_data(data_dir)).split_names:
        return {}
    return evaluate_checkpoint(checkpoint_dir, data_dir, "test", device=device).test_metrics()
