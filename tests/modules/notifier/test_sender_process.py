"""A kill -9 of the separate `notifier sender` process in the middle of a batch (as
test_delivery's kill of the notifier that sends itself): the master starts a new one,
every notification arrives, and none is pushed twice but the calls in flight at the kill
(the same collapse id: the phone shows one)."""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from bizzyd_proc import alive, children_of, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_delivery import deal, follows  # noqa: E402

pytestmark = pytest.mark.services
SENDER, NOTIFIER = "bizzyd: notifier sender process", "bizzyd: notifier process"


def pids(stack, role: str) -> list[int]:
    return [p for p, title in children_of(stack.bizzyd.pid) if title == role]


def test_kill_9_of_the_sender_process_in_the_middle_of_a_batch(sender_stack) -> None:
    stack = sender_stack
    hive = stack.hives[8]
    users = {stack.user(f"s9-{i:02d}"): f"s9-{i:02d}" for i in range(15)}
    for u in users:
        follows(stack, u, hive)
    [sender] = pids(stack, SENDER)
    [notifier] = pids(stack, NOTIFIER)
    stack.fcm.hold(after=7)          # answer 7 pushes, then hold the rest of the batch
    new = deal(stack, hive)
    expected = {(token, f"deal:{new}:{u}") for u, token in users.items()}
    stack.fcm.wait(lambda f: f.held >= 1, what="pushes in flight")
    os.kill(sender, signal.SIGKILL)
    wait_for(lambda: not alive(sender), 5, what="the sender process to die")
    recorded = {(r["fcm_token"], r["idempotency_key"]) for r in stack.sql(
        "SELECT d.fcm_token, i.idempotency_key FROM user_inbox_delivery d "
        "JOIN user_inbox i ON i.id = d.inbox_id WHERE i.deal_id = $1", new)}
    pushed = {(p.token, p.key) for p in list(stack.fcm.pushes)} & expected
    held = stack.fcm.held_pairs & expected
    stack.fcm.release()
    in_flight = pushed - recorded      # pushed, not recorded: the kill interrupted them
    assert held and held <= in_flight
    assert len(in_flight) <= 2 * 5     # at most a batch per round (2 rounds, batch_size 5)
    assert recorded <= pushed

    stack.fcm.wait(lambda f: expected <= f.answered, 30, what="every push answered")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert len(pids(stack, SENDER)) == 1 and pids(stack, SENDER) != [sender]  # restarted
    assert pids(stack, NOTIFIER) == [notifier]                 # the triggers ran on
    mine = Counter((p.token, p.key) for p in stack.fcm.pushes if (p.token, p.key) in expected)
    assert set(mine) == expected                                        # none lost
    assert {pair for pair, n in mine.items() if n > 1} <= in_flight     # repeated: in flight
    assert all(mine[pair] == 1 for pair in recorded)                    # recorded: never again
    assert all(n <= 2 for n in mine.values())
    inbox = stack.sql("SELECT user_id, count(*) AS n FROM user_inbox WHERE deal_id = $1 "
                      "AND user_id = ANY($2::bigint[]) GROUP BY user_id", new, list(users))
    assert {r["user_id"] for r in inbox} == set(users) and all(r["n"] == 1 for r in inbox)
    assert stack.sql("SELECT count(*) FROM user_inbox_delivery d JOIN user_inbox i "
                     "ON i.id = d.inbox_id WHERE i.deal_id = $1", new)[0]["count"] == 15
