"""Search-space YAML: validation messages, shipped spaces, define-by-run sampling, samplers.

No Ray here: spaces are sampled with Optuna's ask interface, as OptunaSearch does inside Tune.
"""

import copy
import functools
import itertools
import pickle
from pathlib import Path

import optuna
import pytest
import yaml

import models
from raysearch.errors import UserInputError
from raysearch.train.config import TrialConfig
from raysearch.tune.space import (
    OBJECTIVE_METRICS,
    SearchSpace,
    build_sampler,
    define_by_run,
    grid_size,
    load_search_space,
    trial_flat_config,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = sorted(p.name for p in SPACES.glob("*.yaml"))
CONDITIONAL = {"beta": "mvae", "latent_dim": "mvae", "codebook_size": "mvqvae", "commitment_weight": "mvqvae"}

# A small valid space; each error case below changes one thing in a copy of it.
BASE = {
    "name": "base",
    "preset": "mvae-tiny",
    "data": "synthetic",
    "synthetic": {"classes": 4, "per_class": 10, "seed": 0},
    "objectives": [{"metric": "val_acc", "mode": "max"}],
    "budget": {"num_samples": 4, "pretrain_epochs": 2, "finetune_epochs": 2},
    "resources": {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
    "fixed": {"batch_size": 32},
    "parameters": {
        "variant": {"type": "categorical", "choices": ["mvae", "mvqvae"]},
        "frame_mask_ratio": {"type": "float", "low": 0.3, "high": 0.7, "step": 0.1},
        "beta": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "when": {"variant": "mvae"}},
        "latent_dim": {"type": "int", "low": 8, "high": 32, "log": True, "when": {"variant": "mvae"}},
        "codebook_size": {"type": "categorical", "choices": [16, 32], "when": {"variant": "mvqvae"}},
    },
    "points_to_evaluate": [{"variant": "mvae", "frame_mask_ratio": 0.4, "beta": 0.005}],
}


def write(tmp_path, doc, name="space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def changed(edit) -> dict:
    doc = copy.deepcopy(BASE)
    edit(doc)
    return doc


def load_doc(tmp_path, doc, **kwargs) -> SearchSpace:
    return load_search_space(write(tmp_path, doc), **kwargs)


def expect_error(tmp_path, doc, field, fragment, **kwargs) -> str:
    path = write(tmp_path, doc)
    with pytest.raises(UserInputError) as info:
        load_search_space(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: "), message
    assert fragment in message, message
    return message


def sample(space: SearchSpace, n: int, data_dir="/data") -> list[tuple[dict, dict]]:
    """(params, flat config) of n trials, asked the way OptunaSearch asks them (points first)."""
    directions = ["maximize" if mode == "max" else "minimize" for mode in space.modes()]
    study = optuna.create_study(sampler=build_sampler(space), directions=directions)
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    out = []
    for i in range(n):
        trial = study.ask()
        constants = define_by_run(trial, space=space, data_dir=data_dir)
        out.append((dict(trial.params), {**trial.params, **constants}))
        if space.sampler.type != "grid":  # a grid study stops itself after the last tell
            values = [0.5 + 0.01 * (i % 5)] * len(directions)
            study.tell(trial, values if len(values) > 1 else values[0])
    return out


# -- the shipped spaces ---------------------------------------------------------------------------------
def test_every_space_is_shipped():
    assert set(SHIPPED) >= {"smoke.yaml", "paper.yaml", "ablation-masking.yaml", "ablation-latent-mvae.yaml",
                            "ablation-codebook.yaml", "ablation-decoder-width.yaml", "ablation-decoder-depth.yaml"}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads(name):
    space = load_search_space(SPACES / name, check_data=False)
    assert space.name == Path(name).stem
    assert space.preset in models.PRESETS
    assert all(o.metric in OBJECTIVE_METRICS for o in space.objectives)
    assert space.parameters
    assert len(space.points_to_evaluate) <= space.budget.num_samples


def test_smoke_runs_without_data_and_paper_needs_its_directory(tmp_path):
    smoke = load_search_space(SPACES / "smoke.yaml")
    raw = yaml.safe_load((SPACES / "smoke.yaml").read_text())
    assert smoke.data == "synthetic" and smoke.synthetic.classes == raw["synthetic"]["classes"]
    assert smoke.synthetic.per_class == raw["synthetic"]["per_class"]
    budget = raw["budget"]
    assert (smoke.budget.num_samples, smoke.budget.pretrain_epochs, smoke.budget.finetune_epochs) == (
        budget["num_samples"], budget["pretrain_epochs"], budget["finetune_epochs"])
    # Two workers and a trial driver fit the 2-core CI machine.
    assert smoke.resources.workers * smoke.resources.cpus_per_worker + 0.05 <= 2
    with pytest.raises(UserInputError, match=r"paper\.yaml: data: .*ntu60-xsub.*raysearch prepare"):
        load_search_space(SPACES / "paper.yaml")
    paper = load_search_space(SPACES / "paper.yaml", data=str(tmp_path))
    assert paper.data == str(tmp_path.resolve()) and paper.synthetic is None


@pytest.mark.parametrize("name, cells", [
    ("ablation-masking.yaml", 3 * 3 * 2),       # Table 3: frame x joint x variant
    ("ablation-latent-mvae.yaml", 6),           # Table 4
    ("ablation-codebook.yaml", 4),              # Table 5
    ("ablation-decoder-width.yaml", 3 * 2),     # Table 6: width x variant
    ("ablation-decoder-depth.yaml", 4 * 2),     # Table 7: depth x variant
])
def test_ablation_grids_match_the_paper_tables(name, cells):
    space = load_search_space(SPACES / name, check_data=False)
    assert (space.sampler.type, space.scheduler.type) == ("grid", "fifo")
    assert grid_size(space) == space.budget.num_samples == cells
    trials = sample(space, cells)
    combos = {tuple(sorted(params.items())) for params, _ in trials}
    expected = {tuple(sorted(zip([p.name for p in space.parameters], values)))
                for values in itertools.product(*[p.choices for p in space.parameters])}
    assert combos == expected  # every table cell exactly once
    for _, flat in trials:
        assert flat["pretrain_epochs"] == flat["finetune_epochs"] == 200


@pytest.mark.parametrize("name", ["smoke.yaml", "paper.yaml"])
def test_define_by_run_respects_conditions_and_builds(name):
    space = load_search_space(SPACES / name, check_data=False)
    trials = sample(space, 50)
    variants = set()
    for params, flat in trials:
        variant = params.get("variant", models.PRESETS[space.preset].variant)
        variants.add(variant)
        for conditional, needs in CONDITIONAL.items():
            if space.parameter(conditional) is not None:
                assert (conditional in params) == (variant == needs), params
        assert flat == trial_flat_config(params, space, "/data")
        trial = TrialConfig.from_flat(flat)
        models.preset_config(trial.preset, **trial.model_overrides)
        assert trial.train.pretrain_epochs == space.budget.pretrain_epochs
    assert variants == set(space.parameter("variant").choices)
    # Warm-start points come first, exactly as written.
    for point, (params, _) in zip(space.points_to_evaluate, trials):
        assert params == point


def test_seeded_samplers_repeat_their_sequences():
    for name in ("smoke.yaml", "ablation-decoder-depth.yaml"):
        space = load_search_space(SPACES / name, check_data=False)
        n = 12 if space.sampler.type == "tpe" else grid_size(space)
        assert [p for p, _ in sample(space, n)] == [p for p, _ in sample(space, n)]


def test_random_sampler_and_unseeded_spec(tmp_path):
    space = load_doc(tmp_path, changed(lambda d: d.update(sampler={"type": "random", "seed": 3})))
    assert isinstance(build_sampler(space), optuna.samplers.RandomSampler)
    assert [p for p, _ in sample(space, 6)] == [p for p, _ in sample(space, 6)]
    unseeded = load_doc(tmp_path, changed(lambda d: d.update(sampler={"type": "tpe", "seed": None})))
    assert unseeded.sampler.seed is None


def test_build_sampler_emits_no_warnings():
    import warnings

    space = load_search_space(SPACES / "smoke.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = build_sampler(space)
    assert isinstance(sampler, optuna.samplers.TPESampler)


def test_multi_objective_space(tmp_path):
    doc = changed(lambda d: (d.update(objectives=[{"metric": "val_acc", "mode": "max"},
                                                  {"metric": "params", "mode": "min"}]), d.pop("scheduler")))
    space = load_doc(tmp_path, doc)
    assert space.metric_names() == ["val_acc", "params"] and space.modes() == ["max", "min"]
    assert space.scheduler.type == "fifo"  # the default with several objectives
    for params, flat in sample(space, 10):
        TrialConfig.from_flat(flat)


def test_define_by_run_pickles_for_tuner_restore():
    space = load_search_space(SPACES / "smoke.yaml")
    bound = pickle.loads(pickle.dumps(functools.partial(define_by_run, space=space, data_dir="/d")))
    assert bound.keywords["space"] == space


def test_constants_and_tuned_budget_fields(tmp_path):
    space = load_search_space(SPACES / "smoke.yaml")
    raw = yaml.safe_load((SPACES / "smoke.yaml").read_text())
    assert space.constants("/d") == {"preset": "mvae-tiny", "data_dir": "/d", **raw["fixed"],
                                     "pretrain_epochs": raw["budget"]["pretrain_epochs"],
                                     "finetune_epochs": raw["budget"]["finetune_epochs"], "label_fraction": 1.0}
    doc = changed(lambda d: d["parameters"].update(finetune_epochs={"type": "int", "low": 1, "high": 2}))
    tuned = load_doc(tmp_path, doc)
    assert "finetune_epochs" not in tuned.constants("/d")
    assert all(1 <= flat["finetune_epochs"] <= 2 for _, flat in sample(tuned, 8))


def test_condition_on_a_preset_value_that_holds(tmp_path):
    doc = changed(lambda d: (d["parameters"].pop("variant"), d["parameters"].pop("codebook_size"),
                             d.update(points_to_evaluate=[{"beta": 0.005}])))
    space = load_doc(tmp_path, doc)  # preset mvae-tiny: `when: {variant: mvae}` always holds
    assert all("beta" in params for params, _ in sample(space, 5))


def test_nested_conditions(tmp_path):
    doc = changed(lambda d: d["parameters"].update(
        commitment_weight={"type": "float", "low": 0.1, "high": 1.0, "when": {"codebook_size": [32]}}))
    space = load_doc(tmp_path, doc)
    for params, _ in sample(space, 30):
        assert ("commitment_weight" in params) == (params.get("codebook_size") == 32)


def test_overrides_and_relative_data(tmp_path, monkeypatch):
    (tmp_path / "datasets" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    space = load_doc(tmp_path, changed(lambda d: (d.update(data="datasets/mine"), d.pop("synthetic"))))
    assert space.data == str((tmp_path / "datasets" / "mine").resolve())
    assert load_doc(tmp_path, BASE, num_samples=9).budget.num_samples == 9
    expect_error(tmp_path, BASE, "--num-samples", "not an integer", num_samples=2.5)


# -- errors: each names the file and the field ----------------------------------------------------------
def _set(path, value):
    """An edit that sets doc[path...] = value (a missing final key is added)."""
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _drop(path):
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _param(name, spec):
    return _set(("parameters", name), spec)


ERRORS = [
    # structure and unknown names
    ("top-level key", _set(("paramters",), {}), "paramters", "allowed keys here: name, preset"),
    ("section key", _set(("budget", "epochs"), 3), "budget.epochs", "allowed keys here: num_samples"),
    ("synthetic key", _set(("synthetic", "joints"), 25), "synthetic.joints", "classes, per_class, seed, max_frames"),
    ("parameter key", _set(("parameters", "beta", "choices"), [1]), "parameters.beta.choices", "allowed keys"),
    ("categorical key", _set(("parameters", "variant", "low"), 1), "parameters.variant.low", "allowed keys"),
    ("unknown setting", _param("frame_ratio", {"type": "float", "low": 0.1, "high": 0.5}),
     "parameters.frame_ratio", "searchable settings"),
    ("data field", _param("num_classes", {"type": "int", "low": 2, "high": 5}),
     "parameters.num_classes", "dataset manifest"),
    ("list setting", _param("lr_milestones", {"type": "categorical", "choices": [1, 2]}),
     "parameters.lr_milestones", "set it in fixed"),
    ("also fixed", _set(("fixed", "frame_mask_ratio"), 0.5), "parameters.frame_mask_ratio", "also in fixed"),
    ("no parameters", _set(("parameters",), {}), "parameters", "at least one"),
    ("run name", _set(("name",), "my run"), "name", "not a usable run name"),
    # types
    ("type", _set(("parameters", "beta", "type"), "real"), "parameters.beta.type", "float, int, categorical"),
    ("missing type", _drop(("parameters", "beta", "type")), "parameters.beta.type", "missing"),
    ("low not a number", _set(("parameters", "beta", "low"), "small"), "parameters.beta.low", "not a number"),
    ("log not a bool", _set(("parameters", "beta", "log"), "yes"), "parameters.beta.log", "true or false"),
    ("int bounds", _set(("parameters", "latent_dim", "low"), 8.5), "parameters.latent_dim.low", "not an integer"),
    ("float for an int setting", _set(("parameters", "latent_dim", "type"), "float"),
     "parameters.latent_dim.type", "use type: int"),
    ("choice type", _set(("parameters", "codebook_size", "choices"), [16, "big"]),
     "parameters.codebook_size.choices[1]", "not an integer"),
    ("empty choices", _set(("parameters", "variant", "choices"), []), "parameters.variant.choices", "non-empty"),
    ("duplicate choice", _set(("parameters", "codebook_size", "choices"), [16, 16]),
     "parameters.codebook_size.choices[1]", "listed twice"),
    ("num_samples type", _set(("budget", "num_samples"), 2.5), "budget.num_samples", "not an integer"),
    ("fixed type", _set(("fixed", "batch_size"), "big"), "fixed.batch_size", "an integer"),
    ("sampler flag", _set(("sampler", "multivariate"), 1), "sampler.multivariate", "true or false"),
    # ranges
    ("low >= high", _set(("parameters", "frame_mask_ratio", "high"), 0.3), "parameters.frame_mask_ratio.high",
     "must be > low 0.3"),
    ("log with low 0", _set(("parameters", "beta", "low"), 0), "parameters.beta.low", "0 must be > 0 with log: true"),
    ("step with log", _set(("parameters", "beta", "step"), 0.01), "parameters.beta.step", "cannot be combined"),
    ("step does not divide", _set(("parameters", "frame_mask_ratio", "high"), 0.75),
     "parameters.frame_mask_ratio.high", "set high to 0.7"),
    ("negative step", _set(("parameters", "frame_mask_ratio", "step"), -0.1), "parameters.frame_mask_ratio.step",
     "must be > 0"),
    # conditions
    ("when unknown", _set(("parameters", "beta", "when"), {"flavour": "mvae"}), "parameters.beta.when.flavour",
     "unknown parameter"),
    ("when impossible value", _set(("parameters", "beta", "when"), {"variant": "vae"}),
     "parameters.beta.when.variant", "variant can never be 'vae'"),
    ("when out of range", _set(("parameters", "latent_dim", "when"), {"frame_mask_ratio": 0.9}),
     "parameters.latent_dim.when.frame_mask_ratio", "can never be 0.9"),
    ("when declared later", lambda d: d["parameters"].update(
        {"variant": d["parameters"].pop("variant")}), "parameters.beta.when.variant", "declared after beta"),
    ("when on itself", _set(("parameters", "beta", "when"), {"beta": 0.1}), "parameters.beta.when.beta", "itself"),
    ("when never on fixed", lambda d: (d["fixed"].update(finetune_mode="linear"),
                                       d["parameters"].update(lr={"type": "float", "low": 1e-4, "high": 1e-2,
                                                                  "when": {"finetune_mode": "full"}})),
     "parameters.lr.when.finetune_mode", "never sampled"),
    # warm-start points
    ("point unknown name", _set(("points_to_evaluate",), [{"variant": "mvae", "lr": 0.1}]),
     "points_to_evaluate[0].lr", "not a parameter of this space"),
    ("point fixed name", _set(("points_to_evaluate",), [{"batch_size": 32}]),
     "points_to_evaluate[0].batch_size", "(it is fixed)"),
    ("point out of range", _set(("points_to_evaluate",), [{"frame_mask_ratio": 0.9}]),
     "points_to_evaluate[0].frame_mask_ratio", "outside the parameter"),
    ("point off the step", _set(("points_to_evaluate",), [{"frame_mask_ratio": 0.45}]),
     "points_to_evaluate[0].frame_mask_ratio", "outside the parameter"),
    ("point not a choice", _set(("points_to_evaluate",), [{"variant": "mae"}]),
     "points_to_evaluate[0].variant", "choices 'mvae', 'mvqvae'"),
    ("point int parameter", _set(("points_to_evaluate",), [{"variant": "mvae", "latent_dim": 12.5}]),
     "points_to_evaluate[0].latent_dim", "outside"),
    ("point inactive parameter", _set(("points_to_evaluate",), [{"variant": "mvqvae", "beta": 0.01}]),
     "points_to_evaluate[0].beta", "not sampled for this point"),
    ("point missing condition", _set(("points_to_evaluate",), [{"beta": 0.01}]),
     "points_to_evaluate[0].beta", "depends on variant"),
    ("more points than trials", _set(("points_to_evaluate",), [{"variant": "mvae"}] * 5),
     "points_to_evaluate", "budget.num_samples is 4"),
    # preset and data
    ("unknown preset", _set(("preset",), "mvae-huge"), "preset", "use one of mae-ntu60"),
    ("missing preset", _drop(("preset",)), "preset", "missing"),
    ("missing data", _drop(("data",)), "data", "missing"),
    ("synthetic without synthetic data", lambda d: d.update(data="."), "synthetic", "only used with data: synthetic"),
    # objectives
    ("unknown metric", _set(("objectives",), [{"metric": "accuracy", "mode": "max"}]),
     "objectives[0].metric", "use one of val_acc, best_val_acc, val_ce_loss, params"),
    ("unknown mode", _set(("objectives",), [{"metric": "val_acc", "mode": "maximize"}]),
     "objectives[0].mode", "use one of max, min"),
    ("duplicate metric", _set(("objectives",), [{"metric": "val_acc", "mode": "max"}] * 2),
     "objectives[1].metric", "listed twice"),
    ("empty objectives", _set(("objectives",), []), "objectives", "non-empty list"),
    ("asha with two objectives", _set(("objectives",), [{"metric": "val_acc", "mode": "max"},
                                                        {"metric": "params", "mode": "min"}]),
     "scheduler.type", "use scheduler: {type: fifo}"),
    # scheduler, sampler, budget, resources
    ("unknown scheduler", _set(("scheduler",), {"type": "hyperband"}), "scheduler.type", "asha, fifo"),
    ("fifo with asha keys", _set(("scheduler",), {"type": "fifo", "grace_period": 1}),
     "scheduler.grace_period", "allowed keys here: type"),
    ("grace beyond epochs", _set(("scheduler", "grace_period"), 5), "scheduler.grace_period", "use at most 2"),
    ("reduction factor", _set(("scheduler", "reduction_factor"), 1), "scheduler.reduction_factor", "must be > 1"),
    ("random sampler key", _set(("sampler",), {"type": "random", "n_startup_trials": 3}),
     "sampler.n_startup_trials", "allowed keys here: type, seed"),
    ("group without multivariate", _set(("sampler", "multivariate"), False), "sampler.group",
     "needs multivariate: true"),
    ("missing num_samples", _drop(("budget", "num_samples")), "budget.num_samples", "missing"),
    ("no epochs", _set(("budget",), {"num_samples": 4, "pretrain_epochs": 0, "finetune_epochs": 0}),
     "budget.finetune_epochs", "both 0"),
    ("label fraction", _set(("budget", "label_fraction"), 1.5), "budget.label_fraction", "must be <= 1"),
    ("time limit", _set(("budget", "time_limit_s"), 0), "budget.time_limit_s", "must be > 0"),
    ("epoch parameter beyond budget", _param("pretrain_epochs", {"type": "int", "low": 1, "high": 5}),
     "parameters.pretrain_epochs", "beyond budget.pretrain_epochs=2"),
    ("fixed budget field", _set(("fixed", "finetune_epochs"), 3), "fixed.finetune_epochs", "budget.finetune_epochs"),
    ("fixed data field", _set(("fixed", "num_joints"), 25), "fixed.num_joints", "dataset manifest"),
    ("workers 0", _set(("resources", "workers"), 0), "resources.workers", "must be >= 1"),
    ("cpus 0", _set(("resources", "cpus_per_worker"), 0), "resources.cpus_per_worker", "must be > 0"),
    ("negative gpus", _set(("resources", "gpus_per_worker"), -1), "resources.gpus_per_worker", "must be >= 0"),
    # model feasibility at the ends of ranges and for every choice
    ("frame ratio too high", _set(("parameters", "frame_mask_ratio"),
                                  {"type": "float", "low": 0.3, "high": 0.95}),
     "parameters.frame_mask_ratio.high", "fewer than one tuple"),
    ("joint ratio masks all", _param("joint_mask_ratio", {"type": "float", "low": 0.2, "high": 0.99}),
     "parameters.joint_mask_ratio.high", "masks all 25 joints"),
    ("decoder depth too low", _param("decoder_depth", {"type": "int", "low": 1, "high": 4}),
     "parameters.decoder_depth.low", "decoder_depth=1"),
    ("decoder width choice", _param("decoder_width", {"type": "categorical", "choices": [16, 18]}),
     "parameters.decoder_width.choices[1]", "multiple of 4"),
    ("decoder width inside the range", _param("decoder_width", {"type": "int", "low": 16, "high": 24}),
     "parameters.decoder_width", "17 (inside the range)"),
    ("variant choice", _set(("parameters", "variant", "choices"), ["mvae", "mvqvae", "vae"]),
     "parameters.variant.choices[2]", "must be one of"),
    ("conditional choice under its condition", _set(("parameters", "codebook_size", "choices"), [16, 0]),
     "parameters.codebook_size.choices[1]", "codebook_size"),
    ("training setting", _param("finetune_mode", {"type": "categorical", "choices": ["full", "probe"]}),
     "parameters.finetune_mode.choices[1]", "must be one of full, linear"),
    ("fixed infeasible", _set(("fixed", "joint_mask_ratio"), 0.99), "fixed.joint_mask_ratio", "masks all"),
    ("fixed together infeasible", lambda d: d["fixed"].update(num_frames=18, tuple_len=4), "fixed",
     "multiple of tuple_len=4"),
    # each value alone builds; together (tuple_len 8 keeps 6 of 16 frames at 0.6) they do not
    ("point infeasible", lambda d: (d["parameters"].update(tuple_len={"type": "categorical", "choices": [2, 8]}),
                                    d.update(points_to_evaluate=[{"frame_mask_ratio": 0.6, "tuple_len": 8}])),
     "points_to_evaluate[0]", "fewer than one tuple of 8"),
]


@pytest.mark.parametrize("case, edit, field, fragment", ERRORS, ids=[e[0] for e in ERRORS])
def test_error_names_file_and_field(tmp_path, case, edit, field, fragment):
    expect_error(tmp_path, changed(edit), field, fragment)


def test_data_directory_missing(tmp_path):
    doc = changed(lambda d: (d.update(data=str(tmp_path / "nope")), d.pop("synthetic")))
    expect_error(tmp_path, doc, "data", f"{tmp_path / 'nope'} does not exist; run `raysearch prepare")
    assert load_doc(tmp_path, doc, check_data=False).data == str(tmp_path / "nope")
    expect_error(tmp_path, BASE, "data (--data)", "use data: synthetic", data=str(tmp_path / "gone"))


def test_grid_errors(tmp_path):
    grid = {**copy.deepcopy(BASE), "sampler": {"type": "grid"}, "scheduler": {"type": "fifo"},
            "points_to_evaluate": None}
    grid["parameters"] = {"variant": {"type": "categorical", "choices": ["mvae", "mvqvae"]},
                          "frame_mask_ratio": {"type": "categorical", "choices": [0.4, 0.5, 0.6]}}
    grid["budget"] = {"pretrain_epochs": 2, "finetune_epochs": 2}
    assert load_doc(tmp_path, grid).budget.num_samples == 6
    assert load_doc(tmp_path, {**grid, "budget": {"num_samples": 12}}).budget.num_samples == 12
    expect_error(tmp_path, {**grid, "budget": {"num_samples": 5}}, "budget.num_samples",
                 "5 is smaller than the grid (6 combinations)")
    ranged = copy.deepcopy(grid)
    ranged["parameters"]["frame_mask_ratio"] = {"type": "float", "low": 0.4, "high": 0.6}
    expect_error(tmp_path, ranged, "parameters.frame_mask_ratio.type", "the grid sampler needs choices")
    conditional = copy.deepcopy(grid)
    conditional["parameters"]["latent_dim"] = {"type": "categorical", "choices": [8], "when": {"variant": "mvae"}}
    expect_error(tmp_path, conditional, "parameters.latent_dim.when", "does not support conditions")
    expect_error(tmp_path, {**grid, "points_to_evaluate": [{"variant": "mvae"}]}, "points_to_evaluate",
                 "already tries every combination")


def test_condition_on_the_preset_that_never_holds(tmp_path):
    doc = changed(lambda d: (d.update(preset="mvqvae-tiny", points_to_evaluate=None),
                             d["parameters"].pop("variant"), d["parameters"].pop("codebook_size")))
    expect_error(tmp_path, doc, "parameters.beta.when.variant",
                 "variant is 'mvqvae' from preset mvqvae-tiny, so beta is never sampled")


def test_yaml_level_errors(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False).replace("0.0001", "1e-4")  # YAML 1.1 reads 1e-4 as text
    expect_error(tmp_path, text, "parameters.beta.low", "write 1.0e-4")
    expect_error(tmp_path, "preset: [mvae-tiny\n", "line 2", "not valid YAML")
    expect_error(tmp_path, "", "(top level)", "the file is empty")
    expect_error(tmp_path, "- a\n- b\n", "(top level)", "expected a mapping")
    with pytest.raises(UserInputError, match=r"missing\.yaml: no such file; pass a search-space YAML"):
        load_search_space(tmp_path / "missing.yaml")


def test_grid_size_refuses_ranges():
    with pytest.raises(ValueError):
        grid_size(load_search_space(SPACES / "smoke.yaml"))


def test_contract_with_ray_optuna_search():
    """Through Ray's own OptunaSearch (no cluster needed): points first, constants merged, grid walked."""
    from ray.tune.search.optuna import OptunaSearch

    def searcher(space):
        return OptunaSearch(space=functools.partial(define_by_run, space=space, data_dir="/d"),
                            metric="val_acc", mode="max", sampler=build_sampler(space),
                            points_to_evaluate=[dict(p) for p in space.points_to_evaluate] or None)

    smoke = load_search_space(SPACES / "smoke.yaml")
    search = searcher(smoke)
    for i in range(4):
        config = search.suggest(f"t{i}")
        if i == 0:
            assert config == trial_flat_config(dict(smoke.points_to_evaluate[0]), smoke, "/d")
        TrialConfig.from_flat(config)
        search.on_trial_complete(f"t{i}", {"val_acc": 0.5})
    grid = load_search_space(SPACES / "ablation-codebook.yaml", check_data=False)
    search = searcher(grid)
    assert sorted(search.suggest(f"g{i}")["codebook_size"] for i in range(4)) == [100, 128, 256, 512]


# -- every value typed before Ray starts (issue 16) ---------------------------------------------------
BAD_VALUES = [
    ("frame_mask_ratio", "abc", "is not a number"),
    ("decoder_depth", 2.5, "is not an integer"),
    ("encoder_blocks", 5, "is not a list of [integer, integer, integer] lists"),
    ("encoder_blocks", [[8, 8]], "is not a list of [integer, integer, integer] lists"),
    ("lr_milestones", 5, "is not a list of integers"),
    ("beta", float("nan"), "not a finite number"),
    ("beta", float("inf"), "not a finite number"),
    ("restart_dead_codes", "maybe", "is not true or false"),
    ("seed", "abc", "is not an integer"),
    ("lr", "1e-4", "write 1.0e-4"),
    ("lr", True, "is not a number or null"),
    ("batch_size", 10**30, "within +-2**53"),
    ("codebook_size", 1_000_000_000, "codebook_size"),    # the model's cap, reached before Ray
    ("loader_workers", -1, "loader_workers"),              # the recipe's range, reached before Ray
]
BAD_NAMES = [v[0] for v in BAD_VALUES]


def _ids(cases):
    return [f"{c.values[0]}={c.values[1]!r}" if hasattr(c, "values") else f"{c[0]}={c[1]!r}" for c in cases]


@pytest.mark.parametrize("name, value, fragment", BAD_VALUES, ids=_ids(BAD_VALUES))
def test_fixed_value_of_the_wrong_type_or_range(tmp_path, name, value, fragment):
    def edit(d):
        d["fixed"][name] = value
        d["parameters"].pop(name, None)
        d["points_to_evaluate"] = None
    message = expect_error(tmp_path, changed(edit), f"fixed.{name}", fragment)
    assert len(message) < 400


SCALAR_BAD_VALUES = [case for case, name in zip(BAD_VALUES, BAD_NAMES)
                     if name not in ("encoder_blocks", "lr_milestones")]


@pytest.mark.parametrize("name, value, fragment", SCALAR_BAD_VALUES, ids=_ids(SCALAR_BAD_VALUES))
def test_choice_of_the_wrong_type_or_range(tmp_path, name, value, fragment):
    def edit(d):
        d["parameters"][name] = {"type": "categorical", "choices": [value]}
        d["fixed"].pop(name, None)
        d["points_to_evaluate"] = None
    field = f"parameters.{name}.choices[0]"
    expect_error(tmp_path, changed(edit), field, fragment)


@pytest.mark.parametrize("bound, value, fragment", [
    ("low", float("nan"), "not a finite number"), ("high", float("inf"), "not a finite number"),
    ("low", "abc", "not a number"), ("high", True, "not a number"), ("high", [0.9], "not a number"),
])
def test_range_bound_of_the_wrong_type(tmp_path, bound, value, fragment):
    expect_error(tmp_path, changed(_set(("parameters", "frame_mask_ratio", bound), value)),
                 f"parameters.frame_mask_ratio.{bound}", fragment)


def test_section_numbers_are_finite(tmp_path):
    expect_error(tmp_path, changed(_set(("resources", "cpus_per_worker"), float("nan"))),
                 "resources.cpus_per_worker", "not a finite number")
    expect_error(tmp_path, changed(_set(("budget", "time_limit_s"), float("inf"))),
                 "budget.time_limit_s", "not a finite number")
    expect_error(tmp_path, changed(_set(("scheduler", "reduction_factor"), float("nan"))),
                 "scheduler.reduction_factor", "not a finite number")
    expect_error(tmp_path, changed(_set(("sampler", "seed"), 2**40)), "sampler.seed", "must be < 2**32")


def test_step_finer_than_any_search_needs(tmp_path):
    expect_error(tmp_path, changed(_set(("parameters", "frame_mask_ratio", "step"), 1e-15)),
                 "parameters.frame_mask_ratio.step", "drop step for a continuous range")


def test_parameters_are_optuna_distributions(tmp_path):
    space = load_doc(tmp_path, BASE)
    assert space.parameter("beta").distribution == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert space.parameter("frame_mask_ratio").distribution == optuna.distributions.FloatDistribution(
        0.3, 0.7, step=0.1)
    assert space.parameter("latent_dim").distribution == optuna.distributions.IntDistribution(8, 32, log=True)
    assert space.parameter("codebook_size").distribution == optuna.distributions.CategoricalDistribution([16, 32])
    assert space.parameter("beta").when == {"variant": ("mvae",)}


# -- objectives: names and directions from the trial contract ------------------------------------------
def test_objectives_come_from_the_contract(tmp_path):
    from raysearch.contract import OBJECTIVES, Metric

    assert set(OBJECTIVE_METRICS) == set(OBJECTIVES)
    default = load_doc(tmp_path, changed(lambda d: d.pop("objectives")))
    assert default.metric_names() == [Metric.VAL_ACC] and default.modes() == ["max"]
    # The mode may be left out: each metric has one sensible direction.
    natural = load_doc(tmp_path, changed(lambda d: (d.update(objectives=[{"metric": "val_acc"}, {"metric": "params"}]),
                                                    d.pop("scheduler"))))
    assert natural.modes() == ["max", "min"]
    ce = load_doc(tmp_path, changed(_set(("objectives",), [{"metric": Metric.VAL_CE_LOSS}])))
    assert ce.modes() == ["min"]


@pytest.mark.parametrize("metric, mode, field, fragment", [
    ("val_loss", "min", "objectives[0].metric", "val_ce_loss"),
    ("val_knn_acc", "max", "objectives[0].metric", "a pre-training metric ranks encoders"),
    ("val_recon_loss", "min", "objectives[0].metric", "a pre-training metric ranks encoders"),
    ("val_acc", "min", "objectives[0].mode", "write mode: max or leave mode out"),
    ("params", "max", "objectives[0].mode", "write mode: min"),
])
def test_objectives_refused_with_the_reason(tmp_path, metric, mode, field, fragment):
    expect_error(tmp_path, changed(_set(("objectives",), [{"metric": metric, "mode": mode}])), field, fragment)


def test_synthetic_defaults_match_prepare_synthetic(tmp_path):
    """A space that leaves `synthetic` out gets the data `raysearch prepare synthetic` makes by default."""
    from raysearch.cli import build_parser

    prepare = build_parser().parse_args(["prepare", "synthetic", "--out", str(tmp_path / "d")])
    space = load_doc(tmp_path, changed(lambda d: d.pop("synthetic")))
    assert (space.synthetic.classes, space.synthetic.per_class) == (prepare.classes, prepare.per_class)
    partial = load_doc(tmp_path, changed(_set(("synthetic",), {"classes": 3})))
    assert (partial.synthetic.classes, partial.synthetic.per_class) == (3, prepare.per_class)


# -- properties: any document loads into a usable space or is refused in one line -------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from raysearch.errors import MAX_MESSAGE_CHARS  # noqa: E402
from raysearch.train.config import TUNABLE_FIELDS  # noqa: E402

FUZZ = settings(derandomize=True, max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Words of the schema, so that generated documents get past the first check often enough.
VOCABULARY = sorted({*BASE, *TUNABLE_FIELDS, "num_joints", "type", "low", "high", "step", "log", "choices", "when",
                     "float", "int", "categorical", "asha", "fifo", "tpe", "random", "grid", "metric", "mode",
                     "max", "min", "val_acc", "val_loss", "params", "mvae", "mvqvae", "mae", *models.PRESETS,
                     "classes", "per_class", "seed", "max_frames", "num_samples", "pretrain_epochs",
                     "finetune_epochs", "workers", "cpus_per_worker", "grace_period", "synthetic"})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.text(max_size=8),
                    st.sampled_from(VOCABULARY), st.sampled_from(["1e-4", "1.0e-3", "~/x", "a\x00b", "/", "."]))
KEYS = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6), st.integers(-2, 2), st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                      max_leaves=12)


def loads_or_refuses(path: Path):
    """The space, or None after checking the refusal is one UserInputError line naming the file."""
    try:
        space = load_search_space(path, check_data=False)
    except UserInputError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: ") and len(message) <= MAX_MESSAGE_CHARS, message
        return None
    assert isinstance(space, SearchSpace)
    # A loaded space samples: Optuna accepts every distribution, points and conditions included.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0),
                                directions=["maximize" if m == "max" else "minimize" for m in space.modes()])
    for point in space.points_to_evaluate:
        study.enqueue_trial(point)
    for _ in range(2):
        trial = study.ask()
        flat = {**trial.params, **define_by_run(trial, space=space, data_dir="/d")}
        assert set(trial.params) <= {p.name for p in space.parameters} and flat["preset"] == space.preset
    return space


def _near(value):
    """Values of the same kind as `value`, edge cases included: what a typo or a wrong guess gives."""
    if isinstance(value, bool):
        return st.one_of(st.booleans(), st.sampled_from(["maybe", "yes", 1, None]))
    if isinstance(value, (int, float)):
        return st.one_of(st.integers(-2, 2 * int(value) + 2), st.floats(-1, 2 * value + 1), st.integers(2**53, 2**64),
                         st.sampled_from([float("nan"), float("inf"), 0, 0.5, "abc", "1e-3"]))
    if isinstance(value, str):
        return st.sampled_from(VOCABULARY)
    return VALUES


@st.composite
def edited_base(draw):
    """BASE with one to three of its values replaced, dropped, or given a sibling key."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and draw(st.booleans()):
                node = child
                continue
            edit = draw(st.sampled_from(["near", "near", "set", "drop", "add"]))
            if edit == "near":
                node[key] = draw(_near(child))
            elif edit == "set":
                node[key] = draw(VALUES)
            elif edit == "drop":
                del node[key]
            elif isinstance(node, dict):
                node[draw(KEYS)] = draw(VALUES)
            else:
                node.append(draw(VALUES))
            break
    return doc


@FUZZ
@given(doc=edited_base())
def test_edited_spaces_load_or_are_refused_in_one_line(tmp_path, doc):
    loads_or_refuses(write(tmp_path, doc))


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(sorted(BASE)) | KEYS, VALUES, max_size=8))
def test_generated_documents_load_or_are_refused_in_one_line(tmp_path, doc):
    loads_or_refuses(write(tmp_path, doc))


@FUZZ
@given(data=st.data())
def test_edited_yaml_text_loads_or_is_refused_in_one_line(tmp_path, data):
    """The text itself edited: duplicated lines (duplicate keys), anchors and aliases, cut lines."""
    name = data.draw(st.sampled_from(["smoke.yaml", "paper.yaml", "ablation-masking.yaml"]))
    lines = (SPACES / name).read_text().splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["duplicate", "drop", "cut", "anchor", "alias", "insert"]))
        if edit == "duplicate":
            lines.insert(i, lines[i])
        elif edit == "drop":
            lines.pop(i)
        elif edit == "cut":
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        elif edit == "anchor" and ": " in lines[i]:
            key, _, value = lines[i].partition(": ")
            lines[i] = f"{key}: &z {value}"
        elif edit == "alias" and ": " in lines[i]:
            lines[i] = lines[i].partition(": ")[0] + ": *z"
        elif edit == "insert":
            lines.insert(i, data.draw(st.sampled_from(VOCABULARY)) + ": " + yaml.safe_dump(
                data.draw(VALUES), default_flow_style=True, width=10**6).splitlines()[0])
    path = tmp_path / "space.yaml"
    path.write_text("\n".join(lines) + "\n")
    loads_or_refuses(path)
