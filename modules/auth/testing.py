"""Stand-ins for Google's token keys and the emulator's sign-in, for tests and benchmarks
(nothing here runs in bizzyd)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://securetoken.google.com/"


class KeyPair:
    """An RSA key and a self-signed certificate, as Google publishes for ID tokens."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {kid}")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=2))
                     .sign(self.key, hashes.SHA256()))

    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def token(self, project: str, uid: str, kid: str | None = None, **overrides: Any) -> str:
        """An ID token as Firebase issues it; `overrides` replace claims (None drops)."""
        now = int(time.time())
        claims: dict[str, Any] = {"iss": ISSUER + project, "aud": project, "auth_time": now,
                                  "sub": uid, "iat": now - 1, "exp": now + 3600,
                                  "firebase": {"sign_in_provider": "password"}}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.key, algorithm="RS256",
                          headers={"kid": self.kid if kid is None else kid})


@contextmanager
def certs_server(*keys: KeyPair) -> Iterator[str]:
    """A local HTTP server answering like Google's x509 certificate endpoint; yields its
    URL."""
    body = json.dumps({k.kid: k.pem() for k in keys}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=3600")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/certs"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def emulator_token(emulator: str, email: str, password: str = "secret-pw-1") -> str:
    """Sign up (or in) `email` at the Firebase Auth emulator; its ID token."""
    base = f"http://{emulator}/identitytoolkit.googleapis.com/v1/accounts"
    payload = json.dumps({"email": email, "password": password,
                          "returnSecureToken": True}).encode()
    for action in ("signUp", "signInWithPassword"):
        request = urllib.request.Request(f"{base}:{action}?key=fake-api-key", payload,
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)["idToken"]
        except urllib.error.HTTPError as exc:
            if action == "signInWithPassword" or b"EMAIL_EXISTS" not in exc.read():
                raise
    raise AssertionError("unreachable")


def emulator_address() -> str:
    """HOST:PORT of the running Firebase Auth emulator (BIZZYD_FIREBASE_EMULATOR, which
    `scripts/services env` exports); AssertionError saying how to start it otherwise."""
    address = os.environ.get("BIZZYD_FIREBASE_EMULATOR")
    if not address:
        raise AssertionError("BIZZYD_FIREBASE_EMULATOR is not set: run scripts/services "
                             'start and eval "$(scripts/services env)"')
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        raise AssertionError(f"the Firebase Auth emulator at {address} is not running: "
                             f"{exc} (scripts/services start firebase)") from None
    return address
