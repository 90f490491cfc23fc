"""Root conftest: the shared fixtures of tests/ and integration/ live in tests/fixtures.py, so
one PostgreSQL cluster serves a whole session."""

pytest_plugins = ["tests.fixtures"]
