"""PEBBLE_VA_SLEEPTIME through the CA (issue 21 item 10): with ``PEBBLE_VA_NOSLEEP=0`` and
``PEBBLE_VA_SLEEPTIME=N`` each validation first sleeps a random 0..N s, as Pebble's VA does
(``va.go`` performValidation), so a client's polling path is exercised.

With N = 600, five challenges answered at once are not all validated 4 s later: each has a
4/600 chance of drawing a shorter sleep, all five (4/600)**5, about 1e-11; without the sleep
all five reach the challenge server within about 2 s even on a loaded machine."""

from __future__ import annotations

import asyncio

import aiohttp

from acme_ca.config import load_config
from acme_ca.main.app import TASKS
from acme_ca.testsrv.server import ChallengeTestServer
from tests.fixtures import CaFactory
from tests.support.orders import subscriber, validation_config

SLEEPTIME = 600
WATCHED_SECONDS = 4.0
NAMES = [f"sleep{i}.example.com" for i in range(5)]


async def test_pebble_va_sleeptime_delays_each_validation(
    ca_factory: CaFactory, session: aiohttp.ClientSession, challsrv: ChallengeTestServer
) -> None:
    env = {"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": str(SLEEPTIME)}
    delay = load_config(env=env, overrides={"test_mode": True}).validation_delay_seconds
    assert delay == SLEEPTIME
    ca = await ca_factory.start(
        test_mode=True,
        validation_delay_seconds=delay,
        challenge_wait_seconds=0,  # the POST answers at once, the validation sleeps behind it
        **validation_config(challsrv),
    )
    client = await subscriber(ca, session, challsrv)
    order = await client.new_order(*NAMES)
    assert order.status == 201, order.body
    for url in order.body["authorizations"]:
        answered = await client.answer(url, "http-01")
        assert answered.status == 200, answered.body
        assert answered.body["status"] == "processing", answered.body
    await asyncio.sleep(WATCHED_SECONDS)
    asked = [name for name in NAMES if challsrv.store.http_history(name)]
    assert len(asked) < len(NAMES), asked
    pending = [
        (await client.get(url)).body["status"] for url in order.body["authorizations"]
    ].count("pending")
    assert pending == len(NAMES) - len(asked)
    # the sleeping validations are cancelled now, not after shutdown's 10 s grace
    await ca.app[TASKS].drain(grace=0)
