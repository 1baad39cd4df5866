"""Pure-PyTorch models: STTFormer, SkeletonMAE / SkeletonMVAE / SkeletonMVQVAE, preset registry.

    model = models.build("mvae-ntu60", frame_mask_ratio=0.5)   # SkeletonMAE (variant mvae)
    out = model(x)                                             # x: (N, C, T, V, M)
    out.loss.backward()
    classifier = model.to_classifier(num_classes=60)           # fine-tuning

This package never imports Ray or raysearch.
"""

from .config import PRESETS, ModelConfig, ModelConfigError, decoder_blocks, list_presets, preset_config
from .flops import count_parameters, model_info
from .latent import GaussianLatent, VectorQuantizer, gaussian_kl
from .masking import MaskPlan, random_masking
from .reference import load_encoder_weights, load_reference_sttformer, read_state_dict, to_reference_keys
from .skeleton_mae import PretrainOutput, SkeletonMAE, reconstruction_error_per_joint
from .sttformer import STTFormerBlock, STTFormerClassifier, STTFormerEncoder


def build_from_config(config: ModelConfig) -> SkeletonMAE | STTFormerClassifier:
    config.validate()
    return SkeletonMAE(config) if config.is_pretrain_model else STTFormerClassifier(config)


def build(name: str, **overrides) -> SkeletonMAE | STTFormerClassifier:
    """Build a preset by name; overrides use the search-space field names."""
    return build_from_config(preset_config(name, **overrides))


__all__ = [
    "PRESETS", "ModelConfig", "ModelConfigError", "decoder_blocks", "list_presets", "preset_config",
    "count_parameters", "model_info", "GaussianLatent", "VectorQuantizer", "gaussian_kl", "MaskPlan",
    "random_masking", "load_encoder_weights", "load_reference_sttformer", "read_state_dict",
    "to_reference_keys", "PretrainOutput", "SkeletonMAE", "reconstruction_error_per_joint",
    "STTFormerBlock", "STTFormerClassifier", "STTFormerEncoder", "build", "build_from_config",
]
