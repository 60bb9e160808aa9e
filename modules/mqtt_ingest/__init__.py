"""MQTT ingest: sensor reports from the broker into Postgres and the occupancy zone.

    modules: [modules.database, modules.mqtt_ingest]
    mqtt:
      host: 127.0.0.1
      port: 1883
      protocol: 5            # or 3.1.1 (RabbitMQ)
      processes: 1           # > 1 needs MQTT 5 shared subscriptions

- process role `mqtt ingest` (`mqtt.processes` of them): the MQTT client on the
  process's event loop, batches stored in one transaction each, acknowledged after
  the commit, occupancy updates pushed on the bus (docs/ingest.md);
- shared-memory zone `metrics.mqtt_ingest`: one counters row per ingest process;
- content handler `sensor_config`: `GET|PUT /v1/sensors/{id}/config`;
- config check: 3.1.1 with several processes is refused (no shared subscriptions).
"""

from __future__ import annotations

from bizzyd.module import Module, ProcessRole

from . import config_push, metrics, process, settings

module = Module(
    name="mqtt_ingest",
    directives=settings.DIRECTIVES,
    roles=(ProcessRole("mqtt ingest", process.main,
                       count=lambda c: c["mqtt"]["processes"]),),
    zones=lambda c: [metrics.zone_spec(c["mqtt"]["processes"])],
    check=settings.check,
    content_handlers={"sensor_config": config_push.sensor_config},
    exit_worker=config_push.exit_worker,
    doc=__doc__ or "",
)

__all__ = ["module"]
