"""Shared-memory zones: the seqlock table never shows a torn slot to a reader."""

from __future__ import annotations

import os
import time

from bizzyd.shm import SeqlockTable, Zone, ZoneSpec

SPEC = ZoneSpec("test.seqlock", (("seq", "Q"), ("a", "q"), ("b", "q"), ("c", "q")), 2)


def test_readers_never_see_a_torn_slot():
    zone = Zone.create(SPEC, int(time.time() * 1000) % 100000)
    try:
        table = SeqlockTable(zone)
        table.write(0, (1, 1, 2))
        pid = os.fork()
        if pid == 0:  # the single writer: a + b == c always holds for a whole slot
            deadline = time.monotonic() + 3
            n = 1
            while time.monotonic() < deadline:
                n += 1
                table.write(0, (n, n * 3, n * 4))
            os._exit(0)
        torn = reads = 0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            for _ in range(1000):
                try:
                    a, b, c = table.read(0)
                except TimeoutError:
                    continue
                reads += 1
                torn += a + b != c
        os.waitpid(pid, 0)
        assert reads > 50_000
        assert torn == 0
    finally:
        zone.unlink()
        zone.close()
