"""Benchmark of acme_ca against Pebble (issue 8): ``python -m integration.bench``.

``servers`` starts each target in the shape it runs in (Pebble as packaged; acme_ca with its
own PostgreSQL, a SoftHSM2 token, separate ``serve`` and ``worker`` processes and remote CT
logs), ``procstat`` charges CPU time to the server's processes, ``loadgen`` drives ACME clients
against a directory, and ``__main__`` runs the levels and prints the comparison.
"""
