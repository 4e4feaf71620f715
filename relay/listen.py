"""A listening socket bound before a process starts its work: a taken or unknown address refuses the start."""

import errno
import socket
from typing import Literal


class CannotListen(Exception):
    """The address cannot be listened on: `part` says whether the host or the port is at fault."""

    def __init__(self, part: Literal["host", "port"], reason: str) -> None:
        super().__init__(reason)
        self.part = part


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port and listening, as aiohttp's own site would bind it."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise CannotListen("host", f"cannot resolve it: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio's create_server does: a restart binds again while the old connections time out.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        part: Literal["host", "port"] = "port" if error.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
        raise CannotListen(part, f"cannot listen: {error.strerror}") from None
    return sock
