"""Skeleton layouts: which joints a dataset has and how they connect.

A layout travels in every dataset manifest so that a model, a plot or an exported artifact can
tell what joint `v` of axis V means without guessing from the joint count.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysearch.errors import UserInputError


@dataclass(frozen=True)
class SkeletonLayout:
    """Joint names and bones of one skeleton type.

    `bones` are (parent, child) pairs of 0-based joint indices; `center_joint` is the joint that
    preprocessing moves to the origin.
    """

    name: str
    num_joints: int
    joint_names: tuple[str, ...]
    bones: tuple[tuple[int, int], ...]
    center_joint: int

    def __post_init__(self) -> None:
        where = f"skeleton layout '{self.name}'"
        if self.num_joints < 1:
            raise UserInputError(f"{where}: num_joints must be >= 1, got {self.num_joints}")
        if len(self.joint_names) != self.num_joints:
            raise UserInputError(
                f"{where}: joint_names has {len(self.joint_names)} names but num_joints is "
                f"{self.num_joints}; fix: give one name per joint"
            )
        for a, b in self.bones:
            if not (0 <= a < self.num_joints and 0 <= b < self.num_joints):
                raise UserInputError(
                    f"{where}: bone [{a}, {b}] is outside joints 0..{self.num_joints - 1}"
                )
        if not 0 <= self.center_joint < self.num_joints:
            raise UserInputError(
                f"{where}: center_joint {self.center_joint} is outside joints "
                f"0..{self.num_joints - 1}"
            )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "num_joints": self.num_joints,
            "joint_names": list(self.joint_names),
            "bones": [[a, b] for a, b in self.bones],
            "center_joint": self.center_joint,
        }


# Kinect v2 joint order used by NTU RGB+D (file joint k is index k-1 here).
NTU25_JOINT_NAMES: tuple[str, ...] = (
    "spine_base", "spine_mid", "neck", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
    "spine_shoulder", "hand_tip_left", "thumb_left", "hand_tip_right", "thumb_right",
)

# Kinect v2 bone hierarchy as (parent, child), listed so that every parent appears before its
# children: forward kinematics (synthetic.py) walks it in this order. Root: spine_base.
NTU25_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 20), (20, 2), (2, 3),
    (20, 4), (4, 5), (5, 6), (6, 7), (7, 21), (6, 22),
    (20, 8), (8, 9), (9, 10), (10, 11), (11, 23), (10, 24),
    (0, 12), (12, 13), (13, 14), (14, 15),
    (0, 16), (16, 17), (17, 18), (18, 19),
)

# NTU preprocessing centres on the spine joint (NTU joint 2 = spine_mid, index 1).
NTU25_LAYOUT = SkeletonLayout(
    name="ntu-25",
    num_joints=25,
    joint_names=NTU25_JOINT_NAMES,
    bones=NTU25_BONES,
    center_joint=1,
)


def generic_layout(num_joints: int) -> SkeletonLayout:
    """Layout for data that says nothing about its joints: names j0.., no bones, centre 0."""
    return SkeletonLayout(
        name=f"generic-{num_joints}",
        num_joints=num_joints,
        joint_names=tuple(f"j{v}" for v in range(num_joints)),
        bones=(),
        center_joint=0,
    )


# MSR Action3D (Kinect v1 tracker, the joint order of the MSR Action3D skeleton files; see
# ../shared/data/msr_action3d/README.md, checked there against bone lengths, height and handedness).
MSR20_JOINT_NAMES: tuple[str, ...] = (
    "shoulder_left", "shoulder_right", "shoulder_center", "spine", "hip_left", "hip_right",
    "hip_center", "elbow_left", "elbow_right", "wrist_left", "wrist_right", "hand_left",
    "hand_right", "knee_left", "knee_right", "ankle_left", "ankle_right", "foot_left",
    "foot_right", "head",
)
MSR20_BONES: tuple[tuple[int, int], ...] = (
    (19, 2), (2, 3), (3, 6), (2, 0), (0, 7), (7, 9), (9, 11), (2, 1), (1, 8), (8, 10),
    (10, 12), (6, 4), (4, 13), (13, 15), (15, 17), (6, 5), (5, 14), (14, 16), (16, 18),
)
MSR20_LAYOUT = SkeletonLayout(
    name="msr-action3d-20",
    num_joints=20,
    joint_names=MSR20_JOINT_NAMES,
    bones=MSR20_BONES,
    center_joint=6,  # hip_center
)

# Layouts a generic import recognises by joint count alone (it says so on stderr). 25 joints
# could also be OpenPose BODY_25 and 20 joints the Kinect v1 SDK order (hip_center = 0): a user
# with such data passes --center-joint or --layout.
KNOWN_LAYOUTS: dict[int, SkeletonLayout] = {25: NTU25_LAYOUT, 20: MSR20_LAYOUT}
