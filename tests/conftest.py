"""Fixture plugins, as psycopg's tests do: each `fix_*.py` is one concern."""

pytest_plugins = ["tests.fix_db", "tests.fix_domains"]
