"""The warm pool's vocabulary: its groups, their default thresholds, the orders and filters of
`nurture report pool`. Plain values, so the command line can name them without loading the
database layer."""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("warm", "cooling", "cold")
WARM_DAYS = 90  # a reply this recent makes a candidate warm
COLD_DAYS = 180  # no contact either way for this long makes a candidate cold
SORTS = ("group", "last-reply", "last-contact", "email", "owner")


@dataclass(frozen=True)
class PoolFilter:
    owner: str | None = None
    tags: tuple[str, ...] = ()
    campaign: str | None = None
    group: str | None = None
