"""CLI details that operators rely on."""

from __future__ import annotations

from acme_ca.acme.b64 import b64url_decode, b64url_encode
from acme_ca.cli_eab import command_line_safe_key


def test_eab_hmac_key_never_reads_as_an_option() -> None:
    """A printed key goes after --eab-hmac-key / --hmac: a leading "-" would be taken for
    another option (seen with certbot's argparse). 2,000 draws hit that case ~31 times
    if the rule were missing."""
    for _ in range(2000):
        key = command_line_safe_key()
        encoded = b64url_encode(key)
        assert len(key) == 32
        assert not encoded.startswith("-")
        assert b64url_decode(encoded) == key
