"""Give back the CPUs and GPUs of placement groups that a stopped trial's Ray Train run left behind.

Ray Train's controller creates its workers' placement group. A placement group outlives the actor
that created it: the GCS keeps it until the job (here, the search driver) ends, and Train relies on
a detached PlacementGroupCleaner to remove it when the controller dies. When ASHA stops a trial,
Tune ends the trial's actor and the controller it owns dies mid-abort, and with ray 2.60 two races
leave a group behind (measured here: 2 of about 40 stopped trials in one search, and a search that
hung for 35 minutes with 2 leaked groups holding 1.9 of 2 CPUs):
- the controller dies after its abort told the cleaner to stand down and before it removed the
  group itself;
- the controller, already aborting, sees its workers die, restarts the worker group and creates a
  new placement group that nobody ever registers with the cleaner (ray-project/ray#62753).
Either way the group stays CREATED with nothing in it, and the search's last trials wait for CPUs
forever (Train retries a worker-group start that times out without limit).

`PlacementGroupReaper` is a Tune callback in the search driver. Every few seconds it reads the
placement group table from the GCS (cheap) and looks for CREATED, non-detached groups whose
creator actor is dead; only when there are some does it ask the state API whether that creator was
a Ray Train controller and whether any live actor is still in the group. A group that stays so for
`grace_s` (Train's own clean-up takes well under a second) is removed.
"""

from __future__ import annotations

import logging
import time

import ray.tune

logger = logging.getLogger(__name__)

TRAIN_CONTROLLER_CLASS = "TrainController"
STATE_API_LIMIT = 10_000  # the most the state API returns in one call (ray 2.60)


def groups_of_dead_creators() -> dict[str, str]:
    """CREATED, non-detached placement groups whose creator actor is dead: {group hex: creator hex}.

    Groups created by a driver have no creator actor and never appear. Ray's public
    `placement_group_table()` leaves out the creator, so this reads the GCS table it is built from
    (ray 2.60's GlobalState; a test covers it, so a Ray upgrade that moves it fails loudly).
    """
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    created = gcs_pb2.PlacementGroupTableData.CREATED
    found = {}
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        creator = group.creator_actor_id
        if group.state == created and not group.is_detached and creator.strip(b"\xff") and group.creator_actor_dead:
            found[group.placement_group_id.hex()] = creator.hex()
    return found


def orphaned_train_groups() -> set[str]:
    """Hex ids of CREATED placement groups whose creator, a Ray Train controller, is dead and that
    hold no live actor."""
    from ray.util.state import list_actors

    candidates = groups_of_dead_creators()
    if not candidates:
        return set()
    controllers = {a.actor_id for a in list_actors(
        filters=[("class_name", "=", TRAIN_CONTROLLER_CLASS), ("state", "=", "DEAD")],
        limit=STATE_API_LIMIT, raise_on_missing_output=False)}
    occupied = {a.placement_group_id for a in list_actors(
        filters=[("state", "!=", "DEAD")], detail=True, limit=STATE_API_LIMIT, raise_on_missing_output=False)}
    return {pg for pg, creator in candidates.items() if creator in controllers and pg not in occupied}


def remove_placement_group_by_id(pg_hex: str) -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_hex)))


class PlacementGroupReaper(ray.tune.Callback):
    def __init__(self, grace_s: float = 10.0, interval_s: float = 5.0):
        self.grace_s, self.interval_s = grace_s, interval_s
        self._last_sweep = 0.0
        self._suspects: dict[str, float] = {}   # placement group -> when it was first seen orphaned
        self._failed_before = False
        self.removed: list[str] = []

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self._last_sweep >= self.interval_s:
            self._last_sweep = now
            self.sweep(now)

    def sweep(self, now: float | None = None) -> list[str]:
        """One look; returns the placement groups removed by it."""
        now = time.monotonic() if now is None else now
        try:
            orphans = orphaned_train_groups()
        except Exception as exc:
            # Usually the dashboard (which serves the state API) is busy or restarting, and the next
            # sweep works; the first failure is a warning so that a Ray that moved the GCS table
            # reader does not silently switch the reaper off.
            logger.log(logging.INFO if self._failed_before else logging.WARNING,
                       "placement group sweep skipped: %s: %s", type(exc).__name__, exc)
            self._failed_before = True
            return []
        self._suspects = {pg: self._suspects.get(pg, now) for pg in orphans}
        removed = [pg for pg, since in self._suspects.items() if now - since >= self.grace_s]
        for pg in removed:
            remove_placement_group_by_id(pg)
            del self._suspects[pg]
            logger.warning("released placement group %s left behind by a stopped trial's Ray Train controller", pg)
        self.removed += removed
        return removed
