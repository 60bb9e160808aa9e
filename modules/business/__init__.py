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

from typing import Any

from bizzyd.config.schema import ConfigError
from bizzyd.module import Module

from .api import HANDLERS, NAME


def check(config: Any) -> None:
    for key, needed in (("database", "database"), ("api", "api"), ("firebase", "auth")):
        if config.get(key) is None:
            raise ConfigError(f"modules.business needs modules.{needed} (list it in "
                              "`modules:` before modules.business)", ("modules",),
                              config.mark(("modules",)))


module = Module(name=NAME, check=check, content_handlers=HANDLERS, doc=__doc__ or "",
                requires=("modules.hives",))

__all__ = ["module"]
