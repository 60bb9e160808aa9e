"""Deal and subscription notifications, FCM errors (device removal, retry, dead letters)
and a kill -9 of the notifier in the middle of a batch."""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass

import pytest

from bizzyd_proc import alive, children_of, wait_for
from modules.notifier.testing import FLAKY_FAILURES

pytestmark = pytest.mark.services
ROLE = "bizzyd: notifier process"


def deal(stack, hive: int, kind: str = "discount", hours: float = 48) -> int:
    return stack.sql(f"""
        INSERT INTO deal (hive_id, kind, title, valid_from, valid_until)
        VALUES ($1, $2, 'Two for one', now() - interval '1 hour',
                now() + interval '{hours} hours') RETURNING id""", hive, kind)[0]["id"]


def follows(stack, user: int, hive: int | None, kind: str = "new_deal",
            favourite: bool = True, deal_kinds: tuple = ()) -> None:
    if favourite and hive is not None:
        stack.sql("INSERT INTO user_hive (user_id, hive_id, kind) VALUES ($1, $2, "
                  "'favourite')", user, hive)
    stack.sql("INSERT INTO user_notification_def (user_id, hive_id, kind, deal_kinds) "
              "VALUES ($1, $2, $3, $4)", user, None if favourite else hive, kind,
              list(deal_kinds))


def dead_letters(stack) -> list[str]:
    return [r["body"] for r in stack.sql(
        "SELECT m.body FROM queue_message m JOIN queue q ON q.id = m.queue_id "
        "WHERE q.name = 'notifications-dlq'")]


def notifier_pid(stack) -> int:
    pids = [p for p, title in children_of(stack.bizzyd.pid) if title == ROLE]
    assert len(pids) == 1, pids
    return pids[0]


def test_a_new_deal_at_a_favourite_hive(stack) -> None:
    hive = stack.hives[4]
    fan, picky, stranger = stack.user("fan-phone"), stack.user("picky-phone"), \
        stack.user("stranger-phone")
    follows(stack, fan, hive)
    follows(stack, picky, hive, deal_kinds=("event",))
    follows(stack, stranger, None)      # "my favourites", but this hive is none of them
    new = deal(stack, hive, "discount")
    stack.fcm.wait(lambda f: f.ok("fan-phone"), what="the fan's push")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert stack.pushes("fan-phone") == [f"deal:{new}:{fan}"]
    assert stack.pushes("picky-phone") == [] and stack.pushes("stranger-phone") == []
    [row] = stack.inbox(fan)
    assert (row["kind"], row["deal_id"], row["hive_id"]) == ("new_deal", new, hive)
    assert stack.sql("SELECT count(*) FROM notifier_event")[0]["count"] == 0


def test_a_followed_deal_expiring_within_a_day(stack) -> None:
    hive = stack.hives[5]
    watcher, late = stack.user("watch-phone"), stack.user("late-phone")
    follows(stack, watcher, hive, kind="deal_expiring", favourite=False)
    soon, later = deal(stack, hive, hours=2), deal(stack, hive, hours=30)
    stack.fcm.wait(lambda f: f.ok("watch-phone"), what="the expiring deal's push")
    # a scan after that one: a second watcher's deal; the first is not announced again
    follows(stack, late, hive, kind="deal_expiring", favourite=False)
    stack.fcm.wait(lambda f: f.ok("late-phone"), what="the next scan")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert stack.pushes("watch-phone") == [f"dexp:{soon}:{watcher}"]
    assert stack.pushes("late-phone") == [f"dexp:{soon}:{late}"]
    assert later not in {r["deal_id"] for r in stack.inbox(watcher)}


def test_subscription_expiring_and_renewed(stack) -> None:
    user = stack.user("plan-phone")
    sub = stack.sql("""
        INSERT INTO subscription (subscription_type_id, user_id, store, started_at,
                                  expires_at)
        SELECT id, $1, 'manual', now() - interval '28 days', now() + interval '2 days'
        FROM subscription_type WHERE code = 'premium' RETURNING id, expires_at""", user)[0]
    expiring = f"subx:{sub['id']}:{int(sub['expires_at'].timestamp())}"
    stack.fcm.wait(lambda f: f.ok("plan-phone"), what="the expiring notice")
    payment = stack.sql("""
        INSERT INTO payment_transaction (subscription_id, kind, status, amount_cents,
                                         currency, provider, period_start, period_end)
        VALUES ($1, 'renewal', 'succeeded', 499, 'EUR', 'manual', now(),
                now() + interval '30 days') RETURNING id""", sub["id"])[0]["id"]
    stack.fcm.wait(lambda f: len(f.ok("plan-phone")) == 2, what="the renewal notice")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert stack.pushes("plan-phone") == [expiring, f"subr:{payment}"]
    assert [r["kind"] for r in stack.inbox(user)] == ["subscription_expiring",
                                                     "subscription_renewed"]


def test_gone_and_invalid_tokens_are_removed(stack) -> None:
    hive = stack.hives[6]
    user = stack.user("gone-1", "badtoken-1", "kept-1")
    follows(stack, user, hive)
    new = deal(stack, hive)
    wait_for(lambda: len(stack.sql("SELECT 1 FROM user_device WHERE user_id = $1",
                                   user)) == 1, 15, what="the two devices to be removed")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert [r["fcm_token"] for r in stack.sql(
        "SELECT fcm_token FROM user_device WHERE user_id = $1", user)] == ["kept-1"]
    assert stack.pushes("kept-1") == [f"deal:{new}:{user}"]
    assert len([p for p in stack.fcm.pushes if p.token == "gone-1"]) == 1
    assert dead_letters(stack) == [] or all(f"deal:{new}:" not in b for b in dead_letters(stack))


def test_quota_is_retried_then_dead_lettered_and_refusals_at_once(stack) -> None:
    hive = stack.hives[7]
    busy, refused = stack.user("quota-1"), stack.user("refused-1")
    follows(stack, busy, hive)
    follows(stack, refused, hive)
    new = deal(stack, hive)
    wait_for(lambda: len([b for b in dead_letters(stack) if f"deal:{new}:" in b]) == 2, 30,
             what="both jobs in the dead-letter queue")
    attempts = [p for p in stack.fcm.pushes if p.token == "quota-1"]
    assert len(attempts) == 3                         # max_attempts, with back-off between
    gaps = [b.received - a.received for a, b in zip(attempts, attempts[1:], strict=False)]
    assert all(g >= 0.9 for g in gaps), gaps
    assert len([p for p in stack.fcm.pushes if p.token == "refused-1"]) == 1
    assert "failed permanently" in stack.bizzyd.log()


def test_5xx_is_retried_by_the_library_then_through_the_queue(stack) -> None:
    hive = stack.hives[9]
    user = stack.user("flaky-1")
    follows(stack, user, hive)
    new = deal(stack, hive)
    key = f"deal:{new}:{user}"
    stack.fcm.wait(lambda f: f.ok("flaky-1"), 40, what="the push after the 503s")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    tries = [p.status for p in stack.fcm.pushes if p.token == "flaky-1"]
    # firebase-admin retries a 503 four times itself; then the job waits for its next
    # receive (retry_base) and succeeds
    assert tries == [503] * FLAKY_FAILURES + [200]
    assert stack.pushes("flaky-1") == [key]
    assert all(key not in b for b in dead_letters(stack))


@dataclass
class Kill:
    """What a kill -9 in the middle of a batch left: the deal's pushes expected, those
    recorded as delivered before it, and those in flight (pushed, not recorded)."""

    deal: int
    users: dict[int, str]
    expected: set[tuple[str, str]]
    recorded: set[tuple[str, str]]
    in_flight: set[tuple[str, str]]


def kill_in_mid_batch(stack, prefix: str, victim: int) -> Kill:
    """A new deal for 15 followers; FCM answers 7 pushes and holds the rest; `victim`
    (the sending process) gets SIGKILL; then FCM answers and the queue drains."""
    hive = stack.hives[8]
    users = {stack.user(f"{prefix}-{i:02d}"): f"{prefix}-{i:02d}" for i in range(15)}
    for u in users:
        follows(stack, u, hive)
    stack.fcm.hold(after=7)          # answer 7 pushes, then hold the rest of the batch
    new = deal(stack, hive)
    expected = {(token, f"deal:{new}:{u}") for u, token in users.items()}
    stack.fcm.wait(lambda f: f.held >= 1, what="pushes in flight")
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: not alive(victim), 5, what="the sending process to die")
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
    return Kill(new, users, expected, recorded, in_flight)


def none_lost_only_in_flight_repeated(stack, kill: Kill) -> None:
    mine = Counter((p.token, p.key) for p in stack.fcm.pushes
                   if (p.token, p.key) in kill.expected)
    assert set(mine) == kill.expected                                       # none lost
    assert {pair for pair, n in mine.items() if n > 1} <= kill.in_flight    # repeated: in flight
    assert all(mine[pair] == 1 for pair in kill.recorded)                  # recorded: never again
    assert all(n <= 2 for n in mine.values())
    inbox = stack.sql("SELECT user_id, count(*) AS n FROM user_inbox WHERE deal_id = $1 "
                      "AND user_id = ANY($2::bigint[]) GROUP BY user_id", kill.deal,
                      list(kill.users))
    assert {r["user_id"] for r in inbox} == set(kill.users) and all(r["n"] == 1 for r in inbox)
    assert stack.sql("SELECT count(*) FROM user_inbox_delivery d JOIN user_inbox i "
                     "ON i.id = d.inbox_id WHERE i.deal_id = $1", kill.deal)[0]["count"] == 15


def test_kill_9_in_the_middle_of_a_batch_loses_none_and_repeats_only_calls_in_flight(
        stack) -> None:
    before = notifier_pid(stack)
    kill = kill_in_mid_batch(stack, "k9", before)
    assert notifier_pid(stack) != before       # the master started a new one
    none_lost_only_in_flight_repeated(stack, kill)
