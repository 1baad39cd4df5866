"""Search spaces: a YAML file -> a typed, checked `SearchSpace` -> Optuna define-by-run.

Loading is parse, then check:
1. Parse. Each section of the YAML has its own small parser that returns a finished frozen object
   (`Objective`, `Budget`, `Parameter`, ...) or raises `UserInputError`. A parser reads its own
   section and, where it must, finished objects of sections parsed before it (the budget reads the
   parameters for the grid size). A setting's type comes from the `TrainConfig` / `ModelConfig`
   field types (`typing.get_type_hints`), so `fixed.seed: abc` or `decoder_depth: 2.5` stops here.
2. Check. `_check` runs the rules that span sections on the finished `SearchSpace`: conditions on
   constants, warm-start points, scheduler and epoch limits, and that the model and recipe accept
   every fixed setting and every parameter at the ends of its range (`TrialConfig` and
   `ModelConfig` validate themselves; this module only chooses the combinations to try).

Every error is one line: `<file>: <field.path>: <what is wrong>; <how to fix>`. The schema is
documented in search_spaces/README.md.

Parameters are Optuna distributions (`FloatDistribution`, `IntDistribution`,
`CategoricalDistribution`) plus our `when` condition. `define_by_run(trial, space=...,
data_dir=...)` suggests the parameters whose `when` holds, in YAML order, and returns the
constants every trial gets, so a trial's flat config is `{**suggested, **space.constants(data_dir)}`
and `TrialConfig.from_flat` accepts it.
"""

from __future__ import annotations

import decimal
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import models
from models import ModelConfig, ModelConfigError

from ..contract import OBJECTIVES, Metric, Objective, Resources
from ..data.synthetic import SYNTHETIC_DEFAULTS, check_synthetic_size
from ..errors import UserInputError, load_user_yaml, show
from ..runs import MAX_RUN_NAME_CHARS, is_run_name
from ..train.config import DATA_FIELDS, MODEL_FIELDS, TUNABLE_FIELDS, TrainConfig, TrialConfig, stage_of

OBJECTIVE_METRICS = tuple(OBJECTIVES)       # the metrics a search may optimise (contract.OBJECTIVES)
# Metrics a user may reach for that are not objectives, and why.
_ENCODER_METRIC = "a pre-training metric ranks encoders, not the fine-tuned models a search returns"
NOT_OBJECTIVES = {"val_loss": f"it was split: the fine-tuning cross-entropy is {Metric.VAL_CE_LOSS}",
                  **dict.fromkeys((Metric.VAL_PRETRAIN_LOSS, Metric.VAL_RECON_LOSS, Metric.VAL_KNN_ACC,
                                   Metric.VAL_PROBE_ACC), _ENCODER_METRIC)}
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
# Every number of a space travels as a float64 (Optuna's internal values, Tune's JSON, the results
# table), which holds integers exactly up to 2**53: larger ones are refused as any other typo.
MAX_INT = 2**53
# A stepped float range with more values than this is continuous in all but name.
MAX_STEPS = 10**12
MAX_NAME_CHARS = MAX_RUN_NAME_CHARS

TOP_LEVEL_KEYS = ("name", "preset", "data", "synthetic", "objectives", "budget", "resources", "scheduler",
                  "sampler", "fixed", "parameters", "points_to_evaluate")
SYNTHETIC_KEYS = ("classes", "per_class", "seed", "max_frames")
OBJECTIVE_KEYS = ("metric", "mode")
BUDGET_KEYS = ("num_samples", "pretrain_epochs", "finetune_epochs", "label_fraction", "time_limit_s",
               "max_concurrent")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker")
SCHEDULER_KEYS = {"asha": ("type", "time_attr", "grace_period", "reduction_factor"), "fifo": ("type",)}
# ASHA's time axis: fine-tuning epochs (the default: only fine-tuned metrics are compared, and with the
# encoder cache a trial's cost is its fine-tuning), or all epochs of a trial (pre-training, then fine-tuning).
TIME_ATTRS = (Metric.FINETUNE_EPOCH, Metric.GLOBAL_EPOCH)
SAMPLER_KEYS = {"tpe": ("type", "seed", "n_startup_trials", "multivariate", "group", "constant_liar"),
                "random": ("type", "seed"), "grid": ("type", "seed")}
PARAMETER_KEYS = {"float": ("type", "low", "high", "step", "log", "when"),
                  "int": ("type", "low", "high", "step", "log", "when"),
                  "categorical": ("type", "choices", "when")}

# The type of every setting, read from the dataclasses themselves (`float | None`, `tuple[int, ...]`).
FIELD_TYPES: dict[str, Any] = {name: hint for cls in (ModelConfig, TrainConfig)
                               for name, hint in typing.get_type_hints(cls).items() if name in TUNABLE_FIELDS}


# -- the finished space ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticData:
    """Arguments of the built-in generator (`raysearch prepare synthetic`); what the YAML leaves out
    is `raysearch.data.synthetic.SYNTHETIC_DEFAULTS`."""

    classes: int
    per_class: int
    seed: int
    max_frames: int


@dataclass(frozen=True)
class Budget:
    num_samples: int                        # trials to run (grid: the grid size by default)
    pretrain_epochs: int = 200
    finetune_epochs: int = 200
    label_fraction: float = 1.0
    time_limit_s: float | None = None       # wall-clock limit of the whole search
    max_concurrent: int | None = None       # None: as many trials as the cluster fits


@dataclass(frozen=True)
class SchedulerSpec:
    type: str                               # "asha" or "fifo"
    grace_period: int | None = None         # asha: epochs (of time_attr) before the first cut
    reduction_factor: float | None = None   # asha: keep 1/reduction_factor at each rung
    time_attr: str | None = None            # asha: a TIME_ATTRS entry


@dataclass(frozen=True)
class SamplerSpec:
    type: str                               # "tpe", "random" or "grid"
    seed: int | None = 0
    n_startup_trials: int = 10              # tpe: random trials before the model kicks in
    multivariate: bool = True               # tpe
    group: bool = True                      # tpe: decompose conditional spaces (needs multivariate)
    constant_liar: bool = True              # tpe: parallel trials avoid each other


Distribution = FloatDistribution | IntDistribution | CategoricalDistribution


@dataclass(frozen=True)
class Parameter:
    """One searched setting: an Optuna distribution, sampled only while `when` holds.

    `when` maps a setting name to the values under which this parameter exists (any one will do).
    """

    name: str
    distribution: Distribution
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def type(self) -> str:
        if isinstance(self.distribution, CategoricalDistribution):
            return "categorical"
        return "int" if isinstance(self.distribution, IntDistribution) else "float"

    @property
    def choices(self) -> tuple:
        return tuple(getattr(self.distribution, "choices", ()))

    @property
    def low(self) -> float | int | None:
        return getattr(self.distribution, "low", None)

    @property
    def high(self) -> float | int | None:
        return getattr(self.distribution, "high", None)

    @property
    def step(self) -> float | int | None:
        return getattr(self.distribution, "step", None)

    @property
    def log(self) -> bool:
        return getattr(self.distribution, "log", False)

    def suggest(self, trial) -> Any:
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)

    def contains(self, value: Any) -> bool:
        """Whether a trial of this parameter can take `value` (True is not 1 here, unlike Optuna)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return any(_same(value, choice) for choice in d.choices)
        if not _is_number(value) or (isinstance(d, IntDistribution) and not isinstance(value, int)):
            return False
        if not d.low <= value <= d.high:
            return False
        if isinstance(d, IntDistribution):
            return (value - d.low) % d.step == 0
        if d.step is None:
            return True
        k = (value - d.low) / d.step
        return abs(k - round(k)) < 1e-8

    def values(self, limit: int) -> tuple | None:
        """Every value a trial can take, when there are at most `limit` of them."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return tuple(d.choices)
        if d.step is None:
            return None
        if (d.high - d.low) / d.step + 1 > limit:
            return None
        if isinstance(d, IntDistribution):
            return tuple(range(d.low, d.high + 1, d.step))
        return tuple(d.low + i * d.step for i in range(round((d.high - d.low) / d.step) + 1))

    def describe(self) -> str:
        if self.type == "categorical":
            return "choices " + ", ".join(map(show, self.choices))
        step = self.step if self.type == "float" or self.step != 1 else None
        return (f"{self.type} in [{self.low}, {self.high}]" + (f" step {step}" if step else "")
                + (" log" if self.log else ""))


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

    def stages(self) -> dict[str, str]:
        """The stage of each searched parameter (contract.PRETRAIN or FINETUNE, from the field
        metadata of TrainConfig/ModelConfig): trials that differ only in fine-tuning parameters
        share one pre-trained encoder through the encoder cache."""
        return {p.name: stage_of(p.name) for p in self.parameters}

    def is_active(self, parameter: Parameter, values: dict[str, Any]) -> bool:
        """Whether `parameter` is sampled, given the parameter values chosen so far."""
        for name, allowed in parameter.when.items():
            if self.parameter(name) is not None:
                if name not in values or not any(_same(values[name], v) for v in allowed):
                    return False
            elif not any(_same(self.base_value(name), v) for v in allowed):
                return False
        return True


# -- what the search uses -------------------------------------------------------------------------------
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
    return _grid_size(space.parameters)


def scheduler_horizon(space: SearchSpace) -> int:
    """ASHA's max_t: the epochs of a full trial on the scheduler's time axis."""
    if space.scheduler.time_attr == Metric.FINETUNE_EPOCH:
        return space.budget.finetune_epochs
    return space.budget.pretrain_epochs + space.budget.finetune_epochs


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
    """Read, parse and check a search-space YAML file.

    `data` and `num_samples` override the file's `data` and `budget.num_samples` (the CLI's `--data`
    and `--num-samples`) and are checked the same way. `check_data=False` skips the check that a
    dataset directory exists (for validating a space on a machine without the data).
    """
    path = Path(path)
    raw = load_user_yaml(path, "pass a search-space YAML file such as search_spaces/smoke.yaml")
    out = _Out(str(path))
    space = _parse_space(out, raw, path, data, num_samples, check_data)
    _check(out, space)
    return space


# -- values ------------------------------------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    """Equality that does not take True for 1 (YAML booleans and integers stay apart)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number a float64 holds: finite, and an int within +-2**53."""
    if isinstance(value, int):
        return not isinstance(value, bool) and abs(value) <= MAX_INT
    return isinstance(value, float) and math.isfinite(value)


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a dataclass field type (lists stand for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arm) for arm in args)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(item, args[0]) for item in value)
        return len(value) == len(args) and all(_conforms(item, arm) for item, arm in zip(value, args))
    if origin is typing.Literal:
        return any(_same(value, allowed) for allowed in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and _is_finite(value)
    if hint is float:
        return _is_finite(value)
    if hint is str:
        return isinstance(value, str)
    return False


_NOUNS = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings"), type(None): ("null", "nulls")}


def _type_text(hint: Any, plural: bool = False) -> str:
    """What a field type asks for, in words: 'a finite number or null', 'a list of integers'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arm, plural) for arm in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return ("lists" if plural else "a list") + " of " + _type_text(args[0], plural=True)
        items = ", ".join(_type_text(arm).split(" ", 1)[-1] for arm in args)
        return f"[{items}] " + ("lists" if plural else "list")
    if origin is typing.Literal:
        return "one of " + ", ".join(map(show, args))
    singular, many = _NOUNS.get(hint, (f"a {getattr(hint, '__name__', hint)}", "values"))
    return many if plural else singular


def _is_list_setting(hint: Any) -> bool:
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(typing.get_origin(arm) is tuple for arm in arms)


def _yaml11_float(value: Any) -> str | None:
    """How to write a number YAML 1.1 read as text (it wants a dot and a signed exponent: 1.0e-4)."""
    if not isinstance(value, str) or not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", value.strip()):
        return None
    mantissa, exponent = value.strip().lower().split("e")
    mantissa += "" if "." in mantissa else ".0"
    exponent = exponent if exponent[0] in "+-" else "+" + exponent
    return f"{mantissa}e{exponent}"


def _grid_size(parameters: tuple[Parameter, ...]) -> int:
    if any(p.type != "categorical" for p in parameters):
        raise ValueError("grid_size needs a space whose parameters are all categorical")
    return math.prod(len(p.choices) for p in parameters)


# -- parse: one small reader per section ------------------------------------------------------------------
class _Out:
    """Where errors go: the file label, and the small typed readers every section parser shares."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, where: str, what: str, fix: str) -> typing.NoReturn:
        raise UserInputError(f"{self.label}: {where}: {what}; {fix}")

    def mapping(self, value: Any, where: str, allowed: tuple[str, ...], optional: bool = True) -> dict:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            self.fail(where or "(top level)", f"expected a mapping, got {show(value)}",
                      f"write it as a mapping with keys from: {', '.join(allowed)}")
        for key in value:
            if key not in allowed:
                self.fail(_join(where, key), "unknown key", f"allowed keys here: {', '.join(allowed)}")
        return value

    def typed(self, value: Any, hint: Any, where: str) -> Any:
        """`value` if it fits the field type `hint`, else a one-line error with what it takes."""
        if _conforms(value, hint):
            return value
        written = _yaml11_float(value)
        if written is not None and _conforms(1.0, hint):
            self.fail(where, f"{show(value)} is read as text by YAML", f"write {written}")
        if _is_number(value) and not _is_finite(value) and (_conforms(1.0, hint) or _conforms(1, hint)):
            self.fail(where, f"{show(value)} is not a finite number within +-2**53", "write a smaller number")
        self.fail(where, f"{show(value)} is not {_type_text(hint)}", f"write {_type_text(hint)}")

    def number(self, value: Any, where: str, *, integer: bool = False, minimum: float | None = None,
               above: float | None = None) -> int | float:
        value = self.typed(value, int if integer else float, where)
        if minimum is not None and value < minimum:
            self.fail(where, f"{value} must be >= {minimum}", f"use {minimum} or more")
        if above is not None and not value > above:
            self.fail(where, f"{value} must be > {above}", f"use a value above {above}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        return self.typed(value, bool, where)

    def choice(self, value: Any, where: str, allowed: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in allowed:
            self.fail(where, f"{show(value)} is not allowed", f"use one of {', '.join(allowed)}")
        return value


def _join(where: str, key: Any) -> str:
    name = key if isinstance(key, str) and len(key) <= 80 else show(key)
    return f"{where}.{name}" if where else str(name)


def _parse_space(out: _Out, raw: Any, path: Path, data_override: str | None, samples_override: int | None,
                 check_data: bool) -> SearchSpace:
    if raw is None:
        out.fail("(top level)", "the file is empty", "write a search space; see search_spaces/README.md")
    if not isinstance(raw, dict):
        out.fail("(top level)", f"expected a mapping of sections, got {type(raw).__name__}",
                 f"write the sections {', '.join(TOP_LEVEL_KEYS)} at the top level")
    doc = out.mapping(raw, "", TOP_LEVEL_KEYS)
    name = _parse_name(out, doc.get("name", path.stem))
    preset = _parse_preset(out, doc.get("preset"))
    data, synthetic = _parse_data(out, doc, data_override, check_data)
    objectives = _parse_objectives(out, doc.get("objectives"))
    sampler = _parse_sampler(out, doc.get("sampler"))
    parameters = _parse_parameters(out, doc.get("parameters"), sampler)
    return SearchSpace(
        name=name,
        preset=preset,
        data=data,
        synthetic=synthetic,
        objectives=objectives,
        budget=_parse_budget(out, doc.get("budget"), sampler, parameters, samples_override),
        resources=_parse_resources(out, doc.get("resources")),
        scheduler=_parse_scheduler(out, doc.get("scheduler"), objectives),
        sampler=sampler,
        fixed=_parse_fixed(out, doc.get("fixed")),
        parameters=parameters,
        points_to_evaluate=_parse_points(out, doc.get("points_to_evaluate")),
        source=path,
    )


def _parse_name(out: _Out, value: Any) -> str:
    if not is_run_name(value):
        out.fail("name", f"{show(value)} is not a usable run name",
                 f"use up to {MAX_NAME_CHARS} letters, digits, '.', '_' and '-' (it names the results directory)")
    return value


def _parse_preset(out: _Out, value: Any) -> str:
    if value is None:
        out.fail("preset", "missing", f"add preset: one of {', '.join(models.list_presets())}")
    if not isinstance(value, str) or value not in models.PRESETS:
        out.fail("preset", f"unknown preset {show(value)}", f"use one of {', '.join(models.list_presets())}")
    return value


def _parse_data(out: _Out, doc: dict, override: str | None, check_data: bool) -> tuple[str, SyntheticData | None]:
    value = override if override is not None else doc.get("data")
    where = "data (--data)" if override is not None else "data"
    if value is None:
        out.fail("data", "missing", "add data: synthetic or data: <dataset directory> (or pass --data)")
    if not isinstance(value, (str, Path)) or not str(value).strip() or "\0" in str(value):
        out.fail(where, f"{show(value)} is not a path", "write data: synthetic or a dataset directory")
    if str(value) == SYNTHETIC:
        return SYNTHETIC, _parse_synthetic(out, doc.get("synthetic"))
    if "synthetic" in doc and override is None:
        out.fail("synthetic", "only used with data: synthetic", "remove it or set data: synthetic")
    try:
        directory = Path(value).expanduser().resolve()
        exists = directory.is_dir()
    except (OSError, RuntimeError) as exc:  # a name too long, an unknown ~user
        out.fail(where, f"{show(str(value))} cannot be used as a directory ({exc})", "write a dataset directory")
    if check_data and not exists:
        out.fail(where, f"dataset directory {directory} does not exist",
                 f"run `raysearch prepare ... --out {value}` first or use data: synthetic")
    return str(directory), None


def _parse_synthetic(out: _Out, value: Any) -> SyntheticData:
    raw = out.mapping(value, "synthetic", SYNTHETIC_KEYS)
    values = {key: out.number(raw[key], f"synthetic.{key}", integer=True, minimum=0 if key == "seed" else 1)
              for key in raw}
    defaults = {key: getattr(SYNTHETIC_DEFAULTS, key) for key in SYNTHETIC_KEYS}
    synthetic = SyntheticData(**{**defaults, **values})
    check_synthetic_size(synthetic.classes, synthetic.per_class, synthetic.max_frames, f"{out.label}: synthetic")
    return synthetic


def _parse_objectives(out: _Out, value: Any) -> tuple[Objective, ...]:
    if value is None:
        return (Objective(Metric.VAL_ACC, OBJECTIVES[Metric.VAL_ACC]),)
    if not isinstance(value, list) or not value:
        out.fail("objectives", f"expected a non-empty list, got {show(value)}",
                 f"write e.g. objectives: [{{metric: {Metric.VAL_ACC}, mode: max}}]")
    parsed: list[Objective] = []
    for i, item in enumerate(value):
        where = f"objectives[{i}]"
        item = out.mapping(item, where, OBJECTIVE_KEYS, optional=False)
        if "metric" not in item:
            out.fail(f"{where}.metric", "missing", f"name one of {', '.join(OBJECTIVE_METRICS)}")
        metric = item["metric"]
        if isinstance(metric, str) and metric in NOT_OBJECTIVES:
            out.fail(f"{where}.metric", f"{metric} is not a search objective ({NOT_OBJECTIVES[metric]})",
                     f"use one of {', '.join(OBJECTIVE_METRICS)}")
        metric = out.choice(metric, f"{where}.metric", OBJECTIVE_METRICS)
        natural = OBJECTIVES[metric]
        mode = out.choice(item.get("mode", natural), f"{where}.mode", MODES)
        if mode != natural:
            better = "higher" if natural == "max" else "lower"
            out.fail(f"{where}.mode", f"mode: {mode} would search for the worst {metric} ({better} is better)",
                     f"write mode: {natural} or leave mode out")
        if any(o.metric == metric for o in parsed):
            out.fail(f"{where}.metric", f"{metric} is listed twice", "keep one entry per metric")
        parsed.append(Objective(metric, mode))
    return tuple(parsed)


def _parse_sampler(out: _Out, value: Any) -> SamplerSpec:
    raw = value if value is not None else {"type": "tpe"}
    if not isinstance(raw, dict):
        out.fail("sampler", f"expected a mapping, got {show(raw)}", "write e.g. sampler: {type: tpe, seed: 0}")
    kind = out.choice(raw.get("type", "tpe"), "sampler.type", SAMPLER_TYPES)
    out.mapping(raw, "sampler", SAMPLER_KEYS[kind])
    spec: dict[str, Any] = {"type": kind}
    if "seed" in raw:
        seed = raw["seed"]
        # numpy's generators (under every Optuna sampler) take seeds below 2**32.
        spec["seed"] = None if seed is None else out.number(seed, "sampler.seed", integer=True, minimum=0)
        if seed is not None and seed >= 2**32:
            out.fail("sampler.seed", f"{seed} must be < 2**32", "use a smaller seed")
    if "n_startup_trials" in raw:
        spec["n_startup_trials"] = out.number(raw["n_startup_trials"], "sampler.n_startup_trials",
                                              integer=True, minimum=0)
    for flag in ("multivariate", "group", "constant_liar"):
        if flag in raw:
            spec[flag] = out.boolean(raw[flag], f"sampler.{flag}")
    sampler = SamplerSpec(**spec)
    if kind == "tpe" and sampler.group and not sampler.multivariate:
        out.fail("sampler.group", "group: true needs multivariate: true", "set multivariate: true or group: false")
    return sampler


def _parse_budget(out: _Out, value: Any, sampler: SamplerSpec, parameters: tuple[Parameter, ...],
                  samples_override: int | None) -> Budget:
    raw = out.mapping(value, "budget", BUDGET_KEYS)
    values: dict[str, Any] = {}
    for key in ("pretrain_epochs", "finetune_epochs"):
        if key in raw:
            values[key] = out.number(raw[key], f"budget.{key}", integer=True, minimum=0)
    if values.get("pretrain_epochs", 1) + values.get("finetune_epochs", 1) == 0:
        out.fail("budget.finetune_epochs", "pretrain_epochs and finetune_epochs are both 0",
                 "give at least one phase some epochs")
    if "label_fraction" in raw:
        fraction = out.number(raw["label_fraction"], "budget.label_fraction", above=0)
        if fraction > 1:
            out.fail("budget.label_fraction", f"{fraction} must be <= 1", "use e.g. 0.05 for 5% of the labels")
        values["label_fraction"] = fraction
    if raw.get("time_limit_s") is not None:
        values["time_limit_s"] = out.number(raw["time_limit_s"], "budget.time_limit_s", above=0)
    if raw.get("max_concurrent") is not None:
        values["max_concurrent"] = out.number(raw["max_concurrent"], "budget.max_concurrent", integer=True, minimum=1)
    where, samples = "budget.num_samples", raw.get("num_samples")
    if samples_override is not None:
        where, samples = "--num-samples", samples_override
    grid = _grid_size(parameters) if sampler.type == "grid" else None
    if samples is None:
        if grid is None:
            out.fail("budget.num_samples", "missing", "set how many trials to run, e.g. num_samples: 16")
        samples = grid
    samples = out.number(samples, where, integer=True, minimum=1)
    if grid is not None and samples < grid:
        out.fail(where, f"{samples} is smaller than the grid ({grid} combinations)",
                 f"remove it (it defaults to {grid}) or set it to at least {grid}")
    return Budget(num_samples=samples, **values)


def _parse_resources(out: _Out, value: Any) -> Resources:
    raw = out.mapping(value, "resources", RESOURCE_KEYS)
    values: dict[str, Any] = {}
    if "workers" in raw:
        values["workers"] = out.number(raw["workers"], "resources.workers", integer=True, minimum=1)
    if "cpus_per_worker" in raw:
        values["cpus_per_worker"] = out.number(raw["cpus_per_worker"], "resources.cpus_per_worker", above=0)
    if "gpus_per_worker" in raw:
        values["gpus_per_worker"] = out.number(raw["gpus_per_worker"], "resources.gpus_per_worker", minimum=0)
    return Resources(**values)


def _parse_scheduler(out: _Out, value: Any, objectives: tuple[Objective, ...]) -> SchedulerSpec:
    default = "asha" if len(objectives) == 1 else "fifo"
    raw = value if value is not None else {"type": default}
    if not isinstance(raw, dict):
        out.fail("scheduler", f"expected a mapping, got {show(raw)}", "write e.g. scheduler: {type: asha}")
    kind = out.choice(raw.get("type", default), "scheduler.type", SCHEDULER_TYPES)
    out.mapping(raw, "scheduler", SCHEDULER_KEYS[kind])
    if kind == "fifo":
        return SchedulerSpec("fifo")
    if len(objectives) > 1:
        out.fail("scheduler.type", f"asha stops trials on one metric but there are {len(objectives)} objectives",
                 "use scheduler: {type: fifo} or keep a single objective")
    time_attr = out.choice(raw.get("time_attr", Metric.FINETUNE_EPOCH), "scheduler.time_attr", TIME_ATTRS)
    grace = out.number(raw.get("grace_period", 1), "scheduler.grace_period", integer=True, minimum=1)
    factor = out.number(raw.get("reduction_factor", 4), "scheduler.reduction_factor", above=1)
    return SchedulerSpec("asha", grace, factor, time_attr)


def _parse_fixed(out: _Out, value: Any) -> dict[str, Any]:
    raw = out.mapping(value, "fixed", tuple(sorted(TUNABLE_FIELDS)) + tuple(sorted(DATA_FIELDS)))
    for name, setting in raw.items():
        where = f"fixed.{name}"
        if name in DATA_FIELDS:
            out.fail(where, "comes from the dataset manifest", "remove it")
        if name in BUDGET_TRAIN_FIELDS:
            out.fail(where, "is part of the budget", f"set budget.{name} instead")
        out.typed(setting, FIELD_TYPES[name], where)
    return dict(raw)


def _parse_parameters(out: _Out, value: Any, sampler: SamplerSpec) -> tuple[Parameter, ...]:
    if not value:
        out.fail("parameters", "no parameters to search",
                 "add at least one, e.g. frame_mask_ratio: {type: float, low: 0.3, high: 0.7}")
    if not isinstance(value, dict):
        out.fail("parameters", f"expected a mapping of name -> spec, got {show(value)}",
                 "write e.g. parameters: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}")
    parsed: list[Parameter] = []
    for name, spec in value.items():
        parameter = _parse_parameter(out, name, spec, tuple(parsed), tuple(value))
        if sampler.type == "grid":
            where = f"parameters.{name}"
            if parameter.type != "categorical":
                out.fail(f"{where}.type", f"the grid sampler needs choices, got type: {parameter.type}",
                         "use type: categorical with the values to try, or sampler: {type: tpe}")
            if parameter.when:
                out.fail(f"{where}.when", "the grid sampler does not support conditions",
                         "write one grid file per branch, or use sampler: {type: tpe}")
        parsed.append(parameter)
    return tuple(parsed)


def _parse_parameter(out: _Out, name: Any, spec: Any, earlier: tuple[Parameter, ...], names: tuple) -> Parameter:
    where = _join("parameters", name)
    if name in DATA_FIELDS:
        out.fail(where, "comes from the dataset manifest and cannot be searched", "remove it")
    if name not in TUNABLE_FIELDS:
        out.fail(where, "unknown setting", f"searchable settings: {', '.join(sorted(TUNABLE_FIELDS))}")
    if not isinstance(spec, dict):
        out.fail(where, f"expected a mapping, got {show(spec)}", "write e.g. {type: float, low: 0.1, high: 0.9}")
    if "type" not in spec:
        out.fail(f"{where}.type", "missing", f"add type: one of {', '.join(PARAMETER_TYPES)}")
    kind = out.choice(spec["type"], f"{where}.type", PARAMETER_TYPES)
    out.mapping(spec, where, PARAMETER_KEYS[kind])
    hint = FIELD_TYPES[name]
    if _is_list_setting(hint):
        out.fail(where, "a list setting cannot be searched", "set it in fixed")
    if kind == "categorical":
        distribution = _parse_choices(out, name, spec.get("choices"), hint)
    else:
        distribution = _parse_range(out, name, kind, spec, hint)
    when = _parse_when(out, spec.get("when"), where, name, earlier, names)
    return Parameter(name, distribution, when)


def _parse_choices(out: _Out, name: str, choices: Any, hint: Any) -> CategoricalDistribution:
    where = f"parameters.{name}.choices"
    if not isinstance(choices, list) or not choices:
        out.fail(where, f"expected a non-empty list, got {show(choices)}", "list the values to try")
    for i, choice in enumerate(choices):
        out.typed(choice, hint, f"{where}[{i}]")
        if any(_same(choice, other) for other in choices[:i]):
            out.fail(f"{where}[{i}]", f"{show(choice)} is listed twice", "list each value once")
    return CategoricalDistribution(choices)


def _parse_range(out: _Out, name: str, kind: str, spec: dict, hint: Any) -> FloatDistribution | IntDistribution:
    where = f"parameters.{name}"
    integer = kind == "int"
    if integer and not _conforms(1, hint):
        out.fail(f"{where}.type", f"{name} takes {_type_text(hint)}", "use type: categorical")
    if not integer and not _conforms(0.5, hint):
        out.fail(f"{where}.type", f"{name} takes {_type_text(hint)}",
                 "use type: int" if _conforms(1, hint) else "use type: categorical")
    bounds = {}
    for key in ("low", "high"):
        if key not in spec:
            extreme = "smallest" if key == "low" else "largest"
            out.fail(f"{where}.{key}", "missing", f"add {key}: the {extreme} value to try")
        bounds[key] = out.number(spec[key], f"{where}.{key}", integer=integer)
    low, high = bounds["low"], bounds["high"]
    if low >= high:
        out.fail(f"{where}.high", f"{high} must be > low {low}", "swap them, or use fixed for a single value")
    log = out.boolean(spec.get("log", False), f"{where}.log")
    if log and low <= 0:
        out.fail(f"{where}.low", f"{low} must be > 0 with log: true", "use a positive low or drop log")
    step = spec.get("step")
    if step is not None:
        if log:
            out.fail(f"{where}.step", "step cannot be combined with log: true", "drop one of them")
        step = out.number(step, f"{where}.step", integer=integer, above=0)
        _check_step(out, where, low, high, step, integer)
    if integer:
        return IntDistribution(low, high, log=log, step=1 if step is None else step)
    return FloatDistribution(float(low), float(high), log=log, step=None if step is None else float(step))


def _check_step(out: _Out, where: str, low: float, high: float, step: float, integer: bool) -> None:
    """`high - low` is a whole number of steps, in decimal arithmetic as Optuna checks it (Optuna
    would silently lower `high` instead of saying so)."""
    with decimal.localcontext() as context:
        context.prec = 60
        d_low, d_step = decimal.Decimal(str(low)), decimal.Decimal(str(step))
        span = decimal.Decimal(str(high)) - d_low
        steps = span / d_step
        if steps > MAX_STEPS:
            out.fail(f"{where}.step", f"{step} splits the range into more than {MAX_STEPS} values",
                     "drop step for a continuous range or use a larger step")
        if span % d_step != 0:
            fitted = span // d_step * d_step + d_low
            fitted_text = str(int(fitted)) if integer else str(float(fitted))
            out.fail(f"{where}.high", f"{high} is not low {low} plus a multiple of step {step}",
                     f"set high to {fitted_text}")


def _parse_when(out: _Out, value: Any, where: str, name: str, earlier: tuple[Parameter, ...],
                names: tuple) -> dict[str, tuple]:
    """The condition's shape, and what the parameters section itself can tell: names declared
    above, values those parameters can take. Conditions on constants are checked on the space."""
    if value is None:
        return {}
    where = f"{where}.when"
    if not isinstance(value, dict) or not value:
        out.fail(where, f"expected a mapping of setting -> value(s), got {show(value)}",
                 "write e.g. when: {variant: mvae}")
    declared = {p.name: p for p in earlier}
    when: dict[str, tuple] = {}
    for setting, allowed in value.items():
        at = _join(where, setting)
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not allowed:
            out.fail(at, "empty list of values", "list the values under which this parameter is sampled")
        if setting == name:
            out.fail(at, "a parameter cannot depend on itself", "remove it")
        if setting in declared:
            condition = declared[setting]
            for v in allowed:
                if not condition.contains(v):
                    out.fail(at, f"{setting} can never be {show(v)}", f"use one of its values ({condition.describe()})")
        elif setting in names:
            out.fail(at, f"{setting} is declared after {name}",
                     f"move {setting} above {name} in parameters (they are sampled in order)")
        elif setting not in TUNABLE_FIELDS:
            out.fail(at, f"unknown parameter {show(setting)}",
                     "condition on a parameter declared above this one, or on a fixed/preset setting")
        when[setting] = allowed
    return when


def _parse_points(out: _Out, value: Any) -> tuple[dict[str, Any], ...]:
    """The shape only; names and values are checked against the parameters on the space."""
    if value is None:
        return ()
    if not isinstance(value, list):
        out.fail("points_to_evaluate", f"expected a list of mappings, got {show(value)}",
                 "write e.g. points_to_evaluate: [{lr: 1.0e-3}]")
    for i, point in enumerate(value):
        if not isinstance(point, dict):
            out.fail(f"points_to_evaluate[{i}]", f"expected a mapping of parameter -> value, got {show(point)}",
                     "write e.g. {variant: mvae, beta: 0.005}")
    return tuple(dict(point) for point in value)


# -- check: rules across sections, on the finished space ----------------------------------------------------
def _check(out: _Out, space: SearchSpace) -> None:
    _check_parameters_against_constants(out, space)
    _check_epochs(out, space)
    _check_buildable(out, space)
    _check_points(out, space)


def _check_parameters_against_constants(out: _Out, space: SearchSpace) -> None:
    for p in space.parameters:
        where = f"parameters.{p.name}"
        if p.name in space.fixed:
            out.fail(where, "is also in fixed", "either search it or fix it, not both")
        for setting, allowed in p.when.items():
            if space.parameter(setting) is not None:
                continue
            # A constant: the fixed value, the budget or the preset's default.
            constant = space.base_value(setting)
            if not any(_same(constant, v) for v in allowed):
                source = ("fixed" if setting in space.fixed else "budget" if setting in BUDGET_TRAIN_FIELDS
                          else f"preset {space.preset}" if setting in MODEL_FIELDS else "the training defaults")
                out.fail(f"{where}.when.{setting}",
                         f"{setting} is {show(constant)} from {source}, so {p.name} is never sampled",
                         f"remove the parameter or the condition, or search {setting}")


def _check_epochs(out: _Out, space: SearchSpace) -> None:
    """An epoch count that is searched stays within the budget (which also sets ASHA's max_t)."""
    for name in ("pretrain_epochs", "finetune_epochs"):
        p = space.parameter(name)
        if p is None:
            continue
        top = max(p.choices) if p.type == "categorical" else p.high
        budget = getattr(space.budget, name)
        if top > budget:
            out.fail(f"parameters.{name}", f"goes up to {top}, beyond budget.{name}={budget}",
                     f"raise budget.{name} (the most epochs any trial runs) or lower the range")
    if space.scheduler.type == "asha":
        total = scheduler_horizon(space)
        if space.scheduler.grace_period > total:
            what = ("fine-tuning epochs" if space.scheduler.time_attr == Metric.FINETUNE_EPOCH
                    else "epochs (pre-training and fine-tuning)")
            out.fail("scheduler.grace_period", f"{space.scheduler.grace_period} is beyond the {total} {what} "
                     f"a trial runs (scheduler.time_attr: {space.scheduler.time_attr})", f"use at most {total}")


def _trial_error(flat: dict[str, Any]) -> str | None:
    """Why the recipe or the model refuses this trial config, or None (builds no weights)."""
    try:
        trial = TrialConfig.from_flat(flat)
        models.preset_config(trial.preset, **trial.model_overrides)
    except (UserInputError, ModelConfigError) as exc:
        return str(exc)
    return None


def _check_buildable(out: _Out, space: SearchSpace) -> None:
    """Every fixed setting, and every parameter at its ends (or every value), gives a valid trial."""
    def buildable(flat: dict[str, Any], where: str, what: str, fix: str) -> None:
        error = _trial_error(flat)
        if error is not None:
            out.fail(where, f"{what} cannot be trained with preset {space.preset} ({error})", fix)

    constants = space.constants(space.data)
    base = {k: v for k, v in constants.items() if k not in space.fixed}
    for name, value in space.fixed.items():
        buildable({**base, name: value}, f"fixed.{name}", show(value), "change it")
    buildable(constants, "fixed" if space.fixed else "preset", "this combination", "change fixed or the preset")
    for p in space.parameters:
        at = f"parameters.{p.name}"
        values = p.values(FEASIBILITY_CHECK_LIMIT)
        if p.type == "categorical":
            candidates = [(f"{at}.choices[{i}]", show(v), v) for i, v in enumerate(values)]
        else:
            ends = [(f"{at}.low", show(p.low), p.low), (f"{at}.high", show(p.high), p.high)]
            candidates = ends + [(at, f"{show(v)} (inside the range)", v) for v in (values or ())[1:-1]]
        context = _witness(space, p)
        for where, what, v in candidates:
            fix = ("remove that choice" if p.type == "categorical" else
                   "narrow the range" if where != at else "use a step or categorical choices that skip it")
            buildable(trial_flat_config({**context, p.name: v}, space, space.data), where, what, fix)


def _check_points(out: _Out, space: SearchSpace) -> None:
    if not space.points_to_evaluate:
        return
    if space.sampler.type == "grid":
        out.fail("points_to_evaluate", "the grid sampler already tries every combination", "remove them")
    if len(space.points_to_evaluate) > space.budget.num_samples:
        out.fail("points_to_evaluate", f"{len(space.points_to_evaluate)} points but budget.num_samples is "
                 f"{space.budget.num_samples}", "raise num_samples or drop points")
    names = tuple(p.name for p in space.parameters)
    for i, point in enumerate(space.points_to_evaluate):
        where = f"points_to_evaluate[{i}]"
        for name in point:
            if name not in names:
                fixed = " (it is fixed)" if name in space.fixed else ""
                out.fail(_join(where, name), f"not a parameter of this space{fixed}", f"use only {', '.join(names)}")
        for p in space.parameters:
            if p.name not in point:
                continue
            at = f"{where}.{p.name}"
            if not p.contains(point[p.name]):
                out.fail(at, f"{show(point[p.name])} is outside the parameter ({p.describe()})",
                         "use a value the search can take")
            for condition in p.when:
                if space.parameter(condition) is not None and condition not in point:
                    out.fail(at, f"depends on {condition}, which this point does not set",
                             f"add {condition} to the point")
            if not space.is_active(p, point):
                out.fail(at, f"{p.name} is not sampled for this point (when: {_when_text(p.when)})",
                         f"remove {p.name} from the point")
        error = _trial_error(trial_flat_config(point, space, space.data))
        if error is not None:
            out.fail(where, f"this point cannot be trained with preset {space.preset} ({error})", "change the point")


def _witness(space: SearchSpace, parameter: Parameter) -> dict[str, Any]:
    """Values of the parameters `parameter` depends on that make it active (its first allowed ones)."""
    values: dict[str, Any] = {}
    for name, allowed in parameter.when.items():
        condition = space.parameter(name)
        if condition is not None:
            values.update(_witness(space, condition))
            values[name] = allowed[0]
    return values


def _when_text(when: dict[str, tuple]) -> str:
    return ", ".join(f"{k}: {show(v[0]) if len(v) == 1 else show(list(v))}" for k, v in when.items())


__all__ = [
    "OBJECTIVE_METRICS", "FIELD_TYPES", "Objective", "SyntheticData", "Budget", "Resources", "SchedulerSpec",
    "SamplerSpec", "Parameter", "SearchSpace", "load_search_space", "define_by_run", "trial_flat_config",
    "grid_size", "build_sampler", "scheduler_horizon", "TIME_ATTRS",
]
