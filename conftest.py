"""Root conftest: the shared fixtures of tests/ and integration/ live in tests/fixtures.py, so
one PostgreSQL cluster serves a whole session; tests/support/shared_fixtures.py holds the small
ones many modules use alike (HTTP session, challenge server, subscriber, linter, issuers)."""

pytest_plugins = ["tests.fixtures", "tests.support.shared_fixtures"]
