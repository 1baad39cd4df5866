"""Parameter and FLOP counts with torch's own counter (torch.utils.flop_counter).

FLOPs are per sample (N = 1 sequence with all M persons), forward pass, counting a multiply-add
as 2 FLOPs as FlopCounterMode does (`*_gflops`, every operator).

The paper's Table 8 "FLOPs" are multiply-accumulates of convolution and Linear layers only, as
module-hook counters (thop) report them: they miss the attention matmuls. `*_paper_gmacs` counts
exactly that, and lands on the paper: MVQVAE 36.37 (paper 36.3), MVAE 44.75 (44.9), MAE 44.86
(42.8; our MAE decoder is the MVAE one, depth 9, which the paper does not state for MAE).
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


LAYER_OPS = ("convolution", "addmm", "mm")  # conv and Linear layers; attention runs as bmm


def _forward_flops(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(GFLOPs of every operator, GMACs of conv/Linear layers only) of one forward pass."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    per_op = {getattr(op, "__name__", str(op)).split(".")[0]: n for op, n in counter.get_flop_counts()["Global"].items()}
    layers = sum(n for name, n in per_op.items() if name in LAYER_OPS)
    return counter.get_total_flops() / 1e9, layers / 2e9


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
        **dict(zip(("classifier_gflops", "classifier_paper_gmacs"), _forward_flops(classifier, x))),
        "input_shape": list(x.shape[1:]),
        "token_grid": list(config.tuple_grid),
    }
    if isinstance(model, SkeletonMAE):
        info["pretrain_gflops"], info["pretrain_paper_gmacs"] = _forward_flops(model, x)
        info["kept_grid"] = list(config.kept_grid)
        info["decoder_params"] = count_parameters(model.decoder)
    else:
        info["pretrain_gflops"] = info["pretrain_paper_gmacs"] = None
    return info
