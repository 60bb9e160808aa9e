"""Opaque keyset cursors: the last row's sort key and id, bound to the query.

`encode(key, id, query, secret)` → base64url(msgpack([key, id]) + MAC), the MAC being an
8-byte keyed BLAKE2b of the payload and the query's canonical form (without the
cursor).  A cursor that was altered, or that belongs to another query (other filters,
other sort), fails the MAC: 400 naming `cursor`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from modules.api import Problem

MAC = 8
_DECODER = msgspec.msgpack.Decoder(tuple[float | str, int])


def _mac(payload: bytes, query: str, secret: bytes) -> bytes:
    return hashlib.blake2b(payload + b"\x00" + query.encode(), key=secret[:64],
                           digest_size=MAC).digest()


def encode(key: float | str, last_id: int, query: str, secret: bytes) -> str:
    payload = msgspec.msgpack.encode((key, last_id))
    token = payload + _mac(payload, query, secret)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode()


def decode(text: str, query: str, secret: bytes) -> tuple[float | str, int]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Problem(400, "not a cursor this API issued", param="cursor") from None
    payload, mac = raw[:-MAC], raw[-MAC:]
    if len(raw) <= MAC or not hmac.compare_digest(mac, _mac(payload, query, secret)):
        raise Problem(400, "not a cursor of this query (altered, or issued for other "
                           "parameters)", param="cursor")
    try:
        return _DECODER.decode(payload)
    except msgspec.DecodeError:
        raise Problem(400, "not a cursor this API issued", param="cursor") from None
