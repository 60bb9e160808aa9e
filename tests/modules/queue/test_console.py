"""The queue console in headless Chromium (Debian's chromium, driven by playwright):
queues and depths, DLQ contents, peek, redrive and purge by clicking."""

from __future__ import annotations

import pytest
from browser import chromium
from queue_support import boto_client

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
def browser():
    with chromium() as b:
        yield b


def test_console_shows_depths_peeks_redrives_and_purges(queue_server, browser):
    sqs = boto_client(queue_server.port)
    sqs.create_queue(QueueName="console-dlq")
    policy = ('{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:console-dlq",'
              '"maxReceiveCount":1}')
    work = sqs.create_queue(QueueName="console-work", Attributes={
        "RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    sqs.send_message(QueueUrl=work, MessageBody="<b>poison</b>")
    sqs.receive_message(QueueUrl=work)
    sqs.receive_message(QueueUrl=work)  # the second receive moves it to the DLQ
    sqs.set_queue_attributes(QueueUrl=work, Attributes={"VisibilityTimeout": "300"})
    for i in range(3):
        sqs.send_message(QueueUrl=work, MessageBody=f"job {i}")
    sqs.receive_message(QueueUrl=work)  # one in flight

    base = f"http://127.0.0.1:{queue_server.port}/queues/"
    page = browser.new_page()
    page.set_default_timeout(10000)
    page.goto(base)
    row = page.locator("tr[data-queue='console-work']")
    assert row.locator("td.visible").inner_text() == "2"
    assert row.locator("td.inflight").inner_text() == "1"
    assert row.locator("td").nth(5).inner_text() == "console-dlq"
    assert "(dead-letter queue)" in page.locator("tr[data-queue='console-dlq']").inner_text()

    page.click("text=console-dlq")
    assert page.title() == "Queue console-dlq"
    assert "<b>poison</b>" in page.locator("#messages").inner_text()  # escaped, not markup
    page.click("#redrive")
    assert "moved 1 messages back" in page.locator("#note").inner_text()
    assert page.locator("#messages").inner_text() == "No messages."

    page.goto(base + "console-work")
    text = page.locator("#messages").inner_text()
    assert "<b>poison</b>" in text and "job 0" in text and "in flight" in text
    page.click("#purge")
    assert "purged 4 messages" in page.locator("#note").inner_text()
    page.goto(base)
    assert page.locator("tr[data-queue='console-work'] td.visible").inner_text() == "0"
    page.goto(base + "no-such-queue")
    assert "does not exist" in page.content()
