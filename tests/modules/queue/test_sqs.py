"""The SQS JSON protocol with an unmodified boto3 client (botocore signs with SigV4)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pytest
from botocore.exceptions import ClientError
from queue_support import boto_client

pytestmark = pytest.mark.services


def fresh(suffix: str = "") -> str:
    return f"sqs{secrets.token_hex(4)}{suffix}"


@pytest.fixture
def sqs(queue_server):
    return boto_client(queue_server.port)


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.response["Error"]["Code"]


def test_queue_lifecycle(sqs):
    name = fresh()
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})["QueueUrl"]
    assert url.endswith(f"/000000000000/{name}")
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "40"})[
        "QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists) as exc:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "41"})
    assert code(exc) == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    assert url in sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "40"
    assert attrs["QueueArn"] == f"arn:aws:sqs:us-east-1:000000000000:{name}"
    assert attrs["ApproximateNumberOfMessages"] == "0"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "2",
                                                       "MessageRetentionPeriod": "600"})
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["DelaySeconds",
                                                                   "MessageRetentionPeriod"])
    assert attrs["Attributes"] == {"DelaySeconds": "2", "MessageRetentionPeriod": "600"}
    with pytest.raises(ClientError) as exc:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"Colour": "blue"})
    assert code(exc) == "InvalidAttributeName"
    with pytest.raises(ClientError) as exc:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "9000"})
    assert code(exc) == "InvalidParameterValue"
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as exc:
        sqs.get_queue_url(QueueName=name)
    assert code(exc) == "AWS.SimpleQueueService.NonExistentQueue"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_send_receive_delete(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    body = "héllo wörld"
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes={
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "n": {"DataType": "Number", "StringValue": "3"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}})
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert len(sent["MD5OfMessageAttributes"]) == 32  # botocore checked both MD5s
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                              MessageAttributeNames=["All"],
                              MessageSystemAttributeNames=["All"])["Messages"]
    assert len(got) == 1 and got[0]["Body"] == body
    assert got[0]["MessageId"] == sent["MessageId"]
    assert got[0]["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01"
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert abs(int(got[0]["Attributes"]["SentTimestamp"]) / 1000 - time.time()) < 60
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    with pytest.raises(ClientError) as exc:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")
    assert code(exc) == "ReceiptHandleIsInvalid"
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_batches_and_visibility(sqs):
    url = sqs.create_queue(QueueName=fresh())["QueueUrl"]
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        *({"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(9)),
        {"Id": "bad", "MessageBody": "x", "DelaySeconds": 5000}])
    assert sorted(s["Id"] for s in result["Successful"]) == [f"m{i}" for i in range(9)]
    assert [(f["Id"], f["Code"]) for f in result["Failed"]] == [("bad", "InvalidParameterValue")]
    with pytest.raises(ClientError) as exc:
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": "x"} for i in range(11)])
    assert code(exc) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    with pytest.raises(ClientError) as exc:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "x"},
                                                      {"Id": "a", "MessageBody": "y"}])
    assert code(exc) == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    with pytest.raises(ClientError) as exc:
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": "x" * 100_000} for i in range(3)])
    assert code(exc) == "AWS.SimpleQueueService.BatchRequestTooLong"
    with pytest.raises(ClientError) as exc:
        sqs.send_message(QueueUrl=url, MessageBody="bell \x07")
    assert code(exc) == "InvalidMessageContents"
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 9
    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "a", "ReceiptHandle": got[0]["ReceiptHandle"], "VisibilityTimeout": 0},
        {"Id": "b", "ReceiptHandle": "0" * 64, "VisibilityTimeout": 0}])
    assert [s["Id"] for s in changed["Successful"]] == ["a"]
    assert [f["Id"] for f in changed["Failed"]] == ["b"]
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                MessageSystemAttributeNames=["ApproximateReceiveCount"])
    (m,) = again["Messages"]
    assert m["MessageId"] == got[0]["MessageId"]
    assert m["Attributes"] == {"ApproximateReceiveCount": "2"}
    with pytest.raises(ClientError) as exc:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"],
                                      VisibilityTimeout=10)  # the old receipt is stale
    assert code(exc) == "ReceiptHandleIsInvalid"
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": f"d{i}", "ReceiptHandle": x["ReceiptHandle"]}
        for i, x in enumerate([m, *got[1:]])])
    assert len(deleted["Successful"]) == 9 and deleted["Failed"] == []
    sqs.send_message(QueueUrl=url, MessageBody="purge me")
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_long_poll_and_dead_letter_queue(sqs):
    dlq_url = sqs.create_queue(QueueName=fresh("-dlq"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 1})
    url = sqs.create_queue(QueueName=fresh(), Attributes={
        "RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    start = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert 0.9 < time.monotonic() - start < 5
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    assert len(sqs.receive_message(QueueUrl=url)["Messages"]) == 1
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # moved to the DLQ
    (dead,) = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2)["Messages"]
    assert dead["Body"] == "poison"
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    assert json.loads(attrs["Attributes"]["RedrivePolicy"]) == json.loads(policy)


def test_fifo_queue(sqs):
    url = sqs.create_queue(QueueName=fresh(".fifo"), Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    with pytest.raises(ClientError) as exc:
        sqs.create_queue(QueueName=fresh(), Attributes={"FifoQueue": "true"})
    assert code(exc) == "InvalidParameterValue"
    first = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")
    dup = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g")
    assert dup["MessageId"] == first["MessageId"]
    assert dup["SequenceNumber"] == first["SequenceNumber"]
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                              MessageSystemAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == ["one", "two"]
    assert got[0]["Attributes"]["MessageGroupId"] == "g"
    assert int(got[0]["Attributes"]["SequenceNumber"]) < int(got[1]["Attributes"][
        "SequenceNumber"])


def test_bad_signatures_get_sqs_errors(queue_server):
    wrong_secret = boto_client(queue_server.port, secret="not-the-secret")
    with pytest.raises(ClientError) as exc:
        wrong_secret.list_queues()
    assert code(exc) == "SignatureDoesNotMatch"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown = boto_client(queue_server.port, key="AKIDUNKNOWN")
    with pytest.raises(ClientError) as exc:
        unknown.list_queues()
    assert code(exc) == "InvalidClientTokenId"


def test_unsigned_and_tampered_requests_are_refused(queue_server):
    import http.client

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from queue_support import ACCESS_KEY, SECRET_KEY

    port = queue_server.port
    headers = {"Content-Type": "application/x-amz-json-1.0",
               "X-Amz-Target": "AmazonSQS.ListQueues", "Host": f"127.0.0.1:{port}"}
    body = b"{}"
    request = AWSRequest("POST", f"http://127.0.0.1:{port}/", data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sqs", "us-east-1").add_auth(request)
    signed = dict(request.headers.items())

    def post(hdrs: dict, data: bytes) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/", data, hdrs)
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    assert post(signed, body)[0] == 200
    status, doc = post(signed, b'{"QueueNamePrefix": "x"}')  # body changed after signing
    assert status == 403 and doc["__type"].endswith("#InvalidSignatureException")
    status, doc = post(headers, body)
    assert status == 403 and doc["__type"].endswith("#MissingAuthenticationTokenException")
