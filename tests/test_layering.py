"""The import rules that keep the layers apart, checked on the real import graph: each package is
imported alone in a fresh interpreter and `sys.modules` says what came with it."""

import json
import subprocess
import sys

import pytest


def modules_loaded_by(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def under(modules: set[str], package: str) -> set[str]:
    return {m for m in modules if m == package or m.startswith(package + ".")}


@pytest.mark.parametrize("module", ["models", "models.skeleton_mae", "models.latent", "models.reference"])
def test_models_import_no_ray_and_nothing_of_raysearch(module):
    loaded = modules_loaded_by(module)
    assert not under(loaded, "ray"), sorted(under(loaded, "ray"))[:5]
    assert not under(loaded, "raysearch"), sorted(under(loaded, "raysearch"))


@pytest.mark.parametrize("module", ["raysearch.deploy", "raysearch.deploy.export", "raysearch.deploy.predict",
                                    "raysearch.deploy.cli_commands"])
def test_deploy_imports_nothing_of_tune_or_the_training_loop(module):
    loaded = modules_loaded_by(module)
    assert not under(loaded, "raysearch.tune"), sorted(under(loaded, "raysearch.tune"))
    assert not under(loaded, "raysearch.train"), sorted(under(loaded, "raysearch.train"))
    assert not under(loaded, "ray"), sorted(under(loaded, "ray"))[:5]


@pytest.mark.parametrize("module", ["raysearch.train.loop", "raysearch.train.driver", "raysearch.train.config"])
def test_train_imports_nothing_of_tune(module):
    loaded = modules_loaded_by(module)
    assert not under(loaded, "raysearch.tune"), sorted(under(loaded, "raysearch.tune"))


def test_the_run_reader_sits_below_tune_and_deploy():
    loaded = modules_loaded_by("raysearch.runs")
    assert not under(loaded, "raysearch.tune") and not under(loaded, "raysearch.deploy")
    assert not under(loaded, "raysearch.train") and not under(loaded, "ray")


def test_importing_the_training_driver_sets_no_environment():
    """Ray settings go through `ray_runtime.connect`, not through an import side effect."""
    code = ("import os; before = dict(os.environ); import raysearch.train.driver, raysearch.tune.trial; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
