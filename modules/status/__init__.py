"""Status and metrics: an nginx `stub_status` page and Prometheus text at /metrics.

Both read the `stats` shared-memory zone, where every worker copies its counters
once a second (and the answering worker just before answering), and the master
folds the rows of exited processes into row 0, so totals survive restarts.  As in
nginx, `accepts` counts every connection a worker accepted and `handled` those it did
not refuse for `worker_connections` (refused with a 503).

    - location: = /status
      content: stub_status
      access: ["allow 127.0.0.1", "deny all"]
    - location: = /metrics
      content: metrics
"""

from __future__ import annotations

from bizzyd.http.phases import Request
from bizzyd.http.response import Response
from bizzyd.module import Module
from bizzyd.stats import (
    BUCKETS,
    CLASSES,
    COUNTERS,
    DURATION_US,
    GAUGES,
    HIST,
    LOC_WIDTH,
    location_labels,
    summed,
)

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _totals(request: Request) -> list[int]:
    ctx = request.process
    if ctx.flush_stats is not None:
        ctx.flush_stats()
    return summed(ctx.zones["stats"])


def _field(values: list[int], name: str) -> int:
    return values[(GAUGES + COUNTERS).index(name)]


def _locations(values: list[int]) -> list[list[int]]:
    base = len(GAUGES) + len(COUNTERS)
    count = (len(values) - base) // LOC_WIDTH
    return [values[base + i * LOC_WIDTH: base + (i + 1) * LOC_WIDTH] for i in range(count)]


def stub_status(request: Request) -> Response:
    """nginx's stub_status page, summed over all workers."""
    values = _totals(request)
    requests = sum(sum(loc[:CLASSES]) for loc in _locations(values))
    text = (f"Active connections: {_field(values, 'active')}\n"
            f"server accepts handled requests\n"
            f" {_field(values, 'accepted')} {_field(values, 'handled')} {requests}\n"
            f"Reading: {_field(values, 'reading')} Writing: {_field(values, 'writing')} "
            f"Waiting: {_field(values, 'waiting')}\n")
    return Response(200, text, content_type="text/plain")


def metrics(request: Request) -> Response:
    """Prometheus text exposition (version 0.0.4)."""
    values = _totals(request)
    locs = _locations(values)
    labels = location_labels(request.process.router.servers)
    lines: list[str] = []
    _requests(lines, labels, locs)
    _durations(lines, labels, locs)
    _connections(lines, values)
    _restarts(lines, request)
    _module_metrics(lines, request.process.zones)
    return Response(200, "\n".join(lines) + "\n", content_type=PROMETHEUS_TYPE)


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _requests(lines: list[str], labels: list, locs: list[list[int]]) -> None:
    lines += ["# HELP bizzyd_http_requests_total HTTP requests by status class and location.",
              "# TYPE bizzyd_http_requests_total counter"]
    for (server, loc), counts in zip(labels, locs, strict=False):
        for cls in range(CLASSES):
            if counts[cls]:
                lines.append(f'bizzyd_http_requests_total{{server="{_esc(server)}",'
                             f'location="{_esc(loc)}",status="{cls + 1}xx"}} {counts[cls]}')


def _durations(lines: list[str], labels: list, locs: list[list[int]]) -> None:
    name = "bizzyd_http_request_duration_seconds"
    lines += [f"# HELP {name} Time from the request's arrival to its response being queued.",
              f"# TYPE {name} histogram"]
    bounds = [str(b) for b in BUCKETS] + ["+Inf"]
    for (server, loc), counts in zip(labels, locs, strict=False):
        total = sum(counts[:CLASSES])
        if not total:
            continue
        where = f'server="{_esc(server)}",location="{_esc(loc)}"'
        running = 0
        for i, bound in enumerate(bounds):
            running += counts[HIST + i]
            lines.append(f'{name}_bucket{{{where},le="{bound}"}} {running}')
        lines.append(f"{name}_sum{{{where}}} {counts[DURATION_US] / 1e6:.6f}")
        lines.append(f"{name}_count{{{where}}} {total}")


def _connections(lines: list[str], values: list[int]) -> None:
    lines += ["# HELP bizzyd_connections_accepted_total Connections accepted by workers.",
              "# TYPE bizzyd_connections_accepted_total counter",
              f"bizzyd_connections_accepted_total {_field(values, 'accepted')}",
              "# HELP bizzyd_connections_handled_total Connections handled (not dropped).",
              "# TYPE bizzyd_connections_handled_total counter",
              f"bizzyd_connections_handled_total {_field(values, 'handled')}",
              "# HELP bizzyd_connections Open client connections by state.",
              "# TYPE bizzyd_connections gauge"]
    for state in ("active", "reading", "writing", "waiting"):
        lines.append(f'bizzyd_connections{{state="{state}"}} {_field(values, state)}')


def _restarts(lines: list[str], request: Request) -> None:
    zone = request.process.zones["restarts"]
    lines += ["# HELP bizzyd_worker_restarts_total Unexpected worker exits, by slot.",
              "# TYPE bizzyd_worker_restarts_total counter"]
    workers = request.process.config["worker_processes"]
    for slot in range(max(workers, 1)):
        lines.append(f'bizzyd_worker_restarts_total{{slot="{slot}"}} '
                     f'{zone.get(slot, "restarts")}')


def _module_metrics(lines: list[str], zones: dict) -> None:
    """Every `metrics.<module>` zone: fields summed over rows (one row per process).

    A field is named `metric` or `metric{label="value",...}`; a metric ending in
    `_total` is a counter, any other a gauge.  `metrics.mqtt_ingest` field
    `rejects_total{reason="bad_length"}` becomes
    `bizzyd_mqtt_ingest_rejects_total{reason="bad_length"}`.
    """
    for name in sorted(z for z in zones if z.startswith("metrics.")):
        zone = zones[name]
        prefix = "bizzyd_" + name.removeprefix("metrics.").replace(".", "_")
        sums = [0] * len(zone.spec.fields)
        for row in zone.rows():
            sums = [a + b for a, b in zip(sums, row, strict=True)]
        typed: set[str] = set()
        for (field, _), value in zip(zone.spec.fields, sums, strict=True):
            metric, _, labels = field.partition("{")
            full = f"{prefix}_{metric}"
            if full not in typed:
                typed.add(full)
                kind = "counter" if metric.endswith("_total") else "gauge"
                lines.append(f"# TYPE {full} {kind}")
            lines.append(f"{full}{{{labels} {value}" if labels else f"{full} {value}")


module = Module(
    name="status",
    content_handlers={"stub_status": stub_status, "metrics": metrics},
    doc=__doc__ or "",
)
