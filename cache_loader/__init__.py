"""The processes that fill and maintain the shared occupancy zone.

- `cache loader` (loader.py): one-shot, fills the zone from Postgres at start, exits 0;
- `cache manager` (manager.py): long-lived single writer of the zone (bus updates,
  reconciliation with Postgres, memcached replica, changes to the workers).

They are a module of their own: `modules.occupancy` requires it (so it is loaded
with it), and these processes use the occupancy module's public pieces (zone layout,
replica), never the other way round.  See loader.py for the hand-off between the two.
"""

from __future__ import annotations

from bizzyd.module import Module, ProcessRole

from . import loader, manager

LOADER = ProcessRole("cache loader", loader.main, respawn=False)
MANAGER = ProcessRole("cache manager", manager.main)

roles = (LOADER, MANAGER)

module = Module(name="cache_loader", roles=roles, doc=__doc__ or "")

__all__ = ["LOADER", "MANAGER", "module", "roles"]
