"""Account requests the JWS client builds by hand (keyChange)."""

from __future__ import annotations

from tests.support.jws import JwsClient, PrivateKey, Reply, jwk_json, make_jws


async def key_change(
    client: JwsClient,
    new_key: PrivateKey,
    *,
    inner_nonce: str | None = None,
    inner_url: str | None = None,
    account: str | None = None,
    old_jwk: dict[str, str] | None = None,
) -> Reply:
    """POST keyChange with an inner JWS built from the given (possibly wrong) parts."""
    url = client.directory["keyChange"]
    inner = make_jws(
        new_key,
        {"account": account or client.kid, "oldKey": old_jwk or jwk_json(client.key)},
        url=inner_url or url,
        nonce=inner_nonce,
        embed_jwk=True,
    )
    return await client.post(url, inner)
