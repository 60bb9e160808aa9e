"""The SQS JSON protocol (awsJson1_0): `POST /` with `X-Amz-Target: AmazonSQS.<Action>`.

Enough of SQS for an unmodified boto3 client with `endpoint_url` at bizzyd: CreateQueue,
GetQueueUrl, ListQueues, Get/SetQueueAttributes, SendMessage(Batch), ReceiveMessage,
DeleteMessage(Batch), ChangeMessageVisibility(Batch), PurgeQueue, DeleteQueue.
Errors have SQS's shape: `{"__type": "com.amazonaws.sqs#Code", "message": ...}` with the
`x-amzn-query-error` header that carries the code of SQS's older query protocol (boto3
reports that one as Error.Code, as it does against AWS). Requests must be signed with
SigV4 by a key pair of `queue.sqs_credentials` unless `queue.sqs_auth` is off.
Queue URLs are `http://HOST/ACCOUNT/NAME`; only the last path segment is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bizzyd.http.phases import Request
from bizzyd.http.response import Response

from .sigv4 import AuthError, verify
from .store import MAX_BATCH, Message, QueueError, QueueInfo, Queues, SendEntry, parse_receipt

JSON = "application/x-amz-json-1.0"
PREFIX = "AmazonSQS."
MAX_BATCH_BYTES = 262144
# what SQS accepts in a body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-
INVALID_CHARACTERS = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# queue attribute ↔ store setting, and how to read the attribute's string value
ATTRIBUTES: dict[str, str] = {
    "VisibilityTimeout": "visibility_timeout",
    "DelaySeconds": "delay_seconds",
    "MessageRetentionPeriod": "retention_seconds",
    "MaximumMessageSize": "max_message_size",
    "ReceiveMessageWaitTimeSeconds": "receive_wait_seconds",
    "ContentBasedDeduplication": "content_dedup",
}
READ_ONLY = ("QueueArn", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed", "CreatedTimestamp", "LastModifiedTimestamp",
             "FifoQueue", "RedrivePolicy")
SYSTEM_ATTRIBUTES = ("SenderId", "SentTimestamp", "ApproximateReceiveCount",
                     "ApproximateFirstReceiveTimestamp", "MessageGroupId",
                     "MessageDeduplicationId", "SequenceNumber")
# SQS's query-protocol codes (boto3 shows these as Error.Code)
LEGACY_CODES = {
    "QueueDoesNotExist": "AWS.SimpleQueueService.NonExistentQueue",
    "QueueNameExists": "QueueAlreadyExists",
    "MessageNotInflight": "AWS.SimpleQueueService.MessageNotInflight",
    "EmptyBatchRequest": "AWS.SimpleQueueService.EmptyBatchRequest",
    "TooManyEntriesInBatchRequest": "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    "BatchEntryIdsNotDistinct": "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
    "InvalidBatchEntryId": "AWS.SimpleQueueService.InvalidBatchEntryId",
    "UnsupportedOperation": "AWS.SimpleQueueService.UnsupportedOperation",
    "BatchRequestTooLong": "AWS.SimpleQueueService.BatchRequestTooLong",
}
AUTH_TYPES = {"SignatureDoesNotMatch": "InvalidSignatureException",
              "RequestExpired": "InvalidSignatureException",
              "IncompleteSignature": "IncompleteSignatureException",
              "InvalidClientTokenId": "UnrecognizedClientException",
              "MissingAuthenticationToken": "MissingAuthenticationTokenException"}


class SqsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def error_response(code: str, message: str, status: int = 400, type_: str | None = None,
                   headers: list[tuple[str, str]] | None = None) -> Response:
    body = json.dumps({"__type": type_ or f"com.amazonaws.sqs#{code}", "message": message})
    legacy = LEGACY_CODES.get(code, code)
    fault = "Sender" if status < 500 else "Receiver"
    return Response(status, body, [("x-amzn-query-error", f"{legacy};{fault}"),
                                   ("x-amzn-RequestId", str(uuid.uuid4())), *(headers or [])],
                    content_type=JSON)


def _ok(value: dict[str, Any]) -> Response:
    return Response(200, json.dumps(value, separators=(",", ":")),
                    [("x-amzn-RequestId", str(uuid.uuid4()))], content_type=JSON)


# -- message attributes (MD5OfMessageAttributes, as SQS computes it) -------------------

def _encode(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def attributes_md5(attributes: dict[str, Any]) -> str:
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        dtype = value["DataType"]
        digest.update(_encode(name.encode()) + _encode(dtype.encode()))
        if "StringValue" in value:
            digest.update(b"\x01" + _encode(value["StringValue"].encode()))
        else:
            digest.update(b"\x02" + _encode(base64.b64decode(value["BinaryValue"])))
    return digest.hexdigest()


def check_attributes(attributes: Any) -> dict[str, Any] | None:
    if not attributes:
        return None
    if not isinstance(attributes, dict) or len(attributes) > 10:
        raise SqsError("InvalidParameterValue", "MessageAttributes: at most 10 attributes")
    out = {}
    for name, value in attributes.items():
        dtype = value.get("DataType") if isinstance(value, dict) else None
        if not isinstance(dtype, str) or dtype.split(".")[0] not in ("String", "Number",
                                                                     "Binary"):
            raise SqsError("InvalidParameterValue",
                           f"message attribute {name}: DataType must be String, Number or "
                           "Binary")
        key = "BinaryValue" if dtype.startswith("Binary") else "StringValue"
        if not isinstance(value.get(key), str):
            raise SqsError("InvalidParameterValue", f"message attribute {name} needs {key}")
        out[name] = {"DataType": dtype, key: value[key]}
    return out


# -- the handler ---------------------------------------------------------------------

class Sqs:
    """The SQS front end of a worker (`ctx.state["queue"].sqs`)."""

    def __init__(self, queues: Queues, settings: dict[str, Any], keys: dict[str, str]) -> None:
        self.queues, self.keys = queues, keys
        self.auth = settings["sqs_auth"]
        self.account = settings["sqs_account_id"]
        self.region = settings["sqs_region"]
        self.actions: dict[str, Callable[[Request, dict], Awaitable[dict]]] = {
            "CreateQueue": self.create_queue, "GetQueueUrl": self.get_queue_url,
            "ListQueues": self.list_queues, "GetQueueAttributes": self.get_attributes,
            "SetQueueAttributes": self.set_attributes, "SendMessage": self.send_message,
            "SendMessageBatch": self.send_message_batch, "ReceiveMessage": self.receive_message,
            "DeleteMessage": self.delete_message, "DeleteMessageBatch": self.delete_batch,
            "ChangeMessageVisibility": self.change_visibility,
            "ChangeMessageVisibilityBatch": self.change_visibility_batch,
            "PurgeQueue": self.purge_queue, "DeleteQueue": self.delete_queue}

    async def handle(self, request: Request) -> Response:
        target = request.header("X-Amz-Target") or ""
        if request.method != "POST" or not target.startswith(PREFIX):
            return error_response("UnknownOperationException", "expected POST with "
                                  "X-Amz-Target: AmazonSQS.<Action>", 400,
                                  "com.amazon.coral.service#UnknownOperationException")
        if self.auth:
            try:
                verify(self.keys, request.method, request.raw_url.split(b"?")[0].decode(),
                       request.query, request.headers, request.body, "sqs")
            except AuthError as exc:
                status = 400 if exc.code == "IncompleteSignature" else 403
                return error_response(exc.code, exc.message, status,
                                      f"com.amazon.coral.service#{AUTH_TYPES[exc.code]}")
        action = self.actions.get(target[len(PREFIX):])
        if action is None:
            return error_response("InvalidAction", f"unknown action {target[:60]}")
        try:
            params = json.loads(request.body or b"{}")
            if not isinstance(params, dict):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return error_response("SerializationException", "the body is not a JSON object",
                                  type_="com.amazon.coral.service#SerializationException")
        try:
            return _ok(await action(request, params))
        except SqsError as exc:
            return error_response(exc.code, exc.message, exc.status)
        except QueueError as exc:
            return error_response(exc.code, exc.message, exc.status)

    # -- helpers ----------------------------------------------------------------------

    def url(self, request: Request, name: str) -> str:
        host = request.header("Host") or "localhost"
        return f"http://{host}/{self.account}/{name}"

    def arn(self, name: str) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{name}"

    @staticmethod
    def queue_name(params: dict) -> str:
        url = params.get("QueueUrl")
        if not isinstance(url, str) or not url:
            raise SqsError("MissingParameter", "The request must contain the parameter QueueUrl.")
        return url.rstrip("/").rsplit("/", 1)[-1]

    @staticmethod
    def _int(params: dict, key: str, default: int | None = None) -> int | None:
        value = params.get(key, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise SqsError("InvalidParameterValue", f"{key} must be an integer")
        return value

    def settings_of(self, attributes: Any, creating: bool, name: str) -> dict[str, Any]:
        if attributes is None:
            return {}
        if not isinstance(attributes, dict):
            raise SqsError("InvalidParameterValue", "Attributes must be a map")
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            if key in ATTRIBUTES:
                out[ATTRIBUTES[key]] = _attribute_value(key, value)
            elif key == "RedrivePolicy":
                out.update(self._redrive(value))
            elif key == "FifoQueue" and creating:
                if (str(value).lower() == "true") != name.endswith(".fifo"):
                    raise SqsError("InvalidParameterValue", "a FIFO queue's name ends in "
                                   ".fifo, and only a FIFO queue's does")
            else:
                raise SqsError("InvalidAttributeName", f"Unknown or read-only attribute {key}")
        return out

    @staticmethod
    def _redrive(value: Any) -> dict[str, Any]:
        if value in ("", None):
            return {"dead_letter_queue": None, "max_receives": None}
        try:
            policy = json.loads(value)
            target = policy["deadLetterTargetArn"].rsplit(":", 1)[-1]
            count = int(policy["maxReceiveCount"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SqsError("InvalidParameterValue", "RedrivePolicy must be JSON with "
                           "deadLetterTargetArn and maxReceiveCount") from None
        return {"dead_letter_queue": target, "max_receives": count}

    # -- queues -----------------------------------------------------------------------

    async def create_queue(self, request: Request, p: dict) -> dict:
        name = p.get("QueueName")
        if not isinstance(name, str):
            raise SqsError("MissingParameter", "The request must contain QueueName.")
        info = await self.queues.create(name, **self.settings_of(p.get("Attributes"), True,
                                                                 name))
        return {"QueueUrl": self.url(request, info.name)}

    async def get_queue_url(self, request: Request, p: dict) -> dict:
        info = await self.queues.get(str(p.get("QueueName")))
        return {"QueueUrl": self.url(request, info.name)}

    async def list_queues(self, request: Request, p: dict) -> dict:
        limit = self._int(p, "MaxResults", 1000)
        if not 1 <= limit <= 1000:  # type: ignore[operator]
            raise SqsError("InvalidParameterValue", "MaxResults must be from 1 to 1000")
        after = str(p.get("NextToken") or "")
        infos = await self.queues.list(str(p.get("QueueNamePrefix") or ""), 1000)
        infos = [i for i in infos if i.name > after]
        out: dict[str, Any] = {"QueueUrls": [self.url(request, i.name)
                                             for i in infos[:limit]]}
        if "MaxResults" in p and len(infos) > limit:  # type: ignore[operator]
            out["NextToken"] = infos[limit - 1].name  # type: ignore[operator]
        return out

    async def get_attributes(self, request: Request, p: dict) -> dict:
        info = await self.queues.get(self.queue_name(p), fresh=True)
        names = p.get("AttributeNames") or []
        everything = await self._attributes(info)
        wanted = everything if "All" in names else {k: v for k, v in everything.items()
                                                    if k in names}
        unknown = [n for n in names if n != "All" and n not in everything
                   and n not in ("RedrivePolicy", "ContentBasedDeduplication", "FifoQueue")]
        if unknown:
            raise SqsError("InvalidAttributeName", f"Unknown Attribute {unknown[0]}.")
        return {"Attributes": wanted}

    async def _attributes(self, info: QueueInfo) -> dict[str, str]:
        stats = await self.queues.stats(info.name)
        out = {key: str(getattr(info, setting)) for key, setting in ATTRIBUTES.items()
               if setting != "content_dedup"}
        out.update({"QueueArn": self.arn(info.name),
                    "ApproximateNumberOfMessages": str(stats.visible),
                    "ApproximateNumberOfMessagesNotVisible": str(stats.in_flight),
                    "ApproximateNumberOfMessagesDelayed": str(stats.delayed),
                    "CreatedTimestamp": str(int(info.created_at)),
                    "LastModifiedTimestamp": str(int(info.updated_at))})
        if info.fifo:
            out["FifoQueue"] = "true"
            out["ContentBasedDeduplication"] = str(info.content_dedup).lower()
        if info.dead_letter_queue and info.max_receives:
            out["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": self.arn(
                info.dead_letter_queue), "maxReceiveCount": info.max_receives})
        return out

    async def set_attributes(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        await self.queues.configure(name, **self.settings_of(p.get("Attributes"), False, name))
        return {}

    async def purge_queue(self, request: Request, p: dict) -> dict:
        await self.queues.purge(self.queue_name(p))
        return {}

    async def delete_queue(self, request: Request, p: dict) -> dict:
        await self.queues.delete_queue(self.queue_name(p))
        return {}

    # -- messages ---------------------------------------------------------------------

    def _entry(self, p: dict) -> SendEntry:
        body = p.get("MessageBody")
        if not isinstance(body, str) or not body:
            raise SqsError("MissingParameter", "The request must contain the parameter "
                           "MessageBody.")
        bad = INVALID_CHARACTERS.search(body)
        if bad:
            raise SqsError("InvalidMessageContents", "Invalid characters found: the body "
                           f"has U+{ord(bad.group()):04X} at {bad.start()}")
        return SendEntry(body, self._int(p, "DelaySeconds"), p.get("MessageGroupId"),
                         p.get("MessageDeduplicationId"),
                         check_attributes(p.get("MessageAttributes")))

    @staticmethod
    def _sent(sent: Any, entry: SendEntry, fifo: bool) -> dict:
        out = {"MessageId": sent.id, "MD5OfMessageBody": sent.md5}
        if entry.attributes:
            out["MD5OfMessageAttributes"] = attributes_md5(entry.attributes)
        if fifo:
            out["SequenceNumber"] = str(sent.seq).zfill(20)
        return out

    async def send_message(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        entry = self._entry(p)
        sent = await self.queues.send_batch(name, [entry])
        return self._sent(sent[0], entry, (await self.queues.get(name)).fifo)

    @staticmethod
    def _batch(p: dict) -> list[dict]:
        entries = p.get("Entries")
        if not entries:
            raise SqsError("EmptyBatchRequest", "There should be at least one entry in "
                           "the request.")
        if not isinstance(entries, list) or len(entries) > MAX_BATCH:
            raise SqsError("TooManyEntriesInBatchRequest",
                           f"Maximum number of entries per request are {MAX_BATCH}.")
        ids = [e.get("Id") if isinstance(e, dict) else None for e in entries]
        for i in ids:
            if not isinstance(i, str) or not 0 < len(i) <= 80 or not all(
                    c.isascii() and (c.isalnum() or c in "-_") for c in i):
                raise SqsError("InvalidBatchEntryId", f"A batch entry id {str(i)[:80]!r} "
                               "is not valid.")
        if len(set(ids)) != len(ids):
            raise SqsError("BatchEntryIdsNotDistinct", "Two or more batch entries in the "
                           "request have the same Id.")
        return entries

    async def send_message_batch(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        entries = self._batch(p)
        size = sum(len(str(e.get("MessageBody", "")).encode()) for e in entries)
        if size > MAX_BATCH_BYTES:
            raise SqsError("BatchRequestTooLong", f"The batch's bodies have {size} bytes, "
                           f"more than {MAX_BATCH_BYTES}.")
        info = await self.queues.get(name)
        good, failed = [], []
        for e in entries:
            try:
                entry = self._entry(e)
                self.queues.check_entry(info, entry)
                good.append((e["Id"], entry))
            except (SqsError, QueueError) as exc:
                failed.append(_failure(e["Id"], exc))
        sent = await self.queues.send_batch(name, [x[1] for x in good]) if good else []
        ok = [{"Id": i, **self._sent(s, entry, info.fifo)}
              for (i, entry), s in zip(good, sent, strict=True)]
        return {"Successful": ok, "Failed": failed}

    async def receive_message(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        count = self._int(p, "MaxNumberOfMessages", 1)
        got = await self.queues.receive(name, count, self._int(p, "VisibilityTimeout"),  # type: ignore[arg-type]
                                        self._int(p, "WaitTimeSeconds"))
        system = set(p.get("AttributeNames") or []) | set(
            p.get("MessageSystemAttributeNames") or [])
        wanted = p.get("MessageAttributeNames") or []
        return {"Messages": [_message_out(m, system, wanted) for m in got]} if got else {}

    async def delete_message(self, request: Request, p: dict) -> dict:
        await self.queues.delete(self.queue_name(p), _handle(p))
        return {}

    async def delete_batch(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        entries = self._batch(p)
        good, failed = [], []
        for e in entries:
            try:
                parse_receipt(_handle(e))
                good.append(e)
            except (SqsError, QueueError) as exc:
                failed.append(_failure(e["Id"], exc))
        if good:
            await self.queues.delete_batch(name, [e["ReceiptHandle"] for e in good])
        return {"Successful": [{"Id": e["Id"]} for e in good], "Failed": failed}

    async def change_visibility(self, request: Request, p: dict) -> dict:
        timeout = self._int(p, "VisibilityTimeout")
        if timeout is None:
            raise SqsError("MissingParameter", "The request must contain VisibilityTimeout.")
        await self.queues.change_visibility(self.queue_name(p), _handle(p), timeout)
        return {}

    async def change_visibility_batch(self, request: Request, p: dict) -> dict:
        name = self.queue_name(p)
        ok, failed = [], []
        for e in self._batch(p):
            try:
                await self.change_visibility(request, {**e, "QueueUrl": name})
                ok.append({"Id": e["Id"]})
            except (SqsError, QueueError) as exc:
                failed.append(_failure(e["Id"], exc))
        return {"Successful": ok, "Failed": failed}


def _handle(p: dict) -> str:
    handle = p.get("ReceiptHandle")
    if not isinstance(handle, str) or not handle:
        raise SqsError("MissingParameter", "The request must contain ReceiptHandle.")
    return handle


def _failure(entry_id: str, exc: SqsError | QueueError) -> dict:
    return {"Id": entry_id, "SenderFault": True, "Code": exc.code, "Message": exc.message}


def _attribute_value(key: str, value: Any) -> Any:
    text = str(value).strip()
    if key == "ContentBasedDeduplication":
        if text.lower() not in ("true", "false"):
            raise SqsError("InvalidAttributeValue", f"{key} must be true or false")
        return text.lower() == "true"
    if not text.isdigit():
        raise SqsError("InvalidAttributeValue", f"Invalid value for the parameter {key}.")
    return int(text)


def _message_out(m: Message, system: set[str], wanted: list[str]) -> dict:
    out: dict[str, Any] = {"MessageId": m.id, "ReceiptHandle": m.receipt_handle,
                           "MD5OfBody": m.md5, "Body": m.body}
    values = {"SenderId": "bizzyd", "SentTimestamp": str(int(m.sent_at * 1000)),
              "ApproximateReceiveCount": str(m.receive_count),
              "ApproximateFirstReceiveTimestamp": str(int((m.first_received_at or 0) * 1000)),
              "MessageGroupId": m.group_id, "MessageDeduplicationId": m.dedup_id,
              "SequenceNumber": str(m.seq).zfill(20) if m.group_id else None}
    chosen = {k: v for k, v in values.items() if v is not None and ("All" in system
                                                                   or k in system)}
    if chosen:
        out["Attributes"] = chosen
    if m.attributes and wanted:
        picked = {k: v for k, v in m.attributes.items()
                  if "All" in wanted or ".*" in wanted or k in wanted
                  or any(w.endswith(".*") and k.startswith(w[:-1]) for w in wanted)}
        if picked:
            out["MessageAttributes"] = picked
            out["MD5OfMessageAttributes"] = attributes_md5(picked)
    return out
