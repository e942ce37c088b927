"""Planning: pure decisions about where bytes go (no I/O, no clock).

``planner`` places pieces of files on devices (REQUIREMENTS P1-P5, R3); ``reuse``
decides which files an earlier set already holds (incremental, resume); ``pacing``
decides when a time-balanced device has fallen behind.
"""

from parbackup.plan.planner import (
    coalesce,
    plan,
    replan,
    shares_of,
    sort_pieces,
    split_at_threshold,
    threshold_of,
)

__all__ = [
    "coalesce",
    "plan",
    "replan",
    "shares_of",
    "sort_pieces",
    "split_at_threshold",
    "threshold_of",
]
