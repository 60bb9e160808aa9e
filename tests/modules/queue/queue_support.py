"""Helpers of the queue tests: a real `Queues` on a test database, a bizzyd config
serving the queue, and a boto3 client for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bizzyd.log import stderr_log
from modules.database.pool import Database
from modules.queue.store import Queues, Wakeups


def db_settings(dsn: str) -> dict:
    return {"dsn": dsn, "pool_min_size": 1, "pool_max_size": 4, "statement_timeout": 5.0,
            "connect_timeout": 5.0, "reconnect_max_backoff": 1.0}


Scenario = Callable[[Queues], Awaitable[Any]]


def run_queues(dsn: str, scenario: Scenario, rescue_interval: float = 0.2,
               listen: bool = True, timeout: float = 60) -> Any:
    """Run `scenario(queues)` on a fresh event loop with its own pool and listener."""

    async def main() -> Any:
        log = stderr_log("info")
        db = Database(db_settings(dsn), log)
        wakeups = Wakeups(dsn, log) if listen else None
        if wakeups is not None:
            wakeups.start()
            await asyncio.wait_for(wakeups.connected.wait(), 10)
        try:
            return await asyncio.wait_for(scenario(Queues(db, wakeups, rescue_interval)),
                                          timeout)
        finally:
            if wakeups is not None:
                await wakeups.close()
            await db.close()

    return asyncio.run(main())


ACCESS_KEY, SECRET_KEY = "AKIDQUEUETEST", "queue-test-secret/key+1234567890"
OPERATORS = ["allow 127.0.0.1", "deny all"]


def queue_locations(access: list[str]) -> list[dict]:
    """AweQ's routes, the SQS endpoint and the console, behind `access`."""
    return [
        {"location": "= /health", "return": [200, '{"status":"ok"}']},
        {"location": "= /send-message", "content": "aweq_send", "access": access},
        {"location": "= /receive-message", "content": "aweq_receive", "access": access},
        {"location": "~ ^/delete-message/(?<key>[^/]+)$", "content": "aweq_delete",
         "access": access},
        {"location": "= /get-stats", "content": "aweq_stats", "access": access},
        {"location": "/queues/", "content": "queue_console", "access": access},
        {"location": "= /", "content": "sqs"},
    ]


def queue_config(port: int, dsn: str, denied_port: int | None = None, **queue: object) -> dict:
    from bizzyd_proc import base_config

    config = base_config(port, modules=["modules.database", "modules.queue"],
                         database={"dsn": dsn, "connect_timeout": "5s",
                                   "reconnect_max_backoff": "1s"},
                         queue={"sqs_credentials": [f"{ACCESS_KEY}:{SECRET_KEY}"],
                                "aweq_checkout_lifetime": "120s", **queue})
    config["http"]["servers"][0]["locations"] = queue_locations(OPERATORS)
    if denied_port:
        config["http"]["servers"].append({"listen": [f"127.0.0.1:{denied_port}"],
                                          "locations": queue_locations(["deny all"])})
    return config


def boto_client(port: int, key: str = ACCESS_KEY, secret: str = SECRET_KEY) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30))
