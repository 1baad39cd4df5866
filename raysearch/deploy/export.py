"""Export a trained classifier as a deployment artifact, and load one back.

An artifact is a directory:

    config.json         artifact format, model configuration, export format, torch version,
                        sha256 of weights and program, the export-time verification
    weights.pt          state dict of the fine-tuned STTFormerClassifier
                        (loads with `torch.load(..., weights_only=True)`)
    classifier.pt2      `torch.export` ExportedProgram of the eval-mode classifier, batch axis
                        dynamic; `classifier.ts` (TorchScript) instead when torch.export cannot
                        capture the model (config.json says which)
    labels.json         class names; name i is output column i
    metrics.json        best metrics, last metrics, trial configuration, where it came from
    preprocessing.json  how raw input becomes the classifier's (N, C, T, V, M) input

`resolve_checkpoint` finds the checkpoint to export in a `raysearch train` or `raysearch search`
run (local path, file://, s3:// or gs://). `export_artifact` builds everything in a temporary
sibling of the output directory, checks that the program read back from disk reproduces the
eager model (atol 1e-4) at several batch sizes, and only then moves it into place.

`load_artifact` never unpickles: weights.pt is read with `weights_only=True`, and the program
file is checked for its checksum and structure but not loaded, because `torch.export.load` and
`torch.jit.load` may run pickled code. `Artifact.load_program()` loads it for callers that trust
the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import pickle
import shutil
import sys
import tempfile
import uuid
import warnings
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs
import torch

import raysearch
from models import ModelConfig, ModelConfigError, STTFormerClassifier

from ..data.preprocessing import artifact_preprocessing, read_preprocessing
from .. import runs
from ..contract import (BEST_CLASSIFIER_FILE, COMPLETED, DEFAULT_OBJECTIVE, META_FILE, OUTCOME_COLUMN, RESULTS_FILE,
                        SPACE_FILE, TRAIN_RESULT_FILE, USABLE_OUTCOMES, Column, Metric, TrialMeta)
from ..data.jsonfile import read_json_file
from ..errors import UserInputError, first_line, show

ARTIFACT_FORMAT = "raysearch-artifact"
ARTIFACT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
LABELS_FILE = "labels.json"
METRICS_FILE = "metrics.json"
PREPROCESSING_FILE = "preprocessing.json"
PROGRAM_FILES = {"torch.export": "classifier.pt2", "torchscript": "classifier.ts"}
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, METRICS_FILE, PREPROCESSING_FILE)

# Validation (SkeletonDataset(train=False), which TrialLoop uses) keeps the central 95% of the
# valid frames; a test pins this to SkeletonDataset's default.
TEST_CROP_FRACTION = 0.95
VERIFY_ATOL = 1e-4
# The first size is the one traced; the others prove the batch axis really is dynamic.
VERIFY_BATCH_SIZES = (3, 1, 5)

_REEXPORT = "re-export it with `raysearch export RUN_DIR --out DIR --overwrite`"


# -- finding the checkpoint -----------------------------------------------------------------------
def _finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _row_checkpoint(row: dict[str, Any]) -> str | None:
    value = row.get(Column.CHECKPOINT)
    return value if isinstance(value, str) and value else None


def _row_outcome(row: dict[str, Any]) -> str | None:
    value = row.get(Column.OUTCOME)
    return value if isinstance(value, str) else None


def _train_run(run_dir: str, trial_id: str | None) -> dict[str, Any]:
    if trial_id is not None:
        raise UserInputError(f"--trial {trial_id}: {run_dir} is a `raysearch train` run (one trial); drop --trial")
    summary = runs.read_train_summary(run_dir)
    reason = summary.reason or "no reason recorded"
    if not summary.checkpoint:
        raise UserInputError(f"run {run_dir}: {TRAIN_RESULT_FILE} has no checkpoint ({OUTCOME_COLUMN} "
                             f"{summary.outcome}: {reason}); the trial never reported one, re-run `raysearch train`")
    if summary.outcome != COMPLETED:
        raise UserInputError(f"run {run_dir}: the trial ended {summary.outcome} ({reason}); to export its best "
                             f"weights anyway, run `raysearch export {summary.checkpoint} --out DIR`, or re-train")
    metric, mode = DEFAULT_OBJECTIVE
    return {"kind": runs.TRAIN, "run_dir": run_dir, Column.TRIAL_ID: None, "checkpoint": summary.checkpoint,
            OUTCOME_COLUMN: summary.outcome, "objective": {"metric": metric, "mode": mode,
                                                           "value": summary.best_val_acc}}


def _search_run(run_dir: str, trial_id: str | None) -> dict[str, Any]:
    filesystem, path = runs.open_location(run_dir)
    if runs.is_file(filesystem, f"{path}/{SPACE_FILE}"):
        primary = runs.read_search(run_dir).primary
        metric, mode = primary.metric, primary.mode
    else:
        metric, mode = DEFAULT_OBJECTIVE
    rows = runs.read_results(run_dir)
    if not rows:
        raise UserInputError(f"run {run_dir}: no trial has reported yet; wait for the search to finish a trial")
    # Export takes each trial's best fine-tuned weights, whose accuracy is best_val_acc; the last
    # reported val_acc may be a later, worse epoch.
    rank_by = Metric.BEST_VAL_ACC if metric == Metric.VAL_ACC and Metric.BEST_VAL_ACC in rows[0] else metric
    ids = [str(r.get(Column.TRIAL_ID)) for r in rows]
    if trial_id is not None:
        matches = [r for r in rows if str(r.get(Column.TRIAL_ID)) == trial_id]
        if not matches:
            raise UserInputError(f"--trial {trial_id}: not in run {run_dir}; available: {', '.join(ids)}")
        row = matches[0]
        if _row_checkpoint(row) is None:
            with_checkpoint = [str(r.get(Column.TRIAL_ID)) for r in rows if _row_checkpoint(r)]
            raise UserInputError(f"--trial {trial_id}: has no checkpoint ({OUTCOME_COLUMN} {_row_outcome(row)}); "
                                 f"trials with one: {', '.join(with_checkpoint) or 'none'}")
    else:
        usable = [r for r in rows if _row_outcome(r) in USABLE_OUTCOMES
                  and _row_checkpoint(r) and _finite_number(r.get(rank_by))]
        if not usable:
            counts = Counter(_row_outcome(r) or "unknown" for r in rows)
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            raise UserInputError(f"run {run_dir}: no finished trial with a checkpoint and a {rank_by} ({summary}); "
                                 "fix the search (e.g. lower lr if trials diverged) and re-run, or pick one "
                                 "with --trial ID")
        usable.sort(key=lambda r: float(r[rank_by]), reverse=mode == "max")  # stable: ties keep order
        unreachable, skipped = [], []
        for row in usable:
            location = runs.checkpoint_location(_row_checkpoint(row), run_dir)
            found = runs.has_classifier(location)
            if found:
                break
            skipped.append(str(row.get(Column.TRIAL_ID)))
            if found is None:
                unreachable.append(location)
        else:
            if unreachable:
                raise UserInputError(f"run {run_dir}: {len(unreachable)} of its {len(usable)} finished trials have "
                                     f"checkpoints not reachable from here (first: {unreachable[0]}) and the rest "
                                     "no fine-tuned weights; run export where the run's storage is mounted")
            raise UserInputError(f"run {run_dir}: none of the {len(usable)} finished trials has fine-tuned weights "
                                 f"({BEST_CLASSIFIER_FILE}); they stopped before fine-tuning, so give trials more "
                                 "epochs or a later grace period")
    return {"kind": runs.SEARCH, "run_dir": run_dir, Column.TRIAL_ID: str(row.get(Column.TRIAL_ID)),
            "checkpoint": _row_checkpoint(row), OUTCOME_COLUMN: _row_outcome(row),
            "objective": {"metric": rank_by, "mode": mode, "value": row.get(rank_by)},
            "skipped": [] if trial_id is not None else skipped}


def _fetch(location: str) -> tuple[str, bool]:
    """A local directory holding the checkpoint's meta.json and best classifier; (path, is_copy).

    Local paths are used in place. URIs are copied into a fresh temporary directory (the caller
    removes it); only the two files export needs, not the resume state (optimizer and all).
    """
    filesystem, path = runs.open_location(location, "checkpoint")
    if "://" not in location:
        return path, False
    local = tempfile.mkdtemp(prefix="raysearch-export-")
    try:
        for name in (META_FILE, BEST_CLASSIFIER_FILE):
            if runs.is_file(filesystem, f"{path}/{name}"):
                pyarrow.fs.copy_files(f"{path}/{name}", os.path.join(local, name), source_filesystem=filesystem,
                                      destination_filesystem=pyarrow.fs.LocalFileSystem())
    except Exception as exc:  # network and permission errors surface as several pyarrow types
        shutil.rmtree(local, ignore_errors=True)
        raise UserInputError(f"checkpoint {location}: cannot be copied ({first_line(exc)})") from None
    return local, True


def resolve_checkpoint(run_dir: str, trial_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """The local checkpoint directory to export from `run_dir`, and where it came from.

    `run_dir` is a `raysearch train --out` directory (result.json names its checkpoint), a
    `raysearch search` run (results.parquet, else the trials' own results; the best trial by the
    primary objective among finished trials whose checkpoint holds fine-tuned weights, or
    `trial_id`), or a checkpoint directory itself. The info dict has `kind`, `run_dir`, `trial_id`,
    `checkpoint` (full location), `outcome`, `objective`, for searches `skipped` (better-ranked
    trials without fine-tuned weights) and `fetched`: when True the directory is a temporary
    copy of a remote checkpoint that the caller should delete.
    """
    filesystem, path = runs.open_location(run_dir)
    kind = runs.kind_of(filesystem, path)
    if kind == runs.CHECKPOINT:
        if trial_id is not None:
            raise UserInputError(f"--trial {trial_id}: {run_dir} is a single checkpoint; drop --trial")
        info = {"kind": kind, "run_dir": run_dir, Column.TRIAL_ID: None, "checkpoint": run_dir,
                OUTCOME_COLUMN: None, "objective": None}
    elif kind == runs.TRAIN:
        info = _train_run(run_dir, trial_id)
    elif kind == runs.SEARCH:
        info = _search_run(run_dir, trial_id)
    else:
        raise UserInputError(f"run {run_dir}: holds neither {TRAIN_RESULT_FILE} (train run), {RESULTS_FILE} / "
                             f"{SPACE_FILE} (search run) nor {META_FILE} (checkpoint); pass the directory "
                             "that `raysearch train` or `raysearch search` printed")
    # A checkpoint directory is its own location; joining it to itself would double a relative path.
    location = run_dir if kind == runs.CHECKPOINT else runs.checkpoint_location(info["checkpoint"], run_dir)
    local, fetched = _fetch(location)
    return local, {**info, "checkpoint": location, "fetched": fetched}


# -- reading a checkpoint -------------------------------------------------------------------------
def _model_config(fields: Any, where: str) -> ModelConfig:
    """The STTFormer classifier's ModelConfig from a JSON dict (lists become tuples)."""
    if not isinstance(fields, dict):
        raise UserInputError(f"{where}: model_config must be a JSON object")
    try:  # ModelConfig makes JSON lists tuples and checks every type, range and cap before any tensor
        return ModelConfig(**fields).replace(variant="sttformer")
    except TypeError as exc:  # an unknown field: written by a different version of models/
        raise UserInputError(f"{where}: model_config does not fit this version of models/ ({exc})") from None
    except ModelConfigError as exc:
        raise UserInputError(f"{where}: {exc}") from None


WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


def _weights_only_reason(message: str) -> str:
    """The line of torch's weights-only refusal that says what it refused, without its advice."""
    for line in message.splitlines():
        line = line.replace("WeightsUnpickler error:", "").strip()
        if "GLOBAL" in line or line.startswith(("Unsupported", "Can only", "Trying to")):
            return line.split(". ")[0][:160]
    return "not a plain tensor file"


def _read_weights(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A tensor state dict read with `weights_only=True`; anything else is refused in one line.

    Stricter than `models.read_state_dict` (no container unwrapping, no key renaming: an artifact
    holds exactly what export wrote) and it tells pickled code apart from a damaged file.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal below says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch (2.6 to 2.13) starts every refusal of its weights-only unpickler with this; the
        # reason (a GLOBAL not allowed, a blocked module, an opcode it does not run) comes later.
        if WEIGHTS_ONLY_REFUSAL in str(exc):
            raise UserInputError(f"file {path}: holds pickled Python objects (code or classes, not just tensors) "
                                 f"that weights_only loading refuses ({_weights_only_reason(str(exc))}), so it was "
                                 f"not loaded, for safety; {fix}") from None
        raise UserInputError(f"file {path}: corrupt, not a torch.save file ({first_line(exc, 120)}); {fix}") from None
    except EOFError:
        raise UserInputError(f"file {path}: corrupt, it ends early (truncated or empty); {fix}") from None
    except KeyError:  # the first byte is no pickle opcode: not a checkpoint at all
        raise UserInputError(f"file {path}: corrupt, neither a zip archive nor a pickle; {fix}") from None
    except (RuntimeError, OSError, ValueError, zipfile.BadZipFile) as exc:  # a damaged zip archive
        raise UserInputError(f"file {path}: corrupt, not a readable torch.save file ({first_line(exc, 120)}); "
                             f"{fix}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserInputError(f"file {path}: expected a state dict (names -> tensors); {fix}")
    return state


def _build_classifier(config: ModelConfig, state: dict[str, torch.Tensor], where: str, fix: str) -> STTFormerClassifier:
    classifier = STTFormerClassifier(config)
    try:
        classifier.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:2])[:240]
        raise UserInputError(f"{where}: weights do not fit the model configuration ({detail}); {fix}") from None
    return classifier.eval()


def _example_batch(config: ModelConfig, size: int, generator: torch.Generator) -> torch.Tensor:
    """(N, C, T, V, M) float32 like real input: coordinates ~0.3 m, and every other sample with
    only its first person present (absent persons are all zeros in the data format)."""
    x = 0.3 * torch.randn(size, config.num_channels, config.num_frames, config.num_joints, config.num_persons,
                          generator=generator)
    x[::2, ..., 1:] = 0.0
    return x


# -- exporting ------------------------------------------------------------------------------------
def _export_program(classifier: STTFormerClassifier, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(classifier, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def _export_torchscript(classifier: STTFormerClassifier, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(classifier, example, check_trace=False)
        torch.jit.save(traced, str(path))  # deprecated in favour of torch.export, which failed


def _load_program(export_format: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The saved program as a callable. May unpickle: only for files this process wrote or trusts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if export_format == "torch.export":
            return torch.export.load(path).module()
        return torch.jit.load(str(path), map_location="cpu")


# Tried in order; the first whose saved program reproduces the eager model is kept.
EXPORTERS: tuple[tuple[str, Callable[[STTFormerClassifier, torch.Tensor, Path], None]], ...] = (
    ("torch.export", _export_program),
    ("torchscript", _export_torchscript),
)


class _Mismatch(Exception):
    pass


@torch.no_grad()
def _verify(export_format: str, path: Path, classifier: STTFormerClassifier, batches: list[torch.Tensor]) -> float:
    """Largest |program - eager| over `batches`, read back from `path`; raises _Mismatch above atol."""
    program = _load_program(export_format, path)
    worst = 0.0
    for x in batches:
        expected, got = classifier(x), program(x)
        if got.shape != expected.shape:
            raise _Mismatch(f"output shape {tuple(got.shape)} != eager {tuple(expected.shape)} for batch {len(x)}")
        difference = float((got - expected).abs().max())
        if not difference <= VERIFY_ATOL:  # written so that NaN fails too
            raise _Mismatch(f"outputs differ from the eager model by {difference:.2e} > atol {VERIFY_ATOL:g} "
                            f"at batch size {len(x)}")
        worst = max(worst, difference)
    return worst


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """Non-finite floats (a diverged trial's last losses) become null: strict JSON for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(_json_safe(payload), indent=2, default=str, allow_nan=False) + "\n")


def _preprocessing(config: ModelConfig, layout: dict[str, Any], data_dir: Any) -> dict[str, Any]:
    """preprocessing.json: written by the data layer, which owns every step predict replays."""
    return artifact_preprocessing(num_channels=config.num_channels, num_frames=config.num_frames,
                                  num_joints=config.num_joints, num_persons=config.num_persons,
                                  test_crop_fraction=TEST_CROP_FRACTION, layout=layout, data_dir=data_dir)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse an `out` that export would not write: a file, or a non-empty non-artifact directory."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: is a file; choose a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UserInputError(f"--out {out}: not empty; choose a new directory or pass --overwrite to replace "
                                 "the artifact in it")
        try:
            is_artifact = json.loads((out / CONFIG_FILE).read_text()).get("format") == ARTIFACT_FORMAT
        except (OSError, ValueError, AttributeError):
            is_artifact = False
        if not is_artifact:
            raise UserInputError(f"--out {out}: not a raysearch artifact ({CONFIG_FILE} does not say format "
                                 f"{ARTIFACT_FORMAT}), so --overwrite will not replace it; choose another directory")


def _place(staging: Path, out: Path) -> None:
    """Move the finished staging directory to `out`. An old artifact is renamed aside first and
    only deleted once the new one is in place, so a failure leaves one complete artifact."""
    if not out.exists():
        os.rename(staging, out)
        return
    aside = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, aside)
    try:
        os.rename(staging, out)
    except OSError:
        os.rename(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def export_artifact(checkpoint_dir: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
                    *, source: dict[str, Any] | None = None) -> Path:
    """Write the artifact of the checkpoint's best fine-tuned classifier to `out_dir`.

    `source` (e.g. the info from `resolve_checkpoint`) is recorded in metrics.json. An existing
    non-empty `out_dir` is refused unless `overwrite`, and then only when it holds an artifact.
    """
    checkpoint, out = Path(checkpoint_dir), Path(out_dir).absolute()
    check_out_dir(out, overwrite)  # before the slow part
    fix = "export a checkpoint written by `raysearch train` or `raysearch search`"
    missing = [name for name in (META_FILE, BEST_CLASSIFIER_FILE) if not (checkpoint / name).is_file()]
    if META_FILE in missing:
        raise UserInputError(f"checkpoint {checkpoint}: no {META_FILE}; {fix}")
    if missing:
        raise UserInputError(f"checkpoint {checkpoint}: no {BEST_CLASSIFIER_FILE}, the trial never finished a "
                             "fine-tuning epoch; export a trial with finetune_epochs >= 1")
    meta_where = f"file {checkpoint / META_FILE}"
    try:
        meta = TrialMeta.from_json((checkpoint / META_FILE).read_text(errors="replace"), meta_where)
    except UserInputError as exc:
        raise UserInputError(f"{exc}; {fix}") from None
    config = _model_config(meta.model_config, meta_where)
    class_names = meta.class_names
    if len(class_names) != config.num_classes or not all(isinstance(n, str) for n in class_names):
        raise UserInputError(f"{meta_where}: class_names must list {config.num_classes} names (num_classes), "
                             f"each a string; {fix}")
    state = _read_weights(checkpoint / BEST_CLASSIFIER_FILE, fix)
    classifier = _build_classifier(config, state, f"file {checkpoint / BEST_CLASSIFIER_FILE}", fix)

    generator = torch.Generator().manual_seed(0)
    batches = [_example_batch(config, size, generator) for size in VERIFY_BATCH_SIZES]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")  # same filesystem: rename works
    staging.mkdir()  # unlike mkdtemp's 0700, the artifact gets the user's usual permissions
    try:
        torch.save(state, staging / WEIGHTS_FILE)
        failures = []
        for export_format, exporter in EXPORTERS:
            program_path = staging / PROGRAM_FILES[export_format]
            try:
                exporter(classifier, batches[0], program_path)
                max_abs_diff = _verify(export_format, program_path, classifier, batches)
                break
            except Exception as exc:  # tracers raise many types; any failure means: try the next format
                failures.append(f"{export_format}: {first_line(exc, 160)}")
                program_path.unlink(missing_ok=True)
        else:
            raise UserInputError(f"checkpoint {checkpoint}: export refused, no program format reproduces the eager "
                                 f"model ({'; '.join(failures)}); nothing was written to {out}")
        if failures:
            print(f"export: fell back to {export_format} ({failures[0]})", file=sys.stderr)
        _write_json(staging / CONFIG_FILE, {
            "format": ARTIFACT_FORMAT,
            "format_version": ARTIFACT_VERSION,
            "export_format": export_format,
            "program_file": program_path.name,
            "weights_file": WEIGHTS_FILE,
            "model_config": asdict(config),
            "input": {"axes": "N, C, T, V, M", "shape": [None, config.num_channels, config.num_frames,
                                                        config.num_joints, config.num_persons],
                      "dtype": "float32", "dynamic": ["N"]},
            "output": {"shape": [None, config.num_classes], "values": "logits; softmax gives probabilities of "
                                                                      "the classes in labels.json order"},
            "torch_version": torch.__version__,
            "raysearch_version": raysearch.__version__,
            "verification": {"atol": VERIFY_ATOL, "max_abs_diff": max_abs_diff,
                             "batch_sizes": list(VERIFY_BATCH_SIZES), "failed_formats": failures},
            "sha256": {WEIGHTS_FILE: _sha256(staging / WEIGHTS_FILE), program_path.name: _sha256(program_path)},
        })
        _write_json(staging / LABELS_FILE, class_names)
        _write_json(staging / METRICS_FILE, {
            Metric.BEST_VAL_ACC: meta.best.val_acc,
            "best_epoch": meta.best.epoch,
            "best_pretrain_val_loss": meta.best.pretrain_val_loss,
            Metric.GLOBAL_EPOCH: meta.global_epoch,
            "last_metrics": meta.last_metrics,
            "trial_config": meta.trial_config,
            "source": {k: v for k, v in (source or {"checkpoint": str(checkpoint)}).items() if k != "fetched"},
        })
        _write_json(staging / PREPROCESSING_FILE,
                    _preprocessing(config, meta.layout, meta.trial_config.get("data_dir")))
        _place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


# -- loading --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A validated artifact; `classifier` is the eager model with weights.pt, in eval mode."""

    path: Path
    config: ModelConfig
    class_names: tuple[str, ...]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]
    export_format: str
    program_file: Path
    classifier: STTFormerClassifier

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) preprocessed input -> (N, classes) logits."""
        return self.classifier(x)

    def load_program(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The exported program as a callable. torch.export.load / torch.jit.load may unpickle,
        so call this only for artifacts you trust (e.g. ones you exported yourself)."""
        return _load_program(self.export_format, self.program_file)


def _load_json(path: Path, expected: type, fix: str) -> Any:
    value = read_json_file(path, fix)  # size and nesting capped
    if not isinstance(value, expected):
        raise UserInputError(f"file {path}: expected a JSON {'object' if expected is dict else 'list'}; {fix}")
    return value


# metrics.json fields and the JSON types export writes them with (None: null allowed).
METRICS_FIELDS: dict[str, tuple[type, ...]] = {
    Metric.BEST_VAL_ACC: (numbers.Real, type(None)), "best_epoch": (int, type(None)),
    "best_pretrain_val_loss": (numbers.Real, type(None)), Metric.GLOBAL_EPOCH: (int,),
    "last_metrics": (dict,), "trial_config": (dict,), "source": (dict,),
}
MAX_CLASS_NAME_CHARS = 200


def _check_fields(obj: dict[str, Any], kinds: dict[str, tuple[type, ...]], where: str, fix: str) -> None:
    """Each present field of `obj` has one of its JSON types (a bool is no number)."""
    for name, allowed in kinds.items():
        if name in obj:
            value = obj[name]
            if (isinstance(value, bool) or not isinstance(value, allowed)
                    or (isinstance(value, float) and not math.isfinite(value))):
                kinds_text = " or ".join("null" if k is type(None) else {dict: "object", numbers.Real: "number",
                                                                          int: "integer", str: "string"}[k]
                                         for k in allowed)
                raise UserInputError(f"{where}: field {name!r} must be {kinds_text}, found "
                                     f"{type(value).__name__} {show(value)}; {fix}")


def _check_program_structure(path: Path, export_format: str, fix: str) -> None:
    """The program file is a zip archive of the expected kind, read without executing any of it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if export_format == "torch.export":
                configs = [n for n in names if n.endswith(("_weights_config.json", "_constants_config.json"))]
                if not any(n.endswith("models/model.json") for n in names) or not configs:
                    raise UserInputError(f"file {path}: not a torch.export program archive; {fix}")
                # Payloads marked use_pickle would be unpickled by torch.export.load.
                for name in configs:
                    entries = json.loads(archive.read(name)).get("config", {})
                    if any(isinstance(e, dict) and e.get("use_pickle") for e in entries.values()):
                        raise UserInputError(f"file {path}: holds pickled payloads; {fix}")
            elif not any(n.endswith("/data.pkl") for n in names):
                raise UserInputError(f"file {path}: not a TorchScript archive; {fix}")
    except UserInputError:
        raise  # already one line; it is a ValueError, which the next clause would wrap in itself
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise UserInputError(f"file {path}: corrupt ({str(exc)[:120]}); {fix}") from None


def load_artifact(artifact_dir: str | os.PathLike) -> Artifact:
    """Read and check every file of an artifact; any problem is one UserInputError line."""
    root = Path(artifact_dir)
    if not root.is_dir():
        raise UserInputError(f"artifact {root}: no such directory; pass the --out directory of `raysearch export`")
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise UserInputError(f"artifact {root}: missing {', '.join(missing)}; {_REEXPORT}")
    info = _load_json(root / CONFIG_FILE, dict, _REEXPORT)
    if info.get("format") != ARTIFACT_FORMAT or info.get("format_version") != ARTIFACT_VERSION:
        raise UserInputError(f"file {root / CONFIG_FILE}: format {info.get('format')!r} version "
                             f"{info.get('format_version')!r}, this raysearch reads {ARTIFACT_FORMAT} "
                             f"{ARTIFACT_VERSION}; {_REEXPORT}")
    export_format = info.get("export_format")
    if not isinstance(export_format, str) or export_format not in PROGRAM_FILES or info.get("program_file") != PROGRAM_FILES[export_format]:
        raise UserInputError(f"file {root / CONFIG_FILE}: export_format {export_format!r} / program_file "
                             f"{info.get('program_file')!r} must be one of {PROGRAM_FILES}; {_REEXPORT}")
    program_file = root / PROGRAM_FILES[export_format]
    if not program_file.is_file():
        raise UserInputError(f"artifact {root}: missing {program_file.name}; {_REEXPORT}")
    config = _model_config(info.get("model_config"), f"file {root / CONFIG_FILE}")

    checksums = info.get("sha256")
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        raise UserInputError(f"file {root / CONFIG_FILE}: field 'sha256' must be an object of file name -> "
                             f"sha256 hex string; {_REEXPORT}")

    class_names = _load_json(root / LABELS_FILE, list, _REEXPORT)
    if not class_names or not all(isinstance(n, str) and len(n) <= MAX_CLASS_NAME_CHARS for n in class_names):
        raise UserInputError(f"file {root / LABELS_FILE}: must be a non-empty list of class names (strings of at "
                             f"most {MAX_CLASS_NAME_CHARS} characters); {_REEXPORT}")
    metrics = _load_json(root / METRICS_FILE, dict, _REEXPORT)
    _check_fields(metrics, METRICS_FIELDS, f"file {root / METRICS_FILE}", _REEXPORT)
    preprocessing = _load_json(root / PREPROCESSING_FILE, dict, _REEXPORT)
    read_preprocessing(preprocessing, root / PREPROCESSING_FILE, num_channels=config.num_channels,
                       num_frames=config.num_frames, num_joints=config.num_joints, num_persons=config.num_persons)

    state = _read_weights(root / WEIGHTS_FILE, _REEXPORT)
    for name in (WEIGHTS_FILE, program_file.name):
        if checksums.get(name) != _sha256(root / name):
            raise UserInputError(f"file {root / name}: changed since export (sha256 differs from {CONFIG_FILE}); "
                                 f"{_REEXPORT}")
    classifier = _build_classifier(config, state, f"file {root / WEIGHTS_FILE}", _REEXPORT)
    outputs = classifier.fc.out_features
    if len(class_names) != outputs:
        raise UserInputError(f"file {root / LABELS_FILE}: {len(class_names)} class names but the classifier has "
                             f"{outputs} outputs; give one name per output or {_REEXPORT}")
    _check_program_structure(program_file, export_format, _REEXPORT)
    return Artifact(root, config, tuple(class_names), preprocessing, metrics, export_format, program_file, classifier)
