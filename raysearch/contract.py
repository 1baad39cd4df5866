"""The trial contract: what one trial writes, and what every reader of a run may rely on.

`raysearch.train` writes these files and metrics; `raysearch.tune`, `report` and
`raysearch.deploy` read them. Each file name, metric name, phase and outcome is spelled here once;
everywhere else refers to these constants. This module imports nothing of raysearch but the error
type, so any layer may import it.

Metric names say what was measured and on what. Pre-training and fine-tuning never share a name:
- pre-training reports the masked-reconstruction losses on the validation split (fixed masks) and
  a representation proxy (`val_knn_acc` or `val_probe_acc`); it never reports `val_acc`;
- fine-tuning reports `val_acc` (classifier top-1 on the validation split) and `val_ce_loss`.
So a search objective or a scheduler that reads `val_acc` only ever compares fine-tuned classifiers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from .errors import UserInputError

# -- files ------------------------------------------------------------------------------------------
# Inside every trial checkpoint directory:
STATE_FILE = "state.pt"                       # resume state; loads with torch.load(weights_only=True)
BEST_CLASSIFIER_FILE = "best_classifier.pt"   # state dict of the best fine-tuned classifier so far
META_FILE = "meta.json"                       # TrialMeta: configs, class names, best-so-far record
# Beside a run:
TRAIN_RESULT_FILE = "result.json"             # `raysearch train --out DIR`: one summary object
TUNE_RESULT_FILE = "result.json"              # a Tune trial directory: one JSON object per report
TUNE_PARAMS_FILE = "params.json"              # a Tune trial directory: the trial's parameters
TUNE_ERROR_FILE = "error.txt"                 # a Tune trial directory: present when the trial failed
TRIAL_LOST_FILE = "lost.json"                 # a Tune trial directory: a resumed search lost it (tune/resume.py)
TRIAL_DIR_PREFIX = "trial_"                   # a Tune trial directory's name: the prefix, then the trial id
SPACE_FILE = "search_space.json"              # a search run: the validated space (objectives, budget)
RESULTS_FILE = "results.parquet"              # a search run: one row per trial (`raysearch report`)
OPTUNA_JOURNAL_FILE = "optuna_journal.log"    # a search run: the Optuna study (JournalStorage; name = search name)
TENSORBOARD_DIR = "tensorboard"
# The encoder cache (`raysearch.train.encoder_cache`): <run_dir>/encoders/<key>/{encoder.pt, record.json}
ENCODER_CACHE_DIR = "encoders"
CACHED_ENCODER_FILE = "encoder.pt"           # the best pre-trained encoder's state dict (weights_only)
ENCODER_RECORD_FILE = "record.json"          # key fields, pre-training metrics, source trial; written last

# -- phases -----------------------------------------------------------------------------------------
PRETRAIN = "pretrain"
FINETUNE = "finetune"
DIVERGED = "diverged"
PHASES = (PRETRAIN, FINETUNE, DIVERGED)


# -- metric names -----------------------------------------------------------------------------------
class Metric:
    """Names of the values a trial reports (Tune result rows, TensorBoard, result.json)."""

    # progress, every report
    GLOBAL_EPOCH = "global_epoch"       # monotonic over both phases: the schedulers' time axis
    PHASE = "phase"
    EPOCH = "epoch"                     # epoch inside the current phase, from 1
    FINETUNE_EPOCH = "finetune_epoch"   # fine-tuning epochs done, from 1; only fine-tuning reports carry it.
                                        # ASHA's default time axis: with encoders cached, a trial's cost is
                                        # its fine-tuning, and only fine-tuned metrics are compared
    LR = "lr"
    SAMPLES_PER_S = "samples_per_s"
    EPOCH_TIME_S = "epoch_time_s"
    RESUMED_FROM = "resumed_from_global_epoch"
    ENCODER_CACHE_HIT = "encoder_cache_hit"  # 1: pre-training skipped, the encoder came from the cache
    # static, every report
    PARAMS = "params"
    PRETRAIN_GFLOPS = "pretrain_gflops"
    CLASSIFIER_GFLOPS = "classifier_gflops"
    # pre-training, on the validation split with fixed masks
    VAL_PRETRAIN_LOSS = "val_pretrain_loss"   # the whole pre-training objective (eq. 3 / eq. 6)
    VAL_RECON_LOSS = "val_recon_loss"         # masked-joint MSE alone
    VAL_KNN_ACC = "val_knn_acc"               # kNN accuracy of pooled encoder features (a proxy)
    VAL_PROBE_ACC = "val_probe_acc"           # linear-probe accuracy of pooled features (a proxy)
    # fine-tuning, on the validation split
    VAL_ACC = "val_acc"                       # classifier top-1: the default search objective
    VAL_CE_LOSS = "val_ce_loss"
    BEST_VAL_ACC = "best_val_acc"             # best val_acc so far in this trial (absent before any)
    FINETUNE_SAMPLES = "finetune_samples"
    # test split: computed once, with the best-validation weights, never used for selection
    TEST_ACC = "test_acc"
    TEST_TOP5_ACC = "test_top5_acc"
    TEST_PER_CLASS_ACC = "test_per_class_acc"  # {class name: top-1 on its test clips}
    TEST_CLIPS = "test_clips"
    # how a trial ended
    DIVERGED = "diverged"
    STATUS_REASON = "status_reason"
    # added to every Tune result row by Ray itself (names are Ray's)
    CHECKPOINT_PATH = "checkpoint_path"   # ray.tune.integration.ray_train.TuneReportCallback
    CHECKPOINT_DIR_NAME = "checkpoint_dir_name"  # Tune function trials: the checkpoint inside the trial dir
    TRIAL_ID = "trial_id"
    TIME_TOTAL_S = "time_total_s"
    TIMESTAMP = "timestamp"

    # Loss terms, as the `train_` / `val_` metrics carry them. Pre-training terms are the names
    # `models.PretrainOutput.metrics()` gives (the whole objective is PRETRAIN_LOSS_TERM).
    PRETRAIN_LOSS_TERM = "pretrain_loss"
    CE_LOSS_TERM = "ce_loss"             # fine-tuning cross-entropy
    ACC_TERM = "acc"                     # fine-tuning training-batch accuracy

    @staticmethod
    def train(term: str) -> str:
        """Training-split average of a loss term, e.g. train('recon_loss') -> 'train_recon_loss'."""
        return f"train_{term}"

    @staticmethod
    def val(term: str) -> str:
        """Validation-split average of a loss term, e.g. val('kl_loss') -> 'val_kl_loss'."""
        return f"val_{term}"


# The pre-training proxy each `TrainConfig.pretrain_metric` reports.
PROXY_METRICS: dict[str, str] = {"knn": Metric.VAL_KNN_ACC, "linear_probe": Metric.VAL_PROBE_ACC}


# What a search may optimise, and the direction that makes sense for each. Proxies are not here:
# they rank encoders, not the fine-tuned models a search returns.
OBJECTIVES: dict[str, str] = {
    Metric.VAL_ACC: "max",
    Metric.BEST_VAL_ACC: "max",
    Metric.VAL_CE_LOSS: "min",
    Metric.PARAMS: "min",
    Metric.PRETRAIN_GFLOPS: "min",
    Metric.CLASSIFIER_GFLOPS: "min",
}

# -- how a trial ended ------------------------------------------------------------------------------
COMPLETED = "completed"
STOPPED_EARLY = "stopped_early"      # a scheduler stopped it before its last epoch
OUTCOME_DIVERGED = "diverged"        # a loss became NaN/inf; its best weights so far are kept
ERROR = "error"
PENDING = "pending"                  # started, nothing reported yet
LOST = "lost"                        # started by a driver that was killed; the resumed search did not continue it
OUTCOMES = (COMPLETED, STOPPED_EARLY, OUTCOME_DIVERGED, ERROR, PENDING, LOST)
USABLE_OUTCOMES = frozenset({COMPLETED, STOPPED_EARLY})  # trials whose checkpoint can be exported
OUTCOME_COLUMN = "outcome"           # the column of results.parquet and the key of result.json


class Column:
    """Columns of results.parquet besides the metric names (one row per trial)."""

    TRIAL_ID = Metric.TRIAL_ID
    OUTCOME = OUTCOME_COLUMN
    VARIANT = "variant"
    EPOCHS_RUN = "epochs_run"            # the last global_epoch reported
    WALL_TIME_S = "wall_time_s"
    CPU_HOURS = "cpu_hours"
    GPU_HOURS = "gpu_hours"
    CHECKPOINT = "checkpoint"            # the trial's latest checkpoint (it holds the best weights)
    REASON = "reason"                    # why it diverged or failed
    TRIAL_DIR = "trial_dir"
    PARETO = "pareto"                    # with several objectives: on the Pareto front
    PARAM_PREFIX = "param_"              # param_<name>: a searched parameter's value

    @staticmethod
    def param(name: str) -> str:
        return f"{Column.PARAM_PREFIX}{name}"


# A run that records no objective (or a train run) is ranked by this.
DEFAULT_OBJECTIVE = (Metric.BEST_VAL_ACC, "max")


# -- what a search optimises and what a trial runs on -----------------------------------------------
@dataclass(frozen=True)
class Objective:
    metric: str                       # a key of OBJECTIVES
    mode: str                         # "max" or "min"


@dataclass(frozen=True)
class Resources:
    """Per-trial compute: `workers` Ray Train workers with these CPUs/GPUs each."""

    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0
    max_failures: int = 2       # worker-group restarts from the last checkpoint before giving up

    def validate(self) -> "Resources":
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise UserInputError(f"resources: workers={self.workers!r} must be an integer >= 1")
        # NaN and inf would slip past a plain comparison (inf CPUs never fit, so Ray waits forever).
        for name, positive in (("cpus_per_worker", True), ("gpus_per_worker", False)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or (isinstance(value, float) and not math.isfinite(value)) or value < 0 or (positive and value == 0)):
                raise UserInputError(f"resources: {name}={value!r} must be a finite number {'> 0' if positive else '>= 0'}")
        if not isinstance(self.max_failures, int) or self.max_failures < 0:
            raise UserInputError(f"resources: max_failures={self.max_failures!r} must be an integer >= 0")
        return self

    @property
    def threads(self) -> int:
        """CPU threads each worker may use (torch and OpenMP would otherwise oversubscribe)."""
        return max(1, int(self.cpus_per_worker))

    def cpu_hours(self, wall_s: float) -> float:
        return wall_s / 3600 * self.workers * self.cpus_per_worker

    def gpu_hours(self, wall_s: float) -> float:
        return wall_s / 3600 * self.workers * self.gpus_per_worker


# -- the record saved with every checkpoint --------------------------------------------------------
@dataclass(frozen=True)
class BestSoFar:
    """The best a trial has reached; None until it has reached anything (no sentinels)."""

    pretrain_val_loss: float | None = None   # lowest val_pretrain_loss
    pretrain_epoch: int | None = None        # global epoch of the encoder fine-tuning starts from
    val_acc: float | None = None             # highest fine-tuned val_acc: selects the classifier
    epoch: int | None = None                 # global epoch of that classifier

    def pretrain_improved(self, loss: float) -> bool:
        return math.isfinite(loss) and (self.pretrain_val_loss is None or loss < self.pretrain_val_loss)

    def finetune_improved(self, acc: float) -> bool:
        return math.isfinite(acc) and (self.val_acc is None or acc > self.val_acc)


@dataclass(frozen=True)
class TrialMeta:
    """`meta.json` of a checkpoint: what deploy needs to rebuild and describe the classifier."""

    model_config: dict[str, Any]
    trial_config: dict[str, Any]
    class_names: list[str]
    layout: dict[str, Any]
    best: BestSoFar = field(default_factory=BestSoFar)
    global_epoch: int = 0
    last_metrics: dict[str, Any] = field(default_factory=dict)
    # The recipe that ran (`TrainConfig.recipe_record`): batch size, lr steps per phase, ...
    recipe: dict[str, Any] = field(default_factory=dict)
    # {"key": ..., "hit": bool, "location": ...} when the trial used the encoder cache
    encoder_cache: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=list)

    @classmethod
    def from_json(cls, text: str, source: str) -> "TrialMeta":
        """Parse and type-check `meta.json`; a wrong or missing field is a one-line UserInputError
        naming `source` and the field."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserInputError(f"{source}: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
        if not isinstance(raw, dict):
            raise UserInputError(f"{source}: expected a JSON object, found {type(raw).__name__}")
        expect = {"model_config": dict, "trial_config": dict, "class_names": list, "layout": dict,
                  "best": dict, "global_epoch": int, "last_metrics": dict, "encoder_cache": dict}
        for name, kind in expect.items():
            if name not in raw and name in ("model_config", "trial_config", "class_names", "layout"):
                raise UserInputError(f"{source}: field {name!r} is missing; the checkpoint is incomplete")
            if name in raw and (not isinstance(raw[name], kind) or isinstance(raw[name], bool)):
                raise UserInputError(f"{source}: field {name!r} must be a JSON {kind.__name__}, "
                                     f"found {type(raw[name]).__name__}")
        if not all(isinstance(c, str) for c in raw["class_names"]):
            raise UserInputError(f"{source}: field 'class_names' must be a list of strings")
        best_raw = raw.get("best", {})
        best_fields = {f.name for f in fields(BestSoFar)}
        best = {}
        for key, value in best_raw.items():
            if key not in best_fields:
                continue  # written by a newer raysearch; ignore what this one does not know
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise UserInputError(f"{source}: field 'best.{key}' must be a number or null, "
                                     f"found {type(value).__name__}")
            best[key] = value
        recipe = raw.get("recipe", {})
        if not isinstance(recipe, dict):
            raise UserInputError(f"{source}: field 'recipe' must be a JSON dict, found {type(recipe).__name__}")
        return cls(recipe=recipe, model_config=raw["model_config"], trial_config=raw["trial_config"],
                   class_names=list(raw["class_names"]), layout=raw["layout"], best=BestSoFar(**best),
                   global_epoch=int(raw.get("global_epoch", 0)), last_metrics=raw.get("last_metrics", {}),
                   encoder_cache=raw.get("encoder_cache", {}))

    def with_best(self, **changes: Any) -> "TrialMeta":
        return replace(self, best=replace(self.best, **changes))


# -- the summary of a `raysearch train` run ---------------------------------------------------------


@dataclass(frozen=True)
class TrainSummary:
    """`result.json` of `raysearch train --out DIR`: how the trial ended and where its checkpoint is."""

    outcome: str                              # COMPLETED, OUTCOME_DIVERGED or ERROR
    reason: str | None = None
    best_val_acc: float | None = None         # the best fine-tuned val_acc (None: never fine-tuned)
    best_epoch: int | None = None             # its global epoch
    best_pretrain_val_loss: float | None = None
    epochs_run: int = 0
    wall_time_s: float = 0.0
    cpu_hours: float = 0.0
    gpu_hours: float = 0.0
    checkpoint: str | None = None             # the latest checkpoint (holds the best weights)
    run_dir: str | None = None
    history_rows: int = 0
    final_metrics: dict[str, Any] = field(default_factory=dict)
    trial_config: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)        # the recipe that ran (batch, lr steps)
    # Metric.TEST_ACC, TEST_TOP5_ACC, TEST_PER_CLASS_ACC, TEST_CLIPS of the best-validation
    # classifier on the test split, computed once after training and never used for selection;
    # empty when the data has no test split or the trial never fine-tuned.
    test_metrics: dict[str, Any] = field(default_factory=dict)

    # The fields `raysearch train` prints (all of them with --json).
    HEADLINE: ClassVar[tuple[str, ...]] = ("outcome", "reason", "best_val_acc", "best_epoch", "epochs_run",
                                           "wall_time_s", "checkpoint")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str, source: str) -> "TrainSummary":
        """Parse and type-check result.json; a wrong field is a one-line UserInputError naming
        `source`. Fields this version does not know are ignored."""
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserInputError(f"{source}: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})") from None
        if not isinstance(raw, dict):
            raise UserInputError(f"{source}: expected a JSON object, found {type(raw).__name__}; "
                                 "re-run `raysearch train`")
        if OUTCOME_COLUMN not in raw and "status" in raw:
            raw = {**raw, OUTCOME_COLUMN: raw["status"]}  # written before the column was renamed
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name not in _SUMMARY_KINDS or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, _SUMMARY_KINDS[name]):
                raise UserInputError(f"{source}: field {name!r} has the wrong type ({type(value).__name__}); "
                                     "re-run `raysearch train`")
            values[name] = value
        if values.get(OUTCOME_COLUMN) not in OUTCOMES:
            raise UserInputError(f"{source}: field {OUTCOME_COLUMN!r} is {raw.get(OUTCOME_COLUMN)!r}, expected one of "
                                 f"{', '.join(OUTCOMES)}; re-run `raysearch train`")
        return cls(**values)


_NUMBER = (int, float)
_SUMMARY_KINDS: dict[str, type | tuple[type, ...]] = {
    "outcome": str, "reason": str, "best_val_acc": _NUMBER, "best_epoch": int, "best_pretrain_val_loss": _NUMBER,
    "epochs_run": int, "wall_time_s": _NUMBER, "cpu_hours": _NUMBER, "gpu_hours": _NUMBER, "checkpoint": str,
    "run_dir": str, "history_rows": int, "final_metrics": dict, "trial_config": dict,
    "recipe": dict, "test_metrics": dict,
}
assert set(_SUMMARY_KINDS) == {f.name for f in fields(TrainSummary)}
