"""STTFormer (Qiu et al. 2022) blocks, encoder and classifier, as docs/model.md describes them.

Tokens: T frames are grouped into T' = T / P tuples of P consecutive frames; each tuple holds
U = P * V tokens with index u = p * V + v (frame-in-tuple major, joint minor), which is what the
public model's `view(N*M, C, T // P, V * P)` produces.

Every block is size-agnostic: it takes an optional `token_index` (B, Uk) giving each kept token's
original position u inside its tuple. The positional encoding and the learnable attention bias A0
are gathered at those positions, so with `token_index=None` (nothing masked) a block computes
exactly the public STTFormer block.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import SPATIAL_KERNEL, TEMPORAL_KERNEL, BlockSpec, ModelConfig


def sinusoid_table(num_positions: int, channels: int) -> torch.Tensor:
    """Fixed sinusoid (num_positions, channels): sin on even channels, cos on odd ones."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * -(math.log(10000.0) / channels))
    table = torch.zeros(num_positions, channels)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: channels // 2])
    return table


def fold_tuples(x: torch.Tensor, tuple_len: int) -> torch.Tensor:
    """(N, C, T, V, M) -> (N*M, C, T/P, P*V): persons into the batch, frames into tuples."""
    n, c, t, v, m = x.shape
    x = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)  # (N*M, C, T, V)
    return x.reshape(n * m, c, t // tuple_len, tuple_len * v)  # (N*M, C, T', U)


def unfold_tuples(tokens: torch.Tensor, num_persons: int, tuple_len: int) -> torch.Tensor:
    """Inverse of `fold_tuples`: (N*M, C, T', P*V) -> (N, C, T, V, M)."""
    b, c, t_tuples, u = tokens.shape
    x = tokens.reshape(b // num_persons, num_persons, c, t_tuples * tuple_len, u // tuple_len)
    return x.permute(0, 2, 3, 4, 1)  # (N, C, T, V, M)


def conv_bn(channels_in: int, channels_out: int, kernel=(1, 1), padding=(0, 0)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel, padding=padding),
                         nn.BatchNorm2d(channels_out))


class STTFormerBlock(nn.Module):
    """Spatio-temporal tuples attention followed by inter-frame feature aggregation.

    `num_tokens` is the full tuple size U; the block runs on any kept subset of it.
    """

    def __init__(self, spec: BlockSpec, num_tokens: int, num_heads: int = 3):
        super().__init__()
        channels_in, channels_out, qk_dim = spec
        self.channels_in, self.channels_out = channels_in, channels_out
        self.qk_dim, self.num_heads = qk_dim, num_heads
        self.register_buffer("position_table", sinusoid_table(num_tokens, channels_in), persistent=False)
        self.qk_proj = nn.Conv2d(channels_in, 2 * num_heads * qk_dim, 1)
        self.alpha = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        self.attention_bias = nn.Parameter(torch.full((1, num_heads, num_tokens, num_tokens), 1.0 / num_tokens))
        pad_s, pad_t = SPATIAL_KERNEL // 2, TEMPORAL_KERNEL // 2
        self.spatial_out = conv_bn(num_heads * channels_in, channels_out, (1, SPATIAL_KERNEL), (0, pad_s))
        self.feed_forward = conv_bn(channels_out, channels_out)
        self.temporal_out = conv_bn(channels_out, channels_out, (TEMPORAL_KERNEL, 1), (pad_t, 0))
        if channels_in != channels_out:
            self.spatial_residual = conv_bn(channels_in, channels_out)
            self.temporal_residual = conv_bn(channels_out, channels_out)
        else:
            self.spatial_residual = self.temporal_residual = nn.Identity()
        # In place: each activation then keeps one tensor for backward (its output, which the next
        # layer keeps anyway) instead of two. Every input it sees is a fresh sum.
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def positional_encoding(self, token_index: torch.Tensor | None) -> torch.Tensor:
        if token_index is None:
            return self.position_table.t()[None, :, None, :]  # (1, Ci, 1, U)
        return self.position_table[token_index].permute(0, 2, 1)[:, :, None, :]  # (B, Ci, 1, Uk)

    def attention_prior(self, token_index: torch.Tensor | None) -> torch.Tensor:
        if token_index is None:
            return self.attention_bias  # (1, H, U, U)
        b, uk = token_index.shape
        rows = self.attention_bias[0][:, token_index]  # (H, B, Uk, U)
        cols = token_index[None, :, None, :].expand(self.num_heads, b, uk, uk)
        return rows.gather(3, cols).permute(1, 0, 2, 3)  # (B, H, Uk, Uk)

    def forward(self, x: torch.Tensor, token_index: torch.Tensor | None = None) -> torch.Tensor:
        b, c, t_tuples, u = x.shape  # (B, Ci, T', U)
        xs = x + self.positional_encoding(token_index)
        q, k = self.qk_proj(xs).view(b, 2 * self.num_heads, self.qk_dim, t_tuples, u).chunk(2, dim=1)
        # A_h = tanh(sum_{c,t} Q K / (d T')) * alpha_h + A0_h: no softmax (docs/model.md, block step 3).
        scores = torch.einsum("bhctu,bhctv->bhuv", q, k) / (self.qk_dim * t_tuples)  # (B, H, U, U)
        attention = torch.tanh(scores) * self.alpha + self.attention_prior(token_index)
        # Values are the block input itself: y_h[c, t, v] = sum_u x[c, t, u] A_h[u, v]. One product
        # against all heads side by side; broadcasting x over the heads instead would copy it H times
        # and keep that copy for backward (a sixth of the block's saved activations).
        heads = attention.transpose(1, 2).reshape(b, u, self.num_heads * u)  # (B, U, H*U)
        y = torch.bmm(x.reshape(b, c * t_tuples, u), heads)  # (B, Ci*T', H*U)
        y = y.view(b, c, t_tuples, self.num_heads, u).permute(0, 3, 1, 2, 4)  # (B, H, Ci, T', U)
        y = y.reshape(b, self.num_heads * c, t_tuples, u)  # (B, H*Ci, T', U)
        residual = self.spatial_residual(x)  # (B, Co, T', U)
        s = self.act(self.spatial_out(y) + residual)
        s = self.act(self.feed_forward(s) + residual)
        return self.act(self.temporal_out(s) + self.temporal_residual(s))  # (B, Co, T', U)


class STTFormerEncoder(nn.Module):
    """Input map (1x1 conv + BN + LeakyReLU) and the stack of STTFormer blocks."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.tuple_len = config.tuple_len
        _, num_tokens = config.tuple_grid
        first_width = config.encoder_blocks[0][0]
        self.input_map = nn.Sequential(nn.Conv2d(config.num_channels, first_width, 1),
                                       nn.BatchNorm2d(first_width), nn.LeakyReLU(0.1))
        self.blocks = nn.ModuleList(STTFormerBlock(spec, num_tokens, config.num_heads)
                                    for spec in config.encoder_blocks)
        self.out_channels = config.encoder_dim

    def forward(self, tokens: torch.Tensor, token_index: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, T'k, Uk) kept tokens -> (B, D, T'k, Uk) features."""
        h = self.input_map(tokens)
        for block in self.blocks:
            h = block(h, token_index)
        return h


class STTFormerClassifier(nn.Module):
    """Encoder + mean over tokens and persons + dropout + Linear: the public STTFormer model."""

    def __init__(self, config: ModelConfig, encoder: STTFormerEncoder | None = None):
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else STTFormerEncoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.encoder.out_channels, config.num_classes)
        init_weights(self.fc)
        if encoder is None:
            init_weights(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> (N, D) pooled features (mean over persons and tokens)."""
        n, _, _, _, m = x.shape
        h = self.encoder(fold_tuples(x, self.config.tuple_len))  # (N*M, D, T', U)
        return h.reshape(n, m, h.shape[1], -1).mean(dim=(1, 3))  # (N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))  # (N, classes)


def init_weights(module: nn.Module) -> None:
    """STTFormer's init: conv kaiming normal (fan_out), BN 1/0, Linear xavier normal with zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
