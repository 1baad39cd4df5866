"""The search's scheduler: ASHA cuts on fine-tuning epochs, and the shipped spaces say so.

Fast (no Ray cluster, no search): the spaces load, `make_scheduler` builds what `make_tuner` uses,
and the trial loop reports the time axis the scheduler reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from raysearch.contract import FINETUNE, PRETRAIN, Metric
from raysearch.errors import UserInputError
from raysearch.tune.search import make_scheduler, scheduler_metric
from raysearch.tune.space import load_search_space, scheduler_horizon

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _rungs(space) -> list[int]:
    """Fine-tuning epochs at which ASHA compares trials (its milestones below max_t)."""
    s = space.scheduler
    rungs, t = [], s.grace_period
    while t < scheduler_horizon(space):
        rungs.append(t)
        t *= s.reduction_factor
    return rungs


def test_msr_space_validates_and_cuts_on_fine_tuning_epochs():
    space = load_search_space(SPACES / "msr.yaml", check_data=False)
    assert space.scheduler.type == "asha" and space.scheduler.time_attr == Metric.FINETUNE_EPOCH
    assert space.sampler.type == "tpe"
    assert space.resources.workers == 1
    scheduler = make_scheduler(space)
    assert isinstance(scheduler, ASHAScheduler)
    assert scheduler._time_attr == Metric.FINETUNE_EPOCH
    assert scheduler._max_t == space.budget.finetune_epochs
    assert len(_rungs(space)) >= 2, "ASHA should be able to cut at least twice inside fine-tuning"
    # Categorical pre-training settings: trials that differ only in fine-tuning share a cached encoder.
    assert all(p.type == "categorical" for p in space.parameters)


@pytest.mark.parametrize("name", ["smoke.yaml", "paper.yaml", "msr.yaml"])
def test_shipped_asha_spaces_use_the_fine_tuning_fidelity(name):
    space = load_search_space(SPACES / name, check_data=False)
    assert space.scheduler.time_attr == Metric.FINETUNE_EPOCH
    assert _rungs(space), "the first rung must fall inside fine-tuning"


def _space(tmp_path, scheduler: dict):
    doc = yaml.safe_load((SPACES / "smoke.yaml").read_text())
    doc["scheduler"] = scheduler
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_search_space(path)


def test_time_attr_defaults_to_fine_tuning_epochs_and_global_epoch_stays_available(tmp_path):
    default = _space(tmp_path, {"type": "asha", "grace_period": 1, "reduction_factor": 2})
    assert default.scheduler.time_attr == Metric.FINETUNE_EPOCH
    assert make_scheduler(default)._max_t == default.budget.finetune_epochs
    total = _space(tmp_path, {"type": "asha", "time_attr": "global_epoch", "grace_period": 3, "reduction_factor": 2})
    assert make_scheduler(total)._max_t == total.budget.pretrain_epochs + total.budget.finetune_epochs
    assert isinstance(make_scheduler(_space(tmp_path, {"type": "fifo"})), FIFOScheduler)


@pytest.mark.parametrize("scheduler, field, fix", [
    ({"type": "asha", "time_attr": "training_iteration"}, "scheduler.time_attr", "finetune_epoch, global_epoch"),
    # smoke.yaml fine-tunes 4 epochs: a first rung at 5 would never come on the fine-tuning axis.
    ({"type": "asha", "grace_period": 5}, "scheduler.grace_period", "use at most 4"),
])
def test_bad_time_axis_is_refused_in_one_line(tmp_path, scheduler, field, fix):
    with pytest.raises(UserInputError) as info:
        _space(tmp_path, scheduler)
    message = str(info.value)
    assert "\n" not in message and field in message and fix in message


def test_asha_never_compares_pre_training_reports(tmp_path):
    """Pre-training reports carry proxies, not the objective: ASHA lets them pass, and the first
    rung is decided by fine-tuned val_acc at the first fine-tuning epochs."""
    space = _space(tmp_path, {"type": "asha", "grace_period": 1, "reduction_factor": 2})
    scheduler = make_scheduler(space)
    good, bad = _Trial("good"), _Trial("bad")
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
        # A high proxy would look like a high accuracy if the scheduler read it.
        assert scheduler.on_trial_result(None, trial, {Metric.PHASE: PRETRAIN, Metric.GLOBAL_EPOCH: 1,
                                                       Metric.VAL_KNN_ACC: 0.9}) == TrialScheduler.CONTINUE
    first = {Metric.PHASE: FINETUNE, Metric.FINETUNE_EPOCH: 1, Metric.GLOBAL_EPOCH: 3}
    assert scheduler.on_trial_result(None, good, {**first, Metric.VAL_ACC: 0.6, Metric.BEST_VAL_ACC: 0.6}) \
        == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, bad, {**first, Metric.VAL_ACC: 0.2, Metric.BEST_VAL_ACC: 0.2}) \
        == TrialScheduler.STOP


def test_asha_compares_the_best_classifier_so_far(tmp_path):
    """With val_acc as the objective a rung compares best_val_acc: a trial whose val_acc dips at the
    rung epoch keeps its place by the classifier it already holds."""
    space = _space(tmp_path, {"type": "asha", "grace_period": 2, "reduction_factor": 2})
    assert scheduler_metric(space) == (Metric.BEST_VAL_ACC, "max")
    scheduler = make_scheduler(space)
    steady, dipping = _Trial("steady"), _Trial("dipping")
    for trial in (steady, dipping):
        scheduler.on_trial_add(None, trial)
    rung = {Metric.PHASE: FINETUNE, Metric.FINETUNE_EPOCH: 2}
    assert scheduler.on_trial_result(None, steady, {**rung, Metric.VAL_ACC: 0.5, Metric.BEST_VAL_ACC: 0.5}) \
        == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, dipping, {**rung, Metric.VAL_ACC: 0.3, Metric.BEST_VAL_ACC: 0.6}) \
        == TrialScheduler.CONTINUE
    # Other objectives are compared as they are.
    doc = yaml.safe_load((SPACES / "smoke.yaml").read_text())
    doc["objectives"] = [{"metric": Metric.VAL_CE_LOSS}]
    (tmp_path / "loss.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert scheduler_metric(load_search_space(tmp_path / "loss.yaml")) == (Metric.VAL_CE_LOSS, "min")


def test_only_fine_tuning_reports_carry_finetune_epoch(tmp_path):
    """The time axis ASHA reads: 1, 2, ... over fine-tuning, absent from pre-training reports."""
    from raysearch.data.synthetic import prepare_synthetic
    from raysearch.train.config import TrialConfig
    from raysearch.train.distributed import WorkerContext
    from raysearch.train.loop import LocalReporter, TrialLoop

    data = prepare_synthetic(tmp_path / "data", num_classes=3, per_class=8, seed=0)
    trial = TrialConfig.from_flat({"preset": "mae-tiny", "data_dir": str(data), "pretrain_epochs": 1,
                                   "finetune_epochs": 2, "batch_size": 8, "seed": 0})
    reporter = LocalReporter()
    TrialLoop.build(trial, WorkerContext(), reporter).run()
    pretrain = [h for h in reporter.history if h[Metric.PHASE] == PRETRAIN]
    finetune = [h for h in reporter.history if h[Metric.PHASE] == FINETUNE]
    assert pretrain and all(Metric.FINETUNE_EPOCH not in h for h in pretrain)
    assert [h[Metric.FINETUNE_EPOCH] for h in finetune] == [1, 2]
    assert all(Metric.VAL_ACC in h for h in finetune)
