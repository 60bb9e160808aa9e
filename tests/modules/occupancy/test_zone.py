"""The occupancy zone: index, writer rules, and torn-read freedom under stress."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bizzyd.shm import Zone
from modules.occupancy.zone import (
    FLAG_DELETED,
    FLAG_LIVE,
    FLAG_STALE,
    MAX_LOAD,
    R_AT,
    R_CAP,
    R_IN,
    R_OCC,
    R_OUT,
    R_SEQ,
    OccupancyTable,
    WriterLock,
    home,
    seed_sequence,
    zone_specs,
)

SERIAL = iter(range(1_000_000, 2_000_000))


@pytest.fixture
def make_table():
    made: list[Zone] = []
    tables: list[OccupancyTable] = []

    def make(capacity: int) -> OccupancyTable:
        zones = [Zone.create(spec, next(SERIAL)) for spec in zone_specs(capacity)]
        made.extend(zones)
        t = OccupancyTable(*zones)
        t.reset_meta()
        tables.append(t)
        return t

    yield make
    for t in tables:
        t.release()
    for zone in made:
        zone.unlink()
        zone.buf.close()
        zone.close()


def test_slots_are_8_byte_aligned_and_the_index_spreads(make_table):
    t = make_table(1024)
    assert t.zone.slot_size % 8 == 0 and t.zone.offset(1) % 8 == 0
    homes = {home(i, 1024) for i in range(1, 1025)}
    assert len(homes) > 600  # sequential ids do not pile up on a few slots
    assert all(0 <= home(i, 1000) < 1000 for i in (1, 2**40, 2**63 - 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 2**63 - 1), min_size=1, max_size=200, unique=True))
def test_the_index_agrees_with_a_dict(ids):
    zones = [Zone.create(spec, next(SERIAL)) for spec in zone_specs(64)]
    try:
        t = OccupancyTable(*zones)
        t.reset_meta()
        expected = {}
        for n, hive_id in enumerate(ids):
            index, seq = t.put(hive_id, n, 100, n, 0, float(n + 1), FLAG_LIVE)
            if index >= 0:
                expected[hive_id] = n
                assert seq % 2 == 0
        assert len(expected) == min(len(ids), t.limit)
        for hive_id in ids:
            row = t.lookup(hive_id)
            if hive_id in expected:
                assert row is not None and row[R_OCC] == expected[hive_id]
            else:
                assert row is None
        assert t.lookup(max(ids) + 1 if max(ids) < 2**63 - 1 else 1) is None or 1 in expected
        assert t.meta.get(0, "hives") == len(expected) == t.count()
        t.release()
    finally:
        for zone in zones:
            zone.unlink()
            zone.buf.close()
            zone.close()


def test_probe_chains_wrap_and_full_zone_refuses(make_table):
    t = make_table(10)
    assert t.limit == int(10 * MAX_LOAD) == 9
    # ids whose home is the last slot: the chain wraps to slot 0
    last = [i for i in range(1, 10_000) if home(i, 10) == 9][:3]
    for hive_id in last:
        assert t.put(hive_id, 1, 10, 1, 0, 1.0, FLAG_LIVE)[0] >= 0
    assert {t.find(h)[0] for h in last} == {9, 0, 1}
    others = [i for i in range(1, 100) if i not in last]
    placed = [h for h in others if t.put(h, 1, 10, 1, 0, 1.0, 0)[0] >= 0]
    assert len(placed) == 6  # 9 hives in all, then the zone is full
    assert t.put(5000, 1, 10, 1, 0, 1.0, 0) == (-1, 0)
    assert t.mark_full() is True and t.mark_full() is False  # logged once
    # an existing hive is still written when the zone is full
    index, _ = t.put(last[0], 7, 10, 7, 0, 2.0, FLAG_LIVE)
    assert index == 9 and t.lookup(last[0])[R_OCC] == 7


def test_sequences_grow_across_zone_incarnations(make_table):
    first = make_table(16)
    _, seq1 = first.put(42, 1, 10, 1, 0, 1.0, FLAG_LIVE)
    for n in range(5):
        _, seq1 = first.put(42, n, 10, n, 0, 2.0 + n, FLAG_LIVE)
    time.sleep(0.002)
    second = make_table(16)  # e.g. after a restart: a new segment
    _, seq2 = second.put(42, 1, 10, 1, 0, 1.0, FLAG_LIVE)
    assert seq2 > seq1 and seq2 >= seed_sequence() - (1 << 21)


def test_deleted_and_stale_slots_are_not_served_but_keep_the_chain(make_table):
    t = make_table(16)
    t.put(1, 1, 10, 1, 0, 1.0, FLAG_LIVE)
    t.put(2, 2, 10, 2, 0, 1.0, FLAG_LIVE)
    index, row = t.find(1)
    t.put(1, *row[R_OCC:R_OUT + 2], FLAG_DELETED, index=index)
    assert t.lookup(1) is None and t.find(1)[0] == index and t.lookup(2) is not None
    # a writer killed mid-write leaves an odd sequence: readers give up, repair fixes it
    index, row = t.find(2)
    start = t.zone.offset(index)
    t.set_seq(start, row[R_SEQ] + 1)
    assert t.lookup(2) is None
    assert t.repair() == [index]
    assert t.find(2)[1][-2] & FLAG_STALE and t.lookup(2) is None
    _, seq = t.put(2, 3, 10, 3, 0, 2.0, FLAG_LIVE, index=index)  # the reconcile rewrites it
    assert seq % 2 == 0 and t.lookup(2)[R_OCC] == 3


def test_one_writer_at_a_time(make_table):
    t = make_table(8)
    mine = WriterLock(t.meta)
    assert mine.try_acquire()
    pid = os.fork()
    if pid == 0:
        other = WriterLock(t.meta)
        os._exit(0 if not other.try_acquire() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    mine.release()
    pid = os.fork()
    if pid == 0:
        other = WriterLock(t.meta)
        os._exit(0 if other.try_acquire() else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


# -- stress: one writer, several readers, the same slots ------------------------------

HIVES = (11, 12, 13, 14)
MASK = 0x7FFFFFFF


def _values(k: int) -> tuple:
    """The k-th write of a hive: every field depends on k (and on each other)."""
    occupancy = k % 997
    total_in = k * 7 + occupancy
    return occupancy, (k * 13) & MASK, total_in, total_in - occupancy, float(k)


def _torn(row: tuple) -> bool:
    k = int(row[R_AT])
    return (row[R_IN] - row[R_OUT] != row[R_OCC] or row[R_OCC] != k % 997
            or row[R_CAP] != (k * 13) & MASK or row[R_IN] != k * 7 + row[R_OCC])


def _fork(fn, *args) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            try:
                result = fn(*args)
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(w, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int) -> dict:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, result["error"]
    return result


def _writer(t: OccupancyTable, stop_fd: int) -> dict:
    os.set_blocking(stop_fd, False)
    index = {h: t.find(h)[0] for h in HIVES}
    k = 1
    while True:
        for hive_id in HIVES:
            occ, cap, t_in, t_out, at = _values(k)
            t.put(hive_id, occ, cap, t_in, t_out, at, FLAG_LIVE, index=index[hive_id])
            k += 1
        if k % 64 < 4:
            try:
                if os.read(stop_fd, 1):
                    return {"writes": k}
            except BlockingIOError:
                pass


def _reader(t: OccupancyTable, reads: int, seqlock: bool) -> dict:
    torn = timeouts = distinct = 0
    last = {h: -1 for h in HIVES}
    index = {h: t.find(h)[0] for h in HIVES}  # slots never move
    n = 0
    while n < reads:
        for hive_id in HIVES:
            if seqlock:
                try:
                    row = t.find(hive_id)[1]
                except TimeoutError:
                    timeouts += 1
                    continue
                if row is None:  # a torn read of the hive's id: the probe missed it
                    torn += 1
                    continue
            else:  # the negative control: a plain read, no seqlock
                row = t.zone.read(index[hive_id])
            n += 1
            if _torn(row):
                torn += 1
            if row[R_AT] != last[hive_id]:
                distinct += 1
                last[hive_id] = row[R_AT]
    return {"reads": n, "torn": torn, "timeouts": timeouts, "distinct": distinct}


def test_no_torn_reads_under_a_writer(make_table, capsys):
    """1 writer + 3 seqlock readers + 1 plain reader (control), same 4 slots."""
    t = make_table(64)
    for hive_id in HIVES:
        t.put(hive_id, *_values(0), FLAG_LIVE)
    stop_r, stop_w = os.pipe()
    children = []
    try:
        writer = _fork(_writer, t, stop_r)
        children.append(writer[0])
        readers = [_fork(_reader, t, 350_000, True) for _ in range(3)]
        control = _fork(_reader, t, 200_000, False)
        children += [pid for pid, _ in readers] + [control[0]]
        results = [_collect(*r) for r in readers]
        plain = _collect(*control)
        os.write(stop_w, b"x")
        writes = _collect(*writer)
    finally:
        for pid in children:  # on a failure: nothing may keep running
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        os.close(stop_r)
        os.close(stop_w)
    total = sum(r["reads"] for r in results)
    torn = sum(r["torn"] for r in results)
    with capsys.disabled():
        print(f"\nseqlock: {total} reads, {torn} torn, "
              f"{sum(r['timeouts'] for r in results)} gave up on a busy slot, "
              f"{sum(r['distinct'] for r in results)} distinct states seen; "
              f"{writes['writes']} writes; plain reads (control): {plain['reads']} reads, "
              f"{plain['torn']} torn")
    assert total >= 1_000_000
    assert torn == 0
    # the writer is alive: however the scheduler treats it, no reader may give up on it
    assert sum(r["timeouts"] for r in results) == 0
    assert sum(r["distinct"] for r in results) > 1000  # the readers did race the writer


def test_config_needs_the_database_module_and_checks_addresses(tmp_path):
    import yaml

    from bizzyd.config import ConfigError
    from bizzyd.config.load import load_config

    conf = tmp_path / "conf" / "bizzyd.yaml"
    conf.parent.mkdir()

    def load(tree: dict):
        conf.write_text(yaml.safe_dump(tree))
        return load_config(conf, tmp_path)

    with pytest.raises(ConfigError, match="needs modules.database"):
        load({"modules": ["modules.occupancy"]})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load({"modules": ["modules.database", "modules.occupancy"],
              "occupancy": {"memcached": "nowhere"}})
    config = load({"modules": ["modules.database", "modules.occupancy"],
                   "occupancy": {"memcached": "", "zone_capacity": 1024}})
    settings = config["occupancy"]
    assert settings["memcached"] == "" and settings["zone_capacity"] == 1024
    assert settings["reconcile_interval"] == 30 and settings["memcached_timeout"] == 0.05
    names = [r.name for m in config.modules for r in m.roles]
    assert names == ["cache loader", "cache manager"]
    assert [r.respawn for m in config.modules for r in m.roles] == [False, True]
