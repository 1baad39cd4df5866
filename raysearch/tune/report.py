"""`raysearch report RUN_DIR`: results.parquet, PNG plots and a markdown summary of a search."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..contract import Column, Metric, Objective
from ..errors import UserInputError
from ..runs import collect_results, open_location, read_search, trial_history, write_results
from .results import pareto_front

TOP_TRIALS = 5
# The best trials by the search's objective (on validation) whose classifiers are evaluated on the
# test split for summary.md. Reported only: selection is over when the report is written.
TEST_TRIALS = 3


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(frame: pd.DataFrame, objective: Objective, path: Path) -> None:
    """Objective per trial in start order, with the running best."""
    plt = _figure()
    ordered = frame.sort_values(Column.TRIAL_ID)
    values = ordered[objective.metric].astype(float).tolist()
    best, running = (max if objective.mode == "max" else min), []
    for v in values:
        running.append(v if not running or math.isnan(running[-1]) else best(running[-1], v) if not math.isnan(v) else running[-1])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(range(len(values)), values, label="trial", s=18)
    ax.plot(range(len(values)), running, color="C1", label="best so far")
    ax.set(xlabel="trial (start order)", ylabel=objective.metric, title="Optimization history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parameter_importance(frame: pd.DataFrame, objective: Objective, parameters: tuple[str, ...]) -> dict[str, float]:
    """Optuna's fANOVA importances over the parameters every scored trial has (conditional
    parameters, such as beta only for MVAE, fall out of that intersection, as in Optuna)."""
    import optuna

    scored = frame.dropna(subset=[objective.metric])
    columns = [Column.param(p) for p in parameters
               if Column.param(p) in scored and scored[Column.param(p)].notna().all()]
    if len(scored) < 3 or not columns:
        return {}
    distributions = {}
    for column in columns:
        values = scored[column]
        name = column.removeprefix(Column.PARAM_PREFIX)
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            distributions[name] = optuna.distributions.CategoricalDistribution(sorted(values.astype(str).unique()))
        elif pd.api.types.is_integer_dtype(values):
            distributions[name] = optuna.distributions.IntDistribution(int(values.min()), max(int(values.max()), int(values.min()) + 1))
        else:
            distributions[name] = optuna.distributions.FloatDistribution(float(values.min()), max(float(values.max()), float(values.min()) + 1e-12))
    study = optuna.create_study(direction="maximize" if objective.mode == "max" else "minimize")
    for _, row in scored.iterrows():
        params = {n: (str(row[Column.param(n)]) if isinstance(d, optuna.distributions.CategoricalDistribution)
                      else row[Column.param(n)]) for n, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[objective.metric])))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study)


def plot_importance(importance: dict[str, float], path: Path) -> None:
    plt = _figure()
    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance (fANOVA)", title="Parameter importance")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(frame: pd.DataFrame, objectives: tuple[Objective, ...], front: pd.Series, path: Path) -> None:
    plt = _figure()
    x, y = objectives[0].metric, objectives[1].metric
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(frame[x], frame[y], color="C0", s=18, label="trial")
    best = frame[front].sort_values(x)
    ax.plot(best[x], best[y], "o-", color="C3", label="Pareto front")
    ax.set(xlabel=f"{x} ({objectives[0].mode})", ylabel=f"{y} ({objectives[1].mode})", title="Pareto front")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Fine-tuned val_acc per global epoch of each trial, with its pre-training proxy dashed."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (trial_id, history) in enumerate(curves.items()):
        for metric, style, label in ((Metric.VAL_KNN_ACC, "--", None), (Metric.VAL_PROBE_ACC, "--", None),
                                     (Metric.VAL_ACC, "-", trial_id)):
            points = [(h[Metric.GLOBAL_EPOCH], h[metric]) for h in history if metric in h and Metric.GLOBAL_EPOCH in h]
            if points:
                ax.plot(*zip(*points), style, marker=".", color=f"C{i % 10}", label=label)
    ax.set(xlabel=f"{Metric.GLOBAL_EPOCH} (pre-train, then fine-tune)",
           ylabel=f"{Metric.VAL_ACC} (dashed: pre-training proxy)", title=f"Top {len(curves)} trials")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value):
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)


def test_of_top_trials(run_dir: str, frame: pd.DataFrame, search, count: int = TEST_TRIALS) -> tuple[list[dict], str]:
    """Test accuracy of the `count` best trials by the objective (best_val_acc for val_acc, as
    export ranks; ties by trial id) that have fine-tuned weights, each with its best-validation
    classifier; and a note saying what was done. Nothing is selected by these numbers."""
    from ..contract import USABLE_OUTCOMES
    from ..data.cache import resolve_data
    from ..data.format import open_dataset
    from ..deploy.evaluate import evaluate_checkpoint
    from ..deploy.export import resolve_checkpoint
    from ..runs import checkpoint_location, has_classifier

    if count <= 0:
        return [], "not evaluated (--test-trials 0)"
    if not search.data_dir:
        return [], "not evaluated: the search recorded no data directory"
    try:
        if "test" not in open_dataset(resolve_data(search.data_dir)).split_names:
            return [], f"not evaluated: {search.data_dir} has no test split"
    except UserInputError as exc:
        return [], f"not evaluated: {exc}"
    primary = search.primary
    rank_by = Metric.BEST_VAL_ACC if primary.metric == Metric.VAL_ACC and Metric.BEST_VAL_ACC in frame else primary.metric
    usable = frame[frame[Column.OUTCOME].isin(USABLE_OUTCOMES) & frame[rank_by].notna() & frame[Column.CHECKPOINT].notna()]
    usable = usable.assign(_id=usable[Column.TRIAL_ID].astype(str)).sort_values(
        [rank_by, "_id"], ascending=[primary.mode == "min", True], kind="stable")
    rows = []
    for _, row in usable.iterrows():
        if len(rows) == count:
            break
        if not has_classifier(checkpoint_location(row[Column.CHECKPOINT], run_dir)):
            continue  # stopped before fine-tuning
        local, info = resolve_checkpoint(run_dir, row["_id"])
        try:
            evaluation = evaluate_checkpoint(local, search.data_dir, "test")
        except UserInputError as exc:
            return rows, f"stopped at trial {row['_id']}: {exc}"
        finally:
            if info.get("fetched"):
                import shutil

                shutil.rmtree(local, ignore_errors=True)
        rows.append({Column.TRIAL_ID: row["_id"], rank_by: row[rank_by], Metric.TEST_ACC: evaluation.top1,
                     Metric.TEST_TOP5_ACC: evaluation.topk, Metric.TEST_CLIPS: evaluation.clips})
    return rows, (f"ranked by {rank_by} on validation (ties by trial id); each trial's best-validation classifier "
                  "on the test split")


def build_report(run_dir: str, out_dir: str | Path | None = None, test_trials: int = TEST_TRIALS) -> dict[str, Any]:
    """Write results.parquet into the run and plots + summary.md into `out_dir` (default: the run
    directory when it is local, else ./report-<run name>). The `test_trials` best trials are
    evaluated on the data's test split (shown, marked as not used for selection)."""
    filesystem, run_path = open_location(run_dir)
    search = read_search(run_dir)
    frame = collect_results(run_dir)
    if frame.empty:
        raise UserInputError(f"run {run_dir}: no trials yet; wait for the search to start some")
    objectives, primary = search.objectives, search.primary
    front = None
    if len(objectives) > 1:
        front = pareto_front(frame, objectives)
        frame[Column.PARETO] = front
    results_path = write_results(run_dir, frame)
    out = Path(out_dir) if out_dir else (Path(run_path) if "://" not in run_dir else Path(f"report-{search.name}"))
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    plot_history(frame, primary, out / "optimization_history.png")
    plots["history"] = str(out / "optimization_history.png")
    importance = parameter_importance(frame, primary, search.parameters)
    if importance:
        plot_importance(importance, out / "parameter_importance.png")
        plots["importance"] = str(out / "parameter_importance.png")
    if front is not None:
        plot_pareto(frame, objectives, front, out / "pareto_front.png")
        plots["pareto"] = str(out / "pareto_front.png")
    top = frame.head(TOP_TRIALS)
    # trial_dir is a URI for a bucket run (s3://bucket/...); the filesystem wants its own path.
    curves = {row[Column.TRIAL_ID]: trial_history(*open_location(row[Column.TRIAL_DIR], "trial"))
              for _, row in top.iterrows()}
    plot_learning_curves(curves, out / "learning_curves.png")
    plots["learning_curves"] = str(out / "learning_curves.png")

    columns = [Column.TRIAL_ID, Column.OUTCOME, *[o.metric for o in objectives], Metric.VAL_ACC,
               Metric.BEST_VAL_ACC, Column.EPOCHS_RUN, Column.WALL_TIME_S,
               *[Column.param(p) for p in search.parameters]]
    columns = list(dict.fromkeys(c for c in columns if c in frame))
    counts = frame[Column.OUTCOME].value_counts().to_dict()
    summary = [f"# Search `{search.name}`", "", *([f"Space: `{search.source}`.", ""] if search.source else []),
               f"{len(frame)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".",
               "Objectives: " + ", ".join(f"{o.metric} ({o.mode})" for o in objectives) + ".", "",
               f"## Best {min(len(frame), 10)} trials", "", markdown_table(frame.head(10), columns), ""]
    if importance:
        summary += ["## Parameter importance", "", *[f"- {k}: {v:.3f}" for k, v in importance.items()], ""]
    if front is not None:
        summary += ["## Pareto front", "", markdown_table(frame[front], columns), ""]
    test_rows, test_note = test_of_top_trials(run_dir, frame, search, test_trials)
    summary += [f"## Test accuracy of the top {len(test_rows)} trials (test: not used for selection)", "",
                f"{test_note[0].upper()}{test_note[1:]}.", ""]
    if test_rows:
        summary += [markdown_table(pd.DataFrame(test_rows), list(test_rows[0])), ""]
    summary += ["## Plots", "", *[f"![{k}]({Path(v).name})" for k, v in plots.items()], ""]
    (out / "summary.md").write_text("\n".join(summary))
    return {"results": results_path, "summary": str(out / "summary.md"), "plots": plots, "test": test_rows,
            "trials": len(frame), "outcomes": counts, "table": markdown_table(frame.head(10), columns),
            "best": frame.iloc[0][[Column.TRIAL_ID, primary.metric]].to_dict()}
