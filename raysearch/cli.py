"""The `raysearch` command. Each subcommand is a small function over the library.

Bad input ends with one line on stderr, `raysearch: error: ...`, and exit code 2. `--json` prints
one JSON object on stdout and nothing else there; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import UserInputError

EXIT_USAGE = 2


def _emit(payload: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], str]) -> None:
    print(json.dumps(payload, default=str) if as_json else table(payload))


def _key_values(payload: dict[str, Any]) -> str:
    width = max(len(k) for k in payload) if payload else 0
    return "\n".join(f"{k:<{width}}  {v}" for k, v in payload.items())


def _overrides(assignments: list[str]) -> dict[str, Any]:
    from .train.config import parse_assignment

    settings = dict(parse_assignment(a) for a in assignments or [])
    for key, flag in (("preset", "--preset (train) or the PRESET argument (model-info)"), ("data_dir", "--data")):
        if key in settings:
            raise UserInputError(f"--set {key}: not a setting; pass it with {flag}")
    return settings


# -- prepare / data-info ---------------------------------------------------------------------------
def cmd_prepare(args: argparse.Namespace) -> None:
    if args.source == "synthetic":
        from .data.synthetic import prepare_synthetic

        out = prepare_synthetic(args.out, num_classes=args.classes, per_class=args.per_class,
                                num_joints=args.joints, seed=args.seed, overwrite=args.overwrite)
        print(f"wrote dataset {out}", file=sys.stderr)
        return
    from .data.normalise import NormalisationRequest

    normalise = NormalisationRequest(args.center_joint, args.scale, args.scale_bone)
    if args.source == "ntu":
        from .data.ntu import prepare_ntu

        out = prepare_ntu(args.raw, args.out, args.benchmark, seed=args.seed, skip_bad=args.skip_bad,
                          overwrite=args.overwrite, val_per_class=args.val_per_class, val_subjects=args.val_subjects,
                          normalise=normalise)
    else:
        from .data.npz import prepare_npz

        out = prepare_npz(args.file, args.out, seed=args.seed, overwrite=args.overwrite,
                          val_per_class=args.val_per_class, val_subjects=args.val_subjects,
                          drop_nonfinite=args.drop_nonfinite,
                          normalise=normalise, layout_file=args.layout)
    print(f"wrote dataset {out}", file=sys.stderr)


def cmd_data_info(args: argparse.Namespace) -> None:
    from .data.info import dataset_info

    _emit(dataset_info(args.dir), args.json, _key_values)


# -- models ----------------------------------------------------------------------------------------
def cmd_model_info(args: argparse.Namespace) -> None:
    import models

    try:
        info = models.model_info(models.build(args.preset, **_overrides(args.set)))
    except models.ModelConfigError as exc:
        raise UserInputError(str(exc)) from None
    info = {"preset": args.preset, **info}
    _emit(info, args.json, _key_values)


# -- train -----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from .contract import COMPLETED, Resources
    from .data.cache import SYNTHETIC_PREFIX
    from .train.config import TrialConfig
    from .train.driver import fit_trial, preflight

    settings = _overrides(args.set)
    for flag in ("pretrain_epochs", "finetune_epochs", "label_fraction", "init_from", "seed"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    data = args.data if args.data.startswith(SYNTHETIC_PREFIX) else str(Path(args.data).resolve())
    trial = TrialConfig.from_flat({"preset": args.preset, "data_dir": data, **settings})
    try:
        resources = Resources(workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                              gpus_per_worker=args.gpus_per_worker).validate()
    except UserInputError as exc:
        raise UserInputError(f"{exc} (--workers, --cpus-per-worker, --gpus-per-worker)") from None
    preflight(trial, workers=resources.workers)
    from .ray_runtime import FLAG_RESOURCE_NAMES, check_cluster_fits, connect

    connect(args.address)
    # Ray Train would otherwise wait forever for workers the cluster cannot place.
    check_cluster_fits(resources, args.allow_pending_resources, names=FLAG_RESOURCE_NAMES)
    summary = fit_trial(trial, resources, args.out, encoder_cache=args.encoder_cache)
    _emit(asdict(summary), args.json, lambda s: _key_values({k: s[k] for k in summary.HEADLINE}))
    if summary.outcome != COMPLETED:
        sys.exit(1)


# -- search / report -------------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> None:
    from .data.cache import synthetic_spec
    from .train.config import TrialConfig
    from .train.driver import preflight
    from .tune.report import build_report
    from .tune.search import run_search
    from .tune.space import load_search_space

    space = load_search_space(args.space, data=args.data, num_samples=args.num_samples)
    if args.name is not None:
        from .runs import check_run_name

        check_run_name(args.name, "--name")  # before any data is generated
    if space.data == "synthetic":
        synthetic = space.synthetic
        data_dir = synthetic_spec(classes=synthetic.classes, per_class=synthetic.per_class, seed=synthetic.seed,
                                  max_frames=synthetic.max_frames)
    else:
        data_dir = space.data
    # Generate (synthetic) or open (directory) the data and check fixed settings before Ray starts.
    preflight(TrialConfig.from_flat(space.constants(data_dir)))
    run_dir = run_search(space, data_dir, args.storage, args.name, args.resume,
                         allow_pending_resources=args.allow_pending_resources)
    report = build_report(str(run_dir))
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), **{k: v for k, v in report.items() if k != "table"}}, default=str))
    else:
        print(report["table"])
        print(f"\nrun: {run_dir}\nsummary: {report['summary']}\nbest: {report['best']}")


def cmd_report(args: argparse.Namespace) -> None:
    from .tune.report import build_report

    report = build_report(args.run_dir, args.out, test_trials=args.test_trials)
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "table"}, default=str))
    else:
        print(report["table"])
        print(f"\nresults: {report['results']}\nsummary: {report['summary']}")


# -- cluster ---------------------------------------------------------------------------------------
def cmd_cluster_validate(args: argparse.Namespace) -> None:
    from .cluster_config import cluster_files, describe, validate_cluster_file

    checks, failures = [], []
    for path in cluster_files(args.files):
        try:
            # A RayJob's entrypoint is read by this CLI's own parser.
            checks.append(validate_cluster_file(path, strict=args.strict, search_args=build_parser().parse_args))
        except UserInputError as exc:
            failures.append(exc)
    if args.json:
        print(json.dumps({"ok": not failures, "files": [c.to_dict() for c in checks],
                          "errors": [str(e) for e in failures]}))
    else:
        for check in checks:
            print(describe(check))
    if failures:
        more = f" (and {len(failures) - 1} more file(s) failing)" if len(failures) > 1 else ""
        raise UserInputError(f"{failures[0]}{more}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    prepare = sub.add_parser("prepare", help="import a dataset into the raysearch format")
    prepare_sub = prepare.add_subparsers(dest="source", required=True)
    from .data.synthetic import SYNTHETIC_DEFAULTS as SYN

    synthetic = prepare_sub.add_parser("synthetic", help="generate procedural skeleton actions")
    synthetic.add_argument("--out", required=True)
    synthetic.add_argument("--classes", type=int, default=SYN.classes)
    synthetic.add_argument("--per-class", type=int, default=SYN.per_class)
    synthetic.add_argument("--joints", type=int, default=SYN.joints)
    ntu = prepare_sub.add_parser("ntu", help="import raw NTU RGB+D .skeleton files")
    ntu.add_argument("--raw", required=True)
    ntu.add_argument("--out", required=True)
    ntu.add_argument("--benchmark", required=True, choices=["ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"])
    ntu.add_argument("--skip-bad", action="store_true", help="count and skip corrupt files instead of stopping")
    npz = prepare_sub.add_parser("npz", help="import a CTR-GCN/STTFormer or generic .npz")
    npz.add_argument("file")
    npz.add_argument("--out", required=True)
    npz.add_argument("--layout", metavar="FILE", help='layout JSON: {"name", "joint_names": [...], "bones": [[a, b], '
                     '...], "center_joint": index or name}; default: recognised by joint count (20: MSR Action3D, '
                     '25: NTU/Kinect v2), else joint 0 with a warning')
    npz.add_argument("--drop-nonfinite", action="store_true", help="drop samples with NaN/Inf instead of stopping")
    for p in (ntu, npz):
        p.add_argument("--center-joint", metavar="N|NAME", help="joint each clip is centred on (person 1, first "
                       "frame it appears); 'none' keeps coordinates as recorded; default: the layout's centre joint")
        p.add_argument("--scale", choices=["none", "bone", "body"], default="none",
                       help="divide each clip by a reference bone length (bone) or its mean body size (body); "
                            "default none")
        p.add_argument("--scale-bone", metavar="A-B", help="reference bone of --scale bone (default: the torso)")
        p.add_argument("--val-per-class", type=int, metavar="K", help="validation clips carved from each class "
                       "of train (at most half of a class); default max(2, round(0.05 * clips of the class))")
        p.add_argument("--val-subjects", type=int, metavar="K", help="instead, validation = every training clip of "
                       "K subjects chosen by --seed (people the model never trains on, as in a cross-subject test); "
                       "a .npz needs an array 'subject'")
    for p in (synthetic, ntu, npz):
        p.add_argument("--seed", type=int, default=SYN.seed)
        p.add_argument("--overwrite", action="store_true", help="replace an existing raysearch dataset (only a "
                       "folder holding a raysearch manifest.json is ever replaced)")
    prepare.set_defaults(func=cmd_prepare)

    info = sub.add_parser("data-info", help="describe a dataset directory")
    info.add_argument("dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_data_info)

    model_info = sub.add_parser("model-info", help="parameters, FLOPs and shapes of a preset")
    model_info.add_argument("preset")
    model_info.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a preset field")
    model_info.add_argument("--json", action="store_true")
    model_info.set_defaults(func=cmd_model_info)

    train = sub.add_parser("train", help="one trial: multi-worker pre-train then fine-tune on Ray Train")
    train.add_argument("--preset", required=True)
    train.add_argument("--data", required=True)
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="model or recipe setting")
    train.add_argument("--workers", type=int, default=2)
    train.add_argument("--cpus-per-worker", type=float, default=1)
    train.add_argument("--gpus-per-worker", type=float, default=0)
    train.add_argument("--pretrain-epochs", type=int)
    train.add_argument("--finetune-epochs", type=int)
    train.add_argument("--label-fraction", type=float)
    train.add_argument("--init-from", help="encoder checkpoint (ours or public STTFormer layout)")
    train.add_argument("--seed", type=int)
    train.add_argument("--out", default="runs/train")
    train.add_argument("--encoder-cache", metavar="DIR", help="pre-trained encoders to reuse and add to (a directory or s3:// / gs:// URI, e.g. a search's RUN_DIR/encoders): a trial whose pre-training settings are there skips pre-training")
    train.add_argument("--address", help="Ray cluster address (default: start local Ray)")
    train.add_argument("--allow-pending-resources", action="store_true",
                       help="on an autoscaling cluster: accept workers no current node has room for")
    train.add_argument("--json", action="store_true")
    train.set_defaults(func=cmd_train)

    search = sub.add_parser("search", help="hyperparameter search: Ray Tune + Optuna over a search-space YAML")
    search.add_argument("space", help="search-space YAML, e.g. search_spaces/smoke.yaml")
    search.add_argument("--data", help="dataset directory (overrides the YAML's data)")
    search.add_argument("--num-samples", type=int, help="number of trials (overrides budget.num_samples)")
    search.add_argument("--storage", help="where results go: a directory or s3:// / gs:// URI (default ./runs)")
    search.add_argument("--name", help="run name (default: the space's name)")
    search.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    search.add_argument("--allow-pending-resources", action="store_true",
                        help="on an autoscaling cluster: accept per-trial resources no current node has")
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    report = sub.add_parser("report", help="results.parquet, plots and a summary of a search run")
    report.add_argument("run_dir")
    report.add_argument("--out", help="where plots and summary.md go (default: the run directory)")
    report.add_argument("--test-trials", type=int, default=3, metavar="N",
                        help="evaluate the N best trials (by validation) on the data's test split for "
                             "summary.md; never used for selection; 0 skips it (default 3)")
    report.add_argument("--json", action="store_true")
    report.set_defaults(func=cmd_report)

    from .deploy.cli_commands import add_evaluate_parser, add_export_parser, add_predict_parser

    add_export_parser(sub)
    add_predict_parser(sub)
    add_evaluate_parser(sub)

    cluster = sub.add_parser("cluster", help="cluster configs: check them before launching")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    validate = cluster_sub.add_parser(
        "validate", help="check Ray launcher YAMLs, KubeRay manifests and runtime envs (cluster/)",
        description="Check Ray cluster launcher YAMLs against Ray's schema, KubeRay RayCluster/RayJob manifests "
                    "for the fields raysearch relies on, every shell command in them (token auth on each "
                    "`ray start`, no `ray stop`, nothing downloaded and run), and runtime envs for ray job submit. "
                    "Run it from the repository root: search spaces named in the files are read from there.")
    validate.add_argument("files", nargs="+", metavar="FILE", help="cluster YAML files, or directories of them")
    validate.add_argument("--strict", action="store_true", help="also refuse YOUR_* placeholders left in values")
    validate.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    validate.set_defaults(func=cmd_cluster_validate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import models

    try:
        args.func(args)
    except (UserInputError, models.ModelConfigError) as exc:
        print(f"raysearch: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


if __name__ == "__main__":
    main()
