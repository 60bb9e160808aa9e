"""The notifier: occupancy alerts, deal and subscription notifications pushed with
Firebase Cloud Messaging through the durable queue, and the in-app inbox.

    modules: [modules.database, modules.api, modules.auth, modules.queue, modules.occupancy,
              modules.notifier]
    notifier:
      credentials: /etc/bizzyd/firebase-service-account.json
    http:
      servers:
        - locations:
            - location: = /v1/me/notifications/inbox
              content: me_inbox
              auth: required
            - location: ~ ^/v1/me/notifications/inbox/(?<id>[0-9]+)$
              content: me_inbox_item
              auth: required
            - location: = /v1/me/notifications/inbox/read
              content: me_inbox_read
              auth: required

Pieces: the `notifier` process role (process.py: one process), occupancy alerts with
hysteresis, cooldown and quiet hours (occupancy.py), deal and subscription notifications
from the outbox and scans (events.py), the jobs and their idempotency keys (jobs.py),
delivery (sender.py; firebase-admin's messages and credentials over a
pool of keep-alive connections, fcm.py), the inbox endpoints (inbox.py), and
a FAKE FCM endpoint for the demo (fakefcm.py). docs/operations.md "The notifier".
"""

from __future__ import annotations

from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Bool, Duration, Int, Str
from bizzyd.module import Module, ProcessRole

from .fakefcm import fcm_fake
from .inbox import HANDLERS
from .process import NAME, main, sender_main

QUEUE_NAME = r"[A-Za-z0-9_-]{1,80}"

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("enabled", Bool(), True,
                  doc="Run the notifier process (off: only the inbox endpoints)."),
        Directive("project_id", Str(allow_empty=True), "",
                  doc="Firebase project of Cloud Messaging; empty: firebase.project_id."),
        Directive("credentials", Str(allow_empty=True), "", path=True,
                  doc="Service account JSON key file for Cloud Messaging; empty: Google "
                      "Application Default Credentials."),
        Directive("fcm_url", Str(allow_empty=True), "",
                  doc="Send to this URL instead of Google's, without credentials: a FAKE "
                      "FCM for tests and the demo (`{project}` is replaced). Logged "
                      "loudly at start. Empty in production."),
        Directive("send_timeout", Duration(), "10s", doc="Timeout of one FCM request."),
        Directive("batch_size", Int(min=1, max=500), 500,
                  doc="Messages a sender round pushes at once; their deliveries are "
                      "recorded before the next ones are pushed."),
        Directive("connections", Int(min=1, max=1000), 64,
                  doc="Keep-alive HTTP/1.1 connections to FCM of a sending process (at "
                      "most this many pushes in flight)."),
        Directive("jobs_per_round", Int(min=1, max=1000), 100,
                  doc="Notification jobs a sender round takes from the queue."),
        Directive("senders", Int(min=1, max=32), 4,
                  doc="Sender rounds running at once in a sending process (each: "
                      "receive, push, record)."),
        Directive("sender_processes", Int(min=0, max=64), 2,
                  doc="`notifier sender` processes that deliver the jobs (the `notifier` "
                      "process then only runs the triggers); 0: the notifier process "
                      "sends too. Two keep the p99 of a burst of alerts under 1 s on "
                      "two cores (bench/RESULTS.md)."),
        Directive("pool_max_size", Int(min=2, max=200), 24,
                  doc="Postgres connections of the notifier's own pool (database.* "
                      "otherwise); two more for LISTEN."),
        Directive("queue", Str(pattern=QUEUE_NAME), "notifications",
                  doc="The queue of notification jobs (created at start)."),
        Directive("dead_letter_queue", Str(pattern=QUEUE_NAME), "notifications-dlq",
                  doc="Where jobs go that failed permanently or `max_attempts` times."),
        Directive("visibility_timeout", Duration(), "60s",
                  doc="A job a notifier took and did not finish (it died) is handed out "
                      "again after this long."),
        Directive("max_attempts", Int(min=1, max=1000), 8,
                  doc="Receives of a job before the queue dead-letters it."),
        Directive("retry_base", Duration(), "5s",
                  doc="First retry delay after a quota or 5xx error; doubles per attempt."),
        Directive("retry_max", Duration(), "15m", doc="Longest retry delay."),
        Directive("scan_interval", Duration(), "60s",
                  doc="How often deals and subscriptions about to end are looked for (the "
                      "outbox of new deals and renewals is read at once on NOTIFY)."),
        Directive("deal_expiring_within", Duration(), "24h",
                  doc="A followed deal ending within this long is announced once."),
        Directive("subscription_expiring_within", Duration(), "72h",
                  doc="A plan that will end (failed renewal, manual plan) within this long "
                      "is announced once."),
    )), doc="Push notifications (modules.notifier)."),
)


def check(config: Any) -> None:
    for key, needed in (("database", "database"), ("api", "api"), ("queue", "queue")):
        if config.get(key) is None:
            raise ConfigError(f"modules.notifier needs modules.{needed} (list it in "
                              "`modules:` before modules.notifier)", ("modules",),
                              config.mark(("modules",)))
    settings = config[NAME]
    if settings["enabled"] and not (settings["project_id"]
                                    or (config.get("firebase") or {}).get("project_id")):
        key = (NAME, "project_id")
        raise ConfigError("the notifier needs a Firebase project: set notifier.project_id "
                          "or firebase.project_id", key, config.mark(key))


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    check=check,
    roles=(ProcessRole(NAME, main,
                       count=lambda config: 1 if config[NAME]["enabled"] else 0),
           ProcessRole(f"{NAME} sender", sender_main,
                       count=lambda config: config[NAME]["sender_processes"]
                       if config[NAME]["enabled"] else 0)),
    content_handlers={**HANDLERS, "fcm_fake": fcm_fake},
    doc=__doc__ or "",
)

__all__ = ["module"]
