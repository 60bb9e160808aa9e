"""A local stand-in for Apple's signing chain (root, WWDR-like intermediate, leaf with
Apple's marker extensions) and signed App Store Server Notifications V2, for tests
(nothing here runs in bizzyd)."""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .apple import INTERMEDIATE_OID, LEAF_OID


def _cert(name: str, key: Any, issuer: x509.Certificate | None, issuer_key: Any,
          ca: bool, marker: x509.ObjectIdentifier | None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if marker is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(marker, b"\x05\x00"),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Chain:
    """Root, intermediate and leaf keys and certificates."""

    def __init__(self, name: str = "Test Apple", markers: bool = True) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert(f"{name} Root", self.root_key, None, self.root_key, True, None)
        self.mid_key = ec.generate_private_key(ec.SECP256R1())
        self.mid = _cert(f"{name} WWDR", self.mid_key, self.root, self.root_key, True,
                         INTERMEDIATE_OID if markers else None)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = _cert(f"{name} Leaf", self.leaf_key, self.mid, self.mid_key, False,
                          LEAF_OID if markers else None)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(Encoding.PEM)

    def x5c(self) -> list[str]:
        return [base64.b64encode(c.public_bytes(Encoding.DER)).decode()
                for c in (self.leaf, self.mid, self.root)]

    def sign(self, claims: dict[str, Any], key: Any = None,
             x5c: list[str] | None = None) -> str:
        return jwt.encode(claims, key or self.leaf_key, algorithm="ES256",
                          headers={"x5c": x5c or self.x5c()})


def transaction(account_token: str, original: str, transaction_id: str,
                product: str = "app.bizzy.premium.monthly", days: int = 30,
                **extra: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"transactionId": transaction_id, "originalTransactionId": original,
            "bundleId": "app.bizzy", "productId": product, "purchaseDate": now,
            "originalPurchaseDate": now, "expiresDate": now + days * 86_400_000,
            "price": 5990, "currency": "EUR", "appAccountToken": account_token,
            "type": "Auto-Renewable Subscription", "environment": "Production",
            "signedDate": now, **extra}


def notification(chain: Chain, kind: str, tx: dict[str, Any], subtype: str | None = None,
                 note_id: str | None = None, environment: str = "Production") -> dict:
    """The request body Apple sends: {"signedPayload": JWS}."""
    payload = {"notificationType": kind, "notificationUUID": note_id or str(uuid.uuid4()),
               "version": "2.0", "signedDate": int(time.time() * 1000),
               "data": {"bundleId": "app.bizzy", "environment": environment,
                        "signedTransactionInfo": chain.sign(tx)}}
    if subtype:
        payload["subtype"] = subtype
    return {"signedPayload": chain.sign(payload)}
