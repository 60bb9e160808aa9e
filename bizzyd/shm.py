"""Shared-memory zones: fixed-size tables of slots that every process maps.

Theory of operation
-------------------
A zone is declared as data (`ZoneSpec`: a name, the slot layout as (field, struct
code) pairs, a capacity).  The master creates it before forking, as a file in
/dev/shm named `bizzyd.<master pid>.<zone>.<serial>` mapped with MAP_SHARED; children
inherit the mapping through fork, so nobody attaches by name.  A segment starts
with a header (magic, layout version, capacity, slot size, owner pid).

Across a reload (`ZoneSet.update`) a zone whose name, layout and capacity are
unchanged is kept with its contents; a changed one is created anew and the old
segment's name is removed (processes that still map it keep their pages until they
exit).  The master removes its segments when it exits; at start it removes the
segments of masters that are no longer alive (e.g. after `kill -9`).

Concurrency is the zone user's business: the usual rule is one writer per slot
(a process's own counters row), or one writer for the whole zone with a per-slot
sequence counter for readers (see `SeqlockTable`).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIX = "bizzyd."
MAGIC = 0x42495A5A  # "BIZZ"
HEADER = struct.Struct("=IIQQQ")  # magic, version, capacity, slot size, owner pid


@dataclass(frozen=True)
class ZoneSpec:
    """A zone as data: `fields` are (name, struct code) pairs, e.g. ("count", "q")."""

    name: str
    fields: tuple[tuple[str, str], ...]
    capacity: int

    @property
    def slot(self) -> struct.Struct:
        return struct.Struct("=" + "".join(code for _, code in self.fields))

    @property
    def size(self) -> int:
        return HEADER.size + self.capacity * self.slot.size

    def offsets(self) -> dict[str, tuple[int, struct.Struct]]:
        """Each field's byte offset within a slot and its one-field struct."""
        out, offset = {}, 0
        for name, code in self.fields:
            single = struct.Struct("=" + code)
            out[name] = (offset, single)
            offset += single.size
        return out


class Zone:
    """One mapped zone; slots are read and written as tuples or by field."""

    def __init__(self, spec: ZoneSpec, path: Path, buf: mmap.mmap, fd: int) -> None:
        self.spec, self.path, self.buf, self.fd = spec, path, buf, fd
        self.slot = spec.slot
        self.slot_size = self.slot.size
        self.fields = spec.offsets()

    @classmethod
    def create(cls, spec: ZoneSpec, serial: int) -> Zone:
        path = SHM_DIR / f"{PREFIX}{os.getpid()}.{spec.name}.{serial}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, spec.size)
            buf = mmap.mmap(fd, spec.size, mmap.MAP_SHARED)
        except OSError:
            os.close(fd)
            raise
        HEADER.pack_into(buf, 0, MAGIC, 1, spec.capacity, spec.slot.size, os.getpid())
        return cls(spec, path, buf, fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """A cross-process mutex over the whole zone (a POSIX record lock on its file).

        Record locks belong to processes, not to file descriptions, so forked
        children holding the same inherited fd exclude each other.
        """
        fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, 0)

    def offset(self, index: int) -> int:
        if not 0 <= index < self.spec.capacity:
            raise IndexError(f"zone {self.spec.name}: slot {index} out of range")
        return HEADER.size + index * self.slot_size

    def read(self, index: int) -> tuple:
        return self.slot.unpack_from(self.buf, self.offset(index))

    def write(self, index: int, values: Sequence) -> None:
        self.slot.pack_into(self.buf, self.offset(index), *values)

    def get(self, index: int, field: str) -> int | float:
        offset, single = self.fields[field]
        return single.unpack_from(self.buf, self.offset(index) + offset)[0]

    def set(self, index: int, field: str, value: int | float) -> None:
        offset, single = self.fields[field]
        single.pack_into(self.buf, self.offset(index) + offset, value)

    def rows(self) -> Iterator[tuple]:
        return (self.read(i) for i in range(self.spec.capacity))

    def clear(self, index: int) -> None:
        start = self.offset(index)
        self.buf[start:start + self.slot_size] = bytes(self.slot_size)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


ZoneFactory = Callable[..., Sequence[ZoneSpec]]


class ZoneSet:
    """The master's zones, by name."""

    def __init__(self) -> None:
        self.zones: dict[str, Zone] = {}
        self.serial = 0

    def update(self, specs: Iterable[ZoneSpec]) -> list[Zone]:
        """Match the set to `specs`; returns the zones that were replaced or dropped."""
        wanted = {s.name: s for s in specs}
        gone = [z for name, z in self.zones.items()
                if name not in wanted or z.spec != wanted[name]]
        for zone in gone:
            del self.zones[zone.spec.name]
            zone.unlink()
            zone.close()
        for name, spec in wanted.items():
            if name not in self.zones:
                self.serial += 1
                self.zones[name] = Zone.create(spec, self.serial)
        return gone

    def unlink_all(self) -> None:
        for zone in self.zones.values():
            zone.unlink()


def remove_stale(alive: Callable[[int], bool]) -> list[str]:
    """Remove the segments of bizzyd masters that are gone; returns their names."""
    removed = []
    for path in SHM_DIR.glob(PREFIX + "*"):
        parts = path.name.split(".")
        if len(parts) >= 3 and parts[1].isdigit() and not alive(int(parts[1])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed


STUCK_AFTER = 0.25  # seconds a slot may stay busy before its writer is taken for dead
SPINS = 16  # busy reads before a reader starts yielding the CPU


class BusySlot:
    """A reader's wait on a slot its writer is in the middle of.

    It spins first, then yields the CPU (the writer may have been preempted
    mid-write by the scheduler, which on a loaded machine keeps it off-CPU for
    milliseconds), and gives up after STUCK_AFTER seconds: a writer killed
    mid-write leaves the slot busy until the next writer repairs it.
    """

    __slots__ = ("attempts", "since")

    def __init__(self) -> None:
        self.attempts = 0
        self.since = 0.0

    def wait(self) -> bool:
        """Wait a little; False when the slot has been busy for too long."""
        self.attempts += 1
        if self.attempts <= SPINS:
            return True
        now = time.monotonic()
        if not self.since:
            self.since = now
        elif now - self.since > STUCK_AFTER:
            return False
        os.sched_yield()
        return True


class SeqlockTable:
    """A single-writer table whose readers never see a torn slot.

    Each slot's first field is a sequence counter: the writer makes it odd, writes
    the other fields, then makes it even.  A reader retries while the counter is
    odd or changed during its read.
    """

    def __init__(self, zone: Zone) -> None:
        if zone.spec.fields[0][1] != "Q":
            raise ValueError("a seqlock zone's first field must be the 'Q' sequence")
        if (HEADER.size + zone.slot.size) % 8 or HEADER.size % 8:
            raise ValueError("seqlock slots must keep the sequence 8-byte aligned")
        self.zone = zone
        self.buf = zone.buf
        # The counter is read and written as one item of a 'Q' memoryview: a single
        # aligned 8-byte load or store.  Not with struct: "=Q" goes byte by byte, and
        # every pack_into first zero-fills what it packs, so a counter stored with it
        # is briefly 0, an even value a reader could take for a stable slot.
        view = memoryview(zone.buf)
        self.words = view[:len(view) // 8 * 8].cast("Q")
        self.slot = zone.slot
        self.rest = struct.Struct("=" + "".join(code for _, code in zone.spec.fields[1:]))

    def release(self) -> None:
        """Drop the view of the mapping (then the mmap itself may be closed)."""
        self.words.release()

    def seq_at(self, start: int) -> int:
        """The counter of the slot at byte offset `start`."""
        return self.words[start >> 3]

    def set_seq(self, start: int, value: int) -> None:
        self.words[start >> 3] = value

    def write(self, index: int, values: Sequence) -> None:
        start = self.zone.offset(index)
        words, word = self.words, start >> 3
        seq = words[word]
        words[word] = seq + 1
        self.rest.pack_into(self.buf, start + 8, *values)
        words[word] = seq + 2

    def read(self, index: int) -> tuple:
        start = self.zone.offset(index)
        buf, words, word, slot = self.buf, self.words, start >> 3, self.slot
        busy = None
        while True:
            before = words[word]
            if not before & 1:
                row = slot.unpack_from(buf, start)
                if row[0] == before and words[word] == before:
                    return row[1:]
            if busy is None:
                busy = BusySlot()
            if not busy.wait():
                raise TimeoutError(f"zone {self.zone.spec.name}: slot {index} kept changing")
