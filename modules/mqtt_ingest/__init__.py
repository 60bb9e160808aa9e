"""MQTT ingest: sensor reports from the broker into Postgres and the occupancy zone."""
