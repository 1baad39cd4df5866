"""The run-directory reader that report and export share: Tune trial directories, records, rows."""

import json
import warnings
from pathlib import Path

import pyarrow.fs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysearch.contract import TrainSummary, TrialMeta
from raysearch.errors import UserInputError
from raysearch.runs import SearchRecord, collect_results, read_results, read_search, trial_history

def write_search(run, objectives=({"metric": "val_acc", "mode": "max"},), max_epochs=3):
    run.mkdir(parents=True, exist_ok=True)
    (run / "search_space.json").write_text(json.dumps({
        "name": "s", "objectives": list(objectives), "max_epochs": max_epochs, "parameters": ["lr"],
        "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0}}))


def write_trial(run, name, reports, lr=0.1, error=False, tail=""):
    trial = run / name
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"lr": lr, "variant": "mvae", "preset": "mvae-tiny"}))
    lines = [json.dumps({"trial_id": name.removeprefix("trial_"), "time_total_s": 10.0 * (i + 1), **r}) for i, r in enumerate(reports)]
    (trial / "result.json").write_text("\n".join(lines) + "\n" + tail)
    if error:
        (trial / "error.txt").write_text("boom")
    return trial


PRETRAIN = {"phase": "pretrain", "val_knn_acc": 0.9, "val_pretrain_loss": 1.0}


def finetune(acc, best):
    return {"phase": "finetune", "val_acc": acc, "best_val_acc": best, "val_ce_loss": 1.0,
            "checkpoint_path": "/ckpt"}


def test_rows_give_outcomes_and_never_mix_the_proxy_into_val_acc(tmp_path):
    run = tmp_path / "run"
    write_search(run)
    write_trial(run, "a", [{**PRETRAIN, "global_epoch": 1}, {**finetune(0.5, 0.5), "global_epoch": 2},
                           {**finetune(0.4, 0.5), "global_epoch": 3}])
    write_trial(run, "b", [{**PRETRAIN, "global_epoch": 1, "checkpoint_path": "/pre"}])  # stopped in pre-training
    write_trial(run, "c", [{**PRETRAIN, "global_epoch": 1},
                           {"phase": "diverged", "diverged": 1, "status_reason": "loss became nan", "global_epoch": 1}])
    write_trial(run, "d", [], error=True)
    frame = collect_results(str(run)).set_index("trial_id")
    assert frame["outcome"].to_dict() == {"a": "completed", "b": "stopped_early", "c": "diverged", "d": "error"}
    assert frame.loc["a", "val_acc"] == 0.4 and frame.loc["a", "best_val_acc"] == 0.5
    assert frame["val_acc"].isna()[["b", "c", "d"]].all(), "a proxy is never reported as val_acc"
    assert frame.loc["b", "val_knn_acc"] == 0.9 and frame.loc["b", "checkpoint"] == "/pre"
    assert frame.loc["c", "reason"] == "loss became nan"
    assert frame.loc["a", "cpu_hours"] == pytest.approx(30.0 / 3600 * 2)
    assert frame.loc["a", "param_lr"] == 0.1 and "max_val_acc" not in frame
    assert list(collect_results(str(run))["trial_id"])[0] == "a"  # best val_acc first, unscored last
    assert [r["trial_id"] for r in read_results(run.as_uri())][0] == "a"  # any pyarrow URI


def test_a_last_line_cut_short_by_a_kill_is_skipped_with_a_warning(tmp_path):
    run = tmp_path / "run"
    write_search(run)
    trial = write_trial(run, "a", [{**PRETRAIN, "global_epoch": 1}], tail='{"global_epoch": 2, "val_a')
    with pytest.warns(UserWarning, match="line 2 is cut short"):
        history = trial_history(pyarrow.fs.LocalFileSystem(), str(trial))
    assert [h["global_epoch"] for h in history] == [1]
    (trial / "result.json").write_text('{"global_epoch": 1\n{"global_epoch": 2}\n')
    with pytest.raises(UserInputError, match="line 1 is not a JSON object"):
        trial_history(pyarrow.fs.LocalFileSystem(), str(trial))


def test_search_record_round_trips_and_names_what_is_wrong(tmp_path):
    run = tmp_path / "run"
    write_search(run)
    record = read_search(str(run))
    assert record.primary.metric == "val_acc" and record.resources.workers == 2 and record.parameters == ("lr",)
    assert SearchRecord.from_json(record.to_json(), "x") == record
    (run / "search_space.json").write_text(json.dumps({"objectives": [{"metric": "val_acc", "mode": "up"}]}))
    with pytest.raises(UserInputError, match=r"search_space.json: objectives must be"):
        read_search(str(run))
    with pytest.raises(UserInputError, match="no search_space.json"):
        read_search(str(tmp_path))


def test_a_bucket_runs_report_goes_to_a_local_directory_named_after_the_run(tmp_path, monkeypatch):
    """Two runs of one space (each with its own --name) keep their own local report and summary."""
    from raysearch.tune.report import build_report

    for name in ("first", "second"):
        run = tmp_path / "bucket" / name
        write_search(run)
        record = json.loads((run / "search_space.json").read_text())
        (run / "search_space.json").write_text(json.dumps({**record, "name": name, "source": "space.yaml"}))
        write_trial(run, "a", [{**finetune(0.5, 0.5), "global_epoch": 3}])
    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):
        report = build_report((tmp_path / "bucket" / name).as_uri(), test_trials=0)   # a URI, like s3://
        assert Path(report["summary"]) == Path("report-" + name) / "summary.md"
    for name in ("first", "second"):
        assert (tmp_path / f"report-{name}" / "summary.md").read_text().startswith(f"# Search `{name}`")


def test_train_summary_reads_the_old_status_key():
    assert TrainSummary.from_json('{"status": "completed", "best_val_acc": 0.5}', "r").outcome == "completed"
    with pytest.raises(UserInputError, match="'outcome' is 'finished'"):
        TrainSummary.from_json('{"outcome": "finished"}', "r")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                           max_leaves=20)
record_keys = st.sampled_from(["name", "objectives", "max_epochs", "parameters", "resources", "outcome", "status",
                               "best_val_acc", "checkpoint", "model_config", "trial_config", "class_names", "layout",
                               "best", "global_epoch", "metric", "mode", "workers", "val_acc"])
records = st.dictionaries(record_keys, json_values, max_size=8) | json_values


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=records, cut=st.integers(min_value=0, max_value=400))
def test_record_readers_accept_or_refuse_in_one_line(doc, cut):
    text = json.dumps(doc)
    for candidate in (text, text[:cut]):
        for parse in (SearchRecord.from_json, TrainSummary.from_json, TrialMeta.from_json):
            try:
                parse(candidate, "file f")
            except UserInputError as exc:
                assert "\n" not in str(exc) and str(exc).startswith("file f")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(json_values.map(json.dumps) | st.text(max_size=30), max_size=5))
def test_trial_history_accepts_or_refuses_in_one_line(tmp_path, lines):
    path = tmp_path / "trial"
    path.mkdir(exist_ok=True)
    (path / "result.json").write_text("\n".join(lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            history = trial_history(pyarrow.fs.LocalFileSystem(), str(path))
        except UserInputError as exc:
            assert "\n" not in str(exc)
            return
    assert all(isinstance(h, dict) for h in history)


# -- what a resumed search continues (raysearch.tune.resume) ------------------------------------------
def write_experiment_state(run, trials, name="experiment_state-2026-12-01_10-00-00.json"):
    # Tune's layout (ray 2.60): each trial a JSON string, then its runtime metadata.
    entries = [[json.dumps({"trial_id": t, "status": "TERMINATED", "config": "pickled, never read"}), "{}"]
               for t in trials]
    (run / name).write_text(json.dumps({"trial_data": entries, "runner_data": {}, "stats": {}}))


def test_trials_the_newest_record_lacks_are_marked_lost_and_reported_so(tmp_path):
    from raysearch.tune.resume import mark_lost_trials, recorded_trials

    run = tmp_path / "run"
    write_search(run)
    assert mark_lost_trials(str(run)) == []   # nothing recorded yet: nothing to judge
    write_trial(run, "trial_aaa", [{**finetune(0.5, 0.5), "global_epoch": 3}])
    write_trial(run, "trial_bbb", [{**PRETRAIN, "global_epoch": 1}])
    write_trial(run, "trial_ccc", [])
    write_experiment_state(run, ["aaa"], name="experiment_state-2026-12-01_09-00-00.json")
    write_experiment_state(run, ["aaa", "ccc"])   # the newest record is the one a restore reads
    assert recorded_trials(str(run)) == {"aaa": "TERMINATED", "ccc": "TERMINATED"}

    assert mark_lost_trials(run.as_uri()) == ["bbb"]
    frame = collect_results(str(run)).set_index("trial_id")
    assert frame["outcome"].to_dict() == {"aaa": "completed", "bbb": "lost", "ccc": "pending"}
    assert frame.loc["bbb", "val_knn_acc"] == 0.9, "a lost trial's reports stay readable"
    assert (run / "trial_bbb" / "result.json").exists(), "nothing written is removed"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=json_values | st.fixed_dictionaries({"trial_data": st.lists(st.lists(json_values.map(json.dumps) | json_values,
                                                                                     max_size=2), max_size=3)}),
       cut=st.integers(min_value=0, max_value=200))
def test_experiment_state_reader_accepts_or_refuses_in_one_line(tmp_path, doc, cut):
    from raysearch.tune.resume import recorded_trials

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    text = json.dumps(doc)
    for candidate in (text, text[:cut], "[" * 100_000):
        (run / "experiment_state-x.json").write_text(candidate)
        try:
            recorded = recorded_trials(str(run))
        except UserInputError as exc:
            assert "\n" not in str(exc) and "experiment_state-x.json" in str(exc)
            continue
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in recorded.items())
