"""Live occupancy: the shared occupancy zone, its writer processes, and the public
endpoints that read it.

    modules: [modules.database, modules.occupancy]
    occupancy:
      zone_capacity: 65536
      memcached: 127.0.0.1:21211
    http:
      servers:
        - locations:
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/occupancy$
              content: occupancy
            - location: ~ ^/v1/hives/(?<id>[0-9]+)/occupancy/stream$
              content: occupancy_stream
            - location: = /v1/occupancy
              content: occupancy_many
            - location: = /v1/occupancy/stream
              content: occupancy_stream_many

(conf/examples/occupancy.yaml has these locations.)

Pieces:
- zones `occupancy` and `occupancy.meta` (zone.py): hive id → slot, open addressing
  inside the zone, seqlock per slot;
- process roles `cache loader` (one-shot: fills the zone from Postgres, then exits)
  and `cache manager` (the single writer: bus updates, Postgres reconciliation,
  memcached replica, changes published to the workers), in `cache_loader/`;
- content handlers `occupancy`, `occupancy_many` (api.py), `occupancy_stream` and
  `occupancy_stream_many` (Server-Sent Events of one or several hives, stream.py);
- per worker: the zone view, a memcached reader (replica.py) and a bus subscriber.

Needs `modules.database` (Postgres settings, and the fallback queries).
"""

from __future__ import annotations

from typing import Any

from bizzyd.config.schema import Block, ConfigError, Directive
from bizzyd.config.types import Custom, Duration, Int, ListOf, Str
from bizzyd.module import Module, ProcessContext
from modules.database.memcached import parse_address, servers

from .api import NAME, Api, occupancy, occupancy_many
from .stream import Fanout, occupancy_stream, occupancy_stream_many
from .zone import metrics_spec, table, zone_specs


def memcached_address(value: Any) -> str:
    """A single `HOST:PORT` setting, or empty (none)."""
    text = Str(allow_empty=True).convert(value)
    if text:
        parse_address(text)
    return text


def memcached_servers(value: Any) -> str:
    """HOST:PORT, several separated by commas (or a YAML list), or empty."""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    text = Str(allow_empty=True).convert(value)
    servers(text)
    return text


DIRECTIVES = (
    Directive(NAME, Block((
        Directive("zone_capacity", Int(min=8, max=1 << 24), 65536,
                  doc="Slots of the shared occupancy zone; it holds up to 90% of this "
                      "many hives (the rest are served from memcached/Postgres)."),
        Directive("reconcile_interval", Duration(), "30s",
                  doc="How often the cache manager compares the zone with Postgres and "
                      "corrects any drift."),
        Directive("load_timeout", Duration(), "30s",
                  doc="How long the cache manager waits for the cache loader before it "
                      "loads the zone itself."),
        Directive("memcached", Custom("HOST:PORT[,HOST:PORT...] or empty", memcached_servers),
                  "127.0.0.1:21211",
                  doc="memcached server(s) of the replica: HOST:PORT, or several separated "
                      "by commas (a pool with consistent hashing; one down costs misses, "
                      "not errors); empty: no replica."),
        Directive("memcached_prefix", Str(), "bizzyd:occ:",
                  doc="Key prefix of the replica's entries (the hive id follows)."),
        Directive("memcached_ttl", Duration(), "120s",
                  doc="TTL of replica entries; the cache manager rewrites them all every "
                      "half TTL."),
        Directive("memcached_timeout", Duration(), "50ms",
                  doc="Connect and read timeout of each memcached call."),
        Directive("memcached_retry", Duration(), "5s",
                  doc="After a memcached failure, skip it this long before trying again."),
        Directive("peers", ListOf(Str(pattern=r"amqps?://.+")), [],
                  doc="AMQP URLs of the RabbitMQ cluster that carries other nodes' "
                      "occupancy updates (mqtt.ingest: amqp publishes them); the cache "
                      "manager applies them to this node's zone. Empty: single node."),
        Directive("peer_exchange", Str(), "bizzyd.occupancy",
                  doc="The fanout exchange of those updates (amqp.occupancy_exchange)."),
        Directive("sse_heartbeat", Duration(), "15s",
                  doc="Interval of the heartbeat comments on occupancy streams."),
        Directive("sse_retry", Duration(), "2s",
                  doc="Reconnection delay sent to stream clients (`retry:`)."),
        Directive("max_ids", Int(min=1, max=10000), 100,
                  doc="Most hives one GET /v1/occupancy?ids=... may ask for."),
        Directive("negative_ttl", Duration(), "5s",
                  doc="How long a worker remembers that a hive id does not exist."),
        Directive("freshness_interval", Duration(), "15s",
                  doc="How often each worker recounts the sensors of every hive that "
                      "reported recently (the freshness of live occupancy: "
                      "sensors_reporting, sensors_total, stale); 0: never (the "
                      "freshness members stay null)."),
    )), doc="Live occupancy: shared zone, cache processes, replica and endpoints."),
)


def settings(config: Any) -> dict[str, Any]:
    return config[NAME]


def check(config: Any) -> None:
    if config.get("database") is None:
        raise ConfigError("the occupancy module needs modules.database (list it in "
                          "`modules:`)", ("modules",), config.mark(("modules",)))


def zones(config: Any) -> list:
    return [*zone_specs(settings(config)["zone_capacity"]), metrics_spec()]


def init_worker(ctx: ProcessContext) -> None:
    state = ctx.state[NAME] = Api(ctx, table(ctx.zones), settings(ctx.config))
    state.freshness.start()
    state.fanout = Fanout(ctx)
    state.fanout.start()


def add_fields(ctx: ProcessContext, provider: Any) -> Any:
    """Let another module add members to this worker's occupancy objects (one hive's,
    the list's, the stream's): `provider(hive_id, occupancy, capacity) -> bytes`, JSON
    members each after a comma (`b',"x":1'`).  Returns a function to call when the
    provider's answers change (cached objects are rendered again), or None when the
    occupancy module is not loaded.  Call it from `init_worker` (after this module's)."""
    state = ctx.state.get(NAME)
    if state is None:
        return None
    state.add_fields(provider)
    return state.fields_changed


def exit_worker(ctx: ProcessContext) -> None:
    state = ctx.state.pop(NAME, None)
    if state is None:
        return
    if state.fanout is not None:
        state.fanout.close()
    state.close()


module = Module(
    name=NAME,
    directives=DIRECTIVES,
    zones=zones,
    check=check,
    init_worker=init_worker,
    exit_worker=exit_worker,
    requires=("cache_loader",),  # the loader and manager processes of the zone
    content_handlers={"occupancy": occupancy, "occupancy_many": occupancy_many,
                      "occupancy_stream": occupancy_stream,
                      "occupancy_stream_many": occupancy_stream_many},
    doc=__doc__ or "",
)

__all__ = ["add_fields", "memcached_address", "module", "settings"]
