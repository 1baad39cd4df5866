"""One row per trial from a search run directory, read from Tune's plain JSON files.

Each Tune trial directory holds `params.json` (the trial's config) and `result.json` (one JSON
object per report). We read those directly, never Ray's pickled experiment state, through pyarrow
filesystems so local paths and `s3://` / `gs://` URIs work alike.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pandas as pd
import pyarrow.fs

from ..errors import UserInputError
from .search import SPACE_FILE

RESULTS_FILE = "results.parquet"
OUTCOMES = ("completed", "stopped_early", "diverged", "error", "pending")


def open_run(run_dir: str) -> tuple[pyarrow.fs.FileSystem, str]:
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(run_dir if "://" in run_dir else
                                                          posixpath.abspath(run_dir))
    except Exception as exc:
        raise UserInputError(f"run {run_dir}: cannot open ({str(exc).splitlines()[0][:160]})") from None
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        raise UserInputError(f"run {run_dir}: no such directory; pass the directory `raysearch search` printed")
    return filesystem, path


def read_text(filesystem: pyarrow.fs.FileSystem, path: str) -> str | None:
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as f:
        return f.read().decode()


def read_space(filesystem: pyarrow.fs.FileSystem, run_path: str) -> dict[str, Any]:
    text = read_text(filesystem, f"{run_path}/{SPACE_FILE}")
    if text is None:
        raise UserInputError(f"run {run_path}: no {SPACE_FILE}; is this a `raysearch search` run directory?")
    return json.loads(text)


def trial_history(filesystem: pyarrow.fs.FileSystem, trial_path: str) -> list[dict[str, Any]]:
    text = read_text(filesystem, f"{trial_path}/result.json") or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _trial_dirs(filesystem: pyarrow.fs.FileSystem, run_path: str) -> list[str]:
    entries = filesystem.get_file_info(pyarrow.fs.FileSelector(run_path))
    return sorted(e.path for e in entries if e.type == pyarrow.fs.FileType.Directory
                  and read_text(filesystem, f"{e.path}/params.json") is not None)


def _outcome(history: list[dict], errored: bool, max_epochs: int) -> str:
    if errored:
        return "error"
    if not history:
        return "pending"
    last = history[-1]
    if last.get("diverged"):
        return "diverged"
    return "completed" if last.get("global_epoch", 0) >= max_epochs else "stopped_early"


def collect_results(run_dir: str) -> pd.DataFrame:
    """The run's trials as a DataFrame (one row per trial), best primary objective first."""
    filesystem, run_path = open_run(run_dir)
    space = read_space(filesystem, run_path)
    max_epochs = int(space["max_epochs"])
    resources = space.get("resources", {})
    workers = resources.get("workers", 1)
    rows = []
    for trial_path in _trial_dirs(filesystem, run_path):
        config = json.loads(read_text(filesystem, f"{trial_path}/params.json"))
        history = trial_history(filesystem, trial_path)
        errored = read_text(filesystem, f"{trial_path}/error.txt") is not None
        last = history[-1] if history else {}
        wall = float(last.get("time_total_s", 0.0))
        row = {
            "trial_id": last.get("trial_id") or posixpath.basename(trial_path),
            "outcome": _outcome(history, errored, max_epochs),
            **{f"param_{name}": config.get(name) for name in space["parameters"]},
            "variant": config.get("variant"),
            "epochs_run": int(last.get("global_epoch", 0)),
            "val_acc": last.get("val_acc"),
            "best_val_acc": last.get("best_val_acc"),
            "max_val_acc": max((h["val_acc"] for h in history if "val_acc" in h), default=None),
            "params": last.get("params"),
            "pretrain_gflops": last.get("pretrain_gflops"),
            "classifier_gflops": last.get("classifier_gflops"),
            "wall_time_s": wall,
            "cpu_hours": wall / 3600 * workers * resources.get("cpus_per_worker", 1),
            "gpu_hours": wall / 3600 * workers * resources.get("gpus_per_worker", 0),
            "checkpoint": last.get("checkpoint_path"),
            "reason": last.get("status_reason"),
            "trial_dir": trial_path if "://" not in run_dir else run_dir.split("://")[0] + "://" + trial_path,
        }
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    primary = space["objectives"][0]
    return frame.sort_values(primary["metric"], ascending=primary["mode"] == "min", na_position="last",
                             ignore_index=True)


def pareto_front(frame: pd.DataFrame, objectives: list[dict[str, str]]) -> pd.Series:
    """Boolean mask of trials no other trial beats on every objective."""
    scored = frame.dropna(subset=[o["metric"] for o in objectives])
    signs = [1.0 if o["mode"] == "max" else -1.0 for o in objectives]
    values = scored[[o["metric"] for o in objectives]].to_numpy(dtype=float) * signs
    front = pd.Series(False, index=frame.index)
    for i, row in zip(scored.index, values):
        dominated = ((values >= row).all(axis=1) & (values > row).any(axis=1)).any()
        front[i] = not dominated
    return front


def write_results(run_dir: str, frame: pd.DataFrame) -> str:
    filesystem, run_path = open_run(run_dir)
    target = f"{run_path}/{RESULTS_FILE}"
    with filesystem.open_output_stream(target) as f:
        frame.to_parquet(f, index=False)
    return target
