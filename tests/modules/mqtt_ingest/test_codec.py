"""The sensor codec against the PROTOCOL.md vectors, a malformed corpus and properties."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from modules.mqtt_ingest import codec
from modules.mqtt_ingest.codec import (
    ByteOrder,
    ConfigMessage,
    CounterReport,
    DecodeError,
    EncodeError,
    Event,
    EventReport,
    EventType,
    FirmwareVersion,
    RejectReason,
    ReportType,
    StatusMessage,
    TopicKind,
)

VECTORS = yaml.safe_load(Path(__file__).with_name("vectors.yaml").read_text(encoding="utf-8"))
ORDERS = [ByteOrder.BIG, ByteOrder.LITTLE]
PREFIX = {ByteOrder.BIG: ">", ByteOrder.LITTLE: "<"}

CODECS: dict[str, tuple[Callable[..., Any], Callable[..., bytes]]] = {
    "counters": (codec.decode_counter_report, codec.encode_counter_report),
    "events": (codec.decode_event_report, codec.encode_event_report),
    "status": (codec.decode_status, codec.encode_status),
    "config": (codec.decode_config, codec.encode_config),
}


def _event(fields: dict[str, Any]) -> Event:
    event_type = EventType[fields["event_type"].upper()]
    return Event(event_type, fields["distance_mm"], fields["counter"], _time(fields["timestamp"]))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "counters": lambda f: CounterReport(
        f["total_in"], f["total_out"], _time(f["sensor_time"]), ReportType(f["report_type"])
    ),
    "events": lambda f: EventReport(tuple(_event(e) for e in f["events"])),
    "status": lambda f: StatusMessage(**{**f, "startup_time": _time(f["startup_time"])}),
    "config": lambda f: ConfigMessage(**f),
}


def _payload(hex_text: str, pad: int = 0) -> bytes:
    return bytes.fromhex(hex_text) + bytes(pad)


def _valid_cases(canonical_only: bool = False) -> list[Any]:
    return [
        pytest.param(vector, order, id=f"{vector['name']}-{order}")
        for vector in VECTORS["valid"]
        if vector.get("canonical", True) or not canonical_only
        for order in ORDERS
    ]


def _invalid_cases() -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in VECTORS["invalid"]]


# --- the vectors ----------------------------------------------------------------------


@pytest.mark.parametrize(("vector", "order"), _valid_cases())
def test_decodes_vector(vector: dict[str, Any], order: ByteOrder) -> None:
    decode, _ = CODECS[vector["kind"]]
    message = decode(_payload(vector[order], vector.get("pad", 0)), order)
    assert message == BUILDERS[vector["kind"]](vector["message"])
    for name, expected in vector.get("derived", {}).items():
        value = getattr(message, name)
        assert (list(value) if isinstance(value, tuple) else value) == expected


@pytest.mark.parametrize(("vector", "order"), _valid_cases(canonical_only=True))
def test_encodes_vector(vector: dict[str, Any], order: ByteOrder) -> None:
    _, encode = CODECS[vector["kind"]]
    message = BUILDERS[vector["kind"]](vector["message"])
    assert encode(message, order) == _payload(vector[order], vector.get("pad", 0))


def test_little_endian_vectors_swap_each_multibyte_field() -> None:
    status = next(v for v in VECTORS["valid"] if v["name"] == "status")
    big = struct.unpack(">IHHHHII", bytes.fromhex(status["big"]))
    assert struct.unpack("<IHHHHII", bytes.fromhex(status["little"])) == big


def test_protocol_vectors_are_all_present() -> None:
    sources = [v["name"] for v in VECTORS["valid"] if v.get("source") == "PROTOCOL.md"]
    assert sources == [
        "v1_count_report",
        "v1_start_report",
        "v2_two_events",
        "status",
        "configuration",
    ]


def test_v1_encoding_is_the_59_byte_wire_message() -> None:
    report = CounterReport(120, 97, datetime(2024, 3, 15, 18, 42, 7), ReportType.COUNT)
    wire = codec.encode_counter_report(report)
    assert len(wire) == 59
    assert wire[16:] == bytes(43)


def test_layout_sizes_match_the_spec() -> None:
    assert codec.COUNTER_REPORT.size == 16
    assert codec.EVENT.size == 8
    assert codec.STATUS.size == 20
    assert codec.CONFIG.size == 12


def test_decode_dispatches_on_topic_kind() -> None:
    payload = bytes.fromhex("01072a0765f493a80003900865f493b4")
    report = codec.decode(TopicKind.EVENTS, payload)
    assert isinstance(report, EventReport)
    assert [e.event_type for e in report.events] == [EventType.ENTRY, EventType.EXIT]


def test_firmware_version_round_trips_through_raw() -> None:
    assert FirmwareVersion.from_raw(0x02010004) == (2, 1, 4)
    assert FirmwareVersion(2, 1, 4).raw == 0x02010004


# --- rejects --------------------------------------------------------------------------


@pytest.mark.parametrize("case", _invalid_cases())
def test_rejects_malformed_payload(case: dict[str, Any]) -> None:
    decode, _ = CODECS[case["kind"]]
    payload = _payload(case["payload"], case.get("pad", 0))
    with pytest.raises(DecodeError) as caught:
        decode(payload, case.get("byte_order", "big"))
    assert caught.value.reason == RejectReason(case["reason"])
    assert caught.value.detail


def test_reason_codes_are_stable() -> None:
    assert [reason.value for reason in RejectReason] == [
        "bad_topic",
        "unknown_sensor",
        "bad_length",
        "bad_marker",
        "unknown_report_type",
        "bad_event_type",
        "field_out_of_range",
        "bad_date",
    ]


def test_decode_error_is_a_value_error_with_its_reason() -> None:
    with pytest.raises(ValueError, match="bad_length: status: 3 bytes, expected 20..20"):
        codec.decode_status(b"abc")


def _v1(**fields: Any) -> CounterReport:
    return replace(CounterReport(1, 2, datetime(2024, 3, 15, 8), ReportType.COUNT), **fields)


def _v2(event_type: int = 1, counter: int = 0, at: datetime | None = None) -> Event:
    return Event(cast(EventType, event_type), 0, counter, at or _AT)


_AT = datetime(2024, 3, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("encode", "message", "reason"),
    [
        (codec.encode_counter_report, _v1(total_in=65536), "field_out_of_range"),
        (codec.encode_counter_report, _v1(total_out=-1), "field_out_of_range"),
        (codec.encode_counter_report, _v1(sensor_time=_AT), "field_out_of_range"),
        (codec.encode_counter_report, _v1(sensor_time=datetime(2100, 1, 1)), "field_out_of_range"),
        (codec.encode_counter_report, _v1(report_type=0x33), "unknown_report_type"),
        (codec.encode_event_report, EventReport(()), "bad_length"),
        (codec.encode_event_report, EventReport((_v2(),) * 65), "bad_length"),
        (codec.encode_event_report, EventReport((_v2(counter=256),)), "field_out_of_range"),
        (codec.encode_event_report, EventReport((_v2(event_type=7),)), "bad_event_type"),
        (
            codec.encode_event_report,
            EventReport((_v2(at=datetime(2024, 3, 15)),)),
            "field_out_of_range",
        ),
        (
            codec.encode_event_report,
            EventReport((_v2(at=datetime(2024, 3, 15, 0, 0, 0, 5, tzinfo=UTC)),)),
            "field_out_of_range",
        ),
        (codec.encode_config, ConfigMessage(180, 30, 60, 5, 1 << 32), "field_out_of_range"),
        (codec.encode_status, StatusMessage(_AT, -1, 0, 0, 0, 0, 0), "field_out_of_range"),
    ],
)
def test_encoder_refuses_what_the_wire_cannot_carry(
    encode: Callable[[Any], bytes], message: Any, reason: str
) -> None:
    with pytest.raises(EncodeError) as caught:
        encode(message)
    assert caught.value.reason == reason


# --- topics ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["topics"], ids=lambda case: case["topic"][:40])
def test_parses_topic(case: dict[str, Any]) -> None:
    parsed = codec.parse_topic(case["topic"], case.get("prefix", ""))
    assert parsed == (case["sensor_id"], TopicKind(case["kind"]))


@pytest.mark.parametrize("case", VECTORS["bad_topics"], ids=lambda case: case["topic"][:40])
def test_rejects_bad_topic(case: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as caught:
        codec.parse_topic(case["topic"], case.get("prefix", ""))
    assert caught.value.reason is RejectReason.BAD_TOPIC


def test_builds_topics_with_and_without_prefix() -> None:
    assert codec.command_topic("S1") == "commands/sensor/S1"
    assert codec.command_topic("S1", prefix="bizzy/eu/") == "bizzy/eu/commands/sensor/S1"
    assert codec.sensor_topic("S1", "events", prefix="bizzy") == "bizzy/sensors/S1/events"
    assert codec.subscription_topics("p") == [
        "p/sensors/+/counters",
        "p/sensors/+/events",
        "p/sensors/+/status",
    ]


@pytest.mark.parametrize("sensor_id", ["", "a/b", "+", "#", "x" * 65])
def test_refuses_to_build_a_topic_for_a_bad_sensor_id(sensor_id: str) -> None:
    with pytest.raises(EncodeError) as caught:
        codec.command_topic(sensor_id)
    assert caught.value.reason is RejectReason.BAD_TOPIC


@given(st.text(alphabet="ab.-_Z9/+# é", max_size=12), st.sampled_from(list(TopicKind)))
@settings(max_examples=60)
def test_sensor_topic_parses_back(sensor_id: str, kind: TopicKind) -> None:
    try:
        topic = codec.sensor_topic(sensor_id, kind, prefix="site")
    except EncodeError:
        assert not codec.SENSOR_ID.fullmatch(sensor_id)
        return
    assert codec.parse_topic(topic, "site") == (sensor_id, kind)


# --- properties -----------------------------------------------------------------------

orders = st.sampled_from(ORDERS)
u8, u16, u32 = (st.integers(0, (1 << bits) - 1) for bits in (8, 16, 32))
utc_seconds = u32.map(lambda seconds: datetime.fromtimestamp(seconds, UTC))
sensor_times = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda t: t.replace(microsecond=0)
)
counter_reports = st.builds(CounterReport, u16, u16, sensor_times, st.sampled_from(ReportType))
events = st.builds(Event, st.sampled_from(EventType), u16, u8, utc_seconds)
event_reports = st.lists(events, min_size=1, max_size=64).map(lambda e: EventReport(tuple(e)))
statuses = st.builds(StatusMessage, utc_seconds, u16, u16, u16, u16, u32, u32)
configs = st.builds(ConfigMessage, u16, u16, u16, u16, u32)
MESSAGES = {"counters": counter_reports, "events": event_reports, "status": statuses}
MESSAGES["config"] = configs


@pytest.mark.parametrize("kind", list(CODECS))
@given(data=st.data(), order=orders)
@settings(max_examples=40)
def test_decode_inverts_encode(kind: str, data: st.DataObject, order: ByteOrder) -> None:
    decode, encode = CODECS[kind]
    message = data.draw(MESSAGES[kind])
    assert decode(encode(message, order), order) == message


@st.composite
def canonical_v1(draw: st.DrawFn, order: ByteOrder) -> tuple[bytes, tuple[int, ...]]:
    """A canonical v1 wire message packed by hand from PROTOCOL.md, and its fields."""
    t = draw(sensor_times)
    fields = (draw(u16), draw(u16), t.year - 2000, t.month, t.day, t.hour, t.minute, t.second)
    report_type = draw(st.sampled_from([0xFF, 0x20, 0x21]))
    head = struct.pack(PREFIX[order] + "HH", fields[0], fields[1])
    body = struct.pack(PREFIX[order] + "HH6BBB", *fields, report_type, 0xFF)
    return head + body + bytes(43), (*fields, report_type)


@given(data=st.data(), order=orders)
@settings(max_examples=60)
def test_v1_canonical_bytes_round_trip(data: st.DataObject, order: ByteOrder) -> None:
    wire, (total_in, total_out, *when, report_type) = data.draw(canonical_v1(order))
    report = codec.decode_counter_report(wire, order)
    assert (report.total_in, report.total_out, report.report_type) == (
        total_in,
        total_out,
        report_type,
    )
    assert report.sensor_time == datetime(2000 + when[0], *when[1:])
    assert codec.encode_counter_report(report, order) == wire


@given(data=st.data(), order=orders, diffs=st.binary(min_size=4, max_size=4))
@settings(max_examples=60)
def test_v1_ignores_diffs_and_padding(data: st.DataObject, order: ByteOrder, diffs: bytes) -> None:
    wire, _ = data.draw(canonical_v1(order))
    tail = data.draw(st.binary(max_size=43))
    assert codec.decode_counter_report(diffs + wire[4:16] + tail, order) == (
        codec.decode_counter_report(wire, order)
    )


FIXED_LAYOUTS: dict[str, str] = {"events": "BHBI", "status": "IHHHHII", "config": "HHHHI"}


@pytest.mark.parametrize("kind", list(FIXED_LAYOUTS))
@given(data=st.data(), order=orders)
@settings(max_examples=40)
def test_fixed_layout_bytes_round_trip(kind: str, data: st.DataObject, order: ByteOrder) -> None:
    fmt = PREFIX[order] + FIXED_LAYOUTS[kind]
    sizes = [struct.calcsize("<" + code) for code in FIXED_LAYOUTS[kind]]
    values = [data.draw(st.integers(0, (1 << 8 * size) - 1)) for size in sizes]
    if kind == "events":
        values[0] = data.draw(st.sampled_from([0, 1, 2]))
    wire = struct.pack(fmt, *values)
    decode, encode = CODECS[kind]
    message = decode(wire, order)
    assert encode(message, order) == wire
    assert _plain(message) == values


def _plain(message: Any) -> list[int]:
    if isinstance(message, EventReport):
        (message,) = message.events
    values = [getattr(message, name) for name in message.__slots__]
    return [int(v.timestamp()) if isinstance(v, datetime) else int(v) for v in values]


@given(events=st.lists(st.tuples(st.sampled_from([0, 1, 2]), u16, u8, u32), max_size=64))
@settings(max_examples=40)
def test_event_payload_bytes_round_trip(events: list[tuple[int, int, int, int]]) -> None:
    wire = b"".join(struct.pack(">BHBI", *event) for event in events)
    if not events:
        with pytest.raises(DecodeError):
            codec.decode_event_report(wire)
        return
    report = codec.decode_event_report(wire)
    assert [(e.event_type, e.distance_mm, e.counter) for e in report.events] == [
        e[:3] for e in events
    ]
    assert codec.encode_event_report(report) == wire


@pytest.mark.parametrize("kind", list(CODECS))
@given(payload=st.binary(max_size=80), order=orders)
@settings(max_examples=80)
def test_arbitrary_bytes_decode_or_reject(kind: str, payload: bytes, order: ByteOrder) -> None:
    decode, _ = CODECS[kind]
    try:
        decode(payload, order)
    except DecodeError as exc:
        assert exc.reason in RejectReason
