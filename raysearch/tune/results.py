"""The Pareto front of a multi-objective search. The rows themselves are read by `raysearch.runs`
(`collect_results`, named here too for callers that look for it beside the front)."""

from __future__ import annotations

import pandas as pd

from ..contract import Objective
from ..runs import collect_results

__all__ = ["collect_results", "pareto_front"]


def pareto_front(frame: pd.DataFrame, objectives: tuple[Objective, ...] | list[Objective]) -> pd.Series:
    """Boolean mask of trials no other trial beats on every objective."""
    metrics = [o.metric for o in objectives]
    scored = frame.dropna(subset=metrics)
    signs = [1.0 if o.mode == "max" else -1.0 for o in objectives]
    values = scored[metrics].to_numpy(dtype=float) * signs
    front = pd.Series(False, index=frame.index)
    for i, row in zip(scored.index, values):
        dominated = ((values >= row).all(axis=1) & (values > row).any(axis=1)).any()
        front[i] = not dominated
    return front
