"""`raysearch export` and `raysearch predict`: argument parsers and command bodies.

    raysearch export RUN_DIR --out DIR [--trial ID] [--overwrite] [--json]
    raysearch predict ARTIFACT_DIR INPUT [--top-k K] [--json]
    raysearch evaluate ARTIFACT_OR_RUN --data DIR [--split test] [--trial ID] [--out DIR] [--json]

`--json` prints one JSON object on stdout and nothing else there; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def add_export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("export", help="write the best trial of a run as a deployment artifact")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a `raysearch train --out` or `raysearch search` run directory (path or URI), or a "
                             "checkpoint directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="artifact directory to write")
    parser.add_argument("--trial", metavar="ID", help="export this trial of a search instead of the best one")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing artifact in --out")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=cmd_export)
    return parser


def add_predict_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("predict", help="classify .skeleton or .npz sequences with an exported artifact")
    parser.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="directory written by `raysearch export`")
    parser.add_argument("input", metavar="INPUT", help="a .skeleton file or an .npz (generic or CTR-GCN layout)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="classes listed per sequence (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=cmd_predict)
    return parser


def add_evaluate_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("evaluate", help="accuracy of an artifact or a run's best-validation classifier on a "
                                             "split of a prepared dataset (default: test)")
    parser.add_argument("source", metavar="ARTIFACT_OR_RUN",
                        help="an artifact directory (`raysearch export`), a `raysearch train --out` or "
                             "`raysearch search` run (its best trial by validation), or a checkpoint directory")
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset directory (`raysearch prepare`)")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--trial", metavar="ID", help="a search's trial instead of its best one")
    parser.add_argument("--out", metavar="DIR", help="where evaluation.json and the confusion matrix (JSON, PNG) "
                        "go (default: evaluation-SPLIT in the current directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(func=cmd_evaluate)
    return parser


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in [header, *rows])


def cmd_export(args: argparse.Namespace) -> None:
    from ..contract import Column, Metric
    from .export import CONFIG_FILE, METRICS_FILE, check_out_dir, export_artifact, resolve_checkpoint

    check_out_dir(Path(args.out).absolute(), args.overwrite)  # before fetching a remote checkpoint
    print(f"export: finding the checkpoint in {args.run_dir}", file=sys.stderr)
    local, info = resolve_checkpoint(args.run_dir, args.trial)
    try:
        if info.get("skipped"):
            print(f"export: skipped better-ranked trials without fine-tuned weights: {', '.join(info['skipped'])}",
                  file=sys.stderr)
        objective = info.get("objective")
        chosen = f"trial {info[Column.TRIAL_ID]}, " if info.get(Column.TRIAL_ID) else ""
        score = f"{objective['metric']} {objective['value']}, " if objective else ""
        print(f"export: {chosen}{score}checkpoint {info['checkpoint']}; tracing and verifying the classifier",
              file=sys.stderr)
        out = export_artifact(local, args.out, overwrite=args.overwrite, source=info)
    finally:
        if info.get("fetched"):
            shutil.rmtree(local, ignore_errors=True)
    config = json.loads((out / CONFIG_FILE).read_text())
    metrics = json.loads((out / METRICS_FILE).read_text())
    summary: dict[str, Any] = {
        "artifact": str(out), "run_dir": info["run_dir"], Column.TRIAL_ID: info.get(Column.TRIAL_ID),
        "checkpoint": info["checkpoint"], Metric.BEST_VAL_ACC: metrics.get(Metric.BEST_VAL_ACC),
        "export_format": config["export_format"], "program_file": config["program_file"],
        "num_classes": config["model_config"]["num_classes"],
        "max_abs_diff": config["verification"]["max_abs_diff"],
    }
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(_table(["field", "value"], [[k, "-" if v is None else str(v)] for k, v in summary.items()]))


def cmd_predict(args: argparse.Namespace) -> None:
    from .predict import predict

    result = predict(args.artifact_dir, args.input, top_k=args.top_k)
    if args.json:
        print(json.dumps(result))
        return
    rows = [[str(p["index"]), p["sample_id"], p["class_name"], f"{p['probability']:.3f}",
             ", ".join(f"{name} {prob:.2f}" for name, prob in p["top_k"][1:])]
            for p in result["predictions"]]
    print(_table(["index", "sample_id", "class", "prob", "next most likely"], rows))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_source, write_evaluation

    print(f"evaluate: {args.source} on split {args.split} of {args.data}", file=sys.stderr)
    evaluation, info = evaluate_source(args.source, args.data, args.split, args.trial)
    files = write_evaluation(evaluation, args.out or f"evaluation-{args.split}", info)
    if args.json:
        print(json.dumps({**evaluation.to_dict(), "source": info, "files": files}, default=str))
        return
    k = evaluation.k
    print(_table(["field", "value"], [["source", info.get("checkpoint") or info.get("source")],
                                      ["split", f"{evaluation.split} ({evaluation.clips} clips)"],
                                      ["top-1", f"{evaluation.top1:.4f}"], [f"top-{k}", f"{evaluation.topk:.4f}"],
                                      *[[k_, v] for k_, v in files.items()]]))
    print()
    print(_table(["class", "accuracy"], [[name, "-" if acc is None else f"{acc:.3f}"]
                                         for name, acc in evaluation.per_class.items()]))
