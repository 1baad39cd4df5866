"""Hostile input through the command line (issue 16): every kind ends with exit code 2 and exactly
one stderr line, `raysearch: error: ...`, naming what to fix; nothing the user had written is lost,
and (except where a test asks for it) no Ray is started."""

import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import raysearch.ray_runtime
from raysearch.cli import main
from raysearch.errors import UserInputError
from raysearch.train.config import TUNABLE_FIELDS, TrialConfig, parse_assignment

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class WouldStartRay(Exception):
    """Raised instead of connecting: the input was accepted up to the point where Ray starts."""


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise WouldStartRay()

    monkeypatch.setattr(raysearch.ray_runtime, "connect", refuse)


def run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    _, err = capsys.readouterr()
    return exit_info.value.code, err


def refused(capsys, *args, names: str) -> str:
    """The one error line of a refused command, which must name `names`."""
    code, err = run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("raysearch: error: ")]
    assert code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert names in errors[0], errors[0]
    return errors[0]


def train(data, *extra):
    return ["train", "--preset", "mvae-tiny", "--data", str(data), "--out", "never-written", *extra]


# -- 1. --set values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("assignment, why", [
    ("frame_mask_ratio=abc", "[0, 1)"),
    ("decoder_depth=2.5", "integer"),
    ("encoder_blocks=5", "triples"),
    ("encoder_blocks=[5]", "triples"),
    ("lr_milestones=5", "list of epochs"),
    ("beta=.nan", "finite"),
    ("beta=.inf", "finite"),
    ("restart_dead_codes=maybe", "true or false"),
    ("augment=maybe", "true or false"),
    ("seed=abc", "[0, 4294967296)"),
    ("seed=-1", "[0, 4294967296)"),
    ("seed=4294967296", "[0, 4294967296)"),
    ("loader_workers=-1", "integer in [0"),
    ("batch_size=1", "batch norm"),
    ("lr=abc", "number > 0"),
    ("label_fraction=abc", "(0, 1]"),
    ("weight_decay=.nan", ">= 0"),
    ("init_from=[1]", "checkpoint"),
])
def test_set_value_of_the_wrong_type_is_one_line_naming_the_key(capsys, synthetic_data, no_ray, assignment, why):
    key = assignment.split("=")[0]
    line = refused(capsys, *train(synthetic_data, "--set", assignment), names=key)
    assert why in line


def test_set_refuses_unknown_keys_self_referencing_yaml_and_the_commands_own_arguments(capsys, synthetic_data,
                                                                                       no_ray):
    line = refused(capsys, *train(synthetic_data, "--set", "bogus=1"), names="'bogus'")
    assert "known:" in line and "frame_mask_ratio" in line
    # A self-referencing list used to reach the config; the user YAML reader refuses the alias.
    refused(capsys, *train(synthetic_data, "--set", "lr_milestones=&a [*a]"), names="lr_milestones")
    refused(capsys, "model-info", "mvae-tiny", "--set", "beta=&a [*a]", names="beta")
    refused(capsys, *train(synthetic_data, "--set", "beta=!!python/object/apply:os.system [true]"), names="beta")
    refused(capsys, *train(synthetic_data, "--set", "data_dir=/elsewhere"), names="--data")
    refused(capsys, *train(synthetic_data, "--set", "preset=mae-tiny"), names="--preset")


def test_set_values_a_user_expects_to_work(synthetic_data, no_ray):
    """`1e-3` is a string to YAML 1.1; list-valued fields take YAML lists."""
    for assignments in (["lr=1e-3"], ["lr_milestones=[2, 4]"], ["encoder_blocks=[[8, 8, 2], [8, 16, 4]]"],
                        ["batch_size=2", "seed=4294967295"]):
        args = [a for s in assignments for a in ("--set", s)]
        with pytest.raises(WouldStartRay):
            main(list(train(synthetic_data, "--workers", "1", *args)))
    assert parse_assignment("lr=1e-3") == ("lr", 0.001)


yaml_snippets = st.sampled_from(["", "0", "1", "-1", "2.5", "1e-3", "1e400", ".nan", "-.inf", "true", "maybe",
                                 "null", "~", "[]", "[1, 2]", "[[8, 8, 2]]", "{a: 1}", "&a [*a]", "*x", "!!binary AA==",
                                 "!!python/name:os.system", "'quoted'", "[", "{", "a: b: c", "- 1", "---\n1\n---\n2",
                                 "4294967296", "99999999999999999999999", "\x00", "\t", "1\n2"])
set_values = yaml_snippets | st.text(max_size=24) | st.builds(lambda a, b: a + b, yaml_snippets, st.text(max_size=6))
set_keys = st.sampled_from(sorted(TUNABLE_FIELDS) + ["bogus", "", " seed ", "num_classes", "preset"])


@FUZZ
@given(key=set_keys, value=set_values)
def test_any_set_text_builds_a_trial_or_is_refused_in_one_line(key, value):
    try:
        name, parsed = parse_assignment(f"{key}={value}")
        trial = TrialConfig.from_flat({"preset": "mvae-tiny", "data_dir": "d", name: parsed})
        trial.model_config(num_joints=25, num_persons=2, num_classes=6, num_channels=3)
    except UserInputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 1000


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(key=st.sampled_from(["frame_mask_ratio", "beta", "restart_dead_codes", "encoder_blocks", "seed", "lr",
                            "lr_milestones", "batch_size", "bogus"]), value=set_values)
def test_any_set_text_through_train_reaches_ray_or_one_error_line(capsys, synthetic_data, no_ray, key, value):
    try:
        main(list(train(synthetic_data, "--workers", "1", "--set", f"{key}={value}")))
    except WouldStartRay:
        return
    except SystemExit as exc:
        err = capsys.readouterr().err
        assert exc.code == 2 and err.count("\n") == 1 and err.startswith("raysearch: error: "), err


# -- 2. train resources ---------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--cpus-per-worker", "--gpus-per-worker"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_train_refuses_non_finite_or_negative_worker_resources(capsys, synthetic_data, no_ray, flag, value):
    line = refused(capsys, *train(synthetic_data, flag, value), names=flag.removeprefix("--").replace("-", "_"))
    assert "finite" in line and flag in line


def test_train_refuses_zero_cpus_and_a_batch_too_small_for_the_workers(capsys, synthetic_data, no_ray):
    refused(capsys, *train(synthetic_data, "--cpus-per-worker", "0"), names="cpus_per_worker")
    line = refused(capsys, *train(synthetic_data, "--workers", "64"), names="64 workers")
    assert "batch norm" in line and "batch_size >= 128" in line


@pytest.fixture
def local_ray_two_cpus():
    """Local Ray with 2 CPUs for one test, shut down after it (the session's, when one runs already)."""
    import ray

    if ray.is_initialized():
        yield
        return
    raysearch.ray_runtime.connect(num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()


def test_train_refuses_more_workers_than_the_cluster_has(capsys, synthetic_data, local_ray_two_cpus, tmp_path):
    out = tmp_path / "run"
    line = refused(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data, "--out", out,
                   "--workers", "64", "--set", "batch_size=256", names="--workers")
    assert "64 workers" in line and "2.0 CPU" in line and "--allow-pending-resources" in line
    refused(capsys, "train", "--preset", "mvae-tiny", "--data", synthetic_data, "--out", out,
            "--workers", "1", "--gpus-per-worker", "1", names="--gpus-per-worker")
    assert not out.exists()


# -- 3. run names and storage URIs ---------------------------------------------------------------------
SPACE = ("name: hostile\npreset: mvae-tiny\ndata: synthetic\nsynthetic: {classes: 3, per_class: 10}\n"
         "objectives: [{metric: val_acc, mode: max}]\n"
         "budget: {num_samples: 1, pretrain_epochs: 1, finetune_epochs: 1}\n"
         "parameters: {beta: {type: float, low: 0.001, high: 0.1, log: true}}\n")


@pytest.mark.parametrize("name", ["../../x", "", "a/b", "..", ".hidden", "x?y=1", "-rf", "n" * 101])
def test_search_refuses_a_name_that_is_not_one_safe_path_component(capsys, tmp_path, no_ray, name):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    line = refused(capsys, "search", space, "--storage", tmp_path / "runs", f"--name={name}", names="--name")
    assert "not a usable run name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing written anywhere


def test_a_name_is_joined_into_the_path_of_a_storage_uri_before_its_query(moto_s3, monkeypatch):
    import boto3
    import pyarrow.fs

    from raysearch.runs import checkpoint_location, join_uri, open_location, read_text, uri_of, write_text

    for key, value in moto_s3["env"].items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=moto_s3["endpoint"], region_name="us-east-1").create_bucket(Bucket="hostile")
    root = f"s3://hostile/runs?{moto_s3['query']}"
    run_dir = join_uri(root, "smoke")
    assert run_dir == f"s3://hostile/runs/smoke?{moto_s3['query']}"
    assert join_uri(run_dir, "trials") == f"s3://hostile/runs/smoke/trials?{moto_s3['query']}"
    write_text(join_uri(run_dir, "trials", "t1"), "meta.json", "{}")
    filesystem, path = open_location(run_dir)
    assert path == "hostile/runs/smoke"
    assert read_text(filesystem, "hostile/runs/smoke/trials/t1/meta.json") == "{}"
    # Ray records checkpoints as bucket paths; the URI made of one keeps the endpoint settings.
    checkpoint = checkpoint_location("hostile/runs/smoke/trials/t1", run_dir)
    assert checkpoint == uri_of(run_dir, "hostile/runs/smoke/trials/t1") \
        == f"s3://hostile/runs/smoke/trials/t1?{moto_s3['query']}"
    checkpoint_fs, checkpoint_path = open_location(checkpoint, "checkpoint")
    assert checkpoint_fs.get_file_info(f"{checkpoint_path}/meta.json").type == pyarrow.fs.FileType.File


# -- 4. answers that name the right thing ------------------------------------------------------------------
# Flags of other programs that messages about cluster files and launch commands mention.
OTHER_TOOLS_FLAGS = {"--runtime-env", "--working-dir", "--generate", "--no-restart", "--head", "--env", "--help"}


def raysearch_flags() -> dict[tuple[str, ...], set[str]]:
    """Every option of every (sub)command: {("prepare", "npz"): {"--out", ...}, ...}."""
    import argparse

    from raysearch.cli import build_parser

    flags: dict[tuple[str, ...], set[str]] = {}

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + (name,))
            else:
                flags.setdefault(path, set()).update(o for o in action.option_strings if o.startswith("--"))

    walk(parser=build_parser(), path=())
    return flags


def message_texts():
    """(file, text) of every string literal in raysearch/ (f-string pieces too), except the shell
    reader, whose strings are other programs' flags."""
    import ast
    from pathlib import Path

    import raysearch

    for path in sorted(Path(raysearch.__file__).parent.rglob("*.py")):
        if path.name == "cluster_shell.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield path.name, node.value


def test_every_flag_a_message_suggests_exists():
    import re

    flags = raysearch_flags()
    everywhere = set().union(*flags.values()) | OTHER_TOOLS_FLAGS
    wrong = []
    for file, text in message_texts():
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text):
            if flag not in everywhere:
                wrong.append((file, flag, text[:80]))
        # `raysearch CMD [SUB] ... --flag` in backticks: the flag must be CMD's own.
        for snippet in re.findall(r"`raysearch ([^`]*)`", text):
            words = snippet.split()
            command = tuple(words[:2]) if tuple(words[:2]) in flags else tuple(words[:1])
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", snippet):
                if command in flags and flag not in flags[command]:
                    wrong.append((file, flag, snippet))
    assert not wrong, wrong


def test_the_nan_message_names_a_flag_of_the_command_that_was_run(capsys, tmp_path, artifact):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(24, 3, 20, 25, 2)).astype(np.float32)
    x[1, 0, 3, 2, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(24) % 2)
    line = refused(capsys, "prepare", "npz", tmp_path / "nan.npz", "--out", tmp_path / "d", names="nan.npz")
    assert "raysearch prepare npz ... --drop-nonfinite" in line
    main(["prepare", "npz", str(tmp_path / "nan.npz"), "--out", str(tmp_path / "d"), "--drop-nonfinite"])
    assert (tmp_path / "d" / "manifest.json").is_file()  # the flag it names works
    line = refused(capsys, "predict", artifact, tmp_path / "nan.npz", names="nan.npz")
    assert "--" not in line.split("nan.npz", 1)[1] and "cannot be classified" in line


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """An exported artifact of a tiny trial (1 pre-train + 1 fine-tune epoch), and its checkpoint."""
    from raysearch.data.synthetic import prepare_synthetic
    from raysearch.deploy import export_artifact
    from raysearch.train.distributed import WorkerContext
    from raysearch.train.loop import LocalReporter, TrialLoop

    root = tmp_path_factory.mktemp("hostile-artifact")
    data = prepare_synthetic(root / "data", num_classes=3, per_class=20, seed=0)
    trial = TrialConfig.from_flat(dict(preset="mvae-tiny", data_dir=str(data), pretrain_epochs=1, finetune_epochs=1,
                                       batch_size=16, seed=0))
    TrialLoop.build(trial, WorkerContext(), LocalReporter(root / "trial")).run()
    return export_artifact(root / "trial" / "checkpoint", root / "artifact")


@pytest.fixture
def artifact_copy(artifact, tmp_path):
    import shutil

    return shutil.copytree(artifact, tmp_path / "artifact")


@pytest.fixture
def clip(tmp_path):
    import numpy as np

    np.savez(tmp_path / "clip.npz", x=np.random.default_rng(1).normal(size=(1, 3, 20, 25, 2)).astype(np.float32))
    return tmp_path / "clip.npz"


class RunsAShellCommand:
    """Unpickling this would run `touch marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_weights_with_code_are_refused_for_safety_and_damaged_ones_called_corrupt(capsys, artifact_copy, clip,
                                                                                 tmp_path):
    import torch

    weights = artifact_copy / "weights.pt"
    good = weights.read_bytes()
    marker = tmp_path / "code-ran"
    # os.system is on torch's blocklist: its refusal never says "Unsupported global".
    torch.save({**torch.load(weights, weights_only=True), "x": RunsAShellCommand(marker)}, weights)
    line = refused(capsys, "predict", artifact_copy, clip, names="weights.pt")
    assert "weights_only loading refuses" in line and "posix.system" in line and "corrupt" not in line
    assert not marker.exists()
    for damaged in (good[: len(good) // 3], b"", b"hello", b"PK\x03\x04 not really"):
        weights.write_bytes(damaged)
        line = refused(capsys, "predict", artifact_copy, clip, names="weights.pt")
        assert "corrupt" in line and "weights_only" not in line


def test_a_bad_program_file_is_one_message_not_nested_in_itself(capsys, artifact_copy, clip):
    import hashlib
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "not a program")
    (artifact_copy / "classifier.pt2").write_bytes(buffer.getvalue())
    config = json.loads((artifact_copy / "config.json").read_text())
    config["sha256"]["classifier.pt2"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    (artifact_copy / "config.json").write_text(json.dumps(config))
    line = refused(capsys, "predict", artifact_copy, clip, names="classifier.pt2")
    assert line.count("classifier.pt2") == 1 and line.count("re-export") == 1 and "corrupt" not in line


def test_a_relative_checkpoint_path_is_not_joined_to_itself(capsys, artifact, tmp_path, monkeypatch):
    import shutil

    checkpoint = artifact.parent / "trial" / "checkpoint"
    shutil.copytree(checkpoint, tmp_path / "work" / "ckpts" / "good")
    monkeypatch.chdir(tmp_path)
    main(["export", "work/ckpts/good", "--out", "art", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["checkpoint"] == "work/ckpts/good" and (tmp_path / "art" / "weights.pt").is_file()


# -- 5. tampered artifact files ------------------------------------------------------------------------------
def tamper(artifact_dir, file, change):
    path = artifact_dir / file
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("file, change, field", [
    ("config.json", lambda c: c["model_config"].update(num_classes=1_000_000_000), "num_classes"),
    ("config.json", lambda c: c["model_config"].update(encoder_blocks=[5]), "encoder_blocks"),
    ("config.json", lambda c: c["model_config"].update(num_frames="16"), "num_frames"),
    ("config.json", lambda c: c.update(sha256=["x"]), "sha256"),
    ("config.json", lambda c: c.update(export_format=["torch.export"]), "export_format"),
    ("labels.json", lambda c: c.__setitem__(0, 7), "class names"),
    ("metrics.json", lambda c: c.update(best_val_acc="high"), "best_val_acc"),
    ("metrics.json", lambda c: c.update(trial_config=5), "trial_config"),
    ("preprocessing.json", lambda c: c.update(num_joints="25"), "num_joints"),
    ("preprocessing.json", lambda c: c.update(test_crop_fraction=[1]), "test_crop_fraction"),
    ("preprocessing.json", lambda c: c.update(layout=7), "layout"),
])
def test_tampered_artifact_field_is_refused_in_one_line_naming_file_and_field(capsys, artifact_copy, clip, file,
                                                                               change, field):
    tamper(artifact_copy, file, change)
    tracemalloc.start()
    try:
        line = refused(capsys, "predict", artifact_copy, clip, names=file)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert field in line and peak < 64 << 20  # refused before any large allocation


def test_export_refuses_a_checkpoint_asking_for_a_billion_classes(capsys, artifact, tmp_path):
    import shutil

    checkpoint = shutil.copytree(artifact.parent / "trial" / "checkpoint", tmp_path / "checkpoint")
    tamper(checkpoint, "meta.json", lambda m: m["model_config"].update(num_classes=1_000_000_000))
    line = refused(capsys, "export", checkpoint, "--out", tmp_path / "out", names="meta.json")
    assert "num_classes" in line and "100000" in line and not (tmp_path / "out").exists()


json_leaves = st.none() | st.booleans() | st.integers(-2, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
ARTIFACT_JSON = ["config.json", "labels.json", "metrics.json", "preprocessing.json"]


def paths_of(value, prefix=()):
    """Every (path, value) inside a JSON value, the value itself first."""
    yield prefix, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield from paths_of(child, prefix + (key,))


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(file=st.sampled_from(ARTIFACT_JSON), pick=st.integers(0, 10**6), new=json_values,
       how=st.sampled_from(["replace", "delete", "cut"]), cut=st.integers(0, 4000))
def test_any_mutated_artifact_json_loads_or_is_refused_in_one_line(artifact, tmp_path_factory, file, pick, new, how,
                                                                   cut):
    import shutil

    from raysearch.deploy import load_artifact

    copy = shutil.copytree(artifact, tmp_path_factory.mktemp("mutated") / "artifact")
    path = copy / file
    if how == "cut":
        path.write_text(path.read_text()[:cut])
    else:
        doc = json.loads(path.read_text())
        places = list(paths_of(doc))
        where, _ = places[pick % len(places)]
        if not where:
            doc = new if how == "replace" else {}
        else:
            parent = doc
            for key in where[:-1]:
                parent = parent[key]
            if how == "replace":
                parent[where[-1]] = new
            else:
                del parent[where[-1]]
        path.write_text(json.dumps(doc))
    tracemalloc.start()
    try:
        load_artifact(copy)
    except UserInputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) <= 1000
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        shutil.rmtree(copy.parent)
    assert peak < 64 << 20


# -- 6. YAML inside cluster files, synthetic data sizes ---------------------------------------------------------
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("embedded, why", [
    (BOMB, "once aliases are expanded"),
    ("working_dir: /home/ray/raysearch\nworking_dir: /tmp\n", "duplicate key"),
    ("x: &a [*a]\n", "alias"),
    ("working_dir: [unclosed\n", "not valid YAML"),
])
def test_runtime_env_yaml_in_a_rayjob_goes_through_the_user_yaml_reader(capsys, tmp_path, monkeypatch, embedded, why):
    from pathlib import Path

    import yaml

    import raysearch

    repo = Path(raysearch.__file__).parent.parent
    doc = yaml.safe_load((repo / "cluster" / "kuberay" / "rayjob.yaml").read_text())
    doc["spec"]["runtimeEnvYAML"] = embedded
    job = tmp_path / "rayjob.yaml"
    job.write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(repo)  # the validator reads the search space named in the file from here
    line = refused(capsys, "cluster", "validate", job, names="spec.runtimeEnvYAML")
    assert why in line and "fix the embedded YAML" in line and len(line) < 1100


@pytest.mark.parametrize("args", [["--per-class", "1000000000"], ["--classes", "10000", "--per-class", "3"]])
def test_prepare_synthetic_refuses_more_clips_than_its_cap_before_generating(capsys, tmp_path, args):
    line = refused(capsys, "prepare", "synthetic", "--out", tmp_path / "d", *args, names="per_class")
    assert "at most 20000 clips" in line and not (tmp_path / "d").exists()


def test_search_space_synthetic_section_is_capped_before_generating(capsys, tmp_path, no_ray):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.replace("{classes: 3, per_class: 10}", "{classes: 10, per_class: 1000000000}"))
    line = refused(capsys, "search", space, "--storage", tmp_path / "runs", names="space.yaml: synthetic")
    assert "per_class=1000000000" in line and "at most 20000 clips" in line and not (tmp_path / "runs").exists()
    refused(capsys, *train("synthetic:classes=10,per_class=1000000000", "--workers", "1"), names="per_class")
