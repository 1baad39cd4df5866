"""The coordinate normalisation every importer applies, and `predict` applies to raw input.

One sequence x (C, T, V, M) (or a batch (..., C, T, V, M)); the coordinate channels are the
first min(C, 3) (x, y, z, or x, y for 2D data); further channels (a confidence, say) are left
alone. An absent person (all zeros in a frame) stays all zeros.

Centring, the NTU convention (ST-GCN/CTR-GCN `seq_transformation`): origin = the centre joint
of person 1 in the first frame where person 1 is present; it is subtracted from every present
(frame, person) pair, so the sequence's motion through the scene is kept and the distance to
the sensor is removed.

Scaling (off by default), after centring, one number s per sequence measured on person 1 over
its present frames, and every coordinate divided by s:
    bone   s = mean length of `scale_bone` (a reference bone, e.g. the torso)
    body   s = mean distance of the joints from their centroid (a body-size measure)
A degenerate s (below 1e-6 m, e.g. a sequence with every joint at one point) leaves the
sequence unscaled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from raysearch.data.layouts import SkeletonLayout
from raysearch.errors import UserInputError

SCALE_MODES: tuple[str, ...] = ("none", "bone", "body")
_MIN_SCALE = 1e-6


@dataclass(frozen=True)
class Normalisation:
    """Centre joint (None: no centring) and scale mode; `scale_bone` (a, b) only for "bone"."""

    center_joint: int | None
    scale: str = "none"
    scale_bone: tuple[int, int] | None = None

    def check(self, num_joints: int, where: str) -> "Normalisation":
        """This object, after checking it against a layout of `num_joints` joints."""
        if self.center_joint is not None and not 0 <= self.center_joint < num_joints:
            raise UserInputError(f"{where}: centre joint {self.center_joint} is outside joints "
                                 f"0..{num_joints - 1}; give a joint index or name of the layout")
        if self.scale not in SCALE_MODES:
            raise UserInputError(f"{where}: scale {self.scale!r} is unknown; choose one of "
                                 f"{', '.join(SCALE_MODES)}")
        if self.scale == "bone":
            if self.scale_bone is None:
                raise UserInputError(f"{where}: scale 'bone' needs a reference bone; pass "
                                     f"--scale-bone A-B (two joints of the layout)")
            a, b = self.scale_bone
            if a == b or not (0 <= a < num_joints and 0 <= b < num_joints):
                raise UserInputError(f"{where}: scale bone {a}-{b} must join two different "
                                     f"joints in 0..{num_joints - 1}")
        elif self.scale_bone is not None:
            raise UserInputError(f"{where}: a scale bone is given but scale is {self.scale!r}; "
                                 f"use --scale bone with --scale-bone")
        return self

    def apply(self, x: np.ndarray) -> np.ndarray:
        """A normalised float32 copy of x (..., C, T, V, M)."""
        out = np.array(x, dtype=np.float32, copy=True)
        if out.size == 0 or (self.center_joint is None and self.scale == "none"):
            return out
        k = min(out.shape[-4], 3)
        coords = out[..., :k, :, :, :]  # a view: (..., k, T, V, M)
        present = _present(out)  # (..., T, M)
        if self.center_joint is not None:
            first = np.argmax(present[..., 0], axis=-1)  # (...); 0 when person 1 never appears
            track = coords[..., :, :, self.center_joint, 0]  # (..., k, T)
            origin = np.take_along_axis(track, first[..., None, None], axis=-1)  # (..., k, 1)
            coords -= origin[..., None, None] * present[..., None, :, None, :]
        if self.scale != "none":
            person = coords[..., 0]  # (..., k, T, V)
            if self.scale == "bone":
                a, b = self.scale_bone
                size = np.linalg.norm(person[..., a] - person[..., b], axis=-2)  # (..., T)
            else:
                centroid = person.mean(axis=-1, keepdims=True)
                size = np.linalg.norm(person - centroid, axis=-3).mean(axis=-1)  # (..., T)
            seen = present[..., 0]
            s = (size * seen).sum(axis=-1) / np.maximum(seen.sum(axis=-1), 1)  # (...)
            s = np.where(np.isfinite(s) & (s > _MIN_SCALE), s, 1.0).astype(np.float32)
            coords /= s[..., None, None, None, None]
        return out

    def describe(self, layout: SkeletonLayout | None = None) -> str:
        def name(j: int) -> str:
            return f"{layout.joint_names[j]} (joint {j})" if layout else f"joint {j}"

        if self.center_joint is None:
            centre = "not centred"
        else:
            centre = (f"centred on {name(self.center_joint)} of person 1 in its first present "
                      f"frame")
        if self.scale == "bone":
            a, b = self.scale_bone
            return f"{centre}; divided by the mean length of bone {name(a)}-{name(b)}"
        if self.scale == "body":
            return f"{centre}; divided by the mean joint distance from the centroid (person 1)"
        return f"{centre}; not scaled"

    def to_json(self, layout: SkeletonLayout | None = None) -> dict[str, Any]:
        return {
            "center_joint": self.center_joint,
            "scale": self.scale,
            "scale_bone": list(self.scale_bone) if self.scale_bone else None,
            "description": self.describe(layout),
        }

    @classmethod
    def from_json(cls, obj: Any, num_joints: int, where: str) -> "Normalisation":
        """Parse what `to_json` wrote; every error names `where` and the field."""
        if not isinstance(obj, dict):
            raise UserInputError(f"{where}: 'normalisation' must be an object with center_joint, "
                                 f"scale and scale_bone, got {type(obj).__name__}")
        center, scale, bone = obj.get("center_joint"), obj.get("scale", "none"), obj.get("scale_bone")
        if center is not None and (isinstance(center, bool) or not isinstance(center, int)):
            raise UserInputError(f"{where}: normalisation.center_joint must be a joint index or "
                                 f"null, got {center!r}")
        if not isinstance(scale, str):
            raise UserInputError(f"{where}: normalisation.scale must be one of "
                                 f"{', '.join(SCALE_MODES)}, got {scale!r}")
        if bone is not None:
            if not (isinstance(bone, list) and len(bone) == 2 and all(
                    isinstance(j, int) and not isinstance(j, bool) for j in bone)):
                raise UserInputError(f"{where}: normalisation.scale_bone must be [a, b] joint "
                                     f"indices or null, got {bone!r}")
            bone = (bone[0], bone[1])
        return cls(center, scale, bone).check(num_joints, f"{where}: normalisation")


def _present(x: np.ndarray) -> np.ndarray:
    """(..., T, M): whether a person has any nonzero coordinate in a frame, x (..., C, T, V, M).

    Equal to np.any(x != 0, axis=(-4, -2)); or-ing slices is about twice as fast as numpy's
    reduction over two strided axes, which matters for the synthetic generator's big batches."""
    nonzero = x != 0
    over_joints = nonzero[..., 0, :].copy()  # (..., C, T, M)
    for v in range(1, x.shape[-2]):
        over_joints |= nonzero[..., v, :]
    present = over_joints[..., 0, :, :].copy()  # (..., T, M)
    for c in range(1, x.shape[-4]):
        present |= over_joints[..., c, :, :]
    return present


def layout_normalisation(layout: SkeletonLayout) -> Normalisation:
    """The default: centre on the layout's centre joint, no scaling."""
    return Normalisation(layout.center_joint)


def parse_joint(value: str, layout: SkeletonLayout, flag: str) -> int:
    """A joint given as an index or as one of the layout's names."""
    text = str(value).strip()
    if text.isdigit():
        index = int(text)
        if index < layout.num_joints:
            return index
    elif text in layout.joint_names:
        return layout.joint_names.index(text)
    shown = ", ".join(layout.joint_names[:32]) + (", ..." if layout.num_joints > 32 else "")
    raise UserInputError(f"{flag} {value!r}: not a joint of layout {layout.name}; give an index in "
                         f"0..{layout.num_joints - 1} or a name ({shown})")


def parse_bone(value: str, layout: SkeletonLayout, flag: str) -> tuple[int, int]:
    """A bone given as 'A-B' or 'A,B' (indices or names)."""
    text = str(value)
    parts = text.split(",") if "," in text else text.split("-")
    if len(parts) != 2:
        raise UserInputError(f"{flag} {value!r}: expected two joints as A-B (e.g. 3-6 or "
                             f"spine-hip_center)")
    return parse_joint(parts[0], layout, flag), parse_joint(parts[1], layout, flag)


@dataclass(frozen=True)
class NormalisationRequest:
    """What the user asked for (`prepare` flags); resolved against a layout by `resolve`.

    center_joint: an index or a joint name, "none" for no centring, None for the layout's own.
    scale: one of SCALE_MODES; scale_bone "A-B" for scale "bone" (None: the layout's torso bone
    when it has one).
    """

    center_joint: str | None = None
    scale: str = "none"
    scale_bone: str | None = None

    def resolve(self, layout: SkeletonLayout, where: str) -> tuple[SkeletonLayout, Normalisation]:
        """(layout with its centre joint set to the chosen one, the normalisation)."""
        if self.center_joint is None:
            center: int | None = layout.center_joint
        elif str(self.center_joint).strip().lower() == "none":
            center = None
        else:
            center = parse_joint(self.center_joint, layout, "--center-joint")
        if self.scale not in SCALE_MODES:
            raise UserInputError(f"--scale {self.scale!r}: choose one of {', '.join(SCALE_MODES)}")
        bone = None
        if self.scale_bone is not None:
            if self.scale != "bone":
                raise UserInputError(f"--scale-bone {self.scale_bone!r} needs --scale bone")
            bone = parse_bone(self.scale_bone, layout, "--scale-bone")
        elif self.scale == "bone":
            bone = TORSO_BONES.get(layout.name)
            if bone is None:
                raise UserInputError(f"--scale bone: layout {layout.name} has no default reference "
                                     f"bone; pass --scale-bone A-B")
        normalisation = Normalisation(center, self.scale, bone).check(layout.num_joints, where)
        if center is not None and center != layout.center_joint:
            layout = replace(layout, center_joint=center)
        return layout, normalisation


# Default reference bone of `--scale bone`: the torso, the least articulated bone.
TORSO_BONES: dict[str, tuple[int, int]] = {"ntu-25": (0, 1), "msr-action3d-20": (3, 6)}


def read_layout_file(path: str | Path, num_joints: int) -> SkeletonLayout:
    """A layout from a small JSON file:
    {"name": "...", "joint_names": [...], "bones": [[a, b], ...], "center_joint": 6 or "hip"}.
    Only joint_names is required; bones default to none and the centre joint to 0."""
    from raysearch.data.jsonfile import read_json_file

    file = Path(path)
    fix = "fix the layout file (see `raysearch prepare npz --help`)"
    obj = read_json_file(file, fix)
    where = f"file {file}"
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: must be a JSON object with joint_names (and name, bones, "
                             f"center_joint); {fix}")
    names = obj.get("joint_names")
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
            or len(set(names)) != len(names)):
        raise UserInputError(f"{where}: 'joint_names' must be a non-empty list of distinct "
                             f"strings; {fix}")
    if len(names) != num_joints:
        raise UserInputError(f"{where}: {len(names)} joint_names but the data has {num_joints} "
                             f"joints per person; give one name per joint")
    name = obj.get("name", f"custom-{num_joints}")
    bones = obj.get("bones", [])
    if not isinstance(name, str) or not name:
        raise UserInputError(f"{where}: 'name' must be a non-empty string; {fix}")
    if not isinstance(bones, list) or not all(
            isinstance(b, list) and len(b) == 2
            and all(isinstance(j, int) and not isinstance(j, bool) for j in b) for b in bones):
        raise UserInputError(f"{where}: 'bones' must be a list of [parent, child] joint indices; "
                             f"{fix}")
    generic = SkeletonLayout(name, num_joints, tuple(names), (), 0)
    center = obj.get("center_joint", 0)
    if isinstance(center, bool) or not isinstance(center, (int, str)):
        raise UserInputError(f"{where}: 'center_joint' must be a joint index or name; {fix}")
    center_index = parse_joint(str(center), generic, f"{where}: center_joint")
    return SkeletonLayout(name, num_joints, tuple(names), tuple((a, b) for a, b in bones),
                          center_index)
