"""Parameter and FLOP counts with torch's own counter (torch.utils.flop_counter).

FLOPs are per sample (N = 1 sequence with all M persons), forward pass, counting a multiply-add
as 2 FLOPs as FlopCounterMode does. Papers computed with thop/fvcore count a multiply-add as one
"FLOP", so compare our `*_gflops / 2` with their figures.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig
from .skeleton_mae import SkeletonMAE
from .sttformer import STTFormerClassifier


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def model_info(model: SkeletonMAE | STTFormerClassifier) -> dict:
    """Parameters, per-sample GFLOPs and shapes of a model built by `models.build`."""
    config: ModelConfig = model.config
    x = torch.zeros(1, config.num_channels, config.num_frames, config.num_joints, config.num_persons)
    classifier = model.to_classifier() if isinstance(model, SkeletonMAE) else model
    info = {
        "variant": config.variant,
        "params": count_parameters(model),
        "encoder_params": count_parameters(classifier.encoder),
        "classifier_params": count_parameters(classifier),
        "classifier_gflops": _forward_flops(classifier, x) / 1e9,
        "input_shape": list(x.shape[1:]),
        "token_grid": list(config.tuple_grid),
    }
    if isinstance(model, SkeletonMAE):
        info["pretrain_gflops"] = _forward_flops(model, x) / 1e9
        info["kept_grid"] = list(config.kept_grid)
        info["decoder_params"] = count_parameters(model.decoder)
    else:
        info["pretrain_gflops"] = None
    return info
