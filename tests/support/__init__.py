"""Helpers shared by the tests (tests/, integration/ and the benchmark): the ACME JWS client,
problem-document checks, SoftHSM2 tokens and the builders several test modules need.

A test module never imports another test module; what two of them share lives here (checked
by tests/test_layout.py).  Fixtures stay in tests/fixtures.py, the pytest plugin."""
