"""Keep a trial's earlier reports when a search resumes from its storage (a bucket above all).

Tune's JSON and CSV loggers write each trial's `result.json` and `progress.csv` in the driver's
local staging directory and upload that directory to the storage, replacing the files there. A
resumed driver starts with an empty staging directory, and the loggers copy a trial's files back
from the storage only when the trial holds a Tune checkpoint (ray 2.60,
`LoggerCallback._restore_from_remote`). A raysearch trial never does: its checkpoints belong to its
inner Ray Train run. So the first upload after a resume replaced a restarted trial's reports in
the bucket with only the new ones; a trial that had finished just before the kill (and that Tune
had not yet recorded as finished) was left with none: no metrics in `report`, no checkpoint for
`export` (seen against a local S3 endpoint, tests/test_s3.py).

`RestoreTrialHistory` puts the files back before the loggers open them: Tune calls user callbacks
before its default ones, and the loggers then append to what is there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.fs
import ray.tune
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

from ..errors import first_line

logger = logging.getLogger(__name__)


class RestoreTrialHistory(ray.tune.Callback):
    """Tune callback of the search driver: copy a starting trial's report files from the storage
    into its staging directory when the staging copy is missing (a resumed driver)."""

    FILES = (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        filesystem = trial.storage.storage_filesystem
        for name in self.FILES:
            local, stored = Path(trial.local_path, name), f"{trial.path}/{name}"
            if local.exists():
                continue
            try:
                if filesystem.get_file_info(stored).type != pyarrow.fs.FileType.File:
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                pyarrow.fs.copy_files(stored, str(local), source_filesystem=filesystem)
            except Exception as exc:  # pyarrow raises OSError and ArrowInvalid subtypes; the trial runs on
                logger.warning("trial %s: could not restore %s from %s (%s); its earlier reports may be lost",
                               trial.trial_id, name, stored, first_line(exc))
