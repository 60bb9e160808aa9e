"""Occupancy alerts end to end: occupancy updates on the bus → cache manager → the
notifier's trigger → the queue → the sender → the fake FCM (every push recorded)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from bizzyd_proc import wait_for

pytestmark = pytest.mark.services


def ramp(stack, hive: int, values) -> None:
    for v in values:
        stack.occupancy(hive, v)


def test_a_filling_hive_alerts_each_device_once_per_crossing(stack) -> None:
    hive, other = stack.hives[0], stack.hives[1]
    stack.baseline(hive, 0)
    a = stack.user("a-phone", "a-tablet")
    b = stack.user("b-phone")
    c = stack.user("c-phone")         # disabled alert
    d = stack.user("d-phone")         # an alert on another hive
    marker = stack.user("marker-phone")
    alerts = [stack.alert(a, hive, 50, margin=10), stack.alert(b, hive, 50, margin=10)]
    off = stack.alert(c, hive, 50, margin=10, enabled=False)
    alerts.append(stack.alert(d, other, 50, margin=10))
    last = stack.alert(marker, hive, 95, margin=0)
    stack.wait_loaded(*alerts, last, off)

    ramp(stack, hive, range(2, 61, 2))                # crosses 50 once
    stack.wait_state(alerts[0], armed=False, fired_count=1)
    stack.wait_state(alerts[1], armed=False, fired_count=1)
    ramp(stack, hive, [45, 55, 41, 59, 42, 60])       # never below 40: stays disarmed
    ramp(stack, hive, [35])                           # re-arms
    stack.wait_state(alerts[0], armed=True, fired_count=1)
    ramp(stack, hive, [49, 50, 80])                   # the second crossing
    stack.wait_state(alerts[0], armed=False, fired_count=2)
    ramp(stack, hive, [96])                           # the marker: everything before is done
    stack.fcm.wait(lambda f: f.ok("marker-phone"), what="the marker's push")
    wait_for(stack.queue_empty, 15, what="the queue to drain")

    first, second = f"occ:{alerts[0]}:1", f"occ:{alerts[0]}:2"
    assert stack.pushes("a-phone") == [first, second]
    assert stack.pushes("a-tablet") == [first, second]
    assert stack.pushes("b-phone") == [f"occ:{alerts[1]}:1", f"occ:{alerts[1]}:2"]
    assert stack.pushes("c-phone") == [] and stack.pushes("d-phone") == []
    assert stack.state(alerts[2])["fired_count"] == 0
    push = stack.fcm.ok("a-phone")[0].message
    assert push["android"]["collapse_key"] == first
    assert push["apns"]["headers"]["apns-collapse-id"] == first
    assert push["data"]["hive_id"] == str(hive) and "filling up" in push["notification"]["title"]
    assert [(r["kind"], r["pushed"]) for r in stack.inbox(a)] == [("occupancy_above", True)] * 2
    assert stack.inbox(c) == [] and stack.inbox(d) == []


def test_falls_below_and_counts_in_people(stack) -> None:
    hive = stack.hives[2]
    stack.baseline(hive, 60)
    u = stack.user("below-phone")
    below = stack.alert(u, hive, 30, above=False, margin=5)
    count = stack.sql("""
        INSERT INTO user_notification_def (user_id, hive_id, kind, threshold_count, margin,
                                           cooldown_seconds)
        VALUES ($1, $2, 'occupancy_above', 70, 0, 0) RETURNING id""", u, hive)[0]["id"]
    stack.wait_loaded(below, count)
    ramp(stack, hive, [40, 31])
    ramp(stack, hive, [30])                    # falls to 30%: fires
    stack.wait_state(below, armed=False, fired_count=1)
    ramp(stack, hive, [34, 36])                # 36 > 30 + 5: re-armed
    stack.wait_state(below, armed=True)
    ramp(stack, hive, [71])                    # 71 people >= 70
    stack.wait_state(count, armed=False, fired_count=1)
    stack.fcm.wait(lambda f: len(f.ok("below-phone")) == 2, what="two pushes")
    assert sorted(stack.pushes("below-phone")) == sorted([f"occ:{below}:1", f"occ:{count}:1"])


def test_cooldown_and_quiet_hours(stack) -> None:
    hive = stack.hives[3]
    tz = "Asia/Tokyo"
    local = dt.datetime.now(ZoneInfo(tz))
    quiet = ((local - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0),
             (local + dt.timedelta(hours=1)).time().replace(second=0, microsecond=0))
    stack.baseline(hive, 20)
    cool_user, quiet_user = stack.user("cool-phone"), stack.user("quiet-phone")
    cool = stack.alert(cool_user, hive, 50, margin=5, cooldown=3600)
    hush = stack.alert(quiet_user, hive, 50, margin=5, quiet=quiet, tz=tz)
    stack.wait_loaded(cool, hush)
    ramp(stack, hive, [60])
    stack.wait_state(hush, armed=False, fired_count=1)
    ramp(stack, hive, [20])
    stack.wait_state(cool, armed=True)
    ramp(stack, hive, [60])                   # within the hour: the cooldown drops it
    stack.wait_state(hush, armed=False, fired_count=2)
    stack.wait_state(cool, armed=False, fired_count=1)
    wait_for(lambda: len(stack.inbox(quiet_user)) == 2, 15, what="the quiet inbox rows")
    stack.fcm.wait(lambda f: f.ok("cool-phone"), what="the first alert")
    wait_for(stack.queue_empty, 15, what="the queue to drain")
    assert stack.pushes("cool-phone") == [f"occ:{cool}:1"]
    assert stack.pushes("quiet-phone") == []          # quiet hours: inbox only
    assert [r["pushed"] for r in stack.inbox(quiet_user)] == [False, False]
    assert len(stack.inbox(cool_user)) == 1


def test_an_alert_set_on_a_full_hive_waits_for_a_crossing(stack) -> None:
    hive = stack.hives[11]
    stack.baseline(hive, 90)
    u = stack.user("late-joiner")
    alert = stack.alert(u, hive, 50, margin=5)
    stack.wait_loaded(alert)
    ramp(stack, hive, [91])                    # above since before: no alert
    ramp(stack, hive, [40])                    # re-arms (saved: armed)
    stack.wait_state(alert, armed=True, fired_count=0)
    ramp(stack, hive, [55])
    stack.fcm.wait(lambda f: f.ok("late-joiner"), what="the crossing's push")
    stack.wait_state(alert, armed=False, fired_count=1)
    stack.sql("UPDATE user_notification_def SET threshold_percent = 70 WHERE id = $1", alert)
    assert stack.state(alert)["armed"] is None    # a new threshold starts over
    assert stack.pushes("late-joiner") == [f"occ:{alert}:1"]
