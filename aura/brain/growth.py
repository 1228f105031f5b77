"""Growth schedules: how many experts are active at each epoch.

A schedule is written `"0:1,2:3,4:6"` (epoch:active_experts): one expert from epoch 0, three
from epoch 2, six from epoch 4. Experts are activated in index order, so the active set at any
epoch is `range(active_at(schedule, epoch))`. Capacity (the stacked expert axis E) is fixed at
init; growth only flips mask entries, so it never changes a shape or triggers a recompile.
"""

from __future__ import annotations

import numpy as np

__all__ = ["active_at", "active_mask", "newly_activated", "parse_growth_schedule"]

Schedule = tuple[tuple[int, int], ...]


def parse_growth_schedule(spec: str, capacity: int) -> Schedule:
    """Parses and validates `"epoch:count,epoch:count,..."`.

    Args:
      spec: e.g. `"0:1,2:3,4:6"`; whitespace around items is ignored.
      capacity: the number of expert slots E of the model.

    Returns:
      `((epoch, count), ...)` with epochs strictly increasing from 0 and counts non-decreasing
      in 1..capacity.

    Raises:
      ValueError: malformed text (quoted), the first epoch not 0, epochs not increasing, a
        count below 1, counts decreasing, or a count above `capacity` (both named).
    """
    if capacity < 1:
        raise ValueError(f"expert capacity={capacity} must be >= 1")
    items = [s.strip() for s in spec.split(",")]
    if not spec.strip() or any(not s for s in items):
        raise ValueError(
            f"growth schedule {spec!r} is malformed: expected 'epoch:count,...', e.g. '0:1,2:3,4:6'"
        )
    schedule: list[tuple[int, int]] = []
    for item in items:
        parts = item.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            epoch, count = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(
                f"growth schedule {spec!r}: item {item!r} is not 'epoch:count' with integers "
                "(e.g. '0:1,2:3,4:6')"
            ) from None
        schedule.append((epoch, count))
    if schedule[0][0] != 0:
        raise ValueError(
            f"growth schedule {spec!r} must start at epoch 0, got epoch {schedule[0][0]}"
        )
    for (e0, c0), (e1, c1) in zip(schedule, schedule[1:], strict=False):
        if e1 <= e0:
            raise ValueError(f"growth schedule {spec!r}: epochs must increase, got {e1} after {e0}")
        if c1 < c0:
            raise ValueError(
                f"growth schedule {spec!r}: expert counts must not decrease, got {c1} after {c0}"
                " (use pruning to remove experts)"
            )
    for _, count in schedule:
        if count < 1:
            raise ValueError(f"growth schedule {spec!r}: expert count {count} must be >= 1")
        if count > capacity:
            raise ValueError(
                f"growth schedule {spec!r} asks for {count} experts but the capacity is "
                f"{capacity}; raise the capacity or lower the count"
            )
    return tuple(schedule)


def active_at(schedule: Schedule, epoch: int) -> int:
    """Number of active experts during `epoch` (the last entry whose epoch is <= `epoch`).

    Raises:
      ValueError: negative epoch.
    """
    if epoch < 0:
        raise ValueError(f"epoch={epoch} must be >= 0")
    count = schedule[0][1]
    for start, c in schedule:
        if start <= epoch:
            count = c
    return count


def active_mask(schedule: Schedule, epoch: int, capacity: int) -> np.ndarray:
    """Boolean `[E]` mask of the experts active during `epoch` (the first `active_at` slots)."""
    return np.arange(capacity) < active_at(schedule, epoch)


def newly_activated(schedule: Schedule, epoch: int) -> list[int]:
    """Expert indices that switch on at the start of `epoch`.

    At epoch 0 these are the initially active experts (they start from their own init and have
    no teacher); at a later epoch, the indices added since the previous epoch, which a training
    loop typically clones from a teacher (`aura.brain.cloning`).
    """
    before = 0 if epoch == 0 else active_at(schedule, epoch - 1)
    return list(range(before, active_at(schedule, epoch)))
