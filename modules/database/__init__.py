"""Postgres access: one pool per process, migrations, and a database health check.

Directives (main context, block `database`): see DIRECTIVES below.
Content handler `db_health`: `SELECT 1`, 200 or 503 with Retry-After.
Command: `bizzyd migrate status|up`.
"""

from __future__ import annotations

from bizzyd.config.schema import Block, Directive
from bizzyd.config.types import Duration, Int, ListOf, Str
from bizzyd.http.response import Response
from bizzyd.module import Module, ProcessContext

from . import migrate
from .pool import Database, DatabaseUnavailable

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:25432/bizzyd"

DIRECTIVES = (
    Directive("database", Block((
        Directive("dsn", Str(), DEFAULT_DSN,
                  doc="libpq connection string of the Postgres that is the truth."),
        Directive("replicas", ListOf(Str()), [],
                  doc="DSNs of streaming standbys for reads that may be a few seconds old "
                      "(Database.read_connection(): catalogue cache misses, analytics); "
                      "writes and read-your-writes stay on `dsn`. A standby that is down "
                      "is skipped; with all down, those reads go to the primary."),
        Directive("pool_min_size", Int(min=0), 1, doc="Connections a process keeps open."),
        Directive("pool_max_size", Int(min=1), 4, doc="Connections a process opens at most."),
        Directive("statement_timeout", Duration(), "5s",
                  doc="Postgres statement_timeout of bizzyd's sessions."),
        Directive("connect_timeout", Duration(), "2s",
                  doc="Time to connect, or to wait for a free pooled connection."),
        Directive("reconnect_max_backoff", Duration(), "10s",
                  doc="While Postgres is down, reconnect attempts back off up to this."),
    )), doc="PostgreSQL connection settings."),
)


def database(ctx: ProcessContext) -> Database:
    """The process's Database (for other modules' handlers)."""
    return ctx.state["database"]


async def init_worker(ctx: ProcessContext) -> None:
    db = ctx.state["database"] = Database(ctx.config["database"], ctx.log)
    await db.start()


async def exit_worker(ctx: ProcessContext) -> None:
    db = ctx.state.pop("database", None)
    if db is not None:
        await db.close()


async def db_health(request) -> Response:
    async with database(request.process).connection() as conn:
        await conn.fetchval("SELECT 1")
    return Response(200, b'{"database":"ok"}\n', content_type="application/json")


def migrate_command(argv: list[str], config) -> int:
    return migrate.main(argv, config["database"]["dsn"])


module = Module(
    name="database",
    directives=DIRECTIVES,
    init_worker=init_worker,
    exit_worker=exit_worker,
    content_handlers={"db_health": db_health},
    commands={"migrate": migrate_command},
    doc=__doc__ or "",
)

__all__ = ["Database", "DatabaseUnavailable", "database", "module"]
