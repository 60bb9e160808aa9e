"""The AMQP ingest's pure pieces: topic ↔ routing key, bindings, shard preference."""

from __future__ import annotations

from modules.mqtt_ingest.amqp import (
    binding_key,
    routing_key,
    shard_order,
    topic_of,
    with_heartbeat,
)


def test_routing_keys_map_back_to_topics_dots_in_sensor_ids_included():
    # RabbitMQ 3.10.8's MQTT plugin published site1/sensors/bz.2-7/events to amq.topic
    # as site1.sensors.bz.2-7.events (checked against the broker): '/' → '.', '.' kept
    assert routing_key("site1/sensors/bz.2-7/events") == "site1.sensors.bz.2-7.events"
    assert topic_of("site1.sensors.bz.2-7.events", "site1") == "site1/sensors/bz.2-7/events"
    assert topic_of("sensors.s7.counters") == "sensors/s7/counters"
    assert topic_of("city.north.sensors.a.b.status", "city/north/") == \
        "city/north/sensors/a.b/status"
    for topic in ("sensors/x/counters", "sensors/x.y.z/events", "sensors/-_/status"):
        assert topic_of(routing_key(topic)) == topic
    # not the shape of a sensor topic: every dot a slash, for the bad_topic reject
    assert topic_of("other.thing") == "other/thing"
    assert topic_of("sensors.") == "sensors/"


def test_binding_key_follows_the_topic_prefix():
    assert binding_key("") == "sensors.#"
    assert binding_key("site1") == "site1.sensors.#"
    assert binding_key("city/north/") == "city.north.sensors.#"


def test_every_shard_is_preferred_by_exactly_one_node():
    shards, nodes = 12, 3
    preferred = [set(shard_order(shards, n, nodes)[0]) for n in range(nodes)]
    assert set().union(*preferred) == set(range(shards))
    assert sum(len(p) for p in preferred) == shards
    first, later = shard_order(shards, 1, nodes)
    assert first == [1, 4, 7, 10] and sorted(first + later) == list(range(shards))
    assert shard_order(4, 5, 1) == ([0, 1, 2, 3], [])  # one node: all preferred


def test_a_heartbeat_is_added_unless_the_url_sets_one():
    assert with_heartbeat("amqp://u:p@h:5672/") == "amqp://u:p@h:5672/?heartbeat=5"
    assert with_heartbeat("amqp://h/?ssl=1") == "amqp://h/?ssl=1&heartbeat=5"
    assert with_heartbeat("amqp://h/?heartbeat=30") == "amqp://h/?heartbeat=30"
