"""SigV4 verification against requests signed by botocore's own signer."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from modules.queue.sigv4 import AuthError, parse_keys, verify

KEYS = {"AKID": "secret/with+chars"}


def signed(url: str, body: bytes, headers: dict[str, str], secret: str = KEYS["AKID"],
           service: str = "sqs") -> tuple[str, str, list[tuple[bytes, bytes]]]:
    request = AWSRequest("POST", url, data=body, headers=headers)
    SigV4Auth(Credentials("AKID", secret), service, "eu-west-1").add_auth(request)
    parts = urlsplit(url)
    raw = [(k.encode(), v.encode()) for k, v in request.headers.items()]
    raw.append((b"Host", parts.netloc.encode()))
    return parts.path or "/", parts.query, raw


def test_a_botocore_signature_verifies_with_path_query_and_odd_headers():
    path, query, headers = signed("http://h:1/a%20b/c?x=1&b=two%20words&a=", b"payload",
                                  {"X-Amz-Target": "AmazonSQS.ListQueues",
                                   "X-Custom": "  spaced   value "})
    assert verify(KEYS, "POST", path, query, headers, b"payload", "sqs") == "AKID"


@pytest.mark.parametrize("change, code", [
    (lambda p, q, h, b: (p, q, h, b + b"!"), "SignatureDoesNotMatch"),
    (lambda p, q, h, b: ("/other", q, h, b), "SignatureDoesNotMatch"),
    (lambda p, q, h, b: (p, "x=2", h, b), "SignatureDoesNotMatch"),
    (lambda p, q, h, b: (p, q, [x for x in h if x[0].lower() != b"authorization"], b),
     "MissingAuthenticationToken"),
])
def test_any_change_is_refused(change, code):
    path, query, headers = signed("http://h:1/q?x=1", b"{}", {})
    with pytest.raises(AuthError) as exc:
        verify(KEYS, "POST", *change(path, query, headers, b"{}"), "sqs")
    assert exc.value.code == code


def test_wrong_secret_unknown_key_other_service_and_old_requests():
    for secret, keys, service, now, code in (
            ("wrong", KEYS, "sqs", None, "SignatureDoesNotMatch"),
            (KEYS["AKID"], {"OTHER": "x"}, "sqs", None, "InvalidClientTokenId"),
            (KEYS["AKID"], KEYS, "s3", None, "IncompleteSignature"),
            (KEYS["AKID"], KEYS, "sqs", time.time() + 3600, "RequestExpired")):
        path, query, headers = signed("http://h:1/", b"{}", {}, secret, service)
        with pytest.raises(AuthError) as exc:
            verify(keys, "POST", path, query, headers, b"{}", "sqs", now=now)
        assert exc.value.code == code


def test_parse_keys():
    assert parse_keys(["A:b:c"]) == {"A": "b:c"}
    with pytest.raises(ValueError):
        parse_keys(["nosecret"])
