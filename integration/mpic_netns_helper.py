"""The Internet as one remote perspective sees it, for ``integration/test_mpic.py``.

Started inside that perspective's network namespace.  It serves, on the namespace's own
loopback, the DNS (127.0.0.1:8053, UDP and TCP), the http-01 responder (127.0.0.1:5002) and
the tls-alpn-01 listener (127.0.0.1:5001)
that the perspective's ``acme-ca remote-va`` uses as its resolver and validation target --
nobody outside the namespace can reach them, and the remote VA can reach nothing else.
The test sets this perspective's records through the pebble-challtestsrv management API,
served on a listening socket the test created in the *main* namespace and passed here as
``--mgmt-fd`` (a socket keeps the namespace it was created in).

Prints ``netns-helper ready`` once everything listens; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

from aiohttp import web

from acme_ca.testsrv.management import make_management_app
from acme_ca.testsrv.server import BindAddress, ChallengeServerConfig, ChallengeTestServer

DNS_PORT = 8053
HTTP01_PORT = 5002
TLSALPN01_PORT = 5001


async def main(mgmt_fd: int) -> None:
    mgmt = socket.socket(fileno=mgmt_fd)
    mgmt.setblocking(False)
    config = ChallengeServerConfig(
        dns=BindAddress("127.0.0.1", DNS_PORT),
        management=BindAddress("127.0.0.1", 0),  # in-namespace copy, unused
        http01=BindAddress("127.0.0.1", HTTP01_PORT),
        tlsalpn01=BindAddress("127.0.0.1", TLSALPN01_PORT),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with ChallengeTestServer(config) as server:
        runner = web.AppRunner(make_management_app(server.store, tlsalpn01=True), access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, mgmt).start()
            print("netns-helper ready", flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mgmt-fd", type=int, required=True)
    asyncio.run(main(parser.parse_args().mgmt_fd))
