"""Profiles in test mode (issue 21 item 9): ``serve --test`` offers the CA's own profiles and
answers a profile it does not offer as Pebble 2.10 does (``wfe.go`` NewOrder, Pebble #521):
400 ``urn:ietf:params:acme:error:invalidProfile`` naming the profile, nothing created.  An
order without ``profile`` gets the default one (Pebble 2.10 picks one at random: a documented
difference, since a client's CI should not be random by default).
"""

from __future__ import annotations

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures import CaFactory
from tests.support.jws import JwsClient
from tests.support.problems import assert_problem


async def test_prof_1_test_mode_offers_the_profiles_and_refuses_others_as_pebble_2_10(
    ca_factory: CaFactory, session: aiohttp.ClientSession
) -> None:
    ca = await ca_factory.start(test_mode=True, special_use_names=True)  # as serve --test
    client = JwsClient(session, ca.directory_url, ec.generate_private_key(ec.SECP256R1()))
    directory = await client.load_directory()
    assert directory["meta"]["testMode"]
    offered = directory["meta"]["profiles"]
    assert {"dv", "tlsserver", "shortlived"} <= set(offered), offered
    assert (await client.register()).status == 201

    def order(profile: str | None) -> dict[str, object]:
        payload: dict[str, object] = {"identifiers": [{"type": "dns", "value": "ci.test"}]}
        if profile is not None:
            payload["profile"] = profile
        return payload

    for name in offered:
        chosen = await client.post(directory["newOrder"], order(name))
        assert chosen.status == 201 and chosen.body.get("profile") == name, (name, chosen.body)
    default = await client.post(directory["newOrder"], order(None))
    assert (default.status, default.body["profile"]) == (201, "dv"), default.body

    refused = await client.post(directory["newOrder"], order("classic"))
    assert_problem(refused, 400, "invalidProfile")
    assert "classic" in refused.body["detail"]
    assert "Location" not in refused.headers
