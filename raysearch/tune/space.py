"""Search spaces: a YAML file -> a validated, typed `SearchSpace` -> Optuna define-by-run.

`load_search_space` checks everything a search needs before Ray starts (names, types, ranges,
conditions, warm-start points, objectives, scheduler and sampler, per-trial resources, and that
the model can be built at the edges of every range) and raises `UserInputError` with one line:
`<file>: <field.path>: <what is wrong>; <how to fix>`. The schema is documented in
search_spaces/README.md.

`define_by_run(trial, space=..., data_dir=...)` suggests the parameters whose `when` holds, in
YAML order, and returns the constants every trial gets, so a trial's flat config is
`{**suggested, **space.constants(data_dir)}` and `TrialConfig.from_flat` accepts it.
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


import models
from models import ModelConfig, ModelConfigError

from ..errors import UserInputError, load_user_yaml
from ..train.config import DATA_FIELDS, MODEL_FIELDS, TUNABLE_FIELDS, TrainConfig, TrialConfig

OBJECTIVE_METRICS = ("val_acc", "val_loss", "params", "pretrain_gflops", "classifier_gflops", "train_time_s")
MODES = ("max", "min")
PARAMETER_TYPES = ("float", "int", "categorical")
SCHEDULER_TYPES = ("asha", "fifo")
SAMPLER_TYPES = ("tpe", "random", "grid")
SYNTHETIC = "synthetic"
# TrainConfig fields that the budget section sets for every trial (unless a parameter tunes them).
BUDGET_TRAIN_FIELDS = ("pretrain_epochs", "finetune_epochs", "label_fraction")
# Discrete ranges up to this many values are checked value by value for a buildable model;
# larger ones and continuous ranges at their two ends.
FEASIBILITY_CHECK_LIMIT = 1024

TOP_LEVEL_KEYS = ("name", "preset", "data", "synthetic", "objectives", "budget", "resources", "scheduler",
                  "sampler", "fixed", "parameters", "points_to_evaluate")
SYNTHETIC_KEYS = ("classes", "per_class", "seed", "max_frames")
OBJECTIVE_KEYS = ("metric", "mode")
BUDGET_KEYS = ("num_samples", "pretrain_epochs", "finetune_epochs", "label_fraction", "time_limit_s",
               "max_concurrent")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker")
SCHEDULER_KEYS = {"asha": ("type", "grace_period", "reduction_factor"), "fifo": ("type",)}
SAMPLER_KEYS = {"tpe": ("type", "seed", "n_startup_trials", "multivariate", "group", "constant_liar"),
                "random": ("type", "seed"), "grid": ("type", "seed")}
PARAMETER_KEYS = {"float": ("type", "low", "high", "step", "log", "when"),
                  "int": ("type", "low", "high", "step", "log", "when"),
                  "categorical": ("type", "choices", "when")}


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str                               # "max" or "min"


@dataclass(frozen=True)
class SyntheticData:
    """Arguments of the built-in generator (`raysearch prepare synthetic`)."""

    classes: int = 10
    per_class: int = 100
    seed: int = 0
    max_frames: int = 64


@dataclass(frozen=True)
class Budget:
    num_samples: int                        # trials to run (grid: the grid size by default)
    pretrain_epochs: int = 200
    finetune_epochs: int = 200
    label_fraction: float = 1.0
    time_limit_s: float | None = None       # wall-clock limit of the whole search
    max_concurrent: int | None = None       # None: as many trials as the cluster fits


@dataclass(frozen=True)
class Resources:
    """One trial = one Ray Train run of `workers` workers, each with these CPUs and GPUs."""

    workers: int = 1
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0


@dataclass(frozen=True)
class SchedulerSpec:
    type: str                               # "asha" or "fifo"
    grace_period: int | None = None         # asha: epochs (global_epoch) before the first cut
    reduction_factor: float | None = None   # asha: keep 1/reduction_factor at each rung


@dataclass(frozen=True)
class SamplerSpec:
    type: str                               # "tpe", "random" or "grid"
    seed: int | None = 0
    n_startup_trials: int = 10              # tpe: random trials before the model kicks in
    multivariate: bool = True               # tpe
    group: bool = True                      # tpe: decompose conditional spaces (needs multivariate)
    constant_liar: bool = True              # tpe: parallel trials avoid each other


@dataclass(frozen=True)
class Parameter:
    """One searched setting. `when` maps a setting name to the values under which this one exists."""

    name: str
    type: str                               # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple = ()
    when: dict[str, tuple] = field(default_factory=dict)

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether a trial of this parameter can take `value` (the tolerance is Optuna's)."""
        if self.type == "categorical":
            return any(_same(value, choice) for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.type == "int":
            return (value - self.low) % (self.step or 1) == 0
        if self.step is None:
            return True
        k = (value - self.low) / self.step
        return abs(k - round(k)) < 1e-8

    def values(self, limit: int) -> tuple | None:
        """Every value a trial can take, when there are at most `limit` of them."""
        if self.type == "categorical":
            return self.choices
        if self.type == "float" and self.step is None:
            return None
        count = round((self.high - self.low) / (self.step or 1)) + 1
        if count > limit:
            return None
        if self.type == "int":
            return tuple(range(self.low, self.high + 1, self.step or 1))
        return tuple(self.low + i * self.step for i in range(count))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    preset: str
    data: str                               # "synthetic" or an absolute dataset directory
    synthetic: SyntheticData | None         # set only with data: synthetic
    objectives: tuple[Objective, ...]       # the first is the primary (schedulers use it)
    budget: Budget
    resources: Resources
    scheduler: SchedulerSpec
    sampler: SamplerSpec
    fixed: dict[str, Any]
    parameters: tuple[Parameter, ...]
    points_to_evaluate: tuple[dict[str, Any], ...]
    source: Path

    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    def constants(self, data_dir: str) -> dict[str, Any]:
        """What every trial gets besides its suggested parameters."""
        tuned = {p.name for p in self.parameters}
        budget = {name: getattr(self.budget, name) for name in BUDGET_TRAIN_FIELDS if name not in tuned}
        return {"preset": self.preset, "data_dir": str(data_dir), **self.fixed, **budget}

    def base_value(self, name: str) -> Any:
        """The value a trial has for a setting no parameter tunes: fixed, budget, preset, or recipe default."""
        if name in self.fixed:
            return self.fixed[name]
        if name in BUDGET_TRAIN_FIELDS:
            return getattr(self.budget, name)
        if name in MODEL_FIELDS:
            return getattr(models.PRESETS[self.preset], name)
        return getattr(TrainConfig(), name)

    def is_active(self, parameter: Parameter, values: dict[str, Any]) -> bool:
        """Whether `parameter` is sampled, given the parameter values chosen so far."""
        for name, allowed in parameter.when.items():
            if self.parameter(name) is not None:
                if name not in values or not any(_same(values[name], v) for v in allowed):
                    return False
            elif not any(_same(self.base_value(name), v) for v in allowed):
                return False
        return True


def define_by_run(trial, space: SearchSpace, data_dir: str) -> dict[str, Any]:
    """Optuna define-by-run: suggest the active parameters in YAML order, return the constants.

    Module level so that Ray can pickle it for `Tuner.restore`; bind the rest with
    `functools.partial(define_by_run, space=space, data_dir=data_dir)`. A conditional parameter whose
    `when` is false is not suggested at all, so it is absent from the trial's config.
    """
    values: dict[str, Any] = {}
    for parameter in space.parameters:
        if space.is_active(parameter, values):
            values[parameter.name] = parameter.suggest(trial)
    return space.constants(data_dir)


def trial_flat_config(params: dict[str, Any], space: SearchSpace, data_dir: str) -> dict[str, Any]:
    """The flat config one trial runs with (what `TrialConfig.from_flat` takes)."""
    return {**space.constants(data_dir), **params}


def grid_size(space: SearchSpace) -> int:
    """Number of combinations of the categorical parameters (the whole grid)."""
    if any(p.type != "categorical" for p in space.parameters):
        raise ValueError("grid_size needs a space whose parameters are all categorical")
    return math.prod(len(p.choices) for p in space.parameters)


def build_sampler(space: SearchSpace):
    """The Optuna sampler the YAML asks for (Optuna 5 signatures)."""
    import optuna

    spec = space.sampler
    if spec.type == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if spec.type == "grid":
        return optuna.samplers.GridSampler({p.name: list(p.choices) for p in space.parameters}, seed=spec.seed)
    with warnings.catch_warnings():
        # `group` is still experimental in Optuna 5 (multivariate and constant_liar no longer are).
        warnings.filterwarnings("ignore", message=r"Argument ``group`` is an experimental feature",
                                category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=spec.n_startup_trials,
                                          multivariate=spec.multivariate, group=spec.group,
                                          constant_liar=spec.constant_liar)


def load_search_space(path: str | Path, *, data: str | None = None, num_samples: int | None = None,
                      check_data: bool = True) -> SearchSpace:
    """Read and validate a search-space YAML file.

    `data` and `num_samples` override the file's `data` and `budget.num_samples` (the CLI's `--data`
    and `--num-samples`) and are checked the same way. `check_data=False` skips the check that a
    dataset directory exists (for validating a space on a machine without the data).
    """
    path = Path(path)
    raw = load_user_yaml(path, "pass a search-space YAML file such as search_spaces/smoke.yaml")
    return _Loader(str(path), path).load(raw, data, num_samples, check_data)


# -- validation ---------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Equality that does not take True for 1 (YAML booleans and integers stay apart)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field_kinds(name: str) -> set[str]:
    """Kinds a TrainConfig/ModelConfig field takes: int, float, str, bool, None, or list (tuples)."""
    for cls in (TrainConfig, ModelConfig):
        for f in dataclasses.fields(cls):
            if f.name == name:
                parts = {part.strip() for part in str(f.type).split("|")}
                return {"list" if part.startswith("tuple") else part for part in parts}
    return set()


def _fits(kinds: set[str], value: Any) -> bool:
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return bool(kinds & {"int", "float"})
    if isinstance(value, float):
        return "float" in kinds
    if isinstance(value, str):
        return "str" in kinds
    if isinstance(value, list):
        return "list" in kinds
    return False


def _kind_text(kinds: set[str]) -> str:
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "None": "null", "list": "a list"}
    return " or ".join(names[k] for k in ("int", "float", "str", "bool", "list", "None") if k in kinds)


class _Loader:
    """Walks the parsed YAML once, raising on the first problem with the file and field named."""

    def __init__(self, label: str, path: Path):
        self.label, self.path = label, path

    def fail(self, where: str, what: str, fix: str):
        raise UserInputError(f"{self.label}: {where}: {what}; {fix}")

    # -- small readers
    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], optional: bool = True) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping, got {value!r}", f"write it as {{{', '.join(allowed)}}} keys")
        for key in value:
            if key not in allowed:
                self.fail(f"{where}.{key}" if where else str(key), "unknown key",
                          f"allowed keys here: {', '.join(allowed)}")
        return value

    def number(self, value: Any, where: str, *, integer: bool = False, minimum: float | None = None,
               above: float | None = None) -> int | float:
        kind = "an integer" if integer else "a number"
        if isinstance(value, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
            # YAML 1.1 reads 1e-4 and 1.0e4 as strings: it wants a dot and a signed exponent.
            mantissa, exponent = value.strip().lower().split("e")
            mantissa += "" if "." in mantissa else ".0"
            exponent = exponent if exponent[0] in "+-" else "+" + exponent
            self.fail(where, f"{value!r} is read as text by YAML", f"write {mantissa}e{exponent}")
        if not _is_number(value) or (integer and not isinstance(value, int)):
            self.fail(where, f"{value!r} is not {kind}", f"write {kind}")
        if minimum is not None and value < minimum:
            self.fail(where, f"{value} must be >= {minimum}", f"use {minimum} or more")
        if above is not None and not value > above:
            self.fail(where, f"{value} must be > {above}", f"use a value above {above}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, f"{value!r} is not a boolean", "write true or false")
        return value

    def choice(self, value: Any, where: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            self.fail(where, f"{value!r} is not allowed", f"use one of {', '.join(allowed)}")
        return value

    # -- sections
    def load(self, raw: Any, data_override: str | None, samples_override: int | None, check_data: bool) -> SearchSpace:
        if raw is None:
            self.fail("(top level)", "the file is empty", "write a search space; see search_spaces/README.md")
        if not isinstance(raw, dict):
            self.fail("(top level)", f"expected a mapping of sections, got {type(raw).__name__}",
                      f"write the sections {', '.join(TOP_LEVEL_KEYS)} at the top level")
        doc = self.mapping(raw, "", TOP_LEVEL_KEYS)
        name = self.run_name(doc.get("name", self.path.stem))
        preset = self.preset(doc.get("preset"))
        data, synthetic = self.data(doc, data_override, check_data)
        objectives = self.objectives(doc.get("objectives"))
        sampler = self.sampler(doc.get("sampler"))
        budget_raw = self.mapping(doc.get("budget"), "budget", BUDGET_KEYS)
        resources = self.resources(doc.get("resources"))
        fixed = self.fixed(doc.get("fixed"))
        partial = SearchSpace(name, preset, data, synthetic, objectives, self.budget(budget_raw, None, None),
                              resources, SchedulerSpec("fifo"), sampler, fixed, (), (), self.path)
        parameters = self.parameters(doc.get("parameters"), partial)
        partial = dataclasses.replace(partial, parameters=parameters)
        if sampler.type == "grid":
            self.check_grid(parameters, doc)
        budget = self.budget(budget_raw, partial, samples_override)
        partial = dataclasses.replace(partial, budget=budget)
        self.check_epoch_parameters(partial)
        scheduler = self.scheduler(doc.get("scheduler"), objectives, budget)
        self.check_buildable(partial)
        points = self.points(doc.get("points_to_evaluate"), partial)
        space = dataclasses.replace(partial, scheduler=scheduler, points_to_evaluate=points)
        if len(points) > budget.num_samples:
            self.fail("points_to_evaluate", f"{len(points)} points but budget.num_samples is {budget.num_samples}",
                      "raise num_samples or drop points")
        return space

    def run_name(self, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
            self.fail("name", f"{value!r} is not a usable run name",
                      "use letters, digits, '.', '_' and '-' (it names the results directory)")
        return value

    def preset(self, value: Any) -> str:
        if value is None:
            self.fail("preset", "missing", f"add preset: one of {', '.join(models.list_presets())}")
        if not isinstance(value, str) or value not in models.PRESETS:
            self.fail("preset", f"unknown preset {value!r}", f"use one of {', '.join(models.list_presets())}")
        return value

    def data(self, doc: dict, override: str | None, check_data: bool) -> tuple[str, SyntheticData | None]:
        value = override if override is not None else doc.get("data")
        where = "data (--data)" if override is not None else "data"
        if value is None:
            self.fail("data", "missing", "add data: synthetic or data: <dataset directory> (or pass --data)")
        if not isinstance(value, (str, Path)) or not str(value).strip():
            self.fail(where, f"{value!r} is not a path", "write data: synthetic or a dataset directory")
        if str(value) == SYNTHETIC:
            raw = self.mapping(doc.get("synthetic"), "synthetic", SYNTHETIC_KEYS)
            values = {key: self.number(raw[key], f"synthetic.{key}", integer=True, minimum=0 if key == "seed" else 1)
                      for key in raw}
            return SYNTHETIC, SyntheticData(**values)
        if "synthetic" in doc and override is None:
            self.fail("synthetic", "only used with data: synthetic", "remove it or set data: synthetic")
        directory = Path(value).expanduser().resolve()
        if check_data and not directory.is_dir():
            self.fail(where, f"dataset directory {directory} does not exist",
                      f"run `raysearch prepare ... --out {value}` first or use data: synthetic")
        return str(directory), None

    def objectives(self, value: Any) -> tuple[Objective, ...]:
        if value is None:
            return (Objective("val_acc", "max"),)
        if not isinstance(value, list) or not value:
            self.fail("objectives", f"expected a non-empty list, got {value!r}",
                      "write e.g. objectives: [{metric: val_acc, mode: max}]")
        out = []
        for i, item in enumerate(value):
            where = f"objectives[{i}]"
            item = self.mapping(item, where, OBJECTIVE_KEYS, optional=False)
            if "metric" not in item:
                self.fail(f"{where}.metric", "missing", f"name one of {', '.join(OBJECTIVE_METRICS)}")
            metric = self.choice(item["metric"], f"{where}.metric", OBJECTIVE_METRICS)
            if "mode" not in item:
                self.fail(f"{where}.mode", "missing", "add mode: max or mode: min")
            mode = self.choice(item["mode"], f"{where}.mode", MODES)
            if metric in (o.metric for o in out):
                self.fail(f"{where}.metric", f"{metric} is listed twice", "keep one entry per metric")
            out.append(Objective(metric, mode))
        return tuple(out)

    def sampler(self, value: Any) -> SamplerSpec:
        raw = value if value is not None else {"type": "tpe"}
        if not isinstance(raw, dict):
            self.fail("sampler", f"expected a mapping, got {raw!r}", "write e.g. sampler: {type: tpe, seed: 0}")
        kind = self.choice(raw.get("type", "tpe"), "sampler.type", SAMPLER_TYPES)
        self.mapping(raw, "sampler", SAMPLER_KEYS[kind])
        spec: dict[str, Any] = {"type": kind}
        if "seed" in raw:
            seed = raw["seed"]
            spec["seed"] = None if seed is None else self.number(seed, "sampler.seed", integer=True, minimum=0)
        if "n_startup_trials" in raw:
            spec["n_startup_trials"] = self.number(raw["n_startup_trials"], "sampler.n_startup_trials",
                                                   integer=True, minimum=0)
        for flag in ("multivariate", "group", "constant_liar"):
            if flag in raw:
                spec[flag] = self.boolean(raw[flag], f"sampler.{flag}")
        result = SamplerSpec(**spec)
        if kind == "tpe" and result.group and not result.multivariate:
            self.fail("sampler.group", "group: true needs multivariate: true",
                      "set multivariate: true or group: false")
        return result

    def budget(self, raw: dict, space: SearchSpace | None, samples_override: int | None) -> Budget:
        values: dict[str, Any] = {}
        for key in ("pretrain_epochs", "finetune_epochs"):
            if key in raw:
                values[key] = self.number(raw[key], f"budget.{key}", integer=True, minimum=0)
        if values.get("pretrain_epochs", 1) + values.get("finetune_epochs", 1) == 0:
            self.fail("budget.finetune_epochs", "pretrain_epochs and finetune_epochs are both 0",
                      "give at least one phase some epochs")
        if "label_fraction" in raw:
            fraction = self.number(raw["label_fraction"], "budget.label_fraction", above=0)
            if fraction > 1:
                self.fail("budget.label_fraction", f"{fraction} must be <= 1", "use e.g. 0.05 for 5% of the labels")
            values["label_fraction"] = fraction
        if raw.get("time_limit_s") is not None:
            values["time_limit_s"] = self.number(raw["time_limit_s"], "budget.time_limit_s", above=0)
        if raw.get("max_concurrent") is not None:
            values["max_concurrent"] = self.number(raw["max_concurrent"], "budget.max_concurrent",
                                                   integer=True, minimum=1)
        if space is None:  # a first pass, for the constants that conditions may read
            return Budget(num_samples=1, **values)
        where, samples = "budget.num_samples", raw.get("num_samples")
        if samples_override is not None:
            where, samples = "--num-samples", samples_override
        grid = grid_size(space) if space.sampler.type == "grid" else None
        if samples is None:
            if grid is None:
                self.fail("budget.num_samples", "missing", "set how many trials to run, e.g. num_samples: 16")
            samples = grid
        samples = self.number(samples, where, integer=True, minimum=1)
        if grid is not None and samples < grid:
            self.fail(where, f"{samples} is smaller than the grid ({grid} combinations)",
                      f"remove it (it defaults to {grid}) or set it to at least {grid}")
        return Budget(num_samples=samples, **values)

    def resources(self, value: Any) -> Resources:
        raw = self.mapping(value, "resources", RESOURCE_KEYS)
        values: dict[str, Any] = {}
        if "workers" in raw:
            values["workers"] = self.number(raw["workers"], "resources.workers", integer=True, minimum=1)
        if "cpus_per_worker" in raw:
            values["cpus_per_worker"] = self.number(raw["cpus_per_worker"], "resources.cpus_per_worker", above=0)
        if "gpus_per_worker" in raw:
            values["gpus_per_worker"] = self.number(raw["gpus_per_worker"], "resources.gpus_per_worker", minimum=0)
        return Resources(**values)

    def scheduler(self, value: Any, objectives: tuple[Objective, ...], budget: Budget) -> SchedulerSpec:
        default = "asha" if len(objectives) == 1 else "fifo"
        raw = value if value is not None else {"type": default}
        if not isinstance(raw, dict):
            self.fail("scheduler", f"expected a mapping, got {raw!r}", "write e.g. scheduler: {type: asha}")
        kind = self.choice(raw.get("type", default), "scheduler.type", SCHEDULER_TYPES)
        self.mapping(raw, "scheduler", SCHEDULER_KEYS[kind])
        if kind == "fifo":
            return SchedulerSpec("fifo")
        if len(objectives) > 1:
            self.fail("scheduler.type", f"asha stops trials on one metric but there are {len(objectives)} objectives",
                      "use scheduler: {type: fifo} or keep a single objective")
        grace = self.number(raw.get("grace_period", 1), "scheduler.grace_period", integer=True, minimum=1)
        total = budget.pretrain_epochs + budget.finetune_epochs
        if grace > total:
            self.fail("scheduler.grace_period", f"{grace} is beyond the {total} epochs a trial runs",
                      f"use at most {total}")
        factor = self.number(raw.get("reduction_factor", 4), "scheduler.reduction_factor", above=1)
        return SchedulerSpec("asha", grace, factor)

    def fixed(self, value: Any) -> dict[str, Any]:
        raw = self.mapping(value, "fixed", tuple(sorted(TUNABLE_FIELDS)) + tuple(sorted(DATA_FIELDS)))
        for name, setting in raw.items():
            where = f"fixed.{name}"
            if name in DATA_FIELDS:
                self.fail(where, "comes from the dataset manifest", "remove it")
            if name in BUDGET_TRAIN_FIELDS:
                self.fail(where, "is part of the budget", f"set budget.{name} instead")
            kinds = _field_kinds(name)
            if not _fits(kinds, setting):
                self.fail(where, f"{setting!r} is not {_kind_text(kinds)}", f"write {_kind_text(kinds)}")
        return dict(raw)

    def parameters(self, value: Any, space: SearchSpace) -> tuple[Parameter, ...]:
        if not value:
            self.fail("parameters", "no parameters to search",
                      "add at least one, e.g. frame_mask_ratio: {type: float, low: 0.3, high: 0.7}")
        if not isinstance(value, dict):
            self.fail("parameters", f"expected a mapping of name -> spec, got {value!r}",
                      "write e.g. parameters: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}")
        out: list[Parameter] = []
        for name, spec in value.items():
            out.append(self.parameter(name, spec, out, tuple(value), space))
        return tuple(out)

    def parameter(self, name: Any, spec: Any, earlier: list[Parameter], names: tuple, space: SearchSpace) -> Parameter:
        where = f"parameters.{name}"
        if name in DATA_FIELDS:
            self.fail(where, "comes from the dataset manifest and cannot be searched", "remove it")
        if name not in TUNABLE_FIELDS:
            self.fail(where, "unknown setting", f"searchable settings: {', '.join(sorted(TUNABLE_FIELDS))}")
        if name in space.fixed:
            self.fail(where, "is also in fixed", "either search it or fix it, not both")
        if not isinstance(spec, dict):
            self.fail(where, f"expected a mapping, got {spec!r}", "write e.g. {type: float, low: 0.1, high: 0.9}")
        if "type" not in spec:
            self.fail(f"{where}.type", "missing", f"add type: one of {', '.join(PARAMETER_TYPES)}")
        kind = self.choice(spec["type"], f"{where}.type", PARAMETER_TYPES)
        self.mapping(spec, where, PARAMETER_KEYS[kind])
        kinds = _field_kinds(name)
        if "list" in kinds:
            self.fail(where, "a list setting cannot be searched", "set it in fixed")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                self.fail(f"{where}.choices", f"expected a non-empty list, got {choices!r}", "list the values to try")
            for i, choice in enumerate(choices):
                if not _fits(kinds, choice):
                    self.fail(f"{where}.choices[{i}]", f"{choice!r} is not {_kind_text(kinds)}",
                              f"{name} takes {_kind_text(kinds)}")
                if any(_same(choice, other) for other in choices[:i]):
                    self.fail(f"{where}.choices[{i}]", f"{choice!r} is listed twice", "list each value once")
            parameter = Parameter(name, kind, choices=tuple(choices))
        else:
            parameter = self.range(name, kind, spec, kinds)
        when = self.when(spec.get("when"), where, parameter, earlier, names, space)
        return dataclasses.replace(parameter, when=when)

    def range(self, name: str, kind: str, spec: dict, kinds: set[str]) -> Parameter:
        where = f"parameters.{name}"
        integer = kind == "int"
        if integer and not kinds & {"int", "float"}:
            self.fail(f"{where}.type", f"{name} takes {_kind_text(kinds)}", "use type: categorical")
        if not integer and "float" not in kinds:
            self.fail(f"{where}.type", f"{name} takes {_kind_text(kinds)}",
                      "use type: int" if "int" in kinds else "use type: categorical")
        bounds = {}
        for key in ("low", "high"):
            if key not in spec:
                extreme = "smallest" if key == "low" else "largest"
                self.fail(f"{where}.{key}", "missing", f"add {key}: the {extreme} value to try")
            bounds[key] = self.number(spec[key], f"{where}.{key}", integer=integer)
        low, high = bounds["low"], bounds["high"]
        if low >= high:
            self.fail(f"{where}.high", f"{high} must be > low {low}",
                      "swap them, or use fixed for a single value")
        log = self.boolean(spec.get("log", False), f"{where}.log")
        if log and low <= 0:
            self.fail(f"{where}.low", f"{low} must be > 0 with log: true", "use a positive low or drop log")
        step = spec.get("step")
        if step is not None:
            if log:
                self.fail(f"{where}.step", "step cannot be combined with log: true", "drop one of them")
            step = self.number(step, f"{where}.step", integer=integer, above=0)
            # Decimal arithmetic, as Optuna's own check (which would silently lower high instead).
            d_low, d_step = decimal.Decimal(str(low)), decimal.Decimal(str(step))
            span = decimal.Decimal(str(high)) - d_low
            if span % d_step != 0:
                fitted = float(span // d_step * d_step + d_low)
                fitted = int(fitted) if integer else fitted
                self.fail(f"{where}.high", f"{high} is not low {low} plus a multiple of step {step}",
                          f"set high to {fitted}")
        if not integer:
            low, high, step = float(low), float(high), None if step is None else float(step)
        return Parameter(name, kind, low=low, high=high, step=step, log=log)

    def when(self, value: Any, where: str, parameter: Parameter, earlier: list[Parameter], names: tuple,
             space: SearchSpace) -> dict[str, tuple]:
        if value is None:
            return {}
        where = f"{where}.when"
        if not isinstance(value, dict) or not value:
            self.fail(where, f"expected a mapping of setting -> value(s), got {value!r}",
                      "write e.g. when: {variant: mvae}")
        declared = {p.name: p for p in earlier}
        out: dict[str, tuple] = {}
        for name, allowed in value.items():
            at = f"{where}.{name}"
            allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            if not allowed:
                self.fail(at, "empty list of values", "list the values under which this parameter is sampled")
            if name == parameter.name:
                self.fail(at, "a parameter cannot depend on itself", "remove it")
            if name in declared:
                condition = declared[name]
                for v in allowed:
                    if not condition.contains(v):
                        self.fail(at, f"{name} can never be {v!r}", f"use one of its values ({_describe(condition)})")
            elif name in names:
                self.fail(at, f"{name} is declared after {parameter.name}",
                          f"move {name} above {parameter.name} in parameters (they are sampled in order)")
            elif name in TUNABLE_FIELDS:
                # A constant: the fixed value, the budget or the preset's default.
                constant = space.base_value(name)
                if not any(_same(constant, v) for v in allowed):
                    source = "fixed" if name in space.fixed else (
                        "budget" if name in BUDGET_TRAIN_FIELDS else
                        f"preset {space.preset}" if name in MODEL_FIELDS else "the training defaults")
                    self.fail(at, f"{name} is {constant!r} from {source}, so {parameter.name} is never sampled",
                              f"remove the parameter or the condition, or search {name}")
            else:
                self.fail(at, f"unknown parameter {name!r}",
                          "condition on a parameter declared above this one, or on a fixed/preset setting")
            out[name] = allowed
        return out

    def check_grid(self, parameters: tuple[Parameter, ...], doc: dict) -> None:
        for p in parameters:
            if p.type != "categorical":
                self.fail(f"parameters.{p.name}.type", f"the grid sampler needs choices, got type: {p.type}",
                          "use type: categorical with the values to try, or sampler: {type: tpe}")
            if p.when:
                self.fail(f"parameters.{p.name}.when", "the grid sampler does not support conditions",
                          "write one grid file per branch, or use sampler: {type: tpe}")
        if doc.get("points_to_evaluate"):
            self.fail("points_to_evaluate", "the grid sampler already tries every combination", "remove them")

    def check_epoch_parameters(self, space: SearchSpace) -> None:
        """An epoch count that is searched stays within the budget (which also sets ASHA's max_t)."""
        for name in ("pretrain_epochs", "finetune_epochs"):
            p = space.parameter(name)
            if p is None:
                continue
            top = max(p.choices) if p.type == "categorical" else p.high
            if top > getattr(space.budget, name):
                self.fail(f"parameters.{name}", f"goes up to {top}, beyond budget.{name}={getattr(space.budget, name)}",
                          f"raise budget.{name} (the most epochs any trial runs) or lower the range")

    def points(self, value: Any, space: SearchSpace) -> tuple[dict[str, Any], ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail("points_to_evaluate", f"expected a list of mappings, got {value!r}",
                      "write e.g. points_to_evaluate: [{lr: 1.0e-3}]")
        names = tuple(p.name for p in space.parameters)
        out = []
        for i, point in enumerate(value):
            where = f"points_to_evaluate[{i}]"
            if not isinstance(point, dict):
                self.fail(where, f"expected a mapping of parameter -> value, got {point!r}",
                          "write e.g. {variant: mvae, beta: 0.005}")
            for name in point:
                if name not in names:
                    fixed = " (it is fixed)" if name in space.fixed else ""
                    self.fail(f"{where}.{name}", f"not a parameter of this space{fixed}",
                              f"use only {', '.join(names)}")
            for p in space.parameters:
                if p.name not in point:
                    continue
                at = f"{where}.{p.name}"
                if not p.contains(point[p.name]):
                    self.fail(at, f"{point[p.name]!r} is outside the parameter ({_describe(p)})",
                              "use a value the search can take")
                for condition in p.when:
                    if space.parameter(condition) is not None and condition not in point:
                        self.fail(at, f"depends on {condition}, which this point does not set",
                                  f"add {condition} to the point")
                if not space.is_active(p, point):
                    self.fail(at, f"{p.name} is not sampled for this point (when: {_when_text(p.when)})",
                              f"remove {p.name} from the point")
            self.buildable(trial_flat_config(point, space, space.data), where, "this point", "change the point")
            out.append(dict(point))
        return tuple(out)

    def check_buildable(self, space: SearchSpace) -> None:
        """Every fixed setting, and every parameter at its ends (or every value), gives a valid trial."""
        base = {k: v for k, v in space.constants(space.data).items() if k not in space.fixed}
        for name, value in space.fixed.items():
            self.buildable({**base, name: value}, f"fixed.{name}", repr(value), "change it")
        self.buildable(space.constants(space.data), "fixed" if space.fixed else "preset",
                       "this combination", "change fixed or the preset")
        for p in space.parameters:
            at = f"parameters.{p.name}"
            values = p.values(FEASIBILITY_CHECK_LIMIT)
            if p.type == "categorical":
                candidates = [(f"{at}.choices[{i}]", repr(v), v) for i, v in enumerate(values)]
            else:
                ends = [(f"{at}.low", repr(p.low), p.low), (f"{at}.high", repr(p.high), p.high)]
                inside = [(at, f"{v!r} (inside the range)", v) for v in (values or ())[1:-1]]
                candidates = ends + inside
            context = _witness(space, p)
            for where, what, v in candidates:
                fix = ("remove that choice" if p.type == "categorical" else "narrow the range"
                       if where != at else "use a step or categorical choices that skip it")
                self.buildable(trial_flat_config({**context, p.name: v}, space, space.data), where, what, fix)

    def buildable(self, flat: dict[str, Any], where: str, what: str, fix: str) -> None:
        try:
            trial = TrialConfig.from_flat(flat)
            models.preset_config(trial.preset, **trial.model_overrides)
        except (UserInputError, ModelConfigError) as exc:
            preset = flat["preset"]
            self.fail(where, f"{what} cannot be trained with preset {preset} ({exc})", fix)


def _witness(space: SearchSpace, parameter: Parameter) -> dict[str, Any]:
    """Values of the parameters `parameter` depends on that make it active (its first allowed ones)."""
    values: dict[str, Any] = {}
    for name, allowed in parameter.when.items():
        condition = space.parameter(name)
        if condition is not None:
            values.update(_witness(space, condition))
            values[name] = allowed[0]
    return values


def _describe(p: Parameter) -> str:
    if p.type == "categorical":
        return "choices " + ", ".join(map(repr, p.choices))
    text = f"{p.type} in [{p.low}, {p.high}]"
    return text + (f" step {p.step}" if p.step else "") + (" log" if p.log else "")


def _when_text(when: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {v[0] if len(v) == 1 else list(v)}" for k, v in when.items())


__all__ = [
    "OBJECTIVE_METRICS", "Objective", "SyntheticData", "Budget", "Resources", "SchedulerSpec", "SamplerSpec",
    "Parameter", "SearchSpace", "load_search_space", "define_by_run", "trial_flat_config", "grid_size",
    "build_sampler",
]
