"""The cluster's listening settings: our block in postgresql.conf and the port it names.

The server listens on 127.0.0.1, on a port chosen once and kept in ``postgresql.conf``
(moved only if the port has since been taken), and on a Unix-domain socket in the cluster's own
directory when that path is short enough for one (:func:`socket_dir_for`): the CA's own
connections use it, since a round trip over a Unix socket costs both sides less kernel work
than one over loopback TCP (issue 20).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

_CONF_BEGIN = "# BEGIN acme_ca embedded settings (managed by acme_ca; rewritten on port change)"
_CONF_END = "# END acme_ca embedded settings"
#: ``sun_path`` holds 108 bytes with its terminating NUL; the socket's name is
#: ``<dir>/.s.PGSQL.<port>`` (and the server's lock file ``.lock`` after it).
_SUN_PATH_MAX = 107
_SOCKET_NAME_MAX = len("/.s.PGSQL.65535.lock")
#: For a cluster removed at exit only: durability buys it nothing.
_THROWAWAY = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")


def socket_dir_for(cluster: Path) -> Path | None:
    """Where the server's Unix socket goes: the cluster directory itself (0700, the server
    user's, so only that user and root reach the socket), or None when its path is too long
    for a socket name (or holds a comma or a double quote, which the setting's list syntax
    reads otherwise); then the server listens on TCP only, as before."""
    if len(os.fsencode(cluster)) + _SOCKET_NAME_MAX > _SUN_PATH_MAX:
        return None
    if "," in str(cluster) or '"' in str(cluster):
        return None
    return cluster


def write_settings(
    cluster: Path, port: int, *, throwaway: bool = False, socket_dir: Path | None = None
) -> None:
    """Replace our block at the end of postgresql.conf (later lines win in PostgreSQL).

    Written in place so the file keeps its owner when we are root.  A ``throwaway`` cluster
    (``serve --test --ephemeral``, removed at exit) skips fsync: nothing in it must survive
    a crash, and it starts and runs faster.  ``socket_dir``: also listen on a Unix socket
    there (None: no Unix socket).
    """
    conf = cluster / "postgresql.conf"
    text = conf.read_text()
    begin = text.find(_CONF_BEGIN)
    if begin != -1:
        end = text.find(_CONF_END, begin)
        tail = text[end + len(_CONF_END) :] if end != -1 else ""
        text = text[:begin] + tail.lstrip("\n")
    block = "\n".join(
        [
            _CONF_BEGIN,
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{_conf_quote(socket_dir)}'",
            *(["unix_socket_permissions = 0700"] if socket_dir is not None else []),
            *(_THROWAWAY if throwaway else ()),
            _CONF_END,
        ]
    )
    if not text.endswith("\n"):
        text += "\n"
    with conf.open("r+") as fh:
        fh.seek(0)
        fh.write(text + block + "\n")
        fh.truncate()


def _conf_quote(path: Path | None) -> str:
    """A path inside a postgresql.conf string literal ('' for none)."""
    if path is None:
        return ""
    return str(path).replace("\\", "\\\\").replace("'", "''")


def configured_port(cluster: Path) -> int | None:
    """The port our block in postgresql.conf names, if any."""
    text = (cluster / "postgresql.conf").read_text()
    begin = text.find(_CONF_BEGIN)
    if begin == -1:
        return None
    match = re.search(r"^port\s*=\s*(\d+)", text[begin:], re.MULTILINE)
    return int(match[1]) if match else None


def port_is_free(port: int) -> bool:
    """Whether PostgreSQL could bind ``port`` (it sets SO_REUSEADDR too, so we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_port() -> int:
    """A port the kernel says is free right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
