"""RFC 9457 problem details: every error of an API endpoint is `application/problem+json`.

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "radius: at most 50000 metres, got 90000",
     "invalid_params": [{"name": "radius", "reason": "at most 50000 metres, got 90000"}]}

`invalid_params` (an extension member, as in RFC 9457's example) names the parameter
that was refused; `detail` repeats it for humans.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from bizzyd.http.response import REASONS, HTTPError, Response

PROBLEM_TYPE = "application/problem+json"


class InvalidParam(msgspec.Struct):
    """A refused request parameter and why."""

    name: str
    reason: str


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """An error (RFC 9457)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    invalid_params: list[InvalidParam] | None = None


_ENCODER = msgspec.json.Encoder()


class Problem(Exception):
    """Raise from an endpoint to answer with problem details."""

    def __init__(self, status: int, detail: str, *, param: str | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(detail)
        self.status, self.detail, self.param = status, detail, param
        self.headers = list(headers)

    def body(self, instance: str | None = None) -> ProblemDetails:
        invalid = None
        detail = self.detail
        if self.param is not None:
            invalid = [InvalidParam(self.param, self.detail)]
            detail = f"{self.param}: {self.detail}"
        title = REASONS.get(self.status, b"Error").decode()
        return ProblemDetails("about:blank", title, self.status, detail, instance=instance,
                              invalid_params=invalid)

    def response(self, instance: str | None = None) -> Response:
        return Response(self.status, _ENCODER.encode(self.body(instance)) + b"\n",
                        self.headers, content_type=PROBLEM_TYPE)


def from_http_error(exc: HTTPError) -> Problem:
    """The problem for a core HTTPError (a 503 from the database keeps Retry-After)."""
    return Problem(exc.status, exc.reason or REASONS.get(exc.status, b"Error").decode(),
                   headers=exc.headers)
