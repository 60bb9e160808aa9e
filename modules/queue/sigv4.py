"""AWS Signature Version 4 verification of requests in the `Authorization` header.

Written from AWS's published algorithm (Signature Version 4 signing process): the
server rebuilds the canonical request from what it received, derives the signing key
from the secret of the access key named in the credential scope, and compares
signatures in constant time. Presigned URLs (query-string auth) are not accepted.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 300  # seconds between the request's X-Amz-Date and our clock


class AuthError(Exception):
    """Why a request's signature is refused. `code` names the AWS error:
    MissingAuthenticationToken, IncompleteSignature, InvalidClientTokenId,
    SignatureDoesNotMatch or RequestExpired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse_keys(items: Sequence[str]) -> dict[str, str]:
    """'ACCESS_KEY:SECRET' strings (the config's form) → {access key: secret}."""
    keys: dict[str, str] = {}
    for item in items:
        access, sep, secret = item.partition(":")
        if not sep or not access or not secret:
            raise ValueError(f"expected ACCESS_KEY:SECRET, got {item[:20]!r}...")
        keys[access] = secret
    return keys


def _authorization(header: str) -> tuple[str, list[str], list[str], str]:
    """(access key, scope parts, signed header names, signature) of the header."""
    algorithm, _, rest = header.partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError("IncompleteSignature", f"unsupported algorithm {algorithm[:40]!r}")
    fields = {}
    for part in rest.split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = value
    try:
        credential, signed, signature = (fields["Credential"], fields["SignedHeaders"],
                                         fields["Signature"])
    except KeyError as exc:
        raise AuthError("IncompleteSignature",
                        f"the Authorization header lacks {exc.args[0]}") from None
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise AuthError("IncompleteSignature", "malformed credential scope")
    return parts[0], parts[1:4], signed.split(";"), signature


def canonical_request(method: str, raw_path: str, query: str,
                      headers: Mapping[str, list[str]], signed: Sequence[str],
                      payload_hash: str) -> str:
    path = quote(raw_path or "/", safe="/~")  # the encoded path, encoded again (not S3)
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~"))
                   for k, v in parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    lines = [f"{name}:{','.join(' '.join(v.split()) for v in headers.get(name, []))}"
             for name in signed]
    return "\n".join([method, path, canonical_query, *lines, "", ";".join(signed),
                      payload_hash])


@functools.lru_cache(maxsize=64)  # a key per day and scope: 4 HMACs saved per request
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _amz_time(amz_date: str) -> float:
    """Seconds since the epoch of `YYYYMMDDTHHMMSSZ` (strptime costs 20 µs)."""
    if len(amz_date) != 16 or amz_date[8] != "T" or amz_date[15] != "Z" \
            or not (amz_date[:8] + amz_date[9:15]).isdigit():
        raise AuthError("IncompleteSignature", f"bad X-Amz-Date {amz_date[:40]!r}")
    try:
        fields = (int(amz_date[0:4]), int(amz_date[4:6]), int(amz_date[6:8]),
                  int(amz_date[9:11]), int(amz_date[11:13]), int(amz_date[13:15]))
        return calendar.timegm(datetime(*fields).timetuple())
    except ValueError:
        raise AuthError("IncompleteSignature", f"bad X-Amz-Date {amz_date[:40]!r}") from None


def verify(keys: Mapping[str, str], method: str, raw_path: str, query: str,
           headers: Sequence[tuple[bytes, bytes]], body: bytes, service: str,
           now: float | None = None) -> str:
    """The access key of a correctly signed request; raises AuthError otherwise."""
    by_name: dict[str, list[str]] = {}
    for k, v in headers:
        by_name.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
    header = by_name.get("authorization", [""])[0]
    if not header:
        raise AuthError("MissingAuthenticationToken",
                        "Request is missing Authentication Token")
    access, (date, region, svc), signed, signature = _authorization(header)
    amz_date = by_name.get("x-amz-date", [""])[0]
    if "host" not in signed or not amz_date or svc != service or not amz_date.startswith(date):
        raise AuthError("IncompleteSignature", "the signature must cover host and "
                        f"x-amz-date, for service {service}, dated as X-Amz-Date")
    secret = keys.get(access)
    if secret is None:
        raise AuthError("InvalidClientTokenId",
                        "The security token included in the request is invalid.")
    skew = abs((time.time() if now is None else now) - _amz_time(amz_date))
    if skew > MAX_SKEW:
        raise AuthError("RequestExpired", f"Signature expired: {amz_date} is more than "
                        f"{MAX_SKEW // 60} minutes from the server's time.")
    payload = by_name.get("x-amz-content-sha256", [""])[0] or hashlib.sha256(body).hexdigest()
    request = canonical_request(method, raw_path, query, by_name, signed, payload)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(request.encode()).hexdigest()])
    expected = hmac.new(signing_key(secret, date, region, service), to_sign.encode(),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise AuthError("SignatureDoesNotMatch",
                        "The request signature we calculated does not match the signature "
                        "you provided. Check your AWS Secret Access Key and signing method. "
                        "Consult the service documentation for details.")
    return access
