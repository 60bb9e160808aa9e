"""Business accounts (issue 17): accounts and their members with roles, the hives and
deals of an account, and the audit trail of every business write.  Endpoints on
modules.api, sign-in by modules.auth; who may do what is in docs/api.md "Business
accounts" and modules/business/api.py.

    modules: [modules.database, modules.api, modules.hives, modules.auth, modules.business]
    http:
      servers:
        - locations:
            - location: = /v1/accounts
              content: accounts
              auth: required
            - location: ~ ^/v1/hives/(?<id>[0-9]+)$
              content: hive_managed          # the public GET, and PATCH/DELETE
              auth: optional

modules/business/testing.py and conf/demo.yaml have every location.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Custom, Int, ListOf, Size, Str
from bizzyd.module import Module

from .api import HANDLERS, NAME


def _network(value: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value))
    except ValueError as exc:
        raise ValueError(f"not a CIDR network: {exc}") from None

DIRECTIVES = (
    Directive(NAME, Block((
        Directive("images_dir", Str(), "images", path=True,
                  doc="Where uploaded hive images are stored (content-addressed names); "
                      "serve it with a static location (conf/demo.yaml: /images/)."),
        Directive("images_url", Str(), "http://127.0.0.1:8080/images",
                  doc="The public http(s) URL of that static location: image URLs are "
                      "this plus the file's name."),
        Directive("image_max_bytes", Size(), "8m",
                  doc="Largest image upload (413 above; keep the location's "
                      "client_max_body_size at least as large)."),
        Directive("image_max_pixels", Int(min=1, max=200_000_000), 40_000_000,
                  doc="Most pixels (width x height) an image may have: 422 above, "
                      "judged from the header before decoding (decompression bombs)."),
        Directive("sensor_config_trusted", ListOf(Custom("CIDR network", _network, str)),
                  ["127.0.0.1/32", "::1/128"],
                  doc="Callers without a token from these networks may read and push "
                      "every sensor's configuration (operators' tools on the host; "
                      "needs `auth: optional` on the location). Empty it when a proxy on "
                      "this host (HAProxy) forwards clients: they would all look local."),
    )), doc="Business accounts (modules.business)."),
)


def check(config: Any) -> None:
    for key, needed in (("database", "database"), ("api", "api"), ("firebase", "auth")):
        if config.get(key) is None:
            raise ConfigError(f"modules.business needs modules.{needed} (list it in "
                              "`modules:` before modules.business)", ("modules",),
                              config.mark(("modules",)))
    if not config[NAME]["images_url"].startswith(("http://", "https://")):
        key = (NAME, "images_url")
        raise ConfigError("images_url must be an http(s) URL", key, config.mark(key))


module = Module(name=NAME, directives=DIRECTIVES, check=check, content_handlers=HANDLERS,
                doc=__doc__ or "", requires=("modules.hives",))

__all__ = ["module"]
