"""Multi-perspective corroboration over the network (BR 3.2.2.9): the remote VA server
(``acme-ca remote-va``), the primary's mutual-TLS client, the validator wiring, and the
in-process remote VAs of ``serve --test --perspectives N``.  The rules and the checks live in
``va/`` (``va/quorum.py``, ``va/mpic.py``); this package is the HTTP around them, since
``va/`` holds no HTTP server code (no ``aiohttp.web``)."""
