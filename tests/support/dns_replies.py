"""DNS replies a validating resolver sends, for the VA's DNS tests."""

from __future__ import annotations

import base64

import dns.flags
import dns.message
import dns.rrset

SIG = base64.b64encode(bytes(range(256))).decode()
NSEC3_HASHES = ("0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM", "Q04JKCEVQVMVPT7UQ8OGBK7PQBOLLK7T")


def signed_nodata(q: dns.message.Message) -> dns.message.Message:
    """What a validating resolver sends for NODATA in a signed zone: AD, the SOA, the NSEC3
    proofs and their RRSIGs in the authority section."""
    r = dns.message.make_response(q)
    r.flags |= dns.flags.AD
    r.authority.append(
        dns.rrset.from_text(
            "example.com.",
            3600,
            "IN",
            "SOA",
            "ns1.example.com. hostmaster.example.com. 2026120401 7200 3600 1209600 3600",
        )
    )
    r.authority.append(
        dns.rrset.from_text(
            "example.com.",
            3600,
            "IN",
            "RRSIG",
            f"SOA 8 2 3600 20261231000000 20261201000000 12345 example.com. {SIG}",
        )
    )
    for h in NSEC3_HASHES:
        owner = f"{h}.example.com."
        r.authority.append(
            dns.rrset.from_text(owner, 3600, "IN", "NSEC3", f"1 0 0 - {h[:-1]}0 A RRSIG")
        )
        r.authority.append(
            dns.rrset.from_text(
                owner,
                3600,
                "IN",
                "RRSIG",
                f"NSEC3 8 3 3600 20261231000000 20261201000000 12345 example.com. {SIG}",
            )
        )
    return r
