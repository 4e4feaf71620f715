"""Listening sockets bound before a process starts its work: a taken or unknown address refuses the start."""

import errno
import socket
from typing import Literal


class CannotListen(Exception):
    """The address cannot be listened on: `part` says whether the host or the port is at fault."""

    def __init__(self, part: Literal["host", "port"], reason: str) -> None:
        super().__init__(reason)
        self.part = part


def listening_socket_sets(host: str, port: int, count: int) -> list[list[socket.socket]]:
    """`count` sets of listening sockets on host:port, one set per serving process.

    Processes sharing one socket take new connections unevenly (whichever wakes first accepts a whole
    burst), so with several each has its own set and the kernel spreads connections across them
    (SO_REUSEPORT). A plain bind comes first: an address anyone holds refuses the start, shared or not.
    """
    probe = listening_sockets(host, port)
    if count == 1:
        return [probe]
    port = probe[0].getsockname()[1]  # the port the system chose, if asked for port 0
    for sock in probe:
        sock.close()
    sets: list[list[socket.socket]] = []
    try:
        for _ in range(count):
            sets.append(listening_sockets(host, port, reuse_port=True))
    except CannotListen:
        for opened in sets:
            for sock in opened:
                sock.close()
        raise
    return sets


def listening_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """TCP sockets bound to every address of host:port and listening, as asyncio's create_server binds."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise CannotListen("host", f"cannot resolve it: {error.strerror}") from None
    sockets: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(addresses):
        sock = socket.socket(family, kind, proto)
        sockets.append(sock)
        try:
            # As create_server does: a restart binds again while the old connections time out, and an IPv6
            # socket leaves the IPv4 address to its own socket.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as error:
            for opened in sockets:
                opened.close()
            at_fault: Literal["host", "port"] = (
                "port" if error.errno in (errno.EADDRINUSE, errno.EACCES) else "host"
            )
            raise CannotListen(at_fault, f"cannot listen: {error.strerror}") from None
    return sockets
