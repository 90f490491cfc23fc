"""The cluster's listening settings: our block in postgresql.conf and the port it names.

The server listens on 127.0.0.1 only, on a port chosen once and kept in ``postgresql.conf``
(moved only if the port has since been taken), with no Unix socket at all, so long paths do
not matter.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

_CONF_BEGIN = "# BEGIN acme_ca embedded settings (managed by acme_ca; rewritten on port change)"
_CONF_END = "# END acme_ca embedded settings"
#: For a cluster removed at exit only: durability buys it nothing.
_THROWAWAY = ("fsync = off", "synchronous_commit = off", "full_page_writes = off")


def write_settings(cluster: Path, port: int, *, throwaway: bool = False) -> None:
    """Replace our block at the end of postgresql.conf (later lines win in PostgreSQL).

    Written in place so the file keeps its owner when we are root.  A ``throwaway`` cluster
    (``serve --test --ephemeral``, removed at exit) skips fsync: nothing in it must survive
    a crash, and it starts and runs faster.
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
            "unix_socket_directories = ''",
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
