"""Cluster configs and searches on real Ray clusters.

Fast: every shipped file in cluster/ passes `raysearch cluster validate`, each kind of mistake is
refused with the file, the field and the fix, and the working-directory upload stays small.

Slow (each starts its own Ray processes on free ports under a private temp dir, and stops only
those): (1) a search submitted as a job to a `ray start --head` with token authentication, (2) the
fake autoscaler adding a worker node for a search and removing it when idle, (3) a search that
survives losing the node running a trial's workers.
"""

import copy
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from raysearch.cli import build_parser
from raysearch.cluster_config import validate_cluster_file as validate_file
from raysearch.contract import COMPLETED, Column, Metric
from raysearch.errors import UserInputError

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
SHIPPED = sorted(CLUSTER.rglob("*.yaml"))
RAY_BIN = Path(sys.executable).parent  # ray and raysearch of this environment
GCS_UPLOAD_LIMIT_MIB = 100


@pytest.fixture
def in_repo(monkeypatch):
    """Search spaces named in cluster files are read from the repository root."""
    monkeypatch.chdir(REPO)


def validate_cluster_file(path, strict: bool = False):
    """The check `raysearch cluster validate` runs: RayJob entrypoints read by the CLI's parser."""
    return validate_file(path, strict=strict, search_args=build_parser().parse_args)


def changed(tmp_path: Path, shipped: str, change) -> Path:
    """A copy of a shipped file with `change(doc)` applied, written under tmp_path."""
    doc = yaml.safe_load((CLUSTER / shipped).read_text())
    change(doc)
    path = tmp_path / Path(shipped).name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- validation (fast) -----------------------------------------------------------------------------
def test_every_shipped_cluster_file_validates(in_repo):
    names = {p.relative_to(CLUSTER).as_posix() for p in SHIPPED}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "local-fake.yaml", "runtime_env.yaml",
            "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names
    checks = {p.relative_to(CLUSTER).as_posix(): validate_cluster_file(p) for p in SHIPPED}
    for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"):
        check = checks[name]
        assert check.search_space == "search_spaces/paper.yaml", name
        assert check.head.gpus == 0 and check.head.cpus >= 1, name       # a CPU head
        assert all(w.min_nodes == 0 for w in check.workers), name        # autoscale from 0
        assert any(w.gpus >= 1 and w.trial_workers >= 1 for w in check.workers), name
        assert check.placeholders, name                                   # the user's account fields
    assert checks["local-fake.yaml"].search_space == "search_spaces/smoke.yaml"
    assert not checks["local-fake.yaml"].placeholders


def test_strict_refuses_unfilled_placeholders(in_repo):
    with pytest.raises(UserInputError, match=r"aws-gpu\.yaml: YOUR_AWS_REGION.*placeholders not filled in"):
        validate_cluster_file(CLUSTER / "aws-gpu.yaml", strict=True)
    validate_cluster_file(CLUSTER / "local-fake.yaml", strict=True)


def _set(doc, dotted: str, value):
    *path, last = dotted.split("/")
    for key in path:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    doc[last] = value


def _drop(doc, dotted: str):
    *path, last = dotted.split("/")
    for key in path:
        doc = doc[int(key)] if isinstance(doc, list) else doc[key]
    del doc[last]


def _worker_env(doc, group=0, spec="spec"):
    cluster = doc["spec"]["rayClusterSpec"] if spec == "rayjob" else doc["spec"]
    return cluster["workerGroupSpecs"][group]["template"]["spec"]["containers"][0]


MISTAKES = [
    # Ray's schema: resource amounts are integers.
    ("aws-gpu.yaml", lambda d: _set(d, "available_node_types/gpu.1x/resources/GPU", 0.5),
     r"available_node_types\.gpu\.1x\.resources\.GPU: 0\.5 is not of type 'integer'; write a whole number"),
    ("gcp-gpu.yaml", lambda d: _set(d, "idle_timeout", 5),
     r"\(top level\): Additional properties are not allowed \('idle_timeout' was unexpected\)"),
    ("aws-gpu.yaml", lambda d: _set(d, "available_node_types/gpu.4x/min_workers", 1),
     r"available_node_types\.gpu\.4x\.min_workers: 1; use 0"),
    ("aws-gpu.yaml", lambda d: _drop(d, "idle_timeout_minutes"), r"idle_timeout_minutes: None; set it"),
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["ray start --head --port=6379"]),
     r"head_start_ray_commands\[0\]: `ray start --head --port=6379` starts Ray without token authentication: "
     r"RAY_AUTH_MODE is not set for it; run it as RAY_AUTH_MODE=token ray start"),
    ("gcp-gpu.yaml", lambda d: _set(d, "file_mounts", {"~/raysearch": "."}),
     r"head_start_ray_commands\[0\]: .* it has RAY_AUTH_MODE=token but no token .*file_mounts ~/\.ray/auth_token"),
    ("gcp-gpu.yaml", lambda d: _set(d, "setup_commands", ["echo hello"]), r"no `pip install` of raysearch"),
    ("aws-gpu.yaml", lambda d: _drop(d, "metadata"), r"metadata\.raysearch\.search_space: missing"),
    ("aws-gpu.yaml", lambda d: _set(d, "metadata", {"raysearch": {"search_space": "search_spaces/nope.yaml"}}),
     r"search space search_spaces/nope\.yaml not found"),
    # Node types that cannot host one worker of paper.yaml (8 CPU + 1 GPU), or a GPU head.
    ("aws-gpu.yaml", lambda d: _set(d, "available_node_types/gpu.1x/resources", {"CPU": 4, "GPU": 1}),
     r"gpu\.1x\.resources: 4 CPU, 1 GPU cannot host one worker of search_spaces/paper\.yaml \(8 CPU \+ 1 GPU\)"),
    ("gcp-gpu.yaml", lambda d: _set(d, "available_node_types/ray_head_cpu/resources", {"CPU": 8, "GPU": 1}),
     r"ray_head_cpu\.resources: the head offers 1 GPU; give the head no GPU"),
    ("local-fake.yaml", lambda d: _set(d, "available_node_types/ray.head.default/resources", {"CPU": 0}),
     r"the head offers 0 CPU; give it at least 1 CPU"),
    ("aws-gpu.yaml", lambda d: (_set(d, "available_node_types/gpu.1x/max_workers", 1),
                                _drop(d["available_node_types"], "gpu.4x")),
     r"at full size the workers host 1 worker\(s\) of search_spaces/paper\.yaml, one trial needs 4"),
    # KubeRay: the fields we rely on.
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/enableInTreeAutoscaling", False),
     r"spec\.enableInTreeAutoscaling: False; set it to true"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/workerGroupSpecs/0/rayStartParams/num-cpus", 8),
     r"workerGroupSpecs\[0\]\.rayStartParams\.num-cpus: 8 is not a string; write \"8\""),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/workerGroupSpecs/0/minReplicas", 1),
     r"workerGroupSpecs\[0\]\.minReplicas: 1; use 0"),
    ("kuberay/raycluster.yaml", lambda d: _worker_env(d)["resources"]["limits"].update({"nvidia.com/gpu": "0.5"}),
     r"limits\.nvidia\.com/gpu: '0\.5'; set a whole number of GPUs"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/workerGroupSpecs/1/rayStartParams/num-gpus", "2"),
     r"workerGroupSpecs\[1\]\.rayStartParams\.num-gpus: '2' with 4 nvidia\.com/gpu in the limits; set num-gpus: \"4\""),
    ("kuberay/raycluster.yaml", lambda d: _set(_worker_env(d), "env", []),
     r"workerGroupSpecs\[0\]: env: the Ray container would start Ray without token authentication"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/autoscalerOptions", {"idleTimeoutSeconds": 60}),
     r"spec\.autoscalerOptions: env: it talks to the cluster without token authentication"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "apiVersion", "ray.io/v1alpha1"), r"apiVersion: 'ray\.io/v1alpha1'; use ray\.io/v1"),
    ("kuberay/raycluster.yaml", lambda d: _drop(d["metadata"], "annotations"), r"raysearch/search-space: missing"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/workerGroupSpecs/0/rayStartParams/num-cpus", "4"),
     r"workerGroupSpecs\[0\]: 4 CPU, 1 GPU cannot host one worker"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", "python train.py"),
     r"spec\.entrypoint: 'python train\.py' does not run `raysearch search`"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", "raysearch search search_spaces/paper.yaml "
                                           "--data /mnt/data/x --allow-pending-resources"),
     r"--storage \(default runs/\) is inside the job's pod; write results to a bucket"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", "raysearch search search_spaces/paper.yaml "
                                           "--data /mnt/data/x --storage gs://b/r"),
     r"no --allow-pending-resources"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", "raysearch search search_spaces/paper.yaml "
                                           "--storage gs://b/r --allow-pending-resources"),
     r"no --data with an absolute path"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", "raysearch search search_spaces/paper.yaml --num-samples x"),
     r"spec\.entrypoint: .*invalid int value: 'x'"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/runtimeEnvYAML", "working_dir: /home/ray/raysearch\nexcludes: [data/, runs/]\n"),
     r"runtimeEnvYAML\.excludes: .*would be"),
    ("kuberay/rayjob.yaml", lambda d: _set(d["spec"]["submitterPodTemplate"]["spec"]["containers"][0], "env", []),
     r"spec\.submitterPodTemplate: env: it talks to the cluster without token authentication"),
    # The job upload: results, data and environments out, code in.
    ("runtime_env.yaml", lambda d: d["excludes"].remove(".venv/"), r"excludes: a virtual environment would be uploaded"),
    ("runtime_env.yaml", lambda d: d["excludes"].append("data/"),
     r"excludes: raysearch/data/dataset\.py would be left out of the upload; anchor the pattern"),
    ("runtime_env.yaml", lambda d: _set(d, "workdir", "."), r"workdir: not a runtime_env field"),
]


@pytest.mark.parametrize("shipped, change, message", MISTAKES,
                         ids=[f"{m[0]}-{i}" for i, m in enumerate(MISTAKES)])
def test_mistakes_are_refused_with_file_field_and_fix(tmp_path, in_repo, shipped, change, message):
    path = changed(tmp_path, shipped, change)
    with pytest.raises(UserInputError, match=message) as error:
        validate_cluster_file(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text and "; " in text


def test_cluster_validate_command(tmp_path, in_repo, capsys):
    """`raysearch cluster validate FILE...`: a report per file with --json, and one line naming the
    first bad file (exit 2) when any fails."""
    from raysearch.cli import main

    main(["cluster", "validate", "--json", str(CLUSTER)])
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and len(report["files"]) == len(SHIPPED)
    aws = next(f for f in report["files"] if f["path"].endswith("aws-gpu.yaml"))
    assert {w["name"]: w["trial_workers"] for w in aws["workers"]} == {"gpu.1x": 1, "gpu.4x": 4}

    bad = changed(tmp_path, "local-fake.yaml", lambda d: _set(d, "max_workers", 1.5))
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "validate", str(CLUSTER / "local-fake.yaml"), str(bad)])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert "local-fake.yaml: ok" in out
    assert err.count("\n") == 1 and re.match(
        r"raysearch: error: .*local-fake\.yaml: max_workers: 1\.5 is not of type 'integer'", err)


def test_the_validator_is_a_library_below_the_cli():
    """Importing the cluster validator does not import the CLI (no cycle: the CLI passes it its parser)."""
    code = ("import sys, raysearch.cluster_config; "
            "assert 'raysearch.cli' not in sys.modules, sorted(m for m in sys.modules if m.startswith('raysearch'))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# -- shell in cluster files: what each command really runs ------------------------------------------
GOOD_HEAD_START = ("ulimit -n 65536; RAY_AUTH_MODE=token ray start --head --port=6379 "
                   "--autoscaling-config=~/ray_bootstrap_config.yaml")


def _rayjob_entrypoint(storage: str) -> str:
    return f"raysearch search search_spaces/paper.yaml --data /mnt/data/x --storage {storage} --allow-pending-resources"


# (shipped file, change, field path in the message, what the message says about the command)
FOOLING = [
    # The old substring test passed this: RAY_AUTH_MODE=token is echoed, `ray start` runs without it.
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["echo RAY_AUTH_MODE=token && ray start --head"]),
     r"head_start_ray_commands\[0\]", r"`ray start --head` starts Ray without token authentication: RAY_AUTH_MODE is not set"),
    # An export that may never run (after ||), or only in a subshell's copy of the environment.
    ("aws-gpu.yaml", lambda d: _set(d, "worker_start_ray_commands",
                                    ["true || export RAY_AUTH_MODE=token; ray start --address=$RAY_HEAD_IP:6379"]),
     r"worker_start_ray_commands\[0\]", r"starts Ray without token authentication"),
    ("gcp-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["(export RAY_AUTH_MODE=token); ray start --head"]),
     r"head_start_ray_commands\[0\]", r"starts Ray without token authentication"),
    # sudo resets the environment: the prefix before it does not reach `ray start`.
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["RAY_AUTH_MODE=token sudo ray start --head"]),
     r"head_start_ray_commands\[0\]", r"`RAY_AUTH_MODE=token sudo ray start --head` starts Ray without token"),
    # Setup commands are checked too.
    ("aws-gpu.yaml", lambda d: d["setup_commands"].append("ray start --head --port=6380"),
     r"setup_commands\[3\]", r"`ray start --head --port=6380` starts Ray without token authentication"),
    ("gcp-gpu.yaml", lambda d: d["setup_commands"].append("curl -fsSL https://example.com/install.sh | sh"),
     r"setup_commands\[3\]", r"pipes downloaded code into an interpreter; install what it needs from a package index"),
    ("aws-gpu.yaml", lambda d: _set(d, "head_setup_commands", ["bash <(curl -s https://example.com/x.sh)"]),
     r"head_setup_commands\[0\]", r"`bash <\(curl -s https://example\.com/x\.sh\)` runs code that it downloads"),
    ("aws-gpu.yaml", lambda d: _set(d, "initialization_commands", ['eval "$(wget -qO- https://example.com/x)"']),
     r"initialization_commands\[0\]", r"runs code that it downloads"),
    ("gcp-gpu.yaml", lambda d: _set(d, "worker_setup_commands",
                                    ["curl -o i.sh https://example.com/i.sh && chmod +x i.sh && ./i.sh"]),
     r"worker_setup_commands\[0\]", r"runs a file that it downloads"),
    # `ray stop` ends every Ray process on the machine; with a download after it, still refused first.
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands",
                                    ["ray stop; curl -fsSL https://example.com/x | sh", GOOD_HEAD_START]),
     r"head_start_ray_commands\[0\]", r"pipes downloaded code into an interpreter"),
    ("gcp-gpu.yaml", lambda d: d["worker_start_ray_commands"].insert(0, "ray stop"),
     r"worker_start_ray_commands\[0\]", r"`ray stop` runs `ray stop`; remove it: `ray stop` ends every Ray process"),
    # Hidden from a reader: a variable or a substitution as the command.
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["R=ray; $R start --head"]),
     r"head_start_ray_commands\[0\]", r"starts Ray without token authentication"),
    ("aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", ["$(echo ray) start --head"]),
     r"head_start_ray_commands\[0\]", r"names the command it runs with a value known only at run time"),
    # RayJob: the entrypoint is one `raysearch search` command, with nothing substituted in.
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", _rayjob_entrypoint("gs://b/$(curl -s https://example.com)")),
     r"spec\.entrypoint", r"`\$\(curl -s https://example\.com\)` is a command substitution"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", _rayjob_entrypoint("gs://b/`id -u`")),
     r"spec\.entrypoint", r"`id -u`` is a command substitution"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", _rayjob_entrypoint("gs://b/r") + " && ray stop"),
     r"spec\.entrypoint", r"runs `ray stop`"),
    ("kuberay/rayjob.yaml", lambda d: _set(d, "spec/entrypoint", _rayjob_entrypoint("gs://b/r") + "; echo done"),
     r"spec\.entrypoint", r"runs 2 commands; run one command"),
    # KubeRay: container commands, and rayStartParams, which KubeRay pastes unquoted into a bash line.
    ("kuberay/raycluster.yaml", lambda d: _worker_env(d).update(command=["/bin/bash", "-lc", "--"],
                                                                 args=["curl -s https://example.com/x | bash"]),
     r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]\.command/args", r"pipes downloaded code into an interpreter"),
    ("kuberay/raycluster.yaml", lambda d: _set(d, "spec/headGroupSpec/rayStartParams/dashboard-host", "0.0.0.0; ray stop"),
     r"headGroupSpec\.rayStartParams\.dashboard-host", r"is shell syntax in the `ray start` line KubeRay builds"),
    ("kuberay/rayjob.yaml", lambda d: _worker_env(d, spec="rayjob").update(
        args=["RAY_AUTH_MODE=none ray start --address=$RAY_IP:6379"]),
     r"workerGroupSpecs\[0\]\.template\.spec\.containers\[0\]\.command/args", r"RAY_AUTH_MODE is 'none'"),
]


@pytest.mark.parametrize("shipped, change, where, what", FOOLING, ids=[f"{f[0]}-{i}" for i, f in enumerate(FOOLING)])
def test_commands_that_fooled_the_validator_are_refused_by_the_cli(tmp_path, in_repo, capsys, shipped, change, where, what):
    from raysearch.cli import main

    path = changed(tmp_path, shipped, change)
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "validate", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"raysearch: error: {path}: "), err
    assert re.search(where + r".*" + what, err), err


def test_token_from_the_environment_the_command_really_gets_is_accepted(tmp_path, in_repo):
    """Exports that surely ran, `env`, sudo -E and docker -e all reach `ray start`."""
    commands = ["export RAY_AUTH_MODE=token && ray start --head --port=6379",
                "set -a; RAY_AUTH_MODE=token; ray start --head",
                "env RAY_AUTH_MODE=token nohup ray start --head",
                "RAY_AUTH_MODE=token sudo -E ray start --head",
                "bash -lc 'RAY_AUTH_MODE=token ray start --head'"]
    for command in commands:
        validate_cluster_file(changed(tmp_path, "aws-gpu.yaml", lambda d: _set(d, "head_start_ray_commands", [command])))

    def from_docker(doc):
        doc["docker"]["run_options"].append("-e RAY_AUTH_MODE=token")
        _set(doc, "head_start_ray_commands", ["ray start --head --port=6379"])
    validate_cluster_file(changed(tmp_path, "aws-gpu.yaml", from_docker))


# -- property tests of the cluster YAML reader ------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SHELL_PIECES = ["ray", "start", "stop", "--head", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=x", "export", "env", "sudo",
                "-E", "curl", "wget", "https://x/i.sh", "-o", "i.sh", "sh", "bash", "python", "-c", "eval", "source",
                "|", "||", "&&", ";", "&", "\n", "$(", ")", "(", "`", "'", '"', "\\", "<(", ">", "2>&1", "#", "$X",
                "${Y}", "X=1", "f()", "{", "}", "alias", "r=ray", "get-auth-token", "--generate", "unset", "set", "-a",
                "raysearch", "search", "search_spaces/paper.yaml", "--storage", "gs://b/r", "--data", "/mnt/d", "*", "~"]
shell_text = st.one_of(st.lists(st.sampled_from(SHELL_PIECES), max_size=14).map(" ".join),
                       st.lists(st.sampled_from(SHELL_PIECES), max_size=14).map("".join),
                       st.text(max_size=60))
# YAML-able trees: scalars (strings with shell and YAML metacharacters among them) in lists and maps.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=True, allow_infinity=True), shell_text)
trees = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                     max_leaves=20)
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# Where generated commands go in the shipped files.
COMMAND_FIELDS = [
    ("aws-gpu.yaml", lambda d, c: _set(d, "head_start_ray_commands", [c])),
    ("aws-gpu.yaml", lambda d, c: d["setup_commands"].append(c)),
    ("gcp-gpu.yaml", lambda d, c: _set(d, "worker_start_ray_commands", [c, c])),
    ("kuberay/raycluster.yaml", lambda d, c: _worker_env(d).update(args=[c])),
    ("kuberay/raycluster.yaml", lambda d, c: _set(d, "spec/headGroupSpec/rayStartParams/num-cpus", c)),
    ("kuberay/rayjob.yaml", lambda d, c: _set(d, "spec/entrypoint", c)),
    ("kuberay/rayjob.yaml", lambda d, c: _set(d, "spec/entrypoint", _rayjob_entrypoint("gs://b/r") + " " + c)),
]


def _answer_is_one_line_or_ok(path: Path) -> None:
    try:
        validate_cluster_file(path)
    except UserInputError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text and len(text) < 2000, text


@PROPERTY
@given(field=st.sampled_from(COMMAND_FIELDS), command=shell_text)
def test_any_command_in_a_cluster_file_is_accepted_or_refused_in_one_line(tmp_path, in_repo, field, command):
    shipped, put = field
    _answer_is_one_line_or_ok(changed(tmp_path, shipped, lambda d: put(d, command)))


@PROPERTY
@given(shipped=st.sampled_from(sorted(p.relative_to(CLUSTER).as_posix() for p in SHIPPED)), tree=trees,
       pick=st.integers(0, 10**6), replace_whole=st.booleans())
def test_any_yaml_tree_is_accepted_or_refused_in_one_line(tmp_path, in_repo, shipped, tree, pick, replace_whole):
    """A random tree as the whole document, or in place of one random node of a shipped file."""
    def change(doc):
        nodes = []

        def walk(node):
            for key, child in (node.items() if isinstance(node, dict) else enumerate(node)):
                nodes.append((node, key))
                if isinstance(child, (dict, list)):
                    walk(child)
        walk(doc)
        parent, key = nodes[pick % len(nodes)]
        parent[key] = tree

    path = tmp_path / Path(shipped).name
    if replace_whole:
        path.write_text(yaml.safe_dump(tree))
    else:
        path = changed(tmp_path, shipped, change)
    _answer_is_one_line_or_ok(path)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(text=shell_text)
def test_the_shell_reader_answers_every_string(text):
    """Reading a command string either works or says it cannot (ShellSyntaxError), and stays
    within its nesting and length limits."""
    from raysearch.cluster_shell import ShellSyntaxError, analyze

    try:
        analyze(text)
    except ShellSyntaxError as exc:
        assert "\n" not in str(exc)


def test_deep_nesting_and_long_commands_are_refused_not_followed():
    from raysearch.cluster_shell import MAX_COMMAND_CHARS, MAX_NESTING, ShellSyntaxError, analyze

    with pytest.raises(ShellSyntaxError, match="nested more than"):
        analyze("echo " + "$(" * (MAX_NESTING + 5) + "x" + ")" * (MAX_NESTING + 5))
    with pytest.raises(ShellSyntaxError, match="nested more than"):
        analyze("( " * 10_000)
    with pytest.raises(ShellSyntaxError, match="longer than"):
        analyze("echo " + "x" * MAX_COMMAND_CHARS)


def test_working_dir_upload_stays_small(tmp_path):
    """What `ray job submit --runtime-env cluster/runtime_env.yaml --working-dir .` uploads, zipped by
    Ray's own packaging code: under the 100 MiB limit, with the code and search spaces in it."""
    from ray._private.runtime_env.packaging import create_package

    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    package = tmp_path / "working_dir.zip"
    create_package(str(REPO), package, include_gitignore=True, excludes=runtime_env["excludes"])
    size_mib = package.stat().st_size / 2**20
    names = set(zipfile.ZipFile(package).namelist())
    assert size_mib < GCS_UPLOAD_LIMIT_MIB, f"{size_mib:.1f} MiB"
    assert {"raysearch/data/dataset.py", "raysearch/tune/search.py", "models/__init__.py",
            "search_spaces/smoke.yaml", "pyproject.toml"} <= names
    assert not any(n.startswith((".venv/", ".git/", "runs/", "data/")) or n.endswith(".parquet") for n in names)


# -- Ray processes this test starts, and only those ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_temp_dir() -> str:
    """Short: Ray's socket paths under it must stay within the 107-byte limit of AF_UNIX."""
    return tempfile.mkdtemp(prefix="rs-", dir="/tmp")


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def processes_of(temp_dir: str) -> set[int]:
    """Processes whose command line names temp_dir (gcs_server, raylet, dashboard, monitor, ...)
    and their descendants (Ray's workers rename themselves to ray::..., hiding the temp dir)."""
    found = set()
    for pid in _parents():
        try:
            if temp_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.add(pid)
        except OSError:
            continue
    parents, grew = _parents(), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_processes_of(temp_dir: str) -> None:
    """SIGTERM to every process of this cluster at once (a raylet alone would be restarted),
    then SIGKILL whatever is left after a few seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_of(temp_dir)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.3)


def forget_temp_dir(temp_dir: str, failed: bool) -> None:
    """Delete a stopped cluster's temp dir, or keep its logs when the test failed."""
    if failed:
        print(f"Ray logs of the failed test: {temp_dir}/session_latest/logs", file=sys.stderr)
    else:
        shutil.rmtree(temp_dir, ignore_errors=True)


class RayHead:
    """`ray start --head` on free ports in a private temp dir, with token authentication."""

    def __init__(self, num_cpus: int, extra_env: dict | None = None, extra_args: tuple = (), port: int | None = None):
        self.temp_dir = private_temp_dir()
        self.token = secrets.token_hex(32)
        self.port = port or free_port()
        self.dashboard_port = free_port()
        self.env = {**os.environ, "PATH": f"{RAY_BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, **(extra_env or {})}
        # Every process of this cluster finds it through RAY_ADDRESS. Without it, Ray Train's
        # PlacementGroupCleaner (which frees the workers' placement group of a trial that Tune
        # stops) looks for "the" local cluster under the default temp dir, finds several clusters
        # on a shared machine, dies, and the next trial waits forever for CPUs.
        self.env["RAY_ADDRESS"] = self.address
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        ports = {"port": self.port, "dashboard-port": self.dashboard_port}
        for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                     "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port"):
            ports[name] = free_port()
        self.command = [str(RAY_BIN / "ray"), "start", "--head", f"--temp-dir={self.temp_dir}", f"--num-cpus={num_cpus}",
                        "--object-store-memory=300000000", "--dashboard-host=127.0.0.1", "--disable-usage-stats",
                        *(f"--{k}={v}" for k, v in ports.items()), *extra_args]

    def __enter__(self) -> "RayHead":
        started = subprocess.run(self.command, env=self.env, capture_output=True, text=True, timeout=180)
        if started.returncode:
            self.__exit__()
            pytest.fail(f"ray start failed: {started.stderr[-2000:]}")
        return self

    def __exit__(self, exc_type=None, *exc) -> None:
        stop_processes_of(self.temp_dir)
        forget_temp_dir(self.temp_dir, failed=exc_type is not None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def nodes(self) -> list[dict]:
        """Ray's state API over HTTP (token in the header): one dict per node."""
        request = urllib.request.Request(f"{self.dashboard_url}/api/v0/nodes?limit=1000", headers=self.auth_header)
        with urllib.request.urlopen(request, timeout=20) as response:
            return json.load(response)["data"]["result"]["result"]

    def alive_workers(self) -> int | None:
        try:
            return sum(n["state"] == "ALIVE" and not n["is_head_node"] for n in self.nodes())
        except OSError:
            return None  # the dashboard is busy: ask again


def small_space(tmp_path: Path, **changes) -> Path:
    """smoke.yaml with `changes` (budget merged): a search of a few seconds per trial."""
    doc = yaml.safe_load((REPO / "search_spaces" / "smoke.yaml").read_text())
    budget = changes.pop("budget", {})
    doc["budget"] = {**doc["budget"], **budget}
    doc.update(changes)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trial_histories(run_dir: Path) -> dict[str, list[dict]]:
    return {Path(f).parent.name: [json.loads(line) for line in Path(f).read_text().splitlines()]
            for f in glob.glob(f"{run_dir}/trial_*/result.json")}


# -- (1) ray job submit with token auth ------------------------------------------------------------
@pytest.mark.slow
def test_job_submitted_with_token_runs_search_and_results_are_readable(tmp_path):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    from raysearch.cli import main as cli_main
    from raysearch.runs import collect_results

    storage = tmp_path / "shared"          # stands for the bucket or shared filesystem of a real cluster
    runtime_env = {**yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text()), "working_dir": str(REPO)}
    entrypoint = f"raysearch search search_spaces/smoke.yaml --num-samples 2 --storage {storage} --json"
    with RayHead(num_cpus=2) as head:
        client, job_id, deadline = None, None, time.monotonic() + 90
        while job_id is None:   # the job agent needs some seconds after `ray start` returns
            try:
                client = JobSubmissionClient(head.dashboard_url, headers=head.auth_header)
                job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
            except AuthenticationError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        for wrong in ({"Authorization": "Bearer not-the-token"}, {}):
            with pytest.raises(AuthenticationError):
                JobSubmissionClient(head.dashboard_url, headers=wrong).submit_job(entrypoint="echo refused")
        deadline = time.monotonic() + 240
        while not (status := client.get_job_status(job_id)).is_terminal() and time.monotonic() < deadline:
            time.sleep(2)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, logs[-3000:]
        assert [job.entrypoint for job in client.list_jobs()] == [entrypoint]   # the refused ones never ran
    summary = json.loads(logs.strip().splitlines()[-1])
    assert summary["trials"] == 2 and Path(summary["run_dir"]) == storage / "smoke"

    # Afterwards, without the cluster: results and the best model come from the storage URI.
    uri = f"file://{storage}/smoke"
    results = collect_results(uri)
    assert len(results) == 2 and results[Metric.BEST_VAL_ACC].notna().all()
    assert len(glob.glob(f"{storage}/smoke/trial_*/events.out.tfevents.*")) == 2   # TensorBoard reads these
    try:
        cli_main(["export", uri, "--out", str(tmp_path / "artifact")])
    except SystemExit as exc:
        assert exc.code in (0, None), f"raysearch export {uri} exited {exc.code}"
    assert (tmp_path / "artifact" / "weights.pt").is_file()
    metrics = json.loads((tmp_path / "artifact" / "metrics.json").read_text())
    assert metrics["source"][Column.TRIAL_ID] in set(results[Column.TRIAL_ID])


# -- (2) the fake autoscaler -----------------------------------------------------------------------
@pytest.mark.slow
def test_fake_autoscaler_adds_a_worker_node_for_a_search_and_removes_it_when_idle(tmp_path):
    config = yaml.safe_load((CLUSTER / "local-fake.yaml").read_text())
    port = free_port()
    config["provider"]["gcs_address"] = f"127.0.0.1:{port}"   # the fake nodes join this head
    config_path = tmp_path / "local-fake.yaml"
    config_path.write_text(yaml.safe_dump(config))
    head_cpus = config["available_node_types"][config["head_node_type"]]["resources"]["CPU"]
    # FIFO: a trial ends on its own. ASHA stops its last trials, and a stopped trial's Ray Train
    # controller dies without withdrawing its autoscaler request, which then holds the worker nodes
    # until it expires (180 s, Train V2's AUTOSCALING_REQUESTS_EXPIRE_TIME_S).
    space = small_space(tmp_path, budget={"num_samples": 1, "pretrain_epochs": 1, "finetune_epochs": 1},
                        scheduler={"type": "fifo"})
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    with RayHead(num_cpus=head_cpus, extra_env=env, port=port,
                 extra_args=(f"--autoscaling-config={config_path}",)) as head:
        assert head.alive_workers() == 0
        driver = subprocess.Popen(
            [str(RAY_BIN / "raysearch"), "search", str(space), "--storage", str(tmp_path / "runs"),
             "--allow-pending-resources", "--json"],
            env={**head.env, "RAY_ADDRESS": head.address}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            most_workers, deadline = 0, time.monotonic() + 180
            while driver.poll() is None and time.monotonic() < deadline:
                most_workers = max(most_workers, head.alive_workers() or 0)
                time.sleep(2)
            out, err = driver.communicate(timeout=30)
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1])["outcomes"] == {COMPLETED: 1}
        assert most_workers >= 1, "the head has no room for a trial's workers: a worker node should have started"

        idle_s = config["idle_timeout_minutes"] * 60
        deadline = time.monotonic() + idle_s + 90
        while head.alive_workers() != 0 and time.monotonic() < deadline:
            time.sleep(2)
        assert head.alive_workers() == 0, head.nodes()


# -- (3) losing the node of a trial's workers ------------------------------------------------------
@pytest.mark.slow
def test_search_survives_losing_the_node_running_a_trials_workers(tmp_path, monkeypatch):
    import ray._common.utils
    import ray._private.utils
    from ray.cluster_utils import Cluster

    from raysearch.runs import collect_results

    # Cluster writes and deletes the machine-wide /tmp/ray/ray_current_cluster, which other
    # people's `ray.init()` would follow to this cluster: leave that file alone.
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *args, **kwargs: None)
    monkeypatch.setattr(ray._common.utils, "reset_ray_address", lambda *args, **kwargs: None)
    # 1 CPU per worker: a trial's 2 workers fill a 2-CPU node, so they share one node and its driver
    # (0.05 CPU) never runs beside them.
    space = small_space(tmp_path, budget={"num_samples": 1, "pretrain_epochs": 2, "finetune_epochs": 3},
                        scheduler={"type": "fifo"}, resources={"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0})
    storage = tmp_path / "runs"
    temp_dir, gcs_port = private_temp_dir(), free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{gcs_port}")   # for the cluster's own processes, see RayHead
    cluster = Cluster(shutdown_at_exit=False)
    driver = None
    try:
        cluster.add_node(num_cpus=1, temp_dir=temp_dir, include_dashboard=True, dashboard_port=free_port(),
                         dashboard_agent_listen_port=free_port(), runtime_env_agent_port=free_port(),
                         metrics_export_port=free_port(), gcs_server_port=gcs_port,
                         object_store_memory=200 * 2**20,
                         _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 3})
        workers = [cluster.add_node(num_cpus=2, object_store_memory=200 * 2**20) for _ in range(2)]
        driver = subprocess.Popen([str(RAY_BIN / "raysearch"), "search", str(space), "--storage", str(storage), "--json"],
                                  env={**os.environ, "RAY_ADDRESS": cluster.address}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        # A trial's inner Train run registers each checkpoint here.
        snapshot = f"{storage}/smoke/trials/train-*/checkpoint_manager_snapshot.json"
        deadline = time.monotonic() + 150
        while driver.poll() is None and not glob.glob(snapshot) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert glob.glob(snapshot), "no checkpoint registered"
        actors = cluster.global_state.actor_table(None, actor_state_name="ALIVE").values()
        nodes = {a["Address"]["NodeID"] for a in actors if a["ActorClassName"] == "RayTrainWorker"}
        victim = [node for node in workers if node.node_id in nodes]
        assert len(nodes) == 1 and len(victim) == 1, f"the trial's workers are on {nodes}"
        cluster.remove_node(victim[0])

        out, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, err[-3000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node, allow_graceful=False)
        if cluster.head_node is not None:
            cluster.remove_node(cluster.head_node, allow_graceful=False)
        stop_processes_of(temp_dir)
        forget_temp_dir(temp_dir, failed=sys.exc_info()[0] is not None)

    results = collect_results(str(storage / "smoke"))
    assert list(results[Column.OUTCOME]) == [COMPLETED]
    (history,) = trial_histories(storage / "smoke").values()
    last = history[-1]
    assert last[Metric.GLOBAL_EPOCH] == 5                      # all of pre-training and fine-tuning
    assert last[Metric.RESUMED_FROM] >= 1         # restarted from a checkpoint, not from scratch
    assert history[0][Metric.RESUMED_FROM] == 0


# -- buckets: what cluster/README.md says a non-AWS S3 store needs ---------------------------------
def test_s3_compatible_store_through_pyarrow_and_ray_storage_path(moto_s3, monkeypatch):
    """The two ways cluster/README.md gives for an S3-compatible endpoint, against a real local one."""
    import boto3
    import pyarrow.fs
    from ray.train.v2._internal.execution.storage import StorageContext

    import ray.train

    for name, value in moto_s3["env"].items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=moto_s3["endpoint"], region_name="us-east-1").create_bucket(Bucket="runs")
    by_query = f"s3://runs/q?{moto_s3['query']}"
    for uri, expected in ((by_query, "runs/q"), ("s3://runs/env", "runs/env")):
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        assert path == expected
        with filesystem.open_output_stream(f"{path}/hello.txt") as f:
            f.write(b"hello")
        with filesystem.open_input_stream(f"{path}/hello.txt") as f:
            assert f.read() == b"hello"
        run_config = ray.train.RunConfig(storage_path=uri, name="exp")
        storage = StorageContext(storage_path=run_config.storage_path, experiment_dir_name="exp")
        assert storage.experiment_fs_path == f"{expected}/exp"
    # A name appended to a URI with a query lands in the query: join names before the '?'.
    with pytest.raises(Exception, match="Invalid S3 connection scheme 'http/smoke'"):
        pyarrow.fs.FileSystem.from_uri(f"{by_query}/smoke")
