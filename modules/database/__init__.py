"""Postgres access: pool, migrations."""
