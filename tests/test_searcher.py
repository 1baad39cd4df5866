"""The Optuna searcher: stopped trials reach Optuna as PRUNED (never the best), completed trials carry
their fine-tuned value, proxies are never the objective, and the study persists and resumes."""

import pickle
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from raysearch.contract import (COMPLETED, ERROR, OPTUNA_JOURNAL_FILE, OUTCOME_COLUMN, STOPPED_EARLY, Metric)
from raysearch.errors import UserInputError
from raysearch.tune.searcher import RETRY_OF, OptunaStudySearch

PRETRAIN, FINETUNE = 2, 4
MAX_EPOCHS = PRETRAIN + FINETUNE
NAME = "unit"


def define(trial):
    """A define-by-run space like `space.define_by_run`: suggests, returns the constants."""
    trial.suggest_float("quality", 0.0, 1.0)
    return {"pretrain_epochs": PRETRAIN, "finetune_epochs": FINETUNE}


def pretrain_report(epoch, proxy=0.95):
    """A pre-training report: a high kNN proxy and no fine-tuned accuracy."""
    return {Metric.GLOBAL_EPOCH: epoch, Metric.PHASE: "pretrain", Metric.VAL_KNN_ACC: proxy, Metric.PARAMS: 1000}


def finetune_report(epoch, acc, best):
    return {Metric.GLOBAL_EPOCH: epoch, Metric.PHASE: "finetune", Metric.VAL_ACC: acc, Metric.BEST_VAL_ACC: best,
            Metric.PARAMS: 1000}


def make_searcher(run_dir, metric=Metric.VAL_ACC, mode="max", **kwargs):
    return OptunaStudySearch(define, metric=metric, mode=mode, max_epochs=MAX_EPOCHS, run_dir=str(run_dir),
                             study_name=NAME, sampler=optuna.samplers.RandomSampler(seed=0), **kwargs)


def load(run_dir):
    """The study as a user opens it from the run directory."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(run_dir / OPTUNA_JOURNAL_FILE)))
    return optuna.load_study(study_name=NAME, storage=storage)


def by_tune_id(study):
    return {t.user_attrs[Metric.TRIAL_ID]: t for t in study.get_trials()}


def run_full(searcher, trial_id, accs):
    """Pre-training, then fine-tuning epochs with these val_acc values; the last result completes."""
    for epoch in range(1, PRETRAIN + 1):
        searcher.on_trial_result(trial_id, pretrain_report(epoch))
    best, last = 0.0, None
    for epoch, acc in enumerate(accs, start=PRETRAIN + 1):
        best = max(best, acc)
        last = finetune_report(epoch, acc, best)
        searcher.on_trial_result(trial_id, last)
    searcher.on_trial_complete(trial_id, result=last)


def test_stopped_trials_are_pruned_never_best_and_full_trials_carry_their_best_finetuned_value(tmp_path):
    searcher = make_searcher(tmp_path)
    for trial_id in "abcde":
        assert set(searcher.suggest(trial_id)) == {"quality", "pretrain_epochs", "finetune_epochs"}

    run_full(searcher, "a", [0.30, 0.50, 0.45, 0.40])      # best 0.50 at epoch 4, ends lower
    # b: stopped during pre-training; its only values are the (high) proxy.
    searcher.on_trial_result("b", pretrain_report(1, proxy=0.99))
    searcher.on_trial_complete("b", result=pretrain_report(2, proxy=0.99))
    # c: one fine-tuning epoch better than a's best, then stopped at that rung. The result that
    # made the scheduler stop it reaches the searcher only through on_trial_complete.
    searcher.on_trial_result("c", pretrain_report(2))
    searcher.on_trial_complete("c", result=finetune_report(3, 0.80, 0.80))
    searcher.on_trial_complete("d", error=True)
    run_full(searcher, "e", [0.20, 0.25, 0.30, 0.35])

    study = load(tmp_path)
    trials = by_tune_id(study)
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].value == pytest.approx(0.50)
    assert trials["a"].intermediate_values == pytest.approx({3: 0.30, 4: 0.50, 5: 0.45, 6: 0.40})
    assert trials["b"].state == TrialState.PRUNED
    assert trials["b"].intermediate_values == {} and trials["b"].value is None   # proxies never reported
    assert trials["c"].state == TrialState.PRUNED and trials["c"].intermediate_values == pytest.approx({3: 0.80})
    assert trials["d"].state == TrialState.FAIL
    assert trials["e"].state == TrialState.COMPLETE and trials["e"].value == pytest.approx(0.35)
    assert study.best_trial.number == trials["a"].number
    assert [trials[k].user_attrs[OUTCOME_COLUMN] for k in "abcde"] == [
        COMPLETED, STOPPED_EARLY, STOPPED_EARLY, ERROR, COMPLETED]
    # Told once: a completion that Tune repeats changes nothing.
    searcher.on_trial_complete("c", result=finetune_report(6, 0.9, 0.9))
    assert load(tmp_path).get_trials()[trials["c"].number].state == TrialState.PRUNED


def test_complete_value_is_best_val_acc_of_the_trial(tmp_path):
    """The final value is the trial's own best_val_acc (it survives its restarts) even when the
    searcher saw fewer epochs."""
    searcher = make_searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_result("a", finetune_report(5, 0.40, 0.40))
    searcher.on_trial_complete("a", result=finetune_report(6, 0.45, 0.70))
    trial = load(tmp_path).get_trials()[0]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.70)


def test_a_full_trial_without_the_objective_fails_and_a_shorter_budget_is_its_own(tmp_path):
    searcher = make_searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_complete("a", result=pretrain_report(MAX_EPOCHS))
    assert load(tmp_path).get_trials()[0].state == TrialState.FAIL

    # A space that searches the epoch counts: a trial that runs all of its own epochs is complete.
    short = OptunaStudySearch(lambda trial: {"pretrain_epochs": 1, "finetune_epochs": 2}, metric=Metric.VAL_ACC,
                              mode="max", max_epochs=MAX_EPOCHS, run_dir=str(tmp_path / "short"), study_name=NAME)
    short.suggest("b")
    short.on_trial_complete("b", result=finetune_report(3, 0.4, 0.4))
    assert load(tmp_path / "short").get_trials()[0].state == TrialState.COMPLETE


def test_several_objectives_report_nothing_and_tell_final_values(tmp_path):
    searcher = make_searcher(tmp_path, metric=[Metric.VAL_ACC, Metric.PARAMS], mode=["max", "min"])
    searcher.suggest("a")
    searcher.suggest("b")
    run_full(searcher, "a", [0.30, 0.60, 0.50, 0.40])
    searcher.on_trial_complete("b", result=finetune_report(3, 0.9, 0.9))
    trials = by_tune_id(load(tmp_path))
    assert trials["a"].state == TrialState.COMPLETE and trials["a"].values == pytest.approx([0.60, 1000])
    assert trials["a"].intermediate_values == {}
    assert trials["b"].state == TrialState.PRUNED and trials["b"].values is None


def test_points_to_evaluate_are_tried_first(tmp_path):
    searcher = make_searcher(tmp_path, points_to_evaluate=[{"quality": 0.25}])
    assert searcher.suggest("a")["quality"] == 0.25


def test_restore_continues_the_study_as_tune_saved_it(tmp_path):
    """Tune rebuilds the searcher from tuner.pkl (its construction state) and restores the newest
    searcher checkpoint: the study then holds exactly the trials of that checkpoint, and goes on."""
    run_dir, checkpoints = tmp_path / "run", tmp_path / "driver_artifacts"
    checkpoints.mkdir()
    searcher = make_searcher(run_dir)
    tuner_pkl = pickle.dumps(searcher)
    for trial_id in "abc":
        searcher.suggest(trial_id)
    run_full(searcher, "a", [0.3, 0.4, 0.5, 0.6])
    searcher.on_trial_complete("b", result=finetune_report(3, 0.1, 0.1))
    searcher.on_trial_result("c", finetune_report(3, 0.7, 0.7))
    searcher.save_to_dir(str(checkpoints), session_str="s1")
    # After the checkpoint, before the interruption: c completes and d is asked. The restored
    # Tune experiment runs c on and never heard of d.
    run_full(searcher, "c", [0.7, 0.8, 0.8, 0.8])
    searcher.suggest("d")

    restored = pickle.loads(tuner_pkl)
    restored.restore_from_dir(str(checkpoints))
    study = load(run_dir)
    assert [(t.user_attrs[Metric.TRIAL_ID], t.state) for t in study.get_trials()] == [
        ("a", TrialState.COMPLETE), ("b", TrialState.PRUNED), ("c", TrialState.RUNNING)]

    restored.on_trial_result("c", finetune_report(3, 0.7, 0.7))   # replayed from c's checkpoint
    restored.on_trial_result("c", finetune_report(4, 0.9, 0.9))
    restored.on_trial_complete("c", result=finetune_report(6, 0.8, 0.9))
    restored.suggest("e")
    trials = by_tune_id(load(run_dir))
    assert sorted(trials) == ["a", "b", "c", "e"] and len(load(run_dir).get_trials()) == 4
    assert trials["c"].state == TrialState.COMPLETE and trials["c"].value == pytest.approx(0.9)
    assert trials["c"].intermediate_values == pytest.approx({3: 0.7, 4: 0.9, 6: 0.8})
    assert trials["e"].state == TrialState.RUNNING
    assert load(run_dir).best_trial.user_attrs[Metric.TRIAL_ID] == "c"


def test_a_bucket_run_keeps_its_journal_locally_and_copies_it_with_each_checkpoint(tmp_path):
    checkpoints = tmp_path / "driver_artifacts"
    checkpoints.mkdir()
    searcher = make_searcher("s3://bucket/searches/unit")
    assert "bucket" not in searcher.journal_path
    searcher.suggest("a")
    run_full(searcher, "a", [0.3, 0.4, 0.5, 0.6])
    searcher.save_to_dir(str(checkpoints), session_str="s1")
    copy = load(checkpoints)          # what Tune uploads into the run directory
    assert copy.best_trial.value == pytest.approx(0.6)

    elsewhere = pickle.loads(pickle.dumps(searcher))   # another machine: no local journal there
    elsewhere._journal = str(tmp_path / "gone" / OPTUNA_JOURNAL_FILE)
    elsewhere.restore_from_dir(str(checkpoints))
    assert elsewhere.study.best_trial.value == pytest.approx(0.6)
    elsewhere.suggest("b")
    assert len(elsewhere.study.get_trials()) == 2


def test_an_errored_trial_that_tune_resumes_continues_in_a_new_optuna_trial(tmp_path):
    searcher = make_searcher(tmp_path)
    searcher.suggest("a")
    searcher.on_trial_result("a", finetune_report(3, 0.4, 0.4))
    searcher.on_trial_complete("a", error=True)
    searcher.on_trial_result("a", finetune_report(4, 0.5, 0.5))
    searcher.on_trial_complete("a", result=finetune_report(6, 0.5, 0.6))
    first, retry = load(tmp_path).get_trials()
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.value == pytest.approx(0.6)
    assert retry.params == first.params and retry.user_attrs[RETRY_OF] == first.number
    assert retry.intermediate_values == pytest.approx({3: 0.4, 4: 0.5, 6: 0.5})


GRID = [0.2, 0.5, 0.8]


def define_grid(trial):
    trial.suggest_categorical("quality", GRID)
    return {"pretrain_epochs": PRETRAIN, "finetune_epochs": FINETUNE}


def make_grid_searcher(run_dir):
    return OptunaStudySearch(define_grid, metric=Metric.VAL_ACC, mode="max", max_epochs=MAX_EPOCHS,
                             run_dir=str(run_dir), study_name=NAME,
                             sampler=optuna.samplers.GridSampler({"quality": GRID}, seed=0))


def test_a_grid_search_tells_every_point_and_then_finishes(tmp_path):
    """The trial that completes the grid makes GridSampler stop the study (outside optimize(): a
    RuntimeError); the searcher records it like any other and ends the search instead of repeating."""
    searcher = make_grid_searcher(tmp_path)
    configs = {trial_id: searcher.suggest(trial_id) for trial_id in "abc"}
    assert sorted(c["quality"] for c in configs.values()) == GRID
    assert searcher.suggest("d") == Searcher.FINISHED       # every point has a (running) trial
    searcher.on_trial_complete("b", result=finetune_report(3, 0.1, 0.1))   # stopped at a rung
    for trial_id in "ac":
        run_full(searcher, trial_id, [configs[trial_id]["quality"]] * FINETUNE)
    searcher.on_trial_complete("c", error=True)              # what Tune did after the error: nothing now
    trials = by_tune_id(load(tmp_path))
    assert sorted(trials) == ["a", "b", "c"]
    assert [trials[k].state for k in "abc"] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials["c"].value == pytest.approx(configs["c"]["quality"])
    assert searcher.suggest("e") == Searcher.FINISHED
    # Restored from its checkpoint, the search is still over.
    checkpoints = tmp_path / "driver_artifacts"
    checkpoints.mkdir()
    searcher.save_to_dir(str(checkpoints), session_str="s1")
    restored = make_grid_searcher(tmp_path / "elsewhere")
    restored.restore_from_dir(str(checkpoints))
    assert restored.suggest("f") == Searcher.FINISHED


def test_a_new_search_refuses_an_existing_study(tmp_path):
    make_searcher(tmp_path)
    with pytest.raises(UserInputError, match="--resume"):
        make_searcher(tmp_path)


# -- end to end: the real ASHAScheduler, a plain Tune function trainable -------------------------------
def fake_trial(config):
    """Pre-training reports a proxy only; fine-tuned accuracy grows towards `quality`."""
    from ray import tune

    for epoch in range(1, PRETRAIN + 1):
        tune.report(pretrain_report(epoch))
    best = 0.0
    for step in range(1, FINETUNE + 1):
        acc = config["quality"] * step / FINETUNE
        best = max(best, acc)
        tune.report(finetune_report(PRETRAIN + step, acc, best))


@pytest.fixture
def local_ray(ray_two_cpus):
    """The session's local Ray (a second `ray.init` in one process fails)."""
    import sys

    import ray.cloudpickle

    # Workers cannot import this test module: ship its functions (the trainable) by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_asha_stopped_trials_reach_optuna_as_pruned(tmp_path, local_ray, monkeypatch):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")   # pre-training reports have no val_acc
    qualities = [0.9, 0.8, 0.3, 0.85, 0.2, 0.95, 0.1]   # one at a time: later weak ones meet a rung
    searcher = make_searcher(tmp_path / "e2e", points_to_evaluate=[{"quality": q} for q in qualities])
    tuner = tune.Tuner(
        tune.with_resources(fake_trial, {"CPU": 1}),
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=1), num_samples=len(qualities),
            scheduler=ASHAScheduler(time_attr=Metric.GLOBAL_EPOCH, max_t=MAX_EPOCHS, grace_period=PRETRAIN + 1,
                                    reduction_factor=2),
            metric=Metric.VAL_ACC, mode="max"),
        run_config=tune.RunConfig(name="e2e", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    epochs = {r.metrics[Metric.TRIAL_ID]: r.metrics[Metric.GLOBAL_EPOCH] for r in results}
    assert not results.errors and len(epochs) == len(qualities)

    study = load(tmp_path / "e2e")
    trials = by_tune_id(study)
    assert sorted(trials) == sorted(epochs)
    stopped = [t for t, epoch in epochs.items() if epoch < MAX_EPOCHS]
    full = [t for t, epoch in epochs.items() if epoch == MAX_EPOCHS]
    assert stopped and full
    assert all(trials[t].state == TrialState.PRUNED for t in stopped)
    assert all(trials[t].state == TrialState.COMPLETE for t in full)
    best = study.best_trial
    assert best.user_attrs[Metric.TRIAL_ID] in full
    assert best.value == pytest.approx(max(trials[t].params["quality"] for t in full))

    # Tune's own restore path (tuner.pkl, then the searcher checkpoint) keeps the study as it was.
    before = [(t.number, t.state, t.value) for t in study.get_trials()]
    tune.Tuner.restore(str(tmp_path / "e2e"), trainable=tune.with_resources(fake_trial, {"CPU": 1})).fit()
    assert [(t.number, t.state, t.value) for t in load(tmp_path / "e2e").get_trials()] == before


@pytest.mark.slow
def test_a_grid_search_on_tune_runs_each_point_once_without_errors(tmp_path, local_ray, monkeypatch):
    """More samples than grid points: every point runs once, no trial errors (the searcher's
    completion of the last point used to raise, and Tune's retelling of it as an error failed)."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    monkeypatch.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    tuner = tune.Tuner(
        tune.with_resources(fake_trial, {"CPU": 1}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(make_grid_searcher(tmp_path / "grid"), max_concurrent=2),
                                    num_samples=len(GRID) + 2, metric=Metric.VAL_ACC, mode="max"),
        run_config=tune.RunConfig(name="grid", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors
    assert sorted(r.config["quality"] for r in results) == GRID
    trials = load(tmp_path / "grid").get_trials()
    assert sorted(t.params["quality"] for t in trials) == GRID
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_make_tuner_keeps_the_study_in_the_run_directory(tmp_path):
    from raysearch.tune.search import make_tuner
    from raysearch.tune.space import load_search_space

    space = load_search_space(Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml", check_data=False)
    make_tuner(space, "synthetic", str(tmp_path), "wired", fake_trial, max_concurrent=1)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "wired" / OPTUNA_JOURNAL_FILE)))
    study = optuna.load_study(study_name="wired", storage=storage)
    # The space's warm-start point waits as the first trial.
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * len(space.points_to_evaluate)
