"""The search's Optuna searcher: Optuna is told what each trial really did, and the study is on disk.

Ray's `OptunaSearch` (2.60) tells Optuna COMPLETE with the last reported value for every trial that
has one, the ones ASHA stopped included; only a trial without a value becomes PRUNED. A trial stopped
at an early rung would enter TPE's history as a finished result. `OptunaStudySearch` drives Optuna
with ask/tell instead:

- every result that carries the objective is reported with `trial.report(value, global_epoch)`;
  results without it (pre-training reports carry proxies, never `val_acc`) only advance the trial's
  epoch count. Non-finite values are never reported.
- a trial that ends before its budget (its `pretrain_epochs + finetune_epochs` when it carries them,
  else `max_epochs`) was stopped by the scheduler, or ended early on its own (diverged): PRUNED, its
  intermediate values kept (Optuna then gives it its last one), so TPE ranks it below every complete
  trial and Optuna's pruners can read its curve. It is never COMPLETE, so never `study.best_trial`.
- a trial that ran its budget is COMPLETE with its final value: the best value (by the objective's
  mode) that it reported, and for `val_acc` its `best_val_acc` when the result carries it (the trial
  keeps its best-validation classifier, and `best_val_acc` survives the trial's own restarts). A
  trial that ran its budget without reporting the objective is FAIL.
- an errored trial is FAIL. If Tune later resumes it (`resume_errored`), its results go to a new
  Optuna trial with the same parameters (user attribute `retry_of`): a finished Optuna trial cannot
  be reopened, and samplers ignore FAIL trials, so nothing is counted twice.
- the grid sampler: once every grid point has a trial, `suggest` returns `Searcher.FINISHED` and Tune
  ends the search (more trials would repeat points). Telling the trial that completes the grid makes
  GridSampler call `study.stop()`, which raises outside `study.optimize`; the searcher lets exactly
  that error pass (the study has the trial's state by then).
- several objectives: Optuna has no intermediate values there, so nothing is reported; a full
  trial is COMPLETE with the final value of each objective (as above), others PRUNED or FAIL.

Each Optuna trial carries the Tune trial id and the outcome (`contract` names) as user attributes.

Where the study lives: Optuna's journal storage, file `<run_dir>/optuna_journal.log`, study name =
the search name, so `optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(
path)))` and `optuna-dashboard <path>` open it while the search runs and after. When the run
directory is a bucket URI the journal is kept in a local temporary directory and copied next to the
searcher state whenever Tune checkpoints the searcher; Tune uploads that directory into the run
directory, the last time when the search ends (its final checkpoint), so the bucket copy trails the
live study by at most one experiment checkpoint.

Why not a subclass of `OptunaSearch`: its `save` pickles the whole study, its `on_trial_result` and
`on_trial_complete` are the parts being replaced, and its private attributes change between Ray
versions. This class keeps its own state small and writes it as JSON (the file name is Tune's):
the Tune-trial-to-Optuna-trial map, epochs, best values, and a compressed copy of the journal taken at
the same moment. `Tuner.restore` rebuilds the searcher from `tuner.pkl` (construction state) and
calls `restore`, which writes that copy back as the study: the study then holds exactly the trials
the restored Tune experiment knows, neither the trials asked after the checkpoint (Tune forgets
them) nor outcomes told after it (Tune runs those trials on and tells them again). The sampler is
reseeded on restore, so a restored search does not repeat the random proposals of its start (and is
not bit-for-bit reproducible).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import tempfile
import traceback
import zlib
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from ..contract import (COMPLETED, ERROR, OPTUNA_JOURNAL_FILE, OUTCOME_COLUMN, OUTCOME_DIVERGED, STOPPED_EARLY,
                        Metric)
from ..errors import UserInputError

logger = logging.getLogger(__name__)

RETRY_OF = "retry_of"                 # user attribute: the Optuna trial an errored Tune trial resumed from
STATE_VERSION = 1
# Per-trial state that restore() reads back; everything else comes from the constructor.
_PER_TRIAL = ("_numbers", "_budgets", "_epochs", "_steps", "_best", "_told")
_TRANSIENT = ("_study", "_open_trials")


def journal_storage(path: str | os.PathLike) -> optuna.storages.JournalStorage:
    """Optuna's journal storage in one local file (created on first write)."""
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def _finite(value: Any) -> float | None:
    """`value` as a float when it is a finite number, else None (absent, NaN, a string, a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class OptunaStudySearch(Searcher):
    """A Tune searcher over an Optuna define-by-run space that tells Optuna the truth (module docstring).

    `define(trial)` suggests the parameters and returns the constants every trial gets (see
    `space.define_by_run`); `metric`/`mode` are one name and direction, or lists of them;
    `max_epochs` is the epochs of a full trial (the scheduler's `max_t`); `run_dir` is the search's
    run directory (local path or URI); `study_name` names the study in the journal.
    """

    def __init__(self, define: Callable[[optuna.Trial], dict[str, Any] | None], *, metric: str | list[str],
                 mode: str | list[str], max_epochs: int, run_dir: str, study_name: str,
                 sampler: optuna.samplers.BaseSampler | None = None,
                 points_to_evaluate: list[dict[str, Any]] | None = None):
        super().__init__(metric=metric, mode=mode)
        self._metrics = [metric] if isinstance(metric, str) else list(metric)
        self._modes = [mode] if isinstance(mode, str) else list(mode)
        self._define = define
        self._max_epochs = int(max_epochs)
        self._run_dir = str(run_dir)
        self._study_name = study_name
        self._sampler = sampler or optuna.samplers.TPESampler()
        self._staged = "://" in self._run_dir
        self._journal = self._new_local_journal() if self._staged else os.path.join(self._run_dir, OPTUNA_JOURNAL_FILE)
        self._numbers: dict[str, int] = {}                   # Tune trial id -> Optuna trial number
        self._budgets: dict[str, int] = {}                   # epochs the trial runs unless stopped
        self._epochs: dict[str, int] = {}                    # last global_epoch it reported
        self._steps: dict[str, int] = {}                     # last step reported to Optuna
        self._best: dict[str, list[float | None]] = {}       # best value per objective so far
        self._told: dict[str, str] = {}                      # TrialState name it was told
        self._open_trials: dict[str, optuna.Trial] = {}
        self._study = self._create(points_to_evaluate or [])

    # -- the study --------------------------------------------------------------------------------
    @property
    def journal_path(self) -> str:
        """The live journal file (in the run directory, or local when the run directory is a URI)."""
        return self._journal

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = self._load()
        return self._study

    @staticmethod
    def _new_local_journal() -> str:
        return os.path.join(tempfile.mkdtemp(prefix="raysearch-optuna-"), OPTUNA_JOURNAL_FILE)

    def _create(self, points: list[dict[str, Any]]) -> optuna.Study:
        Path(self._journal).parent.mkdir(parents=True, exist_ok=True)
        directions = ["maximize" if m == "max" else "minimize" for m in self._modes]
        try:
            study = optuna.create_study(storage=journal_storage(self._journal), study_name=self._study_name,
                                        sampler=self._sampler, pruner=optuna.pruners.NopPruner(),
                                        directions=directions)
        except optuna.exceptions.DuplicatedStudyError:
            raise UserInputError(f"{self._journal}: already holds the Optuna study {self._study_name!r} of an "
                                 "earlier search; continue that search with --resume, or start a new one with "
                                 "--name") from None
        for point in points:
            study.enqueue_trial(point)
        return study

    def _load(self) -> optuna.Study:
        study = optuna.load_study(study_name=self._study_name, storage=journal_storage(self._journal),
                                  sampler=self._sampler, pruner=optuna.pruners.NopPruner())
        # A journal newer than this searcher's state (state unpickled without a restore() after it):
        # trials it asked that this state does not know are trials Tune does not know either.
        known = {number: trial_id for trial_id, number in self._numbers.items()}
        for frozen in study.get_trials(deepcopy=False):
            if frozen.number not in known:
                if frozen.state == TrialState.RUNNING:
                    study.tell(frozen.number, state=TrialState.FAIL)
            elif frozen.state.is_finished():
                self._told.setdefault(known[frozen.number], frozen.state.name)
        return study

    def _trial(self, trial_id: str) -> optuna.Trial:
        """The live Optuna trial of a Tune trial (an `optuna.Trial` can report and set attributes)."""
        if trial_id not in self._open_trials:
            number = self._numbers[trial_id]
            frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == number)
            self._open_trials[trial_id] = optuna.trial.Trial(self.study, frozen._trial_id)
        return self._open_trials[trial_id]

    # -- Tune's Searcher interface ---------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self._numbers:
            trial = self._trial(trial_id)
        elif self._grid_exhausted():
            return Searcher.FINISHED  # a new trial would repeat a point: Tune ends the search instead
        else:
            trial = self.study.ask()
            trial.set_user_attr(Metric.TRIAL_ID, trial_id)
            self._numbers[trial_id] = trial.number
            self._open_trials[trial_id] = trial
        constants = self._define(trial) or {}
        config = {**trial.params, **constants}
        self._budgets[trial_id] = self._budget(config)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._numbers:
            return
        if trial_id in self._told:
            if self._told[trial_id] != TrialState.FAIL.name:
                return  # told already; a result replayed after a restart changes nothing
            self._retry(trial_id)
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self._numbers:
            return
        if trial_id in self._told:
            if error or self._told[trial_id] != TrialState.FAIL.name:
                return
            self._retry(trial_id)
        if result:
            # A result that made the scheduler stop the trial reaches the searcher only here.
            self._record(trial_id, result)
        state, values, outcome = self._outcome(trial_id, result or {}, error)
        trial = self._trial(trial_id)
        trial.set_user_attr(OUTCOME_COLUMN, outcome)
        self._tell(trial, values, state)
        self._told[trial_id] = state.name
        self._open_trials.pop(trial_id, None)

    def _tell(self, trial: optuna.Trial, values: list[float] | None, state: TrialState) -> None:
        try:
            self.study.tell(trial, values, state=state)
        except RuntimeError as exc:
            # GridSampler.after_trial calls study.stop() when this trial completes the grid, and
            # outside study.optimize() stop() raises; Optuna stores the trial's state before that
            # (`finally` in optuna/study/_tell.py). The search ends through suggest() (FINISHED).
            frames = traceback.extract_tb(exc.__traceback__)
            stored = next(t.state for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            if not (isinstance(self._sampler, optuna.samplers.GridSampler) and frames
                    and frames[-1].name == "stop" and stored == state):
                raise

    def _grid_exhausted(self) -> bool:
        """Whether every point of a grid sampler's grid has a trial, running or finished. GridSampler
        would give another trial a point it already assigned (a repeat, with a warning). Read from
        what GridSampler stores on each trial (`grid_id`, `search_space`), so it holds after a restore."""
        if not isinstance(self._sampler, optuna.samplers.GridSampler):
            return False
        assigned = [t.system_attrs for t in self.study.get_trials(deepcopy=False)
                    if t.state != TrialState.WAITING and "grid_id" in t.system_attrs]
        if not assigned:
            return False
        points = math.prod(len(values) for values in assigned[0]["search_space"].values())
        return len({attrs["grid_id"] for attrs in assigned}) >= points

    # -- what a trial did --------------------------------------------------------------------------
    def _budget(self, config: dict[str, Any]) -> int:
        """Epochs a trial runs when nothing stops it: its own epoch counts if it has them (a space
        may search them), at most the search's budget."""
        pretrain, finetune = config.get("pretrain_epochs"), config.get("finetune_epochs")
        if isinstance(pretrain, int) and isinstance(finetune, int):
            return min(self._max_epochs, pretrain + finetune)
        return self._max_epochs

    def _record(self, trial_id: str, result: dict[str, Any]) -> None:
        epoch = _finite(result.get(Metric.GLOBAL_EPOCH))
        if epoch is not None:
            self._epochs[trial_id] = max(self._epochs.get(trial_id, 0), int(epoch))
        values = [_finite(result.get(metric)) for metric in self._metrics]
        best = self._best.setdefault(trial_id, [None] * len(self._metrics))
        for i, (value, mode) in enumerate(zip(values, self._modes)):
            if value is not None:
                best[i] = value if best[i] is None else (max if mode == "max" else min)(best[i], value)
        # One objective: its values are the trial's learning curve for TPE and Optuna's pruners.
        # Steps only move forward: a trial restarted from a checkpoint replays epochs already told.
        if len(self._metrics) == 1 and values[0] is not None and epoch is not None \
                and int(epoch) > self._steps.get(trial_id, -1):
            self._trial(trial_id).report(values[0], int(epoch))
            self._steps[trial_id] = int(epoch)

    def _outcome(self, trial_id: str, result: dict[str, Any],
                 error: bool) -> tuple[TrialState, list[float] | None, str]:
        if error:
            return TrialState.FAIL, None, ERROR
        if self._epochs.get(trial_id, 0) < self._budgets.get(trial_id, self._max_epochs):
            return TrialState.PRUNED, None, OUTCOME_DIVERGED if result.get(Metric.DIVERGED) else STOPPED_EARLY
        finals = []
        for metric, best in zip(self._metrics, self._best.get(trial_id, [None] * len(self._metrics))):
            if metric == Metric.VAL_ACC and _finite(result.get(Metric.BEST_VAL_ACC)) is not None:
                best = max(_finite(result[Metric.BEST_VAL_ACC]), best if best is not None else -math.inf)
            finals.append(best)
        if any(value is None for value in finals):
            logger.warning("trial %s ran its %d epochs without reporting %s; Optuna records it as failed",
                           trial_id, self._budgets.get(trial_id, self._max_epochs), ", ".join(self._metrics))
            return TrialState.FAIL, None, ERROR
        return TrialState.COMPLETE, finals, COMPLETED

    def _retry(self, trial_id: str) -> None:
        """An errored trial that Tune resumed: a new Optuna trial with its parameters and curve."""
        old = next(t for t in self.study.get_trials(deepcopy=False) if t.number == self._numbers[trial_id])
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.RUNNING, params=old.params, distributions=old.distributions,
            user_attrs={Metric.TRIAL_ID: trial_id, RETRY_OF: old.number}, intermediate_values=old.intermediate_values,
            # The sampler's own record of the configuration (GridSampler's grid point) goes along.
            system_attrs=old.system_attrs))
        self._numbers[trial_id] = max(t.number for t in self.study.get_trials(deepcopy=False))
        self._open_trials.pop(trial_id, None)
        del self._told[trial_id]

    # -- checkpoints -------------------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        journal = Path(self._journal).read_bytes() if Path(self._journal).exists() else b""
        state = {name: getattr(self, name) for name in _PER_TRIAL}
        state["version"] = STATE_VERSION
        state["journal"] = base64.b64encode(zlib.compress(journal)).decode("ascii")
        Path(checkpoint_path).write_text(json.dumps(state))
        if self._staged:
            # Tune uploads the directory of its searcher checkpoint into the run directory.
            copy = Path(checkpoint_path).parent / OPTUNA_JOURNAL_FILE
            partial = copy.with_name(f".{copy.name}.partial")
            partial.write_bytes(journal)
            os.replace(partial, copy)

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        if state.get("version") != STATE_VERSION:
            raise RuntimeError(f"{checkpoint_path}: searcher state version {state.get('version')!r}, "
                               f"this raysearch reads version {STATE_VERSION}")
        for name in _PER_TRIAL:
            setattr(self, name, state[name])
        if not self._staged and not os.path.isdir(self._run_dir):
            self._staged = True  # the run directory moved: keep the journal locally, copy it there
        if self._staged and not os.path.isdir(os.path.dirname(self._journal)):
            self._journal = self._new_local_journal()
        # The study as it was when the Tune experiment state was saved (module docstring).
        partial = Path(self._journal).with_name(f".{OPTUNA_JOURNAL_FILE}.restore")
        partial.write_bytes(zlib.decompress(base64.b64decode(state["journal"])))
        os.replace(partial, self._journal)
        self._study, self._open_trials = None, {}
        self._sampler.reseed_rng()

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name not in _TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._study, self._open_trials = None, {}


__all__ = ["OptunaStudySearch", "journal_storage", "RETRY_OF"]
