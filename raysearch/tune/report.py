"""`raysearch report RUN_DIR`: results.parquet, PNG plots and a markdown summary of a search."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from .results import collect_results, open_run, pareto_front, read_space, trial_history, write_results

TOP_TRIALS = 5


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(frame: pd.DataFrame, objective: dict[str, str], path: Path) -> None:
    """Objective per trial in start order, with the running best."""
    plt = _figure()
    ordered = frame.sort_values("trial_id")
    values = ordered[objective["metric"]].astype(float).tolist()
    best, running = (max if objective["mode"] == "max" else min), []
    for v in values:
        running.append(v if not running or math.isnan(running[-1]) else best(running[-1], v) if not math.isnan(v) else running[-1])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(range(len(values)), values, label="trial", s=18)
    ax.plot(range(len(values)), running, color="C1", label="best so far")
    ax.set(xlabel="trial (start order)", ylabel=objective["metric"], title="Optimization history")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parameter_importance(frame: pd.DataFrame, objective: dict[str, str], parameters: list[str]) -> dict[str, float]:
    """Optuna's fANOVA importances over the parameters every scored trial has (conditional
    parameters, such as beta only for MVAE, fall out of that intersection, as in Optuna)."""
    import optuna

    scored = frame.dropna(subset=[objective["metric"]])
    columns = [f"param_{p}" for p in parameters if f"param_{p}" in scored and scored[f"param_{p}"].notna().all()]
    if len(scored) < 3 or not columns:
        return {}
    distributions = {}
    for column in columns:
        values = scored[column]
        name = column.removeprefix("param_")
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            distributions[name] = optuna.distributions.CategoricalDistribution(sorted(values.astype(str).unique()))
        elif pd.api.types.is_integer_dtype(values):
            distributions[name] = optuna.distributions.IntDistribution(int(values.min()), max(int(values.max()), int(values.min()) + 1))
        else:
            distributions[name] = optuna.distributions.FloatDistribution(float(values.min()), max(float(values.max()), float(values.min()) + 1e-12))
    study = optuna.create_study(direction="maximize" if objective["mode"] == "max" else "minimize")
    for _, row in scored.iterrows():
        params = {n: (str(row[f"param_{n}"]) if isinstance(d, optuna.distributions.CategoricalDistribution) else row[f"param_{n}"])
                  for n, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                  value=float(row[objective["metric"]])))
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


def plot_pareto(frame: pd.DataFrame, objectives: list[dict[str, str]], front: pd.Series, path: Path) -> None:
    plt = _figure()
    x, y = objectives[0]["metric"], objectives[1]["metric"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(frame[x], frame[y], color="C0", s=18, label="trial")
    best = frame[front].sort_values(x)
    ax.plot(best[x], best[y], "o-", color="C3", label="Pareto front")
    ax.set(xlabel=f"{x} ({objectives[0]['mode']})", ylabel=f"{y} ({objectives[1]['mode']})", title="Pareto front")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for trial_id, history in curves.items():
        points = [(h["global_epoch"], h["val_acc"]) for h in history if "val_acc" in h and "global_epoch" in h]
        if points:
            ax.plot(*zip(*points), marker=".", label=trial_id)
    ax.set(xlabel="global_epoch (pre-train, then fine-tune)", ylabel="val_acc", title=f"Top {len(curves)} trials")
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


def build_report(run_dir: str, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write results.parquet into the run and plots + summary.md into `out_dir` (default: the run
    directory when it is local, else ./report-<run name>)."""
    filesystem, run_path = open_run(run_dir)
    space = read_space(filesystem, run_path)
    frame = collect_results(run_dir)
    if frame.empty:
        from ..errors import UserInputError
        raise UserInputError(f"run {run_dir}: no trials yet; wait for the search to start some")
    objectives = space["objectives"]
    front = None
    if len(objectives) > 1:
        front = pareto_front(frame, objectives)
        frame["pareto"] = front
    results_path = write_results(run_dir, frame)
    out = Path(out_dir) if out_dir else (Path(run_path) if "://" not in run_dir else Path(f"report-{space['name']}"))
    out.mkdir(parents=True, exist_ok=True)
    plots = {}
    plot_history(frame, objectives[0], out / "optimization_history.png")
    plots["history"] = str(out / "optimization_history.png")
    importance = parameter_importance(frame, objectives[0], space["parameters"])
    if importance:
        plot_importance(importance, out / "parameter_importance.png")
        plots["importance"] = str(out / "parameter_importance.png")
    if front is not None:
        plot_pareto(frame, objectives, front, out / "pareto_front.png")
        plots["pareto"] = str(out / "pareto_front.png")
    top = frame.head(TOP_TRIALS)
    curves = {row.trial_id: trial_history(filesystem, row.trial_dir) for row in top.itertuples()}
    plot_learning_curves(curves, out / "learning_curves.png")
    plots["learning_curves"] = str(out / "learning_curves.png")

    param_columns = [f"param_{p}" for p in space["parameters"]]
    columns = ["trial_id", "outcome", *[o["metric"] for o in objectives if o["metric"] != "val_acc"], "val_acc",
               "best_val_acc", "epochs_run", "wall_time_s", *param_columns]
    columns = list(dict.fromkeys(c for c in columns if c in frame))
    counts = frame["outcome"].value_counts().to_dict()
    summary = [f"# Search `{space['name']}`", "",
               f"{len(frame)} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".",
               f"Objectives: " + ", ".join(f"{o['metric']} ({o['mode']})" for o in objectives) + ".", "",
               f"## Best {min(len(frame), 10)} trials", "", markdown_table(frame.head(10), columns), ""]
    if importance:
        summary += ["## Parameter importance", "", *[f"- {k}: {v:.3f}" for k, v in importance.items()], ""]
    if front is not None:
        summary += ["## Pareto front", "", markdown_table(frame[front], columns), ""]
    summary += ["## Plots", "", *[f"![{k}]({Path(v).name})" for k, v in plots.items()], ""]
    (out / "summary.md").write_text("\n".join(summary))
    return {"results": results_path, "summary": str(out / "summary.md"), "plots": plots,
            "trials": len(frame), "outcomes": counts, "table": markdown_table(frame.head(10), columns),
            "best": frame.iloc[0][["trial_id", objectives[0]["metric"]]].to_dict()}
