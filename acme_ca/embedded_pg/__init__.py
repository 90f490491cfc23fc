"""A private PostgreSQL cluster that the CA runs for itself when no database URL is configured.

Modules: ``binaries`` (which server binaries), ``run_as`` (who runs them when we are root),
``process`` (running the programs), ``settings`` (our postgresql.conf block and its port),
``cluster`` (:class:`EmbeddedPostgres`: initdb, start, reuse, stop). It knows no ACME room:
it hands ``db/`` a DSN.

Why: ``acme-ca serve`` must work on a fresh machine with nothing set up by hand, so the CA
creates, starts and reuses its own cluster under a directory (``$ACME_CA_HOME/pg``).

Layout of ``data_root``:

- ``password``   the random superuser password (mode 0600, owned by whoever runs the CA);
- ``server.log`` the server's stdout/stderr (appended to on every start);
- ``lock``       an ``fcntl.flock`` lock that serialises initdb/start/stop across processes;
- ``cluster``    the PostgreSQL data directory (or a symlink to it, see below).

Binaries: the machine's PostgreSQL is preferred (``initdb``/``pg_ctl`` on ``PATH``, else the
newest ``/usr/lib/postgresql/*/bin``), otherwise the binaries bundled in the ``pgserver`` wheel.
An existing cluster is always served by binaries of its own major version (``PG_VERSION``),
so a cluster made with pgserver's binaries keeps working after Debian's package is installed.

The server listens on 127.0.0.1, on a port chosen once and kept in ``postgresql.conf``
(moved only if the port has since been taken), and on a Unix socket in the cluster directory
when its path is short enough (``EmbeddedPostgres.local_dsn``, what the CA itself connects
with: cheaper per round trip than loopback TCP). Authentication is scram-sha-256 for every
connection, over either.

Several processes may share one cluster: ``start()`` returns the DSN of an already running
server without taking ownership of it, and ``stop()`` stops only a server that this instance
itself started. Nothing is registered globally (no atexit, no signal handlers): the caller
decides when to stop.

Running as root: PostgreSQL refuses to run as root, so when the effective uid is 0, initdb and
pg_ctl run as an unprivileged system user: the owner of an existing cluster, else ``postgres``
if that user exists, else a system user ``acme-ca-pg`` that is created with ``useradd``. The
cluster directory is owned by that user. If the user cannot traverse to ``data_root`` (the CA
home under ``/root`` or under pytest's ``/tmp/pytest-of-root``, both mode 0700), the real
cluster lives in ``/var/lib/acme-ca/pg-<sha256(resolved data_root)[:16]>`` and
``data_root/cluster`` is a symlink to it. Server logs still reach ``data_root/server.log``
because the file is opened by the calling process and handed to pg_ctl as its output.
With pgserver's binaries the server user must also be able to reach the virtualenv; if it
cannot (a venv under /root), ``start()`` says so rather than failing obscurely.
"""

from acme_ca.embedded_pg.binaries import (
    SYSTEM_PG_ROOT,
    PgBinaries,
    find_postgres_binaries,
    pgserver_bin_dir,
)
from acme_ca.embedded_pg.cluster import (
    DB_NAME,
    SHARED_CLUSTER_ROOT,
    SUPERUSER,
    EmbeddedPostgres,
)
from acme_ca.embedded_pg.process import EmbeddedPostgresError

__all__ = [
    "DB_NAME",
    "SHARED_CLUSTER_ROOT",
    "SUPERUSER",
    "SYSTEM_PG_ROOT",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "PgBinaries",
    "find_postgres_binaries",
    "pgserver_bin_dir",
]
