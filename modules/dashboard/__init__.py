"""The Hive Analytics Dashboard: a single-page web app for businesses, served by bizzyd.

Theory of operation
-------------------
The app's sources are in `modules/dashboard/web/` (plain DOM code, uPlot for charts,
the Firebase JS SDK for sign-in). `make dashboard` installs their npm dependencies from
the pinned package-lock.json and bundles them with esbuild into
`modules/dashboard/web/dist/`: `index.html` and fingerprinted `assets/app-<hash>.js`
and `.css`. Nothing is fetched from anywhere but this bizzyd at run time, and the app
talks to bizzyd only through the public HTTP API (docs/dashboard.md).

bizzyd serves the built files with the static module (two locations, as in
conf/demo.yaml): the fingerprinted assets with `Cache-Control: public,
max-age=31536000, immutable`, the index with `no-cache` so a new build is picked up at
once. This module adds the one thing the files cannot know, the sign-in settings of
this bizzyd, as JSON the page reads at start:

    - location: = /dashboard/config.json
      content: dashboard_config

`{"firebase": {"apiKey", "projectId", "authDomain"}, "authEmulator": URL or null,
"liveStreams": N}`: the project and the emulator come from `firebase:` (modules.auth),
so the page signs in where bizzyd verifies tokens.
"""

from __future__ import annotations

import json

from bizzyd.config.schema import Block, Directive
from bizzyd.config.types import Int, Str
from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Module

NAME = "dashboard"

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("firebase_api_key", Str(), "fake-api-key",
                  doc="The Firebase Web API key the page signs in with (public by "
                      "design: it names the project, it grants nothing). The emulator "
                      "takes any value."),
        Directive("firebase_auth_domain", Str(allow_empty=True), "",
                  doc="The Firebase authDomain (PROJECT.firebaseapp.com); empty for "
                      "the emulator."),
        Directive("live_streams", Int(min=0, max=5), 4,
                  doc="Live streams (SSE, GET /v1/occupancy/stream, 100 hives each) "
                      "the overview may open: a browser opens at most 6 HTTP/1.1 "
                      "connections to one host, and the page needs the others for "
                      "its API calls. Hives beyond 100 x this show a snapshot."),
    )), doc="The Hive Analytics Dashboard (modules.dashboard, docs/dashboard.md)."),
)


def page_config(config: object) -> dict[str, object]:
    """What the page needs to sign in, from the `dashboard` and `firebase` blocks."""
    firebase = config["firebase"]  # type: ignore[index]
    settings = config[NAME]  # type: ignore[index]
    emulator = firebase["emulator"]
    return {"firebase": {"apiKey": settings["firebase_api_key"],
                         "projectId": firebase["project_id"],
                         "authDomain": settings["firebase_auth_domain"] or None},
            "authEmulator": f"http://{emulator}" if emulator else None,
            "liveStreams": settings["live_streams"]}


def dashboard_config(request: Request) -> Response:
    """GET the page's sign-in settings (JSON, never cached long: a reload may change
    them)."""
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"", [("Allow", "GET, HEAD")])
    body = json.dumps(page_config(request.process.config), separators=(",", ":"))
    return Response(200, body, [("Cache-Control", "no-cache")],
                    content_type="application/json")


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    content_handlers={"dashboard_config": dashboard_config},
    requires=("modules.auth",),
    doc=__doc__ or "",
)

__all__ = ["dashboard_config", "module", "page_config"]
