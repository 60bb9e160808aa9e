"""The internal bus: message codecs and the two patterns across real processes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import uvloop
import zmq
from hypothesis import given
from hypothesis import strategies as st

from bizzyd.bus import (
    OCCUPANCY_CHANGE,
    OCCUPANCY_UPDATE,
    Bus,
    BusError,
    drain,
    message_type,
    topic,
)

UPDATE = (42, 17, 1000, 983, 2, 1, 1_700_000_000.5)


@given(st.integers(0, 2**62), st.integers(-2**31, 2**31 - 1), st.integers(0, 2**62),
       st.integers(0, 2**62), st.floats(allow_nan=False, allow_infinity=False))
def test_update_round_trips(hive, occupancy, total_in, total_out, at):
    values = (hive, occupancy, total_in, total_out, 1, 0, at)
    frame = OCCUPANCY_UPDATE.encode(*values)
    assert message_type(frame) is OCCUPANCY_UPDATE
    assert OCCUPANCY_UPDATE.decode(frame) == values


def test_wrong_type_or_version_is_refused():
    frame = OCCUPANCY_UPDATE.encode(*UPDATE)
    with pytest.raises(BusError):
        OCCUPANCY_CHANGE.decode(frame)
    with pytest.raises(BusError):
        OCCUPANCY_UPDATE.decode(frame[:1] + bytes([9]) + frame[2:])
    with pytest.raises(BusError):
        message_type(b"\xff\x01")
    with pytest.raises(BusError):
        OCCUPANCY_UPDATE.decode(frame + b"x")


def _child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    raise AssertionError("child did not finish")


def test_push_pull_between_processes(tmp_path):
    bus = Bus(tmp_path)
    pull = bus.puller("occupancy.updates")

    def sender() -> None:
        child = Bus(tmp_path)
        push = child.pusher("occupancy.updates")
        for i in range(500):
            push.send(OCCUPANCY_UPDATE.encode(i, i, i, 0, 1, 0, 0.0))
        child.close()

    pid = _child(sender)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < 500 and time.monotonic() < deadline:
        if pull.poll(100):
            got += [OCCUPANCY_UPDATE.decode(f)[0] for f in drain(pull)]
    assert _wait(pid) == 0
    assert got == list(range(500))
    bus.close()


def test_pub_sub_by_topic_with_an_asyncio_subscriber(tmp_path):
    bus = Bus(tmp_path)
    pub = bus.publisher("occupancy.changes")

    async def subscribe() -> list[int]:
        sub_bus = Bus(tmp_path, asyncio=True)
        sub = sub_bus.subscriber("occupancy.changes", [topic(7)])
        got = []
        try:
            while len(got) < 3:
                _, frame = await asyncio.wait_for(sub.recv_multipart(), 10)
                got.append(OCCUPANCY_CHANGE.decode(frame)[1])
        finally:
            sub_bus.close()
        return got

    def subscriber() -> None:
        got = uvloop.run(subscribe())
        assert got == list(range(got[0], got[0] + 3)), got  # in order, none lost

    pid = _child(subscriber)
    deadline = time.monotonic() + 15
    n = 0
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            break
        n += 1  # keep publishing: a late subscriber misses the earlier messages
        pub.send_multipart([topic(8), OCCUPANCY_CHANGE.encode(8, 99, 10, 0, 0, 0.0, 1)])
        pub.send_multipart([topic(7), OCCUPANCY_CHANGE.encode(7, n, 10, 0, 0, 0.0, n)],
                           zmq.NOBLOCK)
        time.sleep(0.01)
    else:
        os.kill(pid, 9)
        raise AssertionError("subscriber never got its three messages")
    bus.close()
