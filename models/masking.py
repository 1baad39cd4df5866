"""Spatial-temporal masking with exact counts (paper section 3.3.1, docs/model.md, "Masking").

Per sample: drop round(Mt * T) frames (the kept count rounded down to whole tuples of P), keep the
rest in time order; then drop round(Mj * V) joints, the same joints on every kept frame. Both
persons of a sample share the mask. Selection is MAE-style: argsort of uniform noise, exact counts,
never Bernoulli.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskPlan:
    """Which frames and joints each sample keeps, and the kept tokens' original tuple positions."""

    frame_index: torch.Tensor  # (N, Tk) kept frame indices, ascending
    joint_index: torch.Tensor  # (N, Vk) kept joint indices, ascending
    token_index: torch.Tensor  # (N, P*Vk) original position u = p*V + v of each kept token
    num_frames: int            # T
    num_joints: int            # V

    def kept(self) -> torch.Tensor:
        """(N, T, V) bool: True where the encoder saw the joint."""
        n = self.frame_index.shape[0]
        keep = torch.zeros(n, self.num_frames, self.num_joints, dtype=torch.bool, device=self.frame_index.device)
        flat = (self.frame_index[:, :, None] * self.num_joints + self.joint_index[:, None, :]).reshape(n, -1)
        keep.view(n, -1).scatter_(1, flat, True)
        return keep

    def flat_index(self) -> torch.Tensor:
        """(N, Tk*Vk) kept positions as t*V + v, in (frame, joint) row-major order."""
        n = self.frame_index.shape[0]
        return (self.frame_index[:, :, None] * self.num_joints + self.joint_index[:, None, :]).reshape(n, -1)


def random_masking(batch_size: int, num_frames: int, num_joints: int, kept_frames: int, kept_joints: int,
                   tuple_len: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> MaskPlan:
    """Draw a MaskPlan for `batch_size` samples with exactly `kept_frames` x `kept_joints` kept."""
    frame_noise = torch.rand(batch_size, num_frames, generator=generator, device=device)
    joint_noise = torch.rand(batch_size, num_joints, generator=generator, device=device)
    frame_index = frame_noise.argsort(dim=1)[:, :kept_frames].sort(dim=1).values  # (N, Tk)
    joint_index = joint_noise.argsort(dim=1)[:, :kept_joints].sort(dim=1).values  # (N, Vk)
    in_tuple = torch.arange(tuple_len, device=device)[None, :, None] * num_joints  # (1, P, 1)
    token_index = (in_tuple + joint_index[:, None, :]).reshape(batch_size, -1)    # (N, P*Vk)
    return MaskPlan(frame_index, joint_index, token_index, num_frames, num_joints)


def gather_kept(x: torch.Tensor, plan: MaskPlan) -> torch.Tensor:
    """(N, C, T, V, M) -> (N, C, Tk, Vk, M): the joints the encoder may see."""
    n, c, t, v, m = x.shape
    flat = x.reshape(n, c, t * v, m)
    index = plan.flat_index()[:, None, :, None].expand(n, c, -1, m)
    kept = flat.gather(2, index)  # (N, C, Tk*Vk, M)
    return kept.reshape(n, c, plan.frame_index.shape[1], plan.joint_index.shape[1], m)
