"""What a resumed search continues, and the trials a killed driver started that it cannot.

Tune records its trials in `experiment_state-<start time>.json` every few seconds, and
`Tuner.restore` continues exactly the trials in the newest one. A driver killed between two records
leaves behind the directories of trials it had started since the last one (measured here: 1 in 5
kills of tests/test_search.py's resume test). The resumed search does not know them: it starts
other trials in their place, and their reports, if any, would stay in the run as a trial that
never finishes. `mark_lost_trials` writes `contract.TRIAL_LOST_FILE` into each such directory
before the restore, so `report` shows it as `lost`; its files stay where they are.

The state file is JSON in which each trial is a JSON object (its settings are pickled inside, and
never unpickled here): only `trial_id` and `status` are read.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow.fs

from ..contract import TRIAL_DIR_PREFIX, TRIAL_LOST_FILE
from ..errors import UserInputError, first_line
from ..runs import join_uri, open_location, read_text, trial_dirs, write_text

STATE_PREFIX, STATE_SUFFIX = "experiment_state-", ".json"   # ray 2.60, tune/execution/experiment_state.py


def recorded_trials(run_dir: str) -> dict[str, str] | None:
    """{trial id: Tune status} from the newest experiment state of the run, as `Tuner.restore`
    reads it; None when Tune has recorded nothing yet."""
    filesystem, path = open_location(run_dir, "search")
    names = [posixpath.basename(e.path) for e in filesystem.get_file_info(pyarrow.fs.FileSelector(path))]
    states = sorted(n for n in names if n.startswith(STATE_PREFIX) and n.endswith(STATE_SUFFIX))
    if not states:
        return None
    refused = (f"file {join_uri(run_dir, states[-1])}: not a Tune experiment state this Ray can restore ({{}}); "
               "resume with the Ray version that wrote it")
    try:
        state = json.loads(read_text(filesystem, f"{path}/{states[-1]}"))
        trials = [json.loads(entry[0]) for entry in state["trial_data"]]
        recorded = {trial["trial_id"]: trial["status"] for trial in trials}
    except (ValueError, LookupError, TypeError, RecursionError) as exc:  # JSON errors are ValueErrors
        raise UserInputError(refused.format(f"{type(exc).__name__}: {first_line(exc, 120)}")) from None
    if not all(isinstance(value, str) for item in recorded.items() for value in item):
        raise UserInputError(refused.format("a trial id or status is not a string"))
    return recorded


def mark_lost_trials(run_dir: str) -> list[str]:
    """Mark the trial directories that the newest experiment state does not name; returns their ids.
    Call it before `Tuner.restore`, while no driver runs the search."""
    recorded = recorded_trials(run_dir)
    if recorded is None:
        return []
    filesystem, path = open_location(run_dir, "search")
    lost = []
    for trial_path in trial_dirs(filesystem, path):
        trial_id = posixpath.basename(trial_path).removeprefix(TRIAL_DIR_PREFIX)
        if trial_id not in recorded:
            write_text(join_uri(run_dir, posixpath.basename(trial_path)), TRIAL_LOST_FILE, json.dumps({
                "trial_id": trial_id,
                "reason": "the search driver stopped before Tune recorded this trial; the resumed search "
                          "did not continue it"}) + "\n")
            lost.append(trial_id)
    return lost
