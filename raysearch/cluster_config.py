"""`raysearch cluster validate FILE...`: check cluster configs before anyone launches one.

Three kinds of file, told apart by their content:

- Ray cluster launcher YAML (has `provider`): Ray's own schema, as `ray up` applies it (defaults
  filled in, then `ray.autoscaler._private.util.validate_config`; resource amounts are integers),
  then what raysearch relies on: a CPU head with CPUs for the trials' drivers, worker types that
  start at 0 nodes, an idle timeout, token authentication on every `ray start`, the project
  installed on every node, and worker types that can host the workers of the search space named
  in `metadata.raysearch.search_space`.
- KubeRay manifests (`apiVersion: ray.io/v1`, kind RayCluster or RayJob): the wheel has no schema
  for them, so the fields we rely on are checked one by one (rayStartParams as strings, autoscaler
  on, GPU groups from 0 replicas with integer `nvidia.com/gpu` limits equal to `num-gpus`, token
  auth on every Ray container, a RayJob entrypoint that runs `raysearch search`), and the node
  types KubeRay's autoscaler would derive from the manifest go through Ray's schema as well.
- A runtime environment for `ray job submit --runtime-env` (keys such as `working_dir`,
  `excludes`): Ray's runtime-env fields, and excludes that keep results, data, virtual environments
  and checkpoints out of the working-directory upload (at most 100 MiB) but not the code.

Relative paths inside these files (the search space) are read from the current directory: run the
command from the repository root, the directory you submit with `--working-dir .`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import re
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable


from .cluster_shell import Analysis, ShellSyntaxError, analyze, auth_problem, ray_subcommand, short
from .errors import UserInputError, load_user_yaml, parse_user_yaml

PLACEHOLDER = re.compile(r"YOUR_[A-Z0-9_]+")
SPACE_ANNOTATION = "raysearch/search-space"
KUBERAY_API = "ray.io/v1"
GPU_LIMIT = "nvidia.com/gpu"
# Providers whose nodes are processes on this machine: no commands run, nothing is installed, and
# the nodes inherit the head's environment (token auth included).
LOCAL_PROVIDERS = ("fake_multinode",)
# Paths (relative to the working directory) that a job's upload must leave out, and ones it must keep.
MUST_EXCLUDE = {
    ".git/HEAD": "the git history",
    ".venv/bin/python": "a virtual environment",
    "runs/smoke/results.parquet": "search results (runs/)",
    "data/ntu60-xsub/manifest.json": "datasets (data/)",
    "artifacts/smoke/weights.pt": "exported models (artifacts/)",
    "reports/results.parquet": "*.parquet files",
    "old/trial/checkpoint_000003/state.pt": "Ray Train checkpoint directories",
}
MUST_KEEP = ("raysearch/data/dataset.py", "raysearch/tune/search.py", "raysearch/train/loop.py",
             "models/__init__.py", "search_spaces/paper.yaml", "pyproject.toml")


@dataclass(frozen=True)
class NodeGroup:
    """A head or worker node type as the autoscaler sees it, and what it can host."""

    name: str
    cpus: float
    gpus: float
    min_nodes: int = 0
    max_nodes: int = 0
    trial_workers: int = 0      # workers of the search space one node of this type hosts


@dataclass(frozen=True)
class ClusterCheck:
    """What `raysearch cluster validate` found in one file that passed."""

    path: str
    kind: str
    search_space: str | None = None
    head: NodeGroup | None = None
    workers: tuple[NodeGroup, ...] = ()
    placeholders: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(label: str, where: str, what: str, fix: str):
    raise UserInputError(f"{label}: {where}: {what}; {fix}")


# -- reading ---------------------------------------------------------------------------------------
def _placeholders(value: Any) -> list[str]:
    """YOUR_* tokens in the values of a parsed document (comments do not count)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _placeholders(k) + _placeholders(v)]
    if isinstance(value, list):
        return [p for v in value for p in _placeholders(v)]
    return PLACEHOLDER.findall(value) if isinstance(value, str) else []


def _mapping(value: Any, label: str, where: str) -> dict:
    if not isinstance(value, dict):
        _fail(label, where, f"expected a mapping, got {value!r}", "see the shipped files in cluster/ for the layout")
    return value


def _load_space(label: str, where: str, value: Any, data: str | None = None, num_samples: int | None = None):
    """The search space a cluster is for; its data need not exist here."""
    from .tune.space import load_search_space

    if not isinstance(value, str) or not value.endswith((".yaml", ".yml")):
        _fail(label, where, f"{value!r} is not a search-space YAML path",
              "name the space this cluster is for, e.g. search_spaces/paper.yaml")
    if not Path(value).is_file():
        _fail(label, where, f"search space {value} not found from {Path.cwd()}",
              "run `raysearch cluster validate` from the repository root or fix the path")
    return load_search_space(value, data=data, num_samples=num_samples, check_data=False)


def _trial_workers(cpus: float, gpus: float, space) -> int:
    """Workers of the space's trials that fit on one node with these resources."""
    per_worker = space.resources
    by_cpu = math.floor(cpus / per_worker.cpus_per_worker + 1e-9)
    by_gpu = math.floor(gpus / per_worker.gpus_per_worker + 1e-9) if per_worker.gpus_per_worker else by_cpu
    return max(0, min(by_cpu, by_gpu))


def _worker_text(space) -> str:
    r = space.resources
    gpus = f" + {r.gpus_per_worker:g} GPU" if r.gpus_per_worker else ""
    return f"{r.cpus_per_worker:g} CPU{gpus}"


def _check_hosting(label: str, space, space_path: str, head: NodeGroup, workers: list[NodeGroup],
                   where: dict[str, str], max_total_nodes: int | None = None) -> None:
    """The head runs the drivers; the worker types can host the space's trials."""
    if head.gpus:
        _fail(label, where[head.name], f"the head offers {head.gpus:g} GPU",
              "give the head no GPU (a CPU instance): it runs the search and the trials' drivers, never their workers")
    if head.cpus < 1:
        _fail(label, where[head.name], f"the head offers {head.cpus:g} CPU",
              "give it at least 1 CPU: each trial's driver takes 0.05 CPU, and on a worker node Ray Train's "
              "autoscaling coordinator (a detached actor that settles where the first driver runs) keeps that node "
              "from ever counting as idle")
    needs_gpu = space.resources.gpus_per_worker > 0
    for group in workers:
        if group.trial_workers < 1 and (group.gpus > 0 or not needs_gpu):
            _fail(label, where[group.name],
                  f"{group.cpus:g} CPU, {group.gpus:g} GPU cannot host one worker of {space_path} ({_worker_text(space)})",
                  "raise the node type's resources or lower resources.cpus_per_worker/gpus_per_worker in the space")
    capacity = sum(g.trial_workers * g.max_nodes for g in workers)
    if capacity < space.resources.workers:
        _fail(label, ", ".join(where[g.name] for g in workers) or "worker types",
              f"at full size the workers host {capacity} worker(s) of {space_path}, one trial needs "
              f"{space.resources.workers} ({_worker_text(space)} each)", "raise max_workers/maxReplicas or the node sizes")
    if max_total_nodes is not None:
        best = max(g.trial_workers for g in workers)
        needed = math.ceil(space.resources.workers / best)
        if max_total_nodes < needed:
            _fail(label, "max_workers", f"{max_total_nodes} worker node(s) in all, one trial of {space_path} needs {needed}",
                  f"raise max_workers to at least {needed}")


# -- Ray cluster launcher --------------------------------------------------------------------------
def _schema_error(label: str, exc) -> None:
    where = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
    if exc.validator == "type" and exc.validator_value == "integer":
        fix = "write a whole number: the launcher counts resources and workers in integers"
    elif exc.validator == "additionalProperties":
        fix = "remove the key or fix its spelling (Ray's schema: ray/autoscaler/ray-schema.json)"
    elif exc.validator == "required":
        fix = "add it"
    elif exc.validator == "minimum":
        fix = f"use {exc.validator_value} or more"
    else:
        fix = "see Ray's cluster launcher schema (ray/autoscaler/ray-schema.json)"
    _fail(label, where, exc.message, fix)


def _ray_schema(label: str, doc: dict) -> dict:
    """The config as `ray up` sees it: provider defaults filled in, then Ray's schema."""
    import jsonschema
    from ray.autoscaler._private.util import logger as ray_util_logger
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        ray_util_logger.disabled = True  # it logs each default it fills in, on stderr
        config = prepare_config(copy.deepcopy(doc))
    except (FileNotFoundError, NotImplementedError):
        # No defaults file in the wheel for this provider (fake_multinode): the file must be complete.
        config = copy.deepcopy(doc)
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        _fail(label, "(top level)", f"Ray cannot fill in its defaults ({exc!r})", "compare with cluster/aws-gpu.yaml")
    finally:
        ray_util_logger.disabled = False
    try:
        validate_config(config)
    except jsonschema.ValidationError as exc:
        _schema_error(label, exc)
    except (ValueError, RuntimeError, KeyError) as exc:
        _fail(label, "(top level)", str(exc).splitlines()[0], "fix it as Ray says")
    return config


# -- shell in cluster files -------------------------------------------------------------------------
TOKEN_FIX = ("run it as RAY_AUTH_MODE=token ray start ... with a token: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or "
             "~/.ray/auth_token (launcher: file_mounts ~/.ray/auth_token: ~/.ray/auth_token, made once with "
             "`ray get-auth-token --generate`); token authentication is off by default in Ray 2.60")
STOP_FIX = ("remove it: `ray stop` ends every Ray process on the machine, not only this cluster's (to restart Ray on "
            "a launched cluster, `ray down` then `ray up`; `ray up --no-restart` updates files without restarting)")
DOWNLOAD_FIX = ("install what it needs from a package index (pip install NAME==VERSION) or bake it into the image; "
                "never run what a URL returns")
RUNTIME_FIX = "write the command out literally, so what it runs can be checked before launch"


def _shell(label: str, where: str, text: Any, env: dict | None = None, token_file: bool = False,
           allow_stop: bool = False) -> Analysis:
    """Check one command string: no `ray stop`, nothing downloaded and run, nothing hidden from
    this check, and every `ray start` in it with token authentication in the environment it gets."""
    if not isinstance(text, str):
        _fail(label, where, f"{text!r} is not a command", "write the command as a string")
    try:
        analysis = analyze(text, env, token_file)
    except ShellSyntaxError as exc:
        _fail(label, where, f"`{short(text)}` cannot be read as shell ({exc})",
              "balance its quotes and brackets and keep it to plain commands")
    for finding in analysis.findings:
        _fail(label, where, f"`{short(finding.text)}` {finding.what}",
              DOWNLOAD_FIX if "download" in finding.what else RUNTIME_FIX)
    for run in analysis.runs:
        command = ray_subcommand(run)
        if command == "stop" and not allow_stop:
            _fail(label, where, f"`{short(run.text)}` runs `ray stop`", STOP_FIX)
        if command == "start" and (problem := auth_problem(run)):
            _fail(label, where, f"`{short(run.text)}` starts Ray without token authentication: {problem}", TOKEN_FIX)
    return analysis


def _generates_token(analysis: Analysis) -> bool:
    return any(ray_subcommand(r) == "get-auth-token" and "--generate" in r.argv for r in analysis.runs)


def _starts_ray(analysis: Analysis) -> bool:
    return any(ray_subcommand(r) == "start" for r in analysis.runs)


def _docker_env(label: str, docker: Any, role: str) -> dict:
    """Variables the launcher's container gets from `docker run -e/--env` (run_options), which
    every command run inside it inherits."""
    env: dict = {}
    if not isinstance(docker, dict) or not docker.get("image") and not docker.get(f"{role}_image"):
        return env
    for key in ("run_options", f"{role}_run_options"):
        options = docker.get(key) or []
        for i, option in enumerate(options if isinstance(options, list) else []):
            try:
                words = shlex.split(str(option))
            except ValueError as exc:
                _fail(label, f"docker.{key}[{i}]", f"{option!r} cannot be split into words ({exc})", "balance the quotes")
            for j, word in enumerate(words):
                value = None
                if word in ("-e", "--env") and j + 1 < len(words):
                    value = words[j + 1]
                elif word.startswith("--env="):
                    value = word.split("=", 1)[1]
                elif word.startswith("-e") and len(word) > 2:
                    value = word[2:]
                if value is not None and "=" in value:
                    name, _, val = value.partition("=")
                    env[name] = val
    return env


def _commands(label: str, doc: dict, key: str, where: str | None = None) -> list[tuple[str, Any]]:
    """(field path, command) for each command of a launcher list field."""
    commands = doc.get(key)
    if commands is None:
        return []
    if not isinstance(commands, list):
        _fail(label, where or key, f"{commands!r} is not a list of commands", "write a YAML list of strings")
    return [(f"{where or key}[{i}]", c) for i, c in enumerate(commands)]


def _installs_raysearch(command: str) -> bool:
    """Whether `command` runs `pip install` (or `python -m pip install`) of the project."""
    try:
        runs = analyze(command).runs
    except ShellSyntaxError:
        return False
    for run in runs:
        argv = [a or "" for a in run.argv]
        name = Path(argv[0]).name
        if re.fullmatch(r"python[0-9.]*", name) and argv[1:3] == ["-m", "pip"]:
            argv = argv[2:]
        elif not re.fullmatch(r"pip[0-9.]*", name):
            continue
        if "install" in argv and any("raysearch" in a for a in argv[argv.index("install") + 1:]):
            return True
    return False


def _check_launcher_commands(label: str, doc: dict, config: dict, local: bool) -> None:
    """Every command the launcher runs on a node, in the order it runs them, for the head and for
    each worker type: initialization (on the host), setup and start (in the container)."""
    mounts = config.get("file_mounts") or {}
    token_mounted = isinstance(mounts, dict) and any(
        str(remote).rstrip("/").endswith(".ray/auth_token") for remote in mounts)
    docker = config.get("docker") or {}
    types = doc.get("available_node_types") or {}
    head_name = doc.get("head_node_type")
    roles = [("head", head_name, ["initialization_commands", "setup_commands", "head_setup_commands"],
              "head_start_ray_commands")]
    roles += [("worker", name, ["initialization_commands", "setup_commands", "worker_setup_commands"],
               "worker_start_ray_commands") for name in types if name != head_name]
    for role, name, setup_keys, start_key in roles:
        node_type = types.get(name) if isinstance(types.get(name), dict) else {}
        container_env = _docker_env(label, docker, role)
        token_file = token_mounted
        for key in setup_keys:
            # A node type's own initialization_commands / worker_setup_commands replace the global ones.
            source, at = (node_type, f"available_node_types.{name}.{key}") if key in node_type else (doc, key)
            for where, command in _commands(label, source, key, at):
                env = {} if key == "initialization_commands" else container_env   # on the host, outside docker
                token_file |= _generates_token(_shell(label, where, command, env, token_file))
        if start_key in doc:
            starts = _commands(label, doc, start_key)
        else:   # Ray's defaults for the provider (they start Ray without authentication)
            starts = _commands(label, config, start_key, f"{start_key} (Ray's default; the file has none)")
        started = False
        for where, command in starts:
            analysis = _shell(label, where, command, container_env, token_file)
            token_file |= _generates_token(analysis)
            started |= _starts_ray(analysis)
        if not started and not local:
            _fail(label, start_key, "no `ray start`", "start Ray there: RAY_AUTH_MODE=token ray start ...")


def _check_launcher(label: str, doc: dict, strict_placeholders: list[str]) -> ClusterCheck:
    provider = _mapping(doc.get("provider"), label, "provider")
    kind = provider.get("type")
    if not isinstance(kind, str):
        _fail(label, "provider.type", f"{kind!r} is not a provider name", "write e.g. type: aws, gcp or fake_multinode")
    config = _ray_schema(label, doc)
    local = kind in LOCAL_PROVIDERS

    for key in ("available_node_types", "head_node_type"):
        if key not in doc:
            _fail(label, key, "missing", "list the node types yourself: Ray's defaults are not ours")
    idle = doc.get("idle_timeout_minutes")
    if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle <= 0:
        _fail(label, "idle_timeout_minutes", f"{idle!r}", "set it (e.g. 10), so idle GPU nodes are removed")

    meta = doc.get("metadata") or {}
    space_path = meta.get("raysearch", {}).get("search_space") if isinstance(meta.get("raysearch"), dict) else None
    if space_path is None:
        _fail(label, "metadata.raysearch.search_space", "missing",
              "name the search space this cluster is for (e.g. search_spaces/paper.yaml), so its workers are checked to fit")
    space = _load_space(label, "metadata.raysearch.search_space", space_path)

    types = config["available_node_types"]
    head_name = config["head_node_type"]
    where, groups = {}, []
    for name, node_type in types.items():
        resources = doc["available_node_types"][name].get("resources") or {}
        where[name] = f"available_node_types.{name}.resources"
        if "CPU" not in resources:
            _fail(label, where[name], "no CPU count", "write resources: {CPU: N, GPU: M} as the instance has them")
        for key, amount in resources.items():
            if not isinstance(amount, int) or isinstance(amount, bool):
                _fail(label, f"{where[name]}.{key}", f"{amount!r} is not an integer",
                      "write a whole number: Ray's launcher counts resources in integers")
        group = NodeGroup(name=name, cpus=resources.get("CPU", 0), gpus=resources.get("GPU", 0),
                          min_nodes=node_type.get("min_workers", 0), max_nodes=node_type.get("max_workers", 0),
                          trial_workers=_trial_workers(resources.get("CPU", 0), resources.get("GPU", 0), space))
        if name != head_name:
            if group.min_nodes != 0:
                _fail(label, f"available_node_types.{name}.min_workers", f"{group.min_nodes}",
                      "use 0: worker nodes start when trials wait for them and go away when idle")
            groups.append(group)
    if not groups:
        _fail(label, "available_node_types", "only a head node type", "add a worker node type (min_workers: 0)")
    head_resources = doc["available_node_types"][head_name]["resources"]
    head = NodeGroup(name=head_name, cpus=head_resources["CPU"], gpus=head_resources.get("GPU", 0))
    _check_hosting(label, space, space_path, head, groups, where, max_total_nodes=config.get("max_workers"))

    _check_launcher_commands(label, doc, config, local)
    notes = []
    if local:
        notes.append(f"{kind}: nodes are processes on this machine; they inherit the head's environment "
                     "(start it with RAY_AUTH_MODE=token) and its installed raysearch")
    else:
        docker = config.get("docker") or {}
        custom_image = any(docker.get(k) and not str(docker[k]).startswith("rayproject/")
                           for k in ("image", "worker_image"))
        for key in ("head_setup_commands", "worker_setup_commands"):  # each includes setup_commands by now
            installs = [c for c in config.get(key) or [] if _installs_raysearch(c)]
            if not installs and not custom_image:
                _fail(label, "setup_commands", f"no `pip install` of raysearch in {key}",
                      "mount the repository (file_mounts ~/raysearch: .) and add `pip install -e ~/raysearch`, "
                      "or use an image that has it")
    return ClusterCheck(path=label, kind=f"Ray cluster launcher ({kind})", search_space=space_path, head=head,
                        workers=tuple(groups), placeholders=tuple(dict.fromkeys(strict_placeholders)),
                        notes=tuple(notes))


# -- KubeRay ---------------------------------------------------------------------------------------
def _first_container(label: str, template: Any, where: str) -> dict:
    spec = _mapping(_mapping(template, label, f"{where}.template").get("spec"), label, f"{where}.template.spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        _fail(label, f"{where}.template.spec.containers", "missing", "add the Ray container (KubeRay uses the first one)")
    return _mapping(containers[0], label, f"{where}.template.spec.containers[0]")


def _container_env(label: str, container: dict, where: str, token_auth: bool) -> dict:
    """The environment a container's processes start with: its `env` (a value from a Secret or
    ConfigMap is set but unknown here), and with `authOptions: {mode: token}` what KubeRay adds
    to every Ray container (RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from the Secret it makes)."""
    entries = container.get("env") or []
    if not isinstance(entries, list):
        _fail(label, f"{where}.env", f"{entries!r} is not a list", "write env as a list of {name: ..., value: ...}")
    env: dict = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            value = entry.get("value")
            if "value" in entry:
                env[entry["name"]] = value if isinstance(value, str) else str(value)
            elif entry.get("valueFrom"):
                env[entry["name"]] = None
    if token_auth:
        env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": None})
    return env


def _env_auth(env: dict) -> str | None:
    """Why a process with this environment would talk to Ray without token auth, or None."""
    from .cluster_shell import Run

    return auth_problem(Run(argv=["ray"], env=env, text="", token_file=False))


def _pod_commands(label: str, template: Any, where: str, env_of: Callable[[dict], dict],
                  ray_container: bool) -> None:
    """Commands of every container (and init container) of a pod template: what they run, and
    for the Ray container (the first) also the `ray start` it may run itself."""
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict):
        return
    for kind in ("initContainers", "containers"):
        containers = spec.get(kind) or []
        for i, container in enumerate(containers if isinstance(containers, list) else []):
            if not isinstance(container, dict):
                continue
            at = f"{where}.template.spec.{kind}[{i}]" if where else f"spec.{kind}[{i}]"
            env = env_of(container) if (kind == "containers" and i == 0 and ray_container) else \
                _container_env(label, container, at, False)
            words = []
            for key in ("command", "args"):
                value = container.get(key) or []
                if not isinstance(value, list) or not all(isinstance(w, (str, int, float)) for w in value):
                    _fail(label, f"{at}.{key}", f"{value!r} is not a list of strings", "write a YAML list of strings")
                words += [str(w) for w in value]
            if words:
                # KubeRay joins command and args with spaces into the `bash -lc` line that also
                # runs its `ray start` (unless ray.io/overwrite-container-cmd): read them as shell.
                _shell(label, f"{at}.command/args", " ".join(words), env)
            lifecycle = container.get("lifecycle") if isinstance(container.get("lifecycle"), dict) else {}
            for hook in ("postStart", "preStop"):
                handler = lifecycle.get(hook)
                command = handler.get("exec", {}).get("command") if isinstance(handler, dict) and isinstance(
                    handler.get("exec"), dict) else None
                if isinstance(command, list) and command:
                    # KubeRay's own examples stop Ray in preStop: the pod is going away with it.
                    text = command[2] if len(command) == 3 and Path(str(command[0])).name in ("sh", "bash") \
                        and command[1] in ("-c", "-lc") else " ".join(shlex.quote(str(w)) for w in command)
                    _shell(label, f"{at}.lifecycle.{hook}.exec.command", str(text), env, allow_stop=hook == "preStop")


RAY_START_PARAM = re.compile(r"[a-z0-9][a-z0-9-]*")


def _check_ray_start_params(label: str, params: dict, at: str, head: bool, env: dict) -> None:
    """KubeRay writes `ray start --KEY=VALUE ...` from rayStartParams, unquoted, into a bash
    line: each value must be one plain word there."""
    for key, value in params.items():
        if not isinstance(key, str) or not RAY_START_PARAM.fullmatch(key):
            _fail(label, f"{at}.rayStartParams.{key}", "not a `ray start` option name",
                  "use the option's name without dashes, e.g. num-cpus")
        unsafe = re.search(r"[;&|<>`$\n\r]", value)
        try:
            words = shlex.split(f"--{key}={value}")
        except ValueError:
            words = []
        if unsafe or len(words) != 1:
            _fail(label, f"{at}.rayStartParams.{key}",
                  f"{value!r} is shell syntax in the `ray start` line KubeRay builds (`ray start --{key}={short(value, 60)}`)",
                  "write a plain value (KubeRay does not quote it)")
    line = "ray start" + (" --head" if head else "") + "".join(f" --{k}={v}" for k, v in params.items())
    _shell(label, f"{at}.rayStartParams", line, env)


def _integer_quantity(value: Any) -> int | None:
    """An integer Kubernetes quantity (1 or "1"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_ray_cluster_spec(label: str, spec: Any, where: str, name: str, space, space_path: str,
                            extra_auth: list[tuple[str, Any]]) -> tuple[NodeGroup, list[NodeGroup]]:
    spec = _mapping(spec, label, where)
    if spec.get("enableInTreeAutoscaling") is not True:
        _fail(label, f"{where}.enableInTreeAutoscaling", f"{spec.get('enableInTreeAutoscaling')!r}",
              "set it to true: GPU worker groups start at 0 pods and grow when trials wait")
    head_spec = _mapping(spec.get("headGroupSpec"), label, f"{where}.headGroupSpec")
    groups_spec = spec.get("workerGroupSpecs")
    if not isinstance(groups_spec, list) or not groups_spec:
        _fail(label, f"{where}.workerGroupSpecs", "missing", "add a GPU worker group (minReplicas: 0)")

    # KubeRay's autoscaler calls the head group "headgroup"; messages name the manifest's fields.
    group_where = {"headgroup": f"{where}.headGroupSpec"}
    for i, group in enumerate(groups_spec):
        group = _mapping(group, label, f"{where}.workerGroupSpecs[{i}]")
        if not isinstance(group.get("groupName"), str) or group["groupName"] in group_where:
            _fail(label, f"{where}.workerGroupSpecs[{i}].groupName", f"{group.get('groupName')!r}",
                  "give each worker group its own name")
        group_where[group["groupName"]] = f"{where}.workerGroupSpecs[{i}]"
    # Token authentication: the operator's authOptions, or the env on every Ray container.
    auth = spec.get("authOptions") or {}
    token_auth = isinstance(auth, dict) and auth.get("mode") == "token"
    for group, at in zip([head_spec, *groups_spec], group_where.values()):
        params = _mapping(group.get("rayStartParams", {}), label, f"{at}.rayStartParams")
        for key, value in params.items():
            if not isinstance(value, str):
                _fail(label, f"{at}.rayStartParams.{key}", f"{value!r} is not a string",
                      f"write \"{value}\": rayStartParams values are strings in the RayCluster CRD")
        if "num-cpus" not in params:
            _fail(label, f"{at}.rayStartParams.num-cpus", "missing",
                  "set it (a string, e.g. \"8\") so the autoscaler and the search know the CPUs per pod")
        container = _first_container(label, group.get("template"), at)
        env = _container_env(label, container, f"{at}.template.spec.containers[0]", token_auth)
        if problem := _env_auth(env):
            _fail(label, f"{at}: env", f"the Ray container would start Ray without token authentication ({problem})",
                  "add RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret (see cluster/kuberay/raycluster.yaml) "
                  "or set authOptions: {mode: token} (KubeRay 1.5.1+)")
        _check_ray_start_params(label, params, at, group is head_spec, env)
        _pod_commands(label, group.get("template"), at,
                      lambda c, at=at: _container_env(label, c, f"{at}.template.spec.containers[0]", token_auth), True)
    others = [(f"{where}.autoscalerOptions", spec.get("autoscalerOptions") or {})]
    for at, container in others + extra_auth:
        container = _mapping(container, label, at)
        if problem := _env_auth(_container_env(label, container, at, token_auth)):
            _fail(label, f"{at}: env", f"it talks to the cluster without token authentication ({problem})",
                  "add RAY_AUTH_MODE=token and RAY_AUTH_TOKEN from a Secret (see cluster/kuberay/raycluster.yaml) or set "
                  "authOptions: {mode: token} (KubeRay 1.5.1+)")

    # GPU groups: integer nvidia.com/gpu limits, equal to num-gpus, starting from 0 replicas.
    for group in groups_spec:
        at = group_where[group.get("groupName")]
        for key in ("minReplicas", "maxReplicas"):
            if not isinstance(group.get(key), int) or isinstance(group.get(key), bool) or group[key] < 0:
                _fail(label, f"{at}.{key}", f"{group.get(key)!r}", "write a whole number >= 0")
        resources = _first_container(label, group.get("template"), at).get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if GPU_LIMIT not in limits and GPU_LIMIT not in requests:
            continue
        gpus = _integer_quantity(limits.get(GPU_LIMIT))
        if gpus is None or gpus < 1:
            _fail(label, f"{at}.template.spec.containers[0].resources.limits.{GPU_LIMIT}", f"{limits.get(GPU_LIMIT)!r}",
                  "set a whole number of GPUs >= 1 (Kubernetes allocates whole GPUs)")
        if GPU_LIMIT in requests and _integer_quantity(requests[GPU_LIMIT]) != gpus:
            _fail(label, f"{at}.template.spec.containers[0].resources.requests.{GPU_LIMIT}", f"{requests[GPU_LIMIT]!r}",
                  f"make it equal to the limit, {gpus}")
        num_gpus = group.get("rayStartParams", {}).get("num-gpus")
        if _integer_quantity(num_gpus) != gpus:
            _fail(label, f"{at}.rayStartParams.num-gpus", f"{num_gpus!r} with {gpus} {GPU_LIMIT} in the limits",
                  f"set num-gpus: \"{gpus}\", so Ray schedules exactly the GPUs the pod gets")
        if group["minReplicas"] != 0:
            _fail(label, f"{at}.minReplicas", f"{group['minReplicas']}",
                  "use 0: GPU pods start when trials wait for them and go away when idle")

    # What KubeRay's autoscaler derives from the manifest, through Ray's schema.
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    try:
        derived = _derive_autoscaling_config_from_ray_cr({"metadata": {"name": name, "namespace": "default"},
                                                          "spec": spec})
    except Exception as exc:  # its checks raise ValueError, KeyError, jsonschema errors
        _fail(label, where, f"KubeRay's autoscaler cannot read it ({str(exc).splitlines()[0][:200]})",
              "compare with cluster/kuberay/raycluster.yaml")
    node_types = derived["available_node_types"]
    head_type = node_types.pop("headgroup")
    head = NodeGroup(name="headgroup", cpus=head_type["resources"].get("CPU", 0),
                     gpus=head_type["resources"].get("GPU", 0))
    workers = [NodeGroup(name=n, cpus=t["resources"].get("CPU", 0), gpus=t["resources"].get("GPU", 0),
                         min_nodes=t["min_workers"], max_nodes=t["max_workers"],
                         trial_workers=_trial_workers(t["resources"].get("CPU", 0), t["resources"].get("GPU", 0), space))
               for n, t in node_types.items()]
    if space.resources.gpus_per_worker and not any(w.gpus for w in workers):
        _fail(label, f"{where}.workerGroupSpecs", f"no group requests {GPU_LIMIT}, {space_path} needs GPUs",
              f"add a GPU worker group with {GPU_LIMIT} limits")
    _check_hosting(label, space, space_path, head, workers, group_where)
    return head, workers


SearchArgs = Callable[[list[str]], argparse.Namespace]
"""Reads a `raysearch` command line (without the program name) as the CLI would: raises
SystemExit with argparse's message on stderr when it would refuse it. The CLI passes its own
parser's `parse_args`, so this module never imports the CLI."""


def _parse_entrypoint(label: str, entrypoint: Any, search_args: SearchArgs) -> argparse.Namespace:
    """The RayJob's command line, read as the submitter's shell and then raysearch's parser would."""
    where = "spec.entrypoint"
    if not isinstance(entrypoint, str) or not entrypoint.strip():
        _fail(label, where, "missing", "write the search to run, e.g. raysearch search search_spaces/paper.yaml ...")
    analysis = _shell(label, where, entrypoint)
    if analysis.substitutions:
        _fail(label, where, f"`{short(analysis.substitutions[0])}` is a command substitution, run by the job's shell "
              "before raysearch starts", "write the values out (the entrypoint is one `raysearch search` command)")
    runs = analysis.runs
    if len(runs) != 1:
        _fail(label, where, f"{short(entrypoint)!r} runs {len(runs)} commands",
              "run one command: raysearch search SPACE.yaml ... (no ;, &&, | or &)")
    tokens = runs[0].argv
    if None in tokens:
        _fail(label, where, f"{short(entrypoint)!r} has a value known only at run time ($VAR)",
              "write the values out, so they can be checked before launch")
    if len(tokens) < 2 or Path(tokens[0]).name != "raysearch" or tokens[1] != "search":
        _fail(label, where, f"{entrypoint!r} does not run `raysearch search`",
              "start it with raysearch search SPACE.yaml")
    with contextlib.redirect_stderr(io.StringIO()) as errors, contextlib.redirect_stdout(io.StringIO()):
        try:
            return search_args(tokens[1:])
        except SystemExit:
            problem = (errors.getvalue().strip().splitlines() or ["not a search command line"])[-1]
            _fail(label, where, problem.removeprefix("raysearch search: "), "fix the command line")


def _check_runtime_env(label: str, doc: Any, where: str) -> None:
    from ray._private.thirdparty.pathspec import PathSpec
    from ray.runtime_env import RuntimeEnv

    doc = _mapping(doc, label, where)
    for key in doc:
        if key not in RuntimeEnv.known_fields:
            _fail(label, f"{where}.{key}" if where != "(top level)" else str(key), "not a runtime_env field",
                  f"use one of {', '.join(sorted(k for k in RuntimeEnv.known_fields if not k.startswith('_')))}")
    working_dir = doc.get("working_dir")
    if working_dir is not None and not isinstance(working_dir, str):
        _fail(label, f"{where}.working_dir", f"{working_dir!r}", "write a path or a URI")
    try:
        # Without working_dir: that path is where the job is submitted from (an image, a laptop),
        # and Ray would insist on finding it here.
        RuntimeEnv(**{k: v for k, v in doc.items() if k != "working_dir"})
    except (TypeError, ValueError) as exc:
        _fail(label, where, str(exc).splitlines()[0], "fix the field as Ray says")
    excludes = doc.get("excludes")
    if "working_dir" in doc or excludes is not None:
        if not excludes:
            _fail(label, f"{where}.excludes", "missing", "copy the excludes of cluster/runtime_env.yaml")
        spec = PathSpec.from_lines("gitwildmatch", excludes)
        for sample, what in MUST_EXCLUDE.items():
            if not spec.match_file(sample):
                _fail(label, f"{where}.excludes", f"{what} would be uploaded ({sample})",
                      "add a pattern for it, as in cluster/runtime_env.yaml (uploads are limited to 100 MiB)")
        for sample in MUST_KEEP:
            if spec.match_file(sample):
                _fail(label, f"{where}.excludes", f"{sample} would be left out of the upload",
                      "anchor the pattern to the top with a leading / (e.g. /data/, not data/)")


def _check_kuberay(label: str, doc: dict, placeholders: list[str], search_args: SearchArgs | None) -> ClusterCheck:
    if doc.get("apiVersion") != KUBERAY_API:
        _fail(label, "apiVersion", f"{doc.get('apiVersion')!r}", f"use {KUBERAY_API} (KubeRay 1.0 and later)")
    kind = doc.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        _fail(label, "kind", f"{kind!r}", "use RayCluster or RayJob")
    metadata = _mapping(doc.get("metadata"), label, "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        _fail(label, "metadata.name", "missing", "name the object")
    spec = _mapping(doc.get("spec"), label, "spec")
    annotated = (metadata.get("annotations") or {}).get(SPACE_ANNOTATION)
    notes: list[str] = []

    if kind == "RayCluster":
        if annotated is None:
            _fail(label, f"metadata.annotations.{SPACE_ANNOTATION}", "missing",
                  "name the search space this cluster is for (e.g. search_spaces/paper.yaml), so its workers are checked to fit")
        space_path, space = annotated, _load_space(label, f"metadata.annotations.{SPACE_ANNOTATION}", annotated)
        head, workers = _check_ray_cluster_spec(label, spec, "spec", name, space, space_path, [])
        return ClusterCheck(path=label, kind="KubeRay RayCluster", search_space=space_path, head=head,
                            workers=tuple(workers), placeholders=tuple(dict.fromkeys(placeholders)))

    if search_args is None:
        raise TypeError("validate_cluster_file needs search_args to read a RayJob's entrypoint")
    args = _parse_entrypoint(label, spec.get("entrypoint"), search_args)
    if annotated is not None and annotated != args.space:
        _fail(label, f"metadata.annotations.{SPACE_ANNOTATION}", f"{annotated} but the entrypoint runs {args.space}",
              "make them the same")
    space_path = args.space
    space = _load_space(label, "spec.entrypoint", space_path, data=args.data, num_samples=args.num_samples)
    if space.data != "synthetic" and not (args.data and Path(args.data).is_absolute()):
        _fail(label, "spec.entrypoint", f"no --data with an absolute path ({space_path} reads {space.data} here)",
              "pass --data /mnt/data/... : a path on a volume every pod mounts")
    deleted = spec.get("shutdownAfterJobFinishes") is True
    if args.storage is None or ("://" not in args.storage and not Path(args.storage).is_absolute()):
        _fail(label, "spec.entrypoint", f"--storage {args.storage or '(default runs/)'} is inside the job's pod",
              "write results to a bucket, e.g. --storage gs://BUCKET/raysearch"
              + (" (the cluster is deleted after the job)" if deleted else ""))
    if "runtimeEnvYAML" in spec:
        text = spec["runtimeEnvYAML"]
        if not isinstance(text, str):
            _fail(label, "spec.runtimeEnvYAML", f"is a {type(text).__name__}, not a YAML string",
                  "write it as a block string: runtimeEnvYAML: |")
        # The same limits as every user YAML: aliases, depth, duplicate keys.
        runtime_env = parse_user_yaml(text, f"{label}: spec.runtimeEnvYAML", fix="fix the embedded YAML")
        _check_runtime_env(label, runtime_env, "spec.runtimeEnvYAML")
    if "rayClusterSpec" not in spec:
        notes.append("runs on an existing cluster (clusterSelector): check that cluster's manifest too")
        return ClusterCheck(path=label, kind="KubeRay RayJob", search_space=space_path,
                            placeholders=tuple(dict.fromkeys(placeholders)), notes=tuple(notes))
    submitter = spec.get("submitterPodTemplate")
    extra = [("spec.submitterPodTemplate", _first_container(label, submitter, "spec.submitterPodTemplate"))] \
        if submitter is not None else []
    if submitter is not None:
        _pod_commands(label, {"spec": submitter.get("spec")}, "spec.submitterPodTemplate", lambda c: {}, False)
    head, workers = _check_ray_cluster_spec(label, spec["rayClusterSpec"], "spec.rayClusterSpec", name, space,
                                            space_path, extra)
    if space.resources.gpus_per_worker and not args.allow_pending_resources \
            and not any(w.min_nodes and w.gpus for w in workers):
        _fail(label, "spec.entrypoint", "no --allow-pending-resources, and no GPU pod exists when the search starts",
              "add --allow-pending-resources: the autoscaler adds GPU pods once trials wait for them")
    if deleted:
        notes.append("the cluster is deleted after the job: results stay in --storage")
    return ClusterCheck(path=label, kind="KubeRay RayJob", search_space=space_path, head=head, workers=tuple(workers),
                        placeholders=tuple(dict.fromkeys(placeholders)), notes=tuple(notes))


# -- entry points ----------------------------------------------------------------------------------
def validate_cluster_file(path: str | Path, strict: bool = False, search_args: SearchArgs | None = None) -> ClusterCheck:
    """Check one cluster file; raises UserInputError naming the file, the field and the fix.

    `strict` also refuses YOUR_* placeholders left in values (run it before launching).
    `search_args` reads a RayJob's `raysearch search ...` entrypoint (the CLI passes its parser's
    `parse_args`); files of the other kinds do not need it."""
    label = str(path)
    doc = load_user_yaml(path, "pass a cluster YAML such as cluster/aws-gpu.yaml")
    if not isinstance(doc, dict):
        _fail(label, "(top level)", "not a mapping", "pass a Ray launcher YAML, a KubeRay manifest or a runtime env")
    placeholders = _placeholders(doc)
    if strict and placeholders:
        _fail(label, ", ".join(dict.fromkeys(placeholders)), "placeholders not filled in",
              "replace them with your account's values (each is commented in the file)")
    if "apiVersion" in doc or "kind" in doc:
        return _check_kuberay(label, doc, placeholders, search_args)
    if "provider" in doc:
        return _check_launcher(label, doc, placeholders)
    from ray.runtime_env import RuntimeEnv

    if set(doc) & RuntimeEnv.known_fields:
        _check_runtime_env(label, doc, "(top level)")
        return ClusterCheck(path=label, kind="runtime_env for ray job submit",
                            placeholders=tuple(dict.fromkeys(placeholders)))
    _fail(label, "(top level)", "neither a Ray launcher config (provider:), a KubeRay manifest (apiVersion:) "
          "nor a runtime env (working_dir:, excludes:)", "pass one of the files in cluster/")


def cluster_files(paths: list[str]) -> list[Path]:
    """Files as given; a directory stands for the YAML files under it."""
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
            if not found:
                raise UserInputError(f"{given}: no .yaml files in this directory; pass cluster YAML files")
            files.extend(found)
        else:
            files.append(path)
    return files


def describe(check: ClusterCheck) -> str:
    """What `raysearch cluster validate` prints for a file that passed."""
    lines = [f"{check.path}: ok: {check.kind}" + (f" for {check.search_space}" if check.search_space else "")]
    if check.head is not None:
        lines.append(f"  head {check.head.name}: {check.head.cpus:g} CPU")
    for group in check.workers:
        lines.append(f"  {group.name}: {group.cpus:g} CPU, {group.gpus:g} GPU, {group.min_nodes}-{group.max_nodes} nodes, "
                     f"{group.trial_workers} trial worker(s) each")
    lines += [f"  note: {note}" for note in check.notes]
    if check.placeholders:
        lines.append(f"  to fill in before launching: {', '.join(check.placeholders)}")
    return "\n".join(lines)


__all__ = ["ClusterCheck", "NodeGroup", "SearchArgs", "cluster_files", "describe", "validate_cluster_file"]
