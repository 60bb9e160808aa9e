"""App Store Server Notifications V2: verification of the signed payloads.

Apple signs each notification (and the transaction and renewal infos inside it) as a
JWS (ES256) whose `x5c` header carries the certificate chain: leaf, Apple's WWDR
intermediate, Apple Root CA G3.  A payload is accepted only when that chain ends in
the configured root certificate (compared byte for byte), each certificate is signed
by the next and valid at the notification's signing time, the leaf and intermediate
carry Apple's marker extensions, and the JWS signature verifies with the leaf's key.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ObjectIdentifier

# Apple's marker extensions (as Apple's app-store-server-library checks them)
LEAF_OID = ObjectIdentifier("1.2.840.113635.100.6.11.1")
INTERMEDIATE_OID = ObjectIdentifier("1.2.840.113635.100.6.2.1")


class Refused(Exception):
    """A payload that is not signed by a chain to the configured root."""


def load_root(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        data = f.read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def _has(cert: x509.Certificate, oid: ObjectIdentifier) -> bool:
    try:
        cert.extensions.get_extension_for_oid(oid)
        return True
    except x509.ExtensionNotFound:
        return False


def _chain(header: dict[str, Any], root: x509.Certificate, at: dt.datetime
           ) -> x509.Certificate:
    """The leaf of a verified x5c chain."""
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or len(x5c) != 3:
        raise Refused("x5c must hold 3 certificates (leaf, intermediate, root)")
    try:
        certs = [x509.load_der_x509_certificate(base64.b64decode(c, validate=True))
                 for c in x5c]
    except (ValueError, TypeError) as exc:
        raise Refused(f"x5c: not a certificate: {exc}") from None
    leaf, intermediate, top = certs
    if top.public_bytes(Encoding.DER) != root.public_bytes(Encoding.DER):
        raise Refused("the chain does not end in the configured root certificate")
    for child, parent in ((leaf, intermediate), (intermediate, top)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise Refused(f"broken chain: {child.subject.rfc4514_string()}: "
                          f"{exc or 'bad signature'}") from None
    for cert in certs:
        if not cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            raise Refused(f"certificate {cert.subject.rfc4514_string()} not valid at {at}")
    if not _has(leaf, LEAF_OID) or not _has(intermediate, INTERMEDIATE_OID):
        raise Refused("the chain lacks Apple's marker extensions")
    return leaf


def verify(token: str, root: x509.Certificate, now: dt.datetime | None = None
           ) -> dict[str, Any]:
    """The claims of an Apple-signed JWS, or Refused."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Refused(f"not a JWS: {exc}") from None
    if header.get("alg") != "ES256":
        raise Refused("alg must be ES256")
    leaf = _chain(header, root, now or dt.datetime.now(dt.UTC))
    try:
        return jwt.decode(token, leaf.public_key(), algorithms=["ES256"],
                          options={"verify_aud": False})
    except jwt.PyJWTError as exc:
        raise Refused(f"signature: {exc}") from None
