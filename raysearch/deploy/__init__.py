"""Deployment: export the best trial as an artifact directory, and run it without Ray.

    local_dir, info = resolve_checkpoint("runs/my-search")      # best trial (or trial_id=...)
    export_artifact(local_dir, "artifact/", source=info)         # weights, program, json files
    predict("artifact/", "clip.skeleton")["predictions"]         # .skeleton or .npz input

Modules: `export` (resolve_checkpoint, export_artifact, load_artifact, Artifact), `predict`,
`cli_commands` (the `raysearch export` / `raysearch predict` subcommands).
"""

from .export import Artifact, export_artifact, load_artifact, resolve_checkpoint
from .predict import predict

__all__ = ["Artifact", "export_artifact", "load_artifact", "predict", "resolve_checkpoint"]
