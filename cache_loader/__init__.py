"""The processes that fill and maintain the shared occupancy zone.

- `cache loader` (loader.py): one-shot, fills the zone from Postgres at start, exits 0;
- `cache manager` (manager.py): long-lived single writer of the zone (bus updates,
  reconciliation with Postgres, memcached replica, changes to the workers).

The occupancy module (`modules.occupancy`) declares these roles; see loader.py for
the hand-off between the two.
"""

from __future__ import annotations

from bizzyd.module import ProcessRole

from . import loader, manager

LOADER = ProcessRole("cache loader", loader.main, respawn=False)
MANAGER = ProcessRole("cache manager", manager.main)

roles = (LOADER, MANAGER)

__all__ = ["LOADER", "MANAGER", "roles"]
