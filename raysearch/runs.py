"""Reading run directories: the one reader that `raysearch report` and `raysearch export` share.

A run is a local path or any pyarrow filesystem URI (file://, s3://, gs://). Three kinds:

- a search run (`raysearch search`): `search_space.json` (written by the search, read back as a
  `SearchRecord`), one Tune directory per trial holding `params.json` (the trial's parameters) and
  `result.json` (one JSON object per report), and after `raysearch report` `results.parquet`;
- a train run (`raysearch train --out DIR`): `result.json`, one `TrainSummary`;
- a checkpoint directory: `meta.json` (a `TrialMeta`) beside the weights.

Only plain JSON and Parquet are read, never Ray's pickled experiment state. This module sits below
`raysearch.tune` and `raysearch.deploy` and imports neither (nor Ray).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs

from .contract import (BEST_CLASSIFIER_FILE, COMPLETED, DEFAULT_OBJECTIVE, ERROR, LOST, META_FILE,
                       OUTCOME_DIVERGED, PENDING, RESULTS_FILE, SPACE_FILE, STOPPED_EARLY, TRAIN_RESULT_FILE,
                       TRIAL_DIR_PREFIX, TRIAL_LOST_FILE, TUNE_ERROR_FILE, TUNE_PARAMS_FILE, TUNE_RESULT_FILE,
                       Column, Metric, Objective, Resources, TrainSummary, TrialMeta)
from .errors import UserInputError, first_line, show

CHECKPOINT, TRAIN, SEARCH = "checkpoint", "train", "search"   # the kinds of run directory

# A run name is one path component under the storage root: no separators, no "..", no "?".
MAX_RUN_NAME_CHARS = 100
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# Per-trial values a results row carries: the latest value each reported (a metric a phase does
# not report, e.g. val_acc during pre-training, keeps the value from the reports that had it).
ROW_METRICS = (Metric.VAL_ACC, Metric.BEST_VAL_ACC, Metric.VAL_CE_LOSS, Metric.VAL_KNN_ACC,
               Metric.VAL_PROBE_ACC, Metric.PARAMS, Metric.PRETRAIN_GFLOPS, Metric.CLASSIFIER_GFLOPS)


# -- locations -------------------------------------------------------------------------------------
def open_location(location: str, what: str = "run") -> tuple[pyarrow.fs.FileSystem, str]:
    """(filesystem, path) of a directory given as a local path or a URI; refuses anything else."""
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(location if "://" in location
                                                          else os.path.abspath(location))
    except Exception as exc:  # pyarrow raises several types for bad URIs and missing credentials
        raise UserInputError(f"{what} {location}: cannot open ({first_line(exc)})") from None
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise UserInputError(f"{what} {location}: no such directory; pass the directory that "
                             "`raysearch train` or `raysearch search` printed")
    return filesystem, path.rstrip("/") or "/"


def is_file(filesystem: pyarrow.fs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type == pyarrow.fs.FileType.File


def read_text(filesystem: pyarrow.fs.FileSystem, path: str) -> str | None:
    """The file's text, or None when there is no such file."""
    if not is_file(filesystem, path):
        return None
    with filesystem.open_input_stream(path) as f:
        return f.read().decode(errors="replace")


def write_text(location: str, name: str, text: str) -> str:
    """Write `name` into the directory `location` (created if needed); returns the file's path."""
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(location if "://" in location
                                                          else os.path.abspath(location))
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path.rstrip('/')}/{name}") as f:
            f.write(text.encode())
    except OSError as exc:
        raise UserInputError(f"{location}: cannot write {name} ({first_line(exc)})") from None
    return f"{path.rstrip('/')}/{name}"


def is_run_name(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_RUN_NAME_CHARS and _RUN_NAME.fullmatch(value) is not None


def check_run_name(value: Any, where: str) -> str:
    """`value` when it can name a run directory (one path component of safe characters)."""
    if not is_run_name(value):
        raise UserInputError(f"{where} {show(value)}: not a usable run name; use up to {MAX_RUN_NAME_CHARS} letters, "
                             "digits, '.', '_' and '-', starting with a letter or digit (it names the run directory)")
    return value


def join_uri(location: str, *names: str) -> str:
    """`location` (a local path or a URI) with `names` appended to its path. A URI's query
    (`s3://bucket/runs?endpoint_override=HOST:PORT&scheme=http`, see cluster/README.md) stays at
    the end, where pyarrow and Ray read it; `f"{location}/{name}"` would put the name in the query."""
    base, mark, query = location.partition("?") if "://" in location else (location, "", "")
    return "/".join([base.rstrip("/"), *names]) + mark + query


def uri_of(location: str, path: str) -> str:
    """`path` (as pyarrow names it) written the way `location` was: with its scheme and query, or plain."""
    if "://" not in location:
        return path
    scheme = location.split("://", 1)[0]
    _, mark, query = location.partition("?")
    return (f"file://{path}" if scheme == "file" else f"{scheme}://{path.lstrip('/')}") + mark + query


def checkpoint_location(checkpoint: str, run_dir: str) -> str:
    """Where a recorded checkpoint lives. Ray records storage paths without the URI scheme
    (`bucket/exp/checkpoint_000003` for s3://), so a scheme-less path inherits the run's."""
    if "://" in checkpoint:
        return checkpoint
    if "://" in run_dir:
        return uri_of(run_dir, checkpoint)
    return checkpoint if os.path.isabs(checkpoint) else os.path.join(run_dir, checkpoint)


def has_classifier(location: str) -> bool | None:
    """Whether the checkpoint holds fine-tuned weights; None when it cannot be reached."""
    try:
        filesystem, path = open_location(location, "checkpoint")
    except UserInputError:
        return None
    return is_file(filesystem, f"{path}/{BEST_CLASSIFIER_FILE}")


def kind_of(filesystem: pyarrow.fs.FileSystem, path: str) -> str | None:
    """CHECKPOINT, TRAIN or SEARCH for a run directory; None when it is none of them."""
    if is_file(filesystem, f"{path}/{META_FILE}"):
        return CHECKPOINT
    if is_file(filesystem, f"{path}/{RESULTS_FILE}") or is_file(filesystem, f"{path}/{SPACE_FILE}"):
        return SEARCH
    if is_file(filesystem, f"{path}/{TRAIN_RESULT_FILE}"):
        return TRAIN
    return None


# -- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchRecord:
    """`search_space.json`: what `report` and `export` need to know about a search."""

    name: str                               # the run's name (its directory), not the space's
    objectives: tuple[Objective, ...]       # the first is the primary
    max_epochs: int                         # pre-train + fine-tune epochs of a trial that runs to the end
    parameters: tuple[str, ...]             # the searched parameters, in YAML order
    resources: Resources
    data_dir: str | None = None
    source: str | None = None               # the search-space YAML

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @property
    def primary(self) -> Objective:
        return self.objectives[0]

    @classmethod
    def from_json(cls, text: str, source: str) -> "SearchRecord":
        fix = "re-create it by running the search again"
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise UserInputError(f"{source}: not valid JSON ({getattr(exc, 'msg', type(exc).__name__)}); "
                                 f"{fix}") from None
        if not isinstance(raw, dict):
            raise UserInputError(f"{source}: expected a JSON object; {fix}")
        objectives = raw.get("objectives") or [dict(zip(("metric", "mode"), DEFAULT_OBJECTIVE))]
        if not isinstance(objectives, list) or not all(
                isinstance(o, dict) and isinstance(o.get("metric"), str) and o.get("mode") in ("min", "max")
                for o in objectives):
            raise UserInputError(f"{source}: objectives must be a list of {{metric, mode: min|max}}, got "
                                 f"{str(objectives)[:120]}; {fix}")
        max_epochs, parameters = raw.get("max_epochs", 0), raw.get("parameters", [])
        if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 0:
            raise UserInputError(f"{source}: max_epochs must be an integer >= 0, got {max_epochs!r}; {fix}")
        if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
            raise UserInputError(f"{source}: parameters must be a list of names; {fix}")
        resources = raw.get("resources", {})
        known = Resources.__dataclass_fields__
        if not isinstance(resources, dict):
            raise UserInputError(f"{source}: resources must be a JSON object; {fix}")
        try:
            resources = Resources(**{k: v for k, v in resources.items() if k in known}).validate()
        except UserInputError as exc:
            raise UserInputError(f"{source}: {exc}; {fix}") from None
        name = raw.get("name")
        return cls(name=name if is_run_name(name) else "search",  # it names report-<name>/
                   objectives=tuple(Objective(o["metric"], o["mode"]) for o in objectives),
                   max_epochs=max_epochs, parameters=tuple(parameters), resources=resources,
                   data_dir=raw.get("data_dir") if isinstance(raw.get("data_dir"), str) else None,
                   source=raw.get("source") if isinstance(raw.get("source"), str) else None)


def _read_record(location: str, what: str, name: str, parse, expected: str):
    """Parse the record file `name` of the directory `location` with `parse(text, source)`."""
    filesystem, path = open_location(location, what)
    text = read_text(filesystem, f"{path}/{name}")
    if text is None:
        raise UserInputError(f"{what} {location}: no {name}; pass {expected}")
    return parse(text, f"file {location.rstrip('/')}/{name}")


def read_search(run_dir: str) -> SearchRecord:
    return _read_record(run_dir, "run", SPACE_FILE, SearchRecord.from_json,
                        "the directory that `raysearch search` printed")


def read_train_summary(run_dir: str) -> TrainSummary:
    return _read_record(run_dir, "run", TRAIN_RESULT_FILE, TrainSummary.from_json,
                        "the --out directory of `raysearch train`")


def read_meta(checkpoint_dir: str) -> TrialMeta:
    """The TrialMeta of a checkpoint (local path or URI)."""
    return _read_record(checkpoint_dir, "checkpoint", META_FILE, TrialMeta.from_json,
                        "a checkpoint written by `raysearch train` or `raysearch search`")


# -- Tune trial directories ------------------------------------------------------------------------
def trial_dirs(filesystem: pyarrow.fs.FileSystem, run_path: str) -> list[str]:
    """The run's Tune trial directories (those with a params.json), sorted by path."""
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(run_path))
    return sorted(e.path for e in entries if e.type == pyarrow.fs.FileType.Directory
                  and is_file(filesystem, f"{e.path}/{TUNE_PARAMS_FILE}"))


def trial_params(filesystem: pyarrow.fs.FileSystem, trial_path: str) -> dict[str, Any]:
    text = read_text(filesystem, f"{trial_path}/{TUNE_PARAMS_FILE}") or "{}"
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"file {trial_path}/{TUNE_PARAMS_FILE}: not valid JSON ({exc.msg})") from None
    if not isinstance(params, dict):
        raise UserInputError(f"file {trial_path}/{TUNE_PARAMS_FILE}: expected a JSON object")
    return params


def trial_history(filesystem: pyarrow.fs.FileSystem, trial_path: str) -> list[dict[str, Any]]:
    """Every report of a trial, oldest first. A last line cut short (the search was killed while
    Tune wrote it) is skipped with a warning; a damaged line before it is an error."""
    where = f"{trial_path}/{TUNE_RESULT_FILE}"
    lines = [line for line in (read_text(filesystem, where) or "").splitlines() if line.strip()]
    history = []
    for number, line in enumerate(lines, 1):
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            report = None
        if not isinstance(report, dict):
            if number == len(lines):
                warnings.warn(f"{where}: line {number} is cut short (the search was stopped while writing it); "
                              "skipped", stacklevel=2)
                break
            raise UserInputError(f"file {where}: line {number} is not a JSON object; the trial's results are "
                                 "damaged, delete the trial directory or re-run the search")
        history.append(report)
    return history


def trial_outcome(history: list[dict[str, Any]], errored: bool, lost: bool, max_epochs: int) -> str:
    if errored:
        return ERROR
    if lost:
        return LOST
    if not history:
        return PENDING
    last = history[-1]
    if last.get(Metric.DIVERGED):
        return OUTCOME_DIVERGED
    return COMPLETED if last.get(Metric.GLOBAL_EPOCH, 0) >= max_epochs else STOPPED_EARLY


def trial_row(filesystem: pyarrow.fs.FileSystem, run_dir: str, trial_path: str,
              search: SearchRecord) -> dict[str, Any]:
    """One results row: the trial's outcome, parameters, latest metrics, cost and checkpoint."""
    params = trial_params(filesystem, trial_path)
    history = trial_history(filesystem, trial_path)
    errored = is_file(filesystem, f"{trial_path}/{TUNE_ERROR_FILE}")
    lost = is_file(filesystem, f"{trial_path}/{TRIAL_LOST_FILE}")
    latest: dict[str, Any] = {}
    for report in history:
        latest.update(report)
    last = history[-1] if history else {}
    wall = float(last.get(Metric.TIME_TOTAL_S, 0.0))
    return {
        Column.TRIAL_ID: last.get(Metric.TRIAL_ID) or posixpath.basename(trial_path).removeprefix(TRIAL_DIR_PREFIX),
        Column.OUTCOME: trial_outcome(history, errored, lost, search.max_epochs),
        **{Column.param(name): params.get(name) for name in search.parameters},
        Column.VARIANT: params.get(Column.VARIANT),
        Column.EPOCHS_RUN: int(last.get(Metric.GLOBAL_EPOCH, 0)),
        **{metric: latest.get(metric) for metric in ROW_METRICS},
        Column.WALL_TIME_S: wall,
        Column.CPU_HOURS: search.resources.cpu_hours(wall),
        Column.GPU_HOURS: search.resources.gpu_hours(wall),
        Column.CHECKPOINT: latest.get(Metric.CHECKPOINT_PATH) or _tune_checkpoint(history, trial_path),
        Column.REASON: last.get(Metric.STATUS_REASON),
        Column.TRIAL_DIR: uri_of(run_dir, trial_path),
    }


def _tune_checkpoint(history: list[dict[str, Any]], trial_path: str) -> str | None:
    """The latest checkpoint of a trial that ran in its Tune actor (one worker): Tune names it in
    `checkpoint_dir_name`, inside the trial directory."""
    name = next((r[Metric.CHECKPOINT_DIR_NAME] for r in reversed(history) if r.get(Metric.CHECKPOINT_DIR_NAME)), None)
    return f"{trial_path}/{name}" if isinstance(name, str) else None


def collect_results(run_dir: str):
    """The run's trials as a DataFrame (one row per trial), best primary objective first."""
    import pandas as pd

    filesystem, run_path = open_location(run_dir)
    search = read_search(run_dir)
    frame = pd.DataFrame([trial_row(filesystem, run_dir, path, search) for path in trial_dirs(filesystem, run_path)])
    if frame.empty:
        return frame
    primary = search.primary
    if primary.metric not in frame:
        frame[primary.metric] = None
    return frame.sort_values(primary.metric, ascending=primary.mode == "min", na_position="last",
                             ignore_index=True)


def read_results(run_dir: str) -> list[dict[str, Any]]:
    """A search's rows: results.parquet when `report` wrote one, else read from the trials."""
    filesystem, path = open_location(run_dir)
    results = f"{path}/{RESULTS_FILE}"
    if is_file(filesystem, results):
        import pyarrow.parquet

        try:
            return pyarrow.parquet.read_table(results, filesystem=filesystem).to_pylist()
        except Exception as exc:  # pyarrow: ArrowInvalid, OSError, ... for a damaged file
            raise UserInputError(f"file {run_dir}/{RESULTS_FILE}: cannot be read ({first_line(exc)}); "
                                 f"re-create it with `raysearch report {run_dir}`") from None
    return collect_results(run_dir).to_dict("records")


def write_results(run_dir: str, frame) -> str:
    """results.parquet into the run; returns its path."""
    filesystem, run_path = open_location(run_dir)
    target = f"{run_path}/{RESULTS_FILE}"
    with filesystem.open_output_stream(target) as f:
        frame.to_parquet(f, index=False)
    return target
