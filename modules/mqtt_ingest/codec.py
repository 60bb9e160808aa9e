"""The sensor wire codec: topics and the four binary messages of PROTOCOL.md.

Theory of operation
-------------------
Each message is described once, as data: a `Layout` is a table of `Field`s (name,
offset, struct code, the values it accepts, the reason code when it does not, and a
converter between the wire integer and the Python value).  From that table the layout
derives one `struct.Struct` per byte order, the validation, and both directions of the
conversion; no message has hand-written packing code.

    payload --length check--> Layout.unpack --field checks--> load --> dataclass
    dataclass --> dump --> Layout.pack --field checks--> bytes (+ zero padding)

Rules the rest of the file follows:

* Decoding is strict about what the spec validates and lenient about what it ignores:
  a v1 report may be 16..59 bytes, its padding and its (broken) diff fields are not
  looked at.  Encoding is canonical: v1 is always 59 bytes, zero padded, with the diff
  fields equal to the totals (what deployed firmware sends).  So
  `encode(decode(x)) == x` holds for canonical payloads and `decode(encode(m)) == m`
  for every valid message.
* Every failure is a `DecodeError` (or `EncodeError`) carrying a stable `RejectReason`
  code, used as the rejects-table reason and the metrics label.  Checks run in the
  order the reasons are declared (framing before contents), so one payload always gets
  the same reason.
* Multi-byte integers are big-endian unless the fleet says `byte_order: little`; single
  bytes are the same in both orders.
* v1 sensor time is the hive's local wall-clock time, returned naive: the caller
  attaches the hive's time zone.  v2 and status times are Unix seconds, returned as
  aware UTC datetimes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

__all__ = [
    "ByteOrder",
    "CodecError",
    "ConfigMessage",
    "CounterReport",
    "DecodeError",
    "EncodeError",
    "Event",
    "EventReport",
    "EventType",
    "FirmwareVersion",
    "RejectReason",
    "ReportType",
    "SensorMessage",
    "StatusMessage",
    "TopicKind",
    "command_topic",
    "decode",
    "decode_config",
    "decode_counter_report",
    "decode_event_report",
    "decode_status",
    "encode_config",
    "encode_counter_report",
    "encode_event_report",
    "encode_status",
    "parse_topic",
    "sensor_topic",
    "subscription_topics",
]

Buffer = bytes | bytearray | memoryview
M = TypeVar("M")


class ByteOrder(StrEnum):
    """Byte order of multi-byte integers, one setting for the whole fleet."""

    BIG = "big"
    LITTLE = "little"


Order = ByteOrder | str  # "big" or "little" as written in the config
_STRUCT_PREFIX = {ByteOrder.BIG: ">", ByteOrder.LITTLE: "<"}


class RejectReason(StrEnum):
    """Stable reason codes of rejected messages, from framing to contents."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_SENSOR = "unknown_sensor"  # the topic is well formed but names no known sensor
    BAD_LENGTH = "bad_length"
    BAD_MARKER = "bad_marker"
    UNKNOWN_REPORT_TYPE = "unknown_report_type"
    BAD_EVENT_TYPE = "bad_event_type"
    FIELD_OUT_OF_RANGE = "field_out_of_range"  # one field outside its range (month 13)
    BAD_DATE = "bad_date"  # every field in range, but no such calendar date (Feb 30)


_REASON_RANK = {reason: rank for rank, reason in enumerate(RejectReason)}


class CodecError(ValueError):
    """A message that does not satisfy the protocol, with a stable reason code."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DecodeError(CodecError):
    """An incoming topic or payload that is rejected."""


class EncodeError(CodecError):
    """An outgoing message that cannot be put on the wire."""


# --- messages -------------------------------------------------------------------------


class ReportType(IntEnum):
    """v1 report type byte."""

    COUNT = 0xFF  # sent after 5 events
    TIMEOUT = 0x20  # sent on the 30-minute timeout
    START = 0x21  # sent at device start (proposed firmware)


class EventType(IntEnum):
    """v2 event type byte."""

    EXIT = 0
    ENTRY = 1
    STATUS = 2


class FirmwareVersion(NamedTuple):
    major: int
    minor: int
    patch: int

    @classmethod
    def from_raw(cls, raw: int) -> FirmwareVersion:
        return cls(raw >> 24, (raw >> 16) & 0xFF, raw & 0xFFFF)

    @property
    def raw(self) -> int:
        return self.major << 24 | self.minor << 16 | self.patch


@dataclass(frozen=True, slots=True)
class CounterReport:
    """v1 legacy counter report: cumulative totals since device start."""

    total_in: int
    total_out: int
    sensor_time: datetime  # naive, the hive's local time
    report_type: ReportType

    @property
    def is_restart(self) -> bool:
        """A device start: sets a new baseline, contributes no events."""
        both_zero = self.total_in == 0 and self.total_out == 0
        return both_zero or self.report_type is ReportType.START


@dataclass(frozen=True, slots=True)
class Event:
    """One v2 event."""

    event_type: EventType
    distance_mm: int
    counter: int  # per-sensor event counter, wraps at 256
    timestamp: datetime  # aware, UTC


@dataclass(frozen=True, slots=True)
class EventReport:
    """One v2 payload: 1..64 events in the order the sensor sent them."""

    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class StatusMessage:
    startup_time: datetime  # aware, UTC
    battery_mv: int
    state_flags: int  # bit flags, stored raw
    discarded: int
    csq: int  # GPRS signal strength, raw (0..31, 99 unknown)
    firmware_raw: int
    configuration_id: int  # the last configuration the sensor applied

    @property
    def firmware(self) -> FirmwareVersion:
        return FirmwareVersion.from_raw(self.firmware_raw)


@dataclass(frozen=True, slots=True)
class ConfigMessage:
    """bizzyd -> sensor configuration."""

    threshold_cm: int
    report_interval_min: int
    status_interval_min: int
    event_threshold: int
    configuration_id: int


SensorMessage = CounterReport | EventReport | StatusMessage


# --- layouts as data ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Conv:
    """Converter between a wire integer and its Python value."""

    load: Callable[[int], Any]
    dump: Callable[[Any], int]


def _same(value: int) -> int:
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _unix_seconds(moment: datetime) -> int:
    if moment.utcoffset() is None or moment.microsecond:
        detail = f"{moment!r}: need an aware datetime in whole seconds"
        raise EncodeError(RejectReason.FIELD_OUT_OF_RANGE, detail)
    return (moment - _EPOCH) // timedelta(seconds=1)


RAW = Conv(_same, _same)
UNIX_UTC = Conv(lambda seconds: datetime.fromtimestamp(seconds, UTC), _unix_seconds)
EVENT_TYPE = Conv(EventType, int)


@dataclass(frozen=True, slots=True)
class Field:
    """One unsigned integer of a layout."""

    name: str
    offset: int
    code: str  # struct code: "B" (1 byte), "H" (2) or "I" (4)
    allowed: Collection[int] | None = None  # None: any value of the width
    reason: RejectReason = RejectReason.FIELD_OUT_OF_RANGE
    conv: Conv = RAW

    @property
    def size(self) -> int:
        return struct.calcsize(">" + self.code)


def _struct_format(fields: tuple[Field, ...]) -> str:
    """The struct format of fields declared in offset order; gaps become pad bytes."""
    parts, at = [], 0
    for f in fields:
        if f.offset < at:
            raise ValueError(f"field {f.name!r} at {f.offset} overlaps the one before it")
        parts += [f"{f.offset - at}x"] if f.offset > at else []
        parts.append(f.code)
        at = f.offset + f.size
    return "".join(parts)


class Layout:
    """A fixed-size record on the wire; struct, checks and conversions derive from it."""

    __slots__ = ("name", "fields", "size", "_structs", "_checks")

    def __init__(self, name: str, *fields: Field) -> None:
        fmt = _struct_format(fields)
        self.name, self.fields = name, fields
        self._structs = {o: struct.Struct(p + fmt) for o, p in _STRUCT_PREFIX.items()}
        self.size = self._structs[ByteOrder.BIG].size
        checked = [(f, f.allowed) for f in fields if f.allowed is not None]
        self._checks = sorted(checked, key=lambda check: _REASON_RANK[check[0].reason])

    def unpack(self, data: Buffer, order: Order, offset: int = 0) -> dict[str, int]:
        raw = self._structs[ByteOrder(order)].unpack_from(data, offset)
        values = {f.name: value for f, value in zip(self.fields, raw, strict=True)}
        self.check(values, DecodeError)
        return values

    def pack(self, values: Mapping[str, int], order: Order) -> bytes:
        for f in self.fields:
            if not 0 <= values[f.name] < 1 << 8 * f.size:
                raise EncodeError(f.reason, f"{self.name}: {f.name} = {values[f.name]}")
        self.check(values, EncodeError)
        return self._structs[ByteOrder(order)].pack(*(values[f.name] for f in self.fields))

    def check(self, values: Mapping[str, int], error: type[CodecError]) -> None:
        for f, allowed in self._checks:
            if values[f.name] not in allowed:
                raise error(f.reason, f"{self.name}: {f.name} = {values[f.name]}")


def _in(low: int, high: int) -> range:
    return range(low, high + 1)


COUNTER_REPORT = Layout(
    "counter report",
    Field("diff_in", 0, "H"),  # broken in firmware (equals total_in): ignored
    Field("diff_out", 2, "H"),  # broken: ignored
    Field("total_in", 4, "H"),
    Field("total_out", 6, "H"),
    Field("year", 8, "B", _in(0, 99)),  # two digits, 24 means 2024
    Field("month", 9, "B", _in(1, 12)),
    Field("day", 10, "B", _in(1, 31)),
    Field("hour", 11, "B", _in(0, 23)),
    Field("minute", 12, "B", _in(0, 59)),
    Field("second", 13, "B", _in(0, 59)),
    Field("report_type", 14, "B", frozenset(ReportType), RejectReason.UNKNOWN_REPORT_TYPE),
    Field("marker", 15, "B", frozenset({0xFF}), RejectReason.BAD_MARKER),
)
EVENT = Layout(
    "event",
    Field("event_type", 0, "B", frozenset(EventType), RejectReason.BAD_EVENT_TYPE, EVENT_TYPE),
    Field("distance_mm", 1, "H"),
    Field("counter", 3, "B"),
    Field("timestamp", 4, "I", conv=UNIX_UTC),
)
STATUS = Layout(
    "status",
    Field("startup_time", 0, "I", conv=UNIX_UTC),
    Field("battery_mv", 4, "H"),
    Field("state_flags", 6, "H"),
    Field("discarded", 8, "H"),
    Field("csq", 10, "H"),
    Field("firmware_raw", 12, "I"),  # major << 24 | minor << 16 | patch
    Field("configuration_id", 16, "I"),
)
CONFIG = Layout(
    "configuration",
    Field("threshold_cm", 0, "H"),
    Field("report_interval_min", 2, "H"),
    Field("status_interval_min", 4, "H"),
    Field("event_threshold", 6, "H"),
    Field("configuration_id", 8, "I"),
)

COUNTER_REPORT_WIRE_SIZE = 59
MAX_EVENTS = 64
_V1_MARKER = 0xFF
_CENTURY = 2000


# --- layout <-> message ---------------------------------------------------------------


def _load_counter_report(values: Mapping[str, int]) -> CounterReport:
    return CounterReport(
        total_in=values["total_in"],
        total_out=values["total_out"],
        sensor_time=_sensor_time(values),
        report_type=ReportType(values["report_type"]),
    )


def _sensor_time(values: Mapping[str, int]) -> datetime:
    parts = [values[k] for k in ("year", "month", "day", "hour", "minute", "second")]
    try:
        return datetime(_CENTURY + parts[0], *parts[1:])
    except ValueError as exc:
        shown = "{:02}-{:02}-{:02} {:02}:{:02}:{:02}".format(*parts)
        raise DecodeError(RejectReason.BAD_DATE, f"counter report: {shown}: {exc}") from None


def _dump_counter_report(report: CounterReport) -> dict[str, int]:
    t = report.sensor_time
    if t.tzinfo is not None or t.microsecond or not _CENTURY <= t.year < _CENTURY + 100:
        detail = f"sensor_time {t!r}: need a naive local time in whole seconds, 2000..2099"
        raise EncodeError(RejectReason.FIELD_OUT_OF_RANGE, detail)
    return {
        "diff_in": report.total_in,  # what deployed firmware sends
        "diff_out": report.total_out,
        "total_in": report.total_in,
        "total_out": report.total_out,
        "year": t.year - _CENTURY,
        "month": t.month,
        "day": t.day,
        "hour": t.hour,
        "minute": t.minute,
        "second": t.second,
        "report_type": int(report.report_type),
        "marker": _V1_MARKER,
    }


def _record_loader(cls: Callable[..., M], layout: Layout) -> Callable[[Mapping[str, int]], M]:
    """Build a message whose attributes are the layout's fields, one for one."""

    def load(values: Mapping[str, int]) -> M:
        return cls(**{f.name: f.conv.load(values[f.name]) for f in layout.fields})

    return load


def _record_dumper(layout: Layout) -> Callable[[Any], dict[str, int]]:
    def dump(message: Any) -> dict[str, int]:
        return {f.name: f.conv.dump(getattr(message, f.name)) for f in layout.fields}

    return dump


def _expected(lengths: range) -> str:
    if lengths.step == 1:
        return f"{lengths.start}..{lengths.stop - 1}"
    return f"a multiple of {lengths.step} from {lengths.start} to {lengths[-1]}"


def _check_length(name: str, length: int, lengths: range) -> None:
    if length not in lengths:
        detail = f"{name}: {length} bytes, expected {_expected(lengths)}"
        raise DecodeError(RejectReason.BAD_LENGTH, detail)


@dataclass(frozen=True, slots=True)
class _Codec(Generic[M]):
    layout: Layout
    lengths: range  # accepted payload lengths
    wire_size: int  # what the encoder emits; bytes after the layout are zeros
    load: Callable[[Mapping[str, int]], M]
    dump: Callable[[M], dict[str, int]]

    def decode(self, payload: Buffer, order: Order) -> M:
        _check_length(self.layout.name, len(payload), self.lengths)
        return self.load(self.layout.unpack(payload, order))

    def encode(self, message: M, order: Order) -> bytes:
        return self.layout.pack(self.dump(message), order).ljust(self.wire_size, b"\0")


def _fixed(layout: Layout, cls: Callable[..., M]) -> _Codec[M]:
    load, dump = _record_loader(cls, layout), _record_dumper(layout)
    return _Codec(layout, _in(layout.size, layout.size), layout.size, load, dump)


_COUNTER_CODEC = _Codec(
    COUNTER_REPORT,
    _in(COUNTER_REPORT.size, COUNTER_REPORT_WIRE_SIZE),
    COUNTER_REPORT_WIRE_SIZE,
    _load_counter_report,
    _dump_counter_report,
)
_EVENT_CODEC = _fixed(EVENT, Event)
_STATUS_CODEC = _fixed(STATUS, StatusMessage)
_CONFIG_CODEC = _fixed(CONFIG, ConfigMessage)
EVENT_REPORT_LENGTHS = range(EVENT.size, EVENT.size * MAX_EVENTS + 1, EVENT.size)


# --- public encoders and decoders -----------------------------------------------------


def decode_counter_report(payload: Buffer, byte_order: Order = ByteOrder.BIG) -> CounterReport:
    """Decode a v1 counter report (16..59 bytes; bytes after the 16th are ignored)."""
    return _COUNTER_CODEC.decode(payload, byte_order)


def encode_counter_report(report: CounterReport, byte_order: Order = ByteOrder.BIG) -> bytes:
    """The 59-byte wire form of a v1 report, as deployed firmware sends it."""
    return _COUNTER_CODEC.encode(report, byte_order)


def decode_event_report(payload: Buffer, byte_order: Order = ByteOrder.BIG) -> EventReport:
    """Decode a v2 payload of 1..64 concatenated 8-byte events (all or nothing)."""
    _check_length("event report", len(payload), EVENT_REPORT_LENGTHS)
    offsets = range(0, len(payload), EVENT.size)
    return EventReport(tuple(_load_event(payload, byte_order, at) for at in offsets))


def _load_event(payload: Buffer, byte_order: Order, offset: int) -> Event:
    return _EVENT_CODEC.load(EVENT.unpack(payload, byte_order, offset))


def encode_event_report(report: EventReport, byte_order: Order = ByteOrder.BIG) -> bytes:
    if not 1 <= len(report.events) <= MAX_EVENTS:
        detail = f"event report: {len(report.events)} events, expected 1..{MAX_EVENTS}"
        raise EncodeError(RejectReason.BAD_LENGTH, detail)
    return b"".join(_EVENT_CODEC.encode(event, byte_order) for event in report.events)


def decode_status(payload: Buffer, byte_order: Order = ByteOrder.BIG) -> StatusMessage:
    return _STATUS_CODEC.decode(payload, byte_order)


def encode_status(status: StatusMessage, byte_order: Order = ByteOrder.BIG) -> bytes:
    return _STATUS_CODEC.encode(status, byte_order)


def decode_config(payload: Buffer, byte_order: Order = ByteOrder.BIG) -> ConfigMessage:
    return _CONFIG_CODEC.decode(payload, byte_order)


def encode_config(config: ConfigMessage, byte_order: Order = ByteOrder.BIG) -> bytes:
    return _CONFIG_CODEC.encode(config, byte_order)


# --- topics ---------------------------------------------------------------------------


class TopicKind(StrEnum):
    """The last level of a sensor topic: which message the payload holds."""

    COUNTERS = "counters"
    EVENTS = "events"
    STATUS = "status"


_DECODERS: dict[TopicKind, Callable[[Buffer, Order], SensorMessage]] = {
    TopicKind.COUNTERS: decode_counter_report,
    TopicKind.EVENTS: decode_event_report,
    TopicKind.STATUS: decode_status,
}


def decode(kind: TopicKind, payload: Buffer, byte_order: Order = ByteOrder.BIG) -> SensorMessage:
    """Decode the payload of a sensor topic of the given kind."""
    return _DECODERS[TopicKind(kind)](payload, byte_order)


SENSOR_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SENSORS, _COMMANDS = "sensors", "commands/sensor"


def _prefix(prefix: str) -> str:
    """`mqtt.topic_prefix` as a topic head: "site1" and "site1/" both give "site1/"."""
    prefix = prefix.rstrip("/")
    return f"{prefix}/" if prefix else ""


def parse_topic(topic: str, prefix: str = "") -> tuple[str, TopicKind]:
    """`[<prefix>/]sensors/<sensor_id>/<kind>` -> (sensor_id, kind), or DecodeError."""
    head = _prefix(prefix) + _SENSORS + "/"
    sensor_id, _, kind = topic.removeprefix(head).partition("/")
    if not topic.startswith(head) or kind not in set(TopicKind):
        raise DecodeError(RejectReason.BAD_TOPIC, f"{topic!r}: not {head}<sensor_id>/<kind>")
    if not SENSOR_ID.fullmatch(sensor_id):
        raise DecodeError(RejectReason.BAD_TOPIC, f"{topic!r}: bad sensor id {sensor_id!r}")
    return sensor_id, TopicKind(kind)


def _checked_id(sensor_id: str) -> str:
    if not SENSOR_ID.fullmatch(sensor_id):
        raise EncodeError(RejectReason.BAD_TOPIC, f"bad sensor id {sensor_id!r}")
    return sensor_id


def sensor_topic(sensor_id: str, kind: TopicKind | str, prefix: str = "") -> str:
    """The topic a sensor publishes `kind` messages on (used by the simulator)."""
    return f"{_prefix(prefix)}{_SENSORS}/{_checked_id(sensor_id)}/{TopicKind(kind)}"


def command_topic(sensor_id: str, prefix: str = "") -> str:
    """The topic bizzyd publishes a sensor's configuration on (QoS 1, retained)."""
    return f"{_prefix(prefix)}{_COMMANDS}/{_checked_id(sensor_id)}"


def subscription_topics(prefix: str = "") -> list[str]:
    """The filters ingest subscribes to, one per sensor message kind."""
    return [f"{_prefix(prefix)}{_SENSORS}/+/{kind}" for kind in TopicKind]
