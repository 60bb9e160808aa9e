"""The shared occupancy zone: hive id → slot, one writer, lock-free readers.

Layout
------
`occupancy` (capacity `occupancy.zone_capacity`): one slot per hive,

    seq Q | hive_id q | occupancy i | capacity i | total_in q | total_out q |
    updated_at d | flags I | reserved I                      (56 bytes)

`seq` is the seqlock counter (`bizzyd.shm.SeqlockTable`: odd while a write is in
progress), loaded and stored as one 8-byte word (`SeqlockTable.words`); the rest of
the slot is packed with a second struct while the counter is odd.

`reserved` pads the slot to a multiple of 8 bytes so that every slot's `seq` is
8-byte aligned (an aligned 8-byte load or store is one instruction; an
unaligned one may straddle two cache lines).

`occupancy.meta` (one slot): `loaded`, `full`, `hives`, the serial of the
occupancy segment it describes, timestamps and the writer's pid; see META_FIELDS.

Index
-----
Open addressing inside the zone itself: a hive's home slot is a multiplicative hash
of its id reduced to the capacity (the high bits of id * 2^64/φ, so sequential and
strided ids spread alike); collisions probe linearly, wrapping around.  `hive_id`
0 marks an empty slot (hive ids are identities, ≥ 1).  Slots are never freed: a
hive that disappears from Postgres keeps its slot with FLAG_DELETED, so probe
chains never break and a reader never needs a lock: it reads slots through the
seqlock and stops at the hive or at the first empty slot.  The writer inserts a
hive by writing the whole slot (hive_id included) under the seqlock, so a reader
sees either an empty slot or the complete hive.

The zone holds at most `capacity * MAX_LOAD` hives, which keeps probe chains short
(linear probing at 90 % load: ~5.5 probes for a hit, ~50 for a miss).  Past that
it is "full": the writer sets `meta.full`, logs once, and the hives that do not fit
are served from memcached/Postgres.

Sequence numbers
----------------
The seqlock counter doubles as the hive's change sequence (the SSE event id): it
only grows while the slot lives.  When the writer first fills an empty slot it
starts the counter at `seed_sequence()`, a value derived from the wall clock, so a
hive's sequence keeps growing across a zone recreated by a restart or a reload and
a client's `Last-Event-ID` from before is always "older".

Memory ordering: the seqlock relies on stores becoming visible in program order and
loads not being reordered with each other (x86-64's TSO; each store here is a
separate C call, so the compiler cannot reorder them).  Weakly ordered CPUs (ARM)
would need fences around the counter.
"""

from __future__ import annotations

import fcntl
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from bizzyd.shm import BusySlot, SeqlockTable, Zone, ZoneSpec

ZONE = "occupancy"
META = "occupancy.meta"

FIELDS = (("seq", "Q"), ("hive_id", "q"), ("occupancy", "i"), ("capacity", "i"),
          ("total_in", "q"), ("total_out", "q"), ("updated_at", "d"), ("flags", "I"),
          ("reserved", "I"))
META_FIELDS = (("loaded", "Q"), ("full", "Q"), ("hives", "Q"), ("zone_serial", "Q"),
               ("loaded_at", "d"), ("writer_pid", "Q"), ("reconciled_at", "d"),
               ("drift_total", "Q"))

# indexes in a whole slot row (seq first), as `read_row`, `find` and `lookup` return it
R_SEQ, R_HIVE, R_OCC, R_CAP, R_IN, R_OUT, R_AT, R_FLAGS = range(8)

FLAG_LIVE = 1  # the hive has a hive_occupancy row (else occupancy 0, never updated)
FLAG_DELETED = 2  # the hive is gone from Postgres: readers treat the slot as a miss
FLAG_STALE = 4  # repaired after a writer died mid-write: not served until reconciled

MAX_LOAD = 0.9
GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
WRITER_LOCK_BYTE = 8  # byte of the meta segment whose record lock makes the writer


# The cache manager's counters (one row; exported by modules.status as
# bizzyd_occupancy_<field>): reconciliations, and the slots they corrected by kind
# (loader.sync_rows).  Corrections mean the zone had missed a change: 0 is the goal.
METRICS = "metrics.occupancy"
DRIFT_KINDS = ("behind", "differs", "capacity", "stale", "reappeared", "deleted")
METRICS_FIELDS = (("reconciles_total", "Q"),
                  *((f'reconcile_corrections_total{{kind="{k}"}}', "Q") for k in DRIFT_KINDS))


def zone_specs(capacity: int) -> list[ZoneSpec]:
    return [ZoneSpec(ZONE, FIELDS, capacity), ZoneSpec(META, META_FIELDS, 1)]


def metrics_spec() -> ZoneSpec:
    return ZoneSpec(METRICS, METRICS_FIELDS, 1)


def home(hive_id: int, capacity: int) -> int:
    """The hive's home slot: high bits of a Fibonacci hash, reduced to the capacity."""
    return (((hive_id * GOLDEN) & MASK64) * capacity) >> 64


def serial_of(zone: Zone) -> int:
    """The segment's serial (its name ends with it): which incarnation of the zone."""
    return int(zone.path.name.rsplit(".", 1)[1])


def seed_sequence(now: float | None = None) -> int:
    """An even starting sequence that grows with the wall clock (ms << 20)."""
    ms = int((time.time() if now is None else now) * 1000)
    return (ms << 20) & ~1


@dataclass
class Slot:
    """A consistent copy of one slot."""

    index: int
    seq: int
    hive_id: int
    occupancy: int
    capacity: int
    total_in: int
    total_out: int
    updated_at: float
    flags: int


class OccupancyTable(SeqlockTable):
    """The occupancy zone with its index.  Readers: `lookup`.  The writer: `put`."""

    def __init__(self, zone: Zone, meta: Zone) -> None:
        super().__init__(zone)
        self.meta = meta
        self.capacity = zone.spec.capacity
        self.limit = max(1, int(self.capacity * MAX_LOAD))
        self.serial = serial_of(zone)
        self._base = zone.offset(0)
        self._size = zone.slot_size
        self._row = zone.slot  # the whole slot, seq first
        self._row_of = self._row.unpack_from
        # everything after the seq: struct's pack_into zero-fills the whole struct
        # before it writes the fields, so packing the seq along with the rest would
        # make it 0 (even!) for a moment and let a reader accept a zeroed slot
        self._body = struct.Struct("=" + "".join(code for _, code in FIELDS[1:]))

    # -- readers (any process, lock-free) ------------------------------------------

    def read_row(self, index: int) -> tuple:
        """The whole slot (seq first), consistent: the seqlock read of SeqlockTable."""
        start = self._base + index * self._size
        buf, words, word, row_s = self.buf, self.words, start >> 3, self._row
        busy = None
        while True:
            before = words[word]
            if not before & 1:
                row = row_s.unpack_from(buf, start)
                if row[0] == before and words[word] == before:
                    return row
            if busy is None:
                busy = BusySlot()
            if not busy.wait():
                raise TimeoutError(f"zone {ZONE}: slot {index} kept changing")

    def find(self, hive_id: int) -> tuple[int, tuple | None]:
        """(slot index, row with seq first) of a hive, or (-1, None) when absent.

        A deleted or stale slot is returned too: the caller decides (see `lookup`).
        Raises TimeoutError if a slot is stuck odd (its writer died mid-write and the
        next writer has not repaired it yet).
        """
        capacity = self.capacity
        index = (((hive_id * GOLDEN) & MASK64) * capacity) >> 64
        for _ in range(capacity):
            row = self.read_row(index)
            found = row[1]
            if found == hive_id:
                return index, row
            if found == 0:
                return -1, None
            index += 1
            if index == capacity:
                index = 0
        return -1, None

    def lookup(self, hive_id: int) -> tuple | None:
        """The servable row (seq first) of a hive, or None: not there, or not usable
        (deleted, stale, or a slot that kept changing)."""
        found = self.locate(hive_id)
        return None if found is None else found[1]

    def locate(self, hive_id: int) -> tuple[int, tuple] | None:
        """(byte offset of the slot, servable row with seq first), or None.

        The request path: the probe with the seqlock read inlined (the first try of
        `read_row`; a busy slot goes to `read_row`'s retry loop).  A hive keeps its
        slot for the zone's life, so a caller may remember the offset and later read
        just the sequence there to know whether the slot changed.
        """
        capacity = self.capacity
        index = (((hive_id * GOLDEN) & MASK64) * capacity) >> 64
        buf, base, size = self.buf, self._base, self._size
        words, row_of = self.words, self._row_of
        probes = 0
        while probes < capacity:
            start = base + index * size
            before = words[start >> 3]
            row = row_of(buf, start)
            if before & 1 or row[0] != before or words[start >> 3] != before:
                try:
                    row = self.read_row(index)
                except TimeoutError:
                    return None
            found = row[1]
            if found == hive_id:
                return None if row[7] & (FLAG_DELETED | FLAG_STALE) else (start, row)
            if found == 0:
                return None
            index += 1
            probes += 1
            if index == capacity:
                index = 0
        return None

    def loaded(self) -> bool:
        meta = self.meta
        return bool(meta.get(0, "loaded")) and meta.get(0, "zone_serial") == self.serial

    def full(self) -> bool:
        return bool(self.meta.get(0, "full")) and self.meta.get(0, "zone_serial") == self.serial

    def slots(self) -> Iterator[Slot]:
        """Every occupied slot (a consistent copy each; for the writer and tests)."""
        for index in range(self.capacity):
            row = self.read_row(index)
            if row[1]:
                yield Slot(index, *row[:8])

    # -- the writer (one process at a time: see WriterLock) --------------------------

    def put(self, hive_id: int, occupancy: int, capacity: int, total_in: int, total_out: int,
            updated_at: float, flags: int, index: int = -1) -> tuple[int, int]:
        """Write a hive's slot (inserting it if needed): (slot index, new sequence).

        `index` is the hive's slot when the caller just found it.  Returns (-1, 0)
        when the hive is not there and the zone is full.
        """
        if index < 0:
            index = self._slot_for_insert(hive_id)
            if index < 0:
                return -1, 0
        start = self._base + index * self._size
        words, word = self.words, start >> 3
        seq = words[word]
        if seq & 1:  # left odd by a writer that died: resume from the next even value
            seq += 1
        words[word] = seq + 1
        self._body.pack_into(self.buf, start + 8, hive_id, occupancy, capacity, total_in,
                             total_out, updated_at, flags, 0)
        words[word] = seq + 2
        return index, seq + 2

    def _slot_for_insert(self, hive_id: int) -> int:
        capacity = self.capacity
        index = home(hive_id, capacity)
        for _ in range(capacity):
            start = self._base + index * self._size
            found = struct.unpack_from("=q", self.buf, start + 8)[0]
            if found == hive_id:
                return index
            if found == 0:
                break
            index = (index + 1) % capacity
        else:
            return -1
        hives = self.meta.get(0, "hives")
        if hives >= self.limit:
            return -1
        # an empty slot: start its sequence from the clock so it grows across restarts
        seed = seed_sequence()
        if seed > self.seq_at(start):
            self.set_seq(start, seed)
        self.meta.set(0, "hives", hives + 1)
        return index

    def repair(self) -> list[int]:
        """Slots left odd by a writer killed mid-write: made even and marked stale."""
        fixed = []
        for index in range(self.capacity):
            start = self._base + index * self._size
            seq = self.seq_at(start)
            if seq & 1:
                row = self._row.unpack_from(self.buf, start)
                flags = row[R_FLAGS] | FLAG_STALE
                self._body.pack_into(self.buf, start + 8, *row[1:R_FLAGS], flags, 0)
                self.set_seq(start, seq + 1)
                fixed.append(index)
        return fixed

    def count(self) -> int:
        return sum(1 for index in range(self.capacity)
                   if struct.unpack_from("=q", self.buf, self._base + index * self._size + 8)[0])

    def reset_meta(self) -> None:
        """Claim the meta slot for this zone incarnation (not loaded, empty or not)."""
        meta = self.meta
        meta.set(0, "loaded", 0)
        meta.set(0, "full", 0)
        meta.set(0, "hives", self.count())
        meta.set(0, "zone_serial", self.serial)

    def mark_loaded(self) -> None:
        self.meta.set(0, "loaded_at", time.time())
        self.meta.set(0, "loaded", 1)

    def mark_full(self) -> bool:
        """Set the full flag; True the first time (so the caller logs once)."""
        if self.meta.get(0, "full"):
            return False
        self.meta.set(0, "full", 1)
        return True


class WriterLock:
    """Who may write the occupancy zone: a POSIX record lock on a byte of the meta
    segment.  The kernel drops it when its process dies (even by SIGKILL), and it is
    not inherited across fork.  The cache loader holds it while it loads; the cache
    manager for its whole life (a manager of the next generation waits for the old
    one to exit)."""

    def __init__(self, meta: Zone) -> None:
        self.fd = meta.fd
        self.held = False

    def try_acquire(self) -> bool:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, WRITER_LOCK_BYTE)
        except OSError:
            return False
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, WRITER_LOCK_BYTE)
            self.held = False


def table(zones: dict[str, Zone]) -> OccupancyTable:
    """The process's view of the occupancy zone (from `ctx.zones`)."""
    return OccupancyTable(zones[ZONE], zones[META])
