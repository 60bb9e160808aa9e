"""The queue's Python API in a process role of another module (how the notifier will
consume): messages sent over SQS are handled by the role and answered on another queue,
and the role stops cleanly with bizzyd."""

from __future__ import annotations

from pathlib import Path

import pytest
from queue_support import boto_client, queue_config

from bizzyd_proc import free_port, running, wait_for

pytestmark = pytest.mark.services

HERE = Path(__file__).resolve().parent


def test_a_process_role_consumes_through_the_python_api(tmp_path: Path, queue_dsn: str):
    port = free_port()
    config = queue_config(port, queue_dsn)
    config["modules"].append("queue_echo")
    with running(tmp_path, config, port, env={"PYTHONPATH": str(HERE / "role_module")}) as b:
        wait_for(lambda: any("queue echo" in t for t in b.titles()), 10, what="the role")
        sqs = boto_client(port)
        wait_for(lambda: "echo-out" in str(sqs.list_queues(QueueNamePrefix="echo")), 10,
                 what="the role to create its queues")
        url_in = sqs.get_queue_url(QueueName="echo-in")["QueueUrl"]
        url_out = sqs.get_queue_url(QueueName="echo-out")["QueueUrl"]
        sqs.send_message_batch(QueueUrl=url_in, Entries=[
            {"Id": str(i), "MessageBody": f"hello {i}"} for i in range(5)])
        answers: list[str] = []
        for _ in range(5):
            got = sqs.receive_message(QueueUrl=url_out, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=5).get("Messages", [])
            answers += [m["Body"] for m in got]
            if len(answers) >= 5:
                break
        assert sorted(answers) == [f"HELLO {i}" for i in range(5)]

        # the role answers, then deletes what it handled: wait for the deletes
        def handled() -> bool:
            attrs = sqs.get_queue_attributes(QueueUrl=url_in,
                                             AttributeNames=["All"])["Attributes"]
            return attrs["ApproximateNumberOfMessages"] == "0" \
                and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
        wait_for(handled, 10, what="the role to delete the messages it answered")
