"""Pure-PyTorch models: STTFormer, SkeletonMAE / SkeletonMVAE / SkeletonMVQVAE, preset registry.

    model = models.build("mvae-ntu60", frame_mask_ratio=0.5)   # SkeletonMAE (variant mvae)
    out = model(x)                                             # x: (N, C, T, V, M)
    out.loss.backward()
    classifier = model.to_classifier(num_classes=60)           # fine-tuning

Data-parallel training passes `collectives` (anything with `sum` and `broadcast`, see
`models.collectives`) to `build` / `build_from_config`; the default is one process.

This package never imports Ray or raysearch.
"""

from .collectives import Collectives, LocalCollectives
from .config import (INT_LIMITS, MAX_PARAMETERS, PRESETS, ModelConfig, ModelConfigError, decoder_blocks, list_presets,
                     preset_config)
from .flops import count_parameters, model_info
from .latent import LATENTS, GaussianLatent, IdentityLatent, Latent, LatentOutput, VectorQuantizer, build_latent, gaussian_kl
from .masking import MaskPlan, random_masking
from .reference import load_encoder_weights, load_reference_sttformer, read_state_dict, to_reference_keys
from .skeleton_mae import PretrainOutput, SkeletonMAE, reconstruction_error_per_joint
from .sttformer import STTFormerBlock, STTFormerClassifier, STTFormerEncoder


def build_from_config(config: ModelConfig, collectives: Collectives | None = None) -> SkeletonMAE | STTFormerClassifier:
    """The model of `config`, validated (sizes included) before any tensor is created. The
    classifier runs no collectives of its own (DDP averages its gradients)."""
    config.validate()
    return SkeletonMAE(config, collectives) if config.is_pretrain_model else STTFormerClassifier(config)


def build(name: str, collectives: Collectives | None = None, **overrides) -> SkeletonMAE | STTFormerClassifier:
    """Build a preset by name; overrides use the search-space field names."""
    return build_from_config(preset_config(name, **overrides), collectives)


__all__ = [
    "Collectives", "LocalCollectives", "INT_LIMITS", "MAX_PARAMETERS", "LATENTS", "IdentityLatent", "Latent",
    "LatentOutput", "build_latent", "PRESETS", "ModelConfig", "ModelConfigError", "decoder_blocks", "list_presets", "preset_config",
    "count_parameters", "model_info", "GaussianLatent", "VectorQuantizer", "gaussian_kl", "MaskPlan",
    "random_masking", "load_encoder_weights", "load_reference_sttformer", "read_state_dict",
    "to_reference_keys", "PretrainOutput", "SkeletonMAE", "reconstruction_error_per_joint",
    "STTFormerBlock", "STTFormerClassifier", "STTFormerEncoder", "build", "build_from_config",
]
