"""A kill -9 of the separate `notifier sender` process in the middle of a batch (as
test_delivery's kill of the notifier that sends itself): the master starts a new one,
every notification arrives, and none is pushed twice but the calls in flight at the kill
(the same collapse id: the phone shows one)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bizzyd_proc import children_of

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_delivery import kill_in_mid_batch, none_lost_only_in_flight_repeated  # noqa: E402

pytestmark = pytest.mark.services
SENDER, NOTIFIER = "bizzyd: notifier sender process", "bizzyd: notifier process"


def pids(stack, role: str) -> list[int]:
    return [p for p, title in children_of(stack.bizzyd.pid) if title == role]


def test_kill_9_of_the_sender_process_in_the_middle_of_a_batch(sender_stack) -> None:
    stack = sender_stack
    [sender] = pids(stack, SENDER)
    [notifier] = pids(stack, NOTIFIER)
    kill = kill_in_mid_batch(stack, "s9", sender)
    assert len(pids(stack, SENDER)) == 1 and pids(stack, SENDER) != [sender]  # restarted
    assert pids(stack, NOTIFIER) == [notifier]                 # the triggers ran on
    none_lost_only_in_flight_repeated(stack, kill)
